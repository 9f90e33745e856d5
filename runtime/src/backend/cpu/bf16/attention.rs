//! Causal grouped-query attention with bf16 products (`--precision bf16`), laid out like the
//! float32 kernel (`../attention.rs`, its oracle): per (window, [`TILE`] query positions) task
//! and KV group, `S = Q·Kᵀ` over the causal prefix, the row softmax in float32, `O = P·V`.
//!
//! Reference semantics (the float32 kernel's f64 reference with bf16 rounding, what the test
//! holds it to): `Q`, `K`, `V` rounded to bf16; scores summed in float32 and scaled by `1/sqrt(hd)`; `p_j = exp(s_j − max)` in float32,
//! rounded to bf16 for the product with `V`; the output divided by `Σ p_j` of the float32 `p`;
//! XSA as in float32. Products accumulate in float32.

use super::super::attention::{for_each_query_tile, gather_queries, softmax_row_wide, write_group};
use super::super::par::map_range;
use super::{convert, product, Kernel, PackedWeight, KB};
use crate::backend::AttnGeometry;

/// Query positions per task (times the group size in rows).
const TILE: usize = 32;

fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

/// `q [B*T, H*hd]`, `k`/`v` `[B*T, Hkv*hd]` -> `[B*T, H*hd]`.
pub fn attention<'a>(
    q: &[f32],
    k: &'a [f32],
    v: &'a [f32],
    g: &AttnGeometry,
    xsa: bool,
    kernel: Kernel,
) -> Vec<f32> {
    let (t_len, hd) = (g.seq, g.head_dim);
    let kw = g.kv_heads * hd;
    let group = g.heads / g.kv_heads;
    let hd_lda = round_up(hd, KB);
    let scale = 1.0 / (hd as f32).sqrt();
    // Per (window, KV head): K as a `[T, hd]` operand, V as `[hd, T]` (so `O = P · (Vᵀ)ᵀ`).
    let packed: Vec<(PackedWeight, PackedWeight)> = map_range(g.batch * g.kv_heads, |task| {
        let (b, kvh) = (task / g.kv_heads, task % g.kv_heads);
        let row = |x: &'a [f32], j: usize| &x[(b * t_len + j) * kw + kvh * hd..][..hd];
        (
            PackedWeight::pack_rows(t_len, hd, |j| row(k, j)),
            PackedWeight::pack_cols(hd, t_len, |j| row(v, j)),
        )
    });
    for_each_query_tile(g, TILE, |b, i0, i1, dst| {
        let m = i1 - i0;
        let rows = group * m;
        let rows_pad = round_up(rows, 32);
        let n = round_up(i1, KB); // keys 0..i1, padded to whole depth blocks
        let mut qt = vec![0u16; rows_pad * hd_lda];
        let mut s = vec![0.0f32; rows * n];
        let mut p = vec![0u16; rows_pad * n];
        let mut o = vec![0.0f32; rows * hd];
        let mut inv = vec![0.0f32; rows];
        for kvh in 0..g.kv_heads {
            let (kp, vp) = &packed[b * g.kv_heads + kvh];
            gather_queries(q, g, b, i0, m, kvh, |row, src| {
                convert(src, &mut qt[row * hd_lda..][..hd])
            });
            product(&qt, rows, hd_lda, kp, hd, n, &mut s, n, kernel);
            for (row, ((sr, pr), iv)) in s
                .chunks_exact_mut(n)
                .zip(p.chunks_exact_mut(n))
                .zip(inv.iter_mut())
                .enumerate()
            {
                let last = i0 + row % m; // keys 0..=last are visible
                *iv = 1.0 / softmax_row_wide(&mut sr[..=last], scale);
                convert(&sr[..=last], &mut pr[..=last]);
                pr[last + 1..].fill(0);
            }
            product(&p, rows, n, vp, n, hd, &mut o, hd, kernel);
            write_group(dst, &o, hd, &inv, v, g, b, i0, m, kvh, xsa);
        }
    })
}
