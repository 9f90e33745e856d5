//! Output head fused with the logit soft-cap and cross-entropy, row block by row block so the
//! full `[rows, vocab]` logit matrix never exists at once.
//!
//! Reference: `z = h · headᵀ (+ delta)`, `l = c·tanh(z/c)` (no cap when `c == 0`),
//! `nll = logsumexp(l) − l[target]`. The optional additive `delta` (a LoRA head's logits) is
//! what training passes; the backward in `backward/head.rs` reuses these loops so its forward
//! values are bit for bit those of inference.

use super::bf16::{Kernel, PackedWeight};
use super::matmul::{gemm_into, View};
use super::par::gemm_parallelism;
use super::simd::multiversion;

const ROWS_PER_BLOCK: usize = 256;

multiversion! {
    fn softcap_row(row: &mut [f32], c: f32) {
        if c > 0.0 {
            let inv = 1.0 / c;
            row.iter_mut()
                .for_each(|z| *z = c * super::math::tanh(*z * inv));
        }
    }
}

multiversion! {
    pub(super) fn log_sum_exp(row: &[f32]) -> f32 {
        // Max over 16 lanes (exact whatever the order).
        let mut m16 = [f32::NEG_INFINITY; 16];
        let chunks = row.chunks_exact(16);
        let mut mx = chunks.remainder().iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        for c in chunks {
            for (m, &z) in m16.iter_mut().zip(c) {
                *m = if z > *m { z } else { *m };
            }
        }
        mx = m16.iter().cloned().fold(mx, f32::max);
        // Terms are in (0, 1]; sum them in f64 (8 lanes) since this is the metric.
        let mut lanes = [0.0f64; 8];
        for chunk in row.chunks(8) {
            for (l, &z) in lanes.iter_mut().zip(chunk) {
                *l += super::math::exp(z - mx) as f64;
            }
        }
        mx + lanes.iter().sum::<f64>().ln() as f32
    }
}

/// The head's bf16 kernel and packed copy, when its products are bf16 (`None`: float32).
pub(super) type Bf16Head<'a> = Option<(Kernel, &'a PackedWeight)>;

/// Calls `f(first_row, logits_block)` with soft-capped logits (`delta` added before the cap)
/// for consecutive row blocks.
#[allow(clippy::too_many_arguments)]
pub(super) fn for_each_logit_block(
    h: &[f32],
    rows: usize,
    dim: usize,
    head: &[f32],
    vocab: usize,
    delta: Option<&[f32]>,
    softcap: f32,
    bf16: Bf16Head<'_>,
    mut f: impl FnMut(usize, &mut [f32]),
) {
    let mut buf = vec![0.0f32; ROWS_PER_BLOCK.min(rows) * vocab];
    for r0 in (0..rows).step_by(ROWS_PER_BLOCK) {
        let m = ROWS_PER_BLOCK.min(rows - r0);
        let block = &mut buf[..m * vocab];
        if let Some((kernel, packed)) = bf16 {
            super::bf16::linear_into(&h[r0 * dim..(r0 + m) * dim], m, packed, kernel, block);
        } else {
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
        }
        if let Some(d) = delta {
            block
                .iter_mut()
                .zip(&d[r0 * vocab..(r0 + m) * vocab])
                .for_each(|(z, d)| *z += d);
        }
        super::par::for_each_row(block, vocab, |_, row| softcap_row(row, softcap));
        f(r0, block);
    }
}

/// Per-row negative log-likelihood of `targets` (`targets.len() == rows`, ids < vocab).
#[allow(clippy::too_many_arguments)]
pub fn nll(
    h: &[f32],
    dim: usize,
    head: &[f32],
    vocab: usize,
    delta: Option<&[f32]>,
    targets: &[u32],
    softcap: f32,
    bf16: Bf16Head<'_>,
) -> Vec<f32> {
    let rows = targets.len();
    let mut out = vec![0.0f32; rows];
    for_each_logit_block(
        h,
        rows,
        dim,
        head,
        vocab,
        delta,
        softcap,
        bf16,
        |r0, block| {
            let m = block.len() / vocab;
            let nll = super::par::map_range(m, |i| {
                let row = &block[i * vocab..(i + 1) * vocab];
                log_sum_exp(row) - row[targets[r0 + i] as usize]
            });
            out[r0..r0 + m].copy_from_slice(&nll);
        },
    );
    out
}

/// Full log-softmax rows `[rows, vocab]` (`delta`, when given, added to the logits before the
/// cap, as in [`nll`]).
#[allow(clippy::too_many_arguments)]
pub fn log_probs(
    h: &[f32],
    rows: usize,
    dim: usize,
    head: &[f32],
    vocab: usize,
    delta: Option<&[f32]>,
    softcap: f32,
    bf16: Bf16Head<'_>,
) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * vocab];
    for_each_logit_block(
        h,
        rows,
        dim,
        head,
        vocab,
        delta,
        softcap,
        bf16,
        |r0, block| {
            let block = &*block;
            let dst = &mut out[r0 * vocab..r0 * vocab + block.len()];
            super::par::for_each_row(dst, vocab, |i, d| {
                let row = &block[i * vocab..(i + 1) * vocab];
                let lse = log_sum_exp(row);
                d.iter_mut().zip(row).for_each(|(d, z)| *d = z - lse);
            });
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_matches_log_probs_and_probs_sum_to_one() {
        let (rows, dim, vocab) = (300, 6, 11);
        let h: Vec<f32> = (0..rows * dim)
            .map(|i| (i as f32 * 0.31).sin() * 3.0)
            .collect();
        let w: Vec<f32> = (0..vocab * dim)
            .map(|i| (i as f32 * 0.77).cos() * 4.0)
            .collect();
        let t: Vec<u32> = (0..rows as u32).map(|i| i * 7 % vocab as u32).collect();
        let lp = log_probs(&h, rows, dim, &w, vocab, None, 30.0, None);
        let n = nll(&h, dim, &w, vocab, None, &t, 30.0, None);
        for r in 0..rows {
            let row = &lp[r * vocab..(r + 1) * vocab];
            let total: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
            assert!((total - 1.0).abs() < 1e-5);
            assert!((n[r] + row[t[r] as usize]).abs() < 1e-5);
        }
    }

    #[test]
    fn softcap_bounds_logits() {
        let mut row = vec![-1000.0, 0.0, 1000.0];
        softcap_row(&mut row, 30.0);
        assert!(row[0] >= -30.0 && row[2] <= 30.0 && row[1] == 0.0);
    }
}
