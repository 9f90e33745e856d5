//! Head + soft-cap + cross-entropy with an additive logit term, forward and backward.
//!
//! Reference: `z = h · headᵀ + delta`, `l = c·tanh(z/c)` (no cap when `c == 0`),
//! `nll = logsumexp(l) − l[target]`; backward for per-row weights `g`:
//! `dl = g · (softmax(l) − onehot(target))`, `dz = dl ⊙ (1 − (l/c)²)`.
//! Blocks of rows, arithmetic and summation order are those of the forward kernel, so a zero
//! `delta` reproduces [`crate::backend::Backend::nll`] bit for bit.

use super::super::math;
use super::super::matmul::{gemm_into, View};
use super::super::par::{for_each_row, gemm_parallelism};

const ROWS_PER_BLOCK: usize = 256;

fn log_sum_exp(row: &[f32]) -> f32 {
    let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut lanes = [0.0f64; 8];
    for chunk in row.chunks(8) {
        for (l, &z) in lanes.iter_mut().zip(chunk) {
            *l += math::exp(z - mx) as f64;
        }
    }
    mx + lanes.iter().sum::<f64>().ln() as f32
}

/// Calls `f(first_row, capped_logits_block)` for consecutive row blocks.
#[allow(clippy::too_many_arguments)]
fn for_each_block(
    h: &[f32],
    rows: usize,
    dim: usize,
    head: &[f32],
    vocab: usize,
    delta: Option<&[f32]>,
    softcap: f32,
    mut f: impl FnMut(usize, &mut [f32]),
) {
    let mut buf = vec![0.0f32; ROWS_PER_BLOCK.min(rows) * vocab];
    for r0 in (0..rows).step_by(ROWS_PER_BLOCK) {
        let m = ROWS_PER_BLOCK.min(rows - r0);
        let block = &mut buf[..m * vocab];
        gemm_into(
            m,
            vocab,
            dim,
            View {
                data: h,
                offset: r0 * dim,
                rs: dim,
                cs: 1,
            },
            View {
                data: head,
                offset: 0,
                rs: 1,
                cs: dim,
            },
            block,
            0,
            vocab,
            false,
            gemm_parallelism(),
        );
        if let Some(d) = delta {
            block
                .iter_mut()
                .zip(&d[r0 * vocab..(r0 + m) * vocab])
                .for_each(|(z, d)| *z += d);
        }
        for_each_row(block, vocab, |_, row| {
            if softcap > 0.0 {
                let inv = 1.0 / softcap;
                row.iter_mut()
                    .for_each(|z| *z = softcap * math::tanh(*z * inv));
            }
        });
        f(r0, block);
    }
}

/// Per-row NLL of `targets`.
#[allow(clippy::too_many_arguments)]
pub fn nll(
    h: &[f32],
    dim: usize,
    head: &[f32],
    vocab: usize,
    delta: Option<&[f32]>,
    targets: &[u32],
    softcap: f32,
) -> Vec<f32> {
    let rows = targets.len();
    let mut out = vec![0.0f32; rows];
    for_each_block(h, rows, dim, head, vocab, delta, softcap, |r0, block| {
        for (i, row) in block.chunks_exact(vocab).enumerate() {
            out[r0 + i] = log_sum_exp(row) - row[targets[r0 + i] as usize];
        }
    });
    out
}

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
    for_each_block(h, rows, dim, head, vocab, delta, softcap, |r0, block| {
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
    });
    dz
}
