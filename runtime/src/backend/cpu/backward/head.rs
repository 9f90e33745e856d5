//! Head + soft-cap + cross-entropy with an additive logit term, forward and backward.
//!
//! Reference: `z = h · headᵀ + delta`, `l = c·tanh(z/c)` (no cap when `c == 0`),
//! `nll = logsumexp(l) − l[target]`; backward for per-row weights `g`:
//! `dl = g · (softmax(l) − onehot(target))`, `dz = dl ⊙ (1 − (l/c)²)`.
//! The logits come from the forward kernel's own block loop (`cpu/head.rs`), so the forward
//! values are those of [`crate::backend::Backend::nll`] bit for bit.

use super::super::head::{for_each_logit_block, log_sum_exp};
use super::super::math;
use super::super::par::for_each_row;

/// `dz [rows, vocab]` for per-row loss weights `dnll`.
#[allow(clippy::too_many_arguments)]
pub fn nll_backward_logits(
    h: &[f32],
    dim: usize,
    head: &[f32],
    vocab: usize,
    delta: Option<&[f32]>,
    targets: &[u32],
    softcap: f32,
    dnll: &[f32],
) -> Vec<f32> {
    let rows = targets.len();
    let mut dz = vec![0.0f32; rows * vocab];
    for_each_logit_block(
        h,
        rows,
        dim,
        head,
        vocab,
        delta,
        softcap,
        None,
        |r0, block| {
            let dst = &mut dz[r0 * vocab..r0 * vocab + block.len()];
            dst.copy_from_slice(block);
            for_each_row(dst, vocab, |i, row| {
                let r = r0 + i;
                let lse = log_sum_exp(row);
                let g = dnll[r];
                let t = targets[r] as usize;
                for (j, l) in row.iter_mut().enumerate() {
                    let p = math::exp(*l - lse);
                    let dl = g * (p - if j == t { 1.0 } else { 0.0 });
                    *l = if softcap > 0.0 {
                        let th = *l / softcap;
                        dl * (1.0 - th * th)
                    } else {
                        dl
                    };
                }
            });
        },
    );
    dz
}
