//! Causal grouped-query attention, exact (full softmax in f32), tiled by query blocks so the
//! upper triangle is never computed.
//!
//! Reference semantics: for window `b`, query head `h`, KV group `g = h / (H / Hkv)`,
//! `y[t] = sum_{j<=t} softmax_j(q_t·k_j / sqrt(hd)) v_j`; with XSA,
//! `y[t] -= (y[t]·v̂_t) v̂_t` where `v̂_t = v_t / max(|v_t|, 1e-12)`.

use super::matmul::{gemm_into, View};
use super::par::map_range;
use crate::backend::AttnGeometry;

const BLOCK: usize = 64;

/// `q [B*T, H*hd]`, `k`/`v` `[B*T, Hkv*hd]` -> `[B*T, H*hd]`.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], g: &AttnGeometry, xsa: bool) -> Vec<f32> {
    let (t_len, hd) = (g.seq, g.head_dim);
    let (qw, kw) = (g.heads * hd, g.kv_heads * hd);
    let group = g.heads / g.kv_heads;
    let blocks = t_len.div_ceil(BLOCK);
    let scale = 1.0 / (hd as f32).sqrt();
    // Kᵀ per (window, KV head) as contiguous [hd, T] rows: gemm packs this layout ~1.5x faster
    // than a strided view of K.
    let kt: Vec<f32> = {
        let mut kt = vec![0.0f32; g.batch * g.kv_heads * hd * t_len];
        for b in 0..g.batch {
            for kvh in 0..g.kv_heads {
                let base = (b * g.kv_heads + kvh) * hd * t_len;
                for j in 0..t_len {
                    let src = &k[(b * t_len + j) * kw + kvh * hd..][..hd];
                    for (d, &x) in src.iter().enumerate() {
                        kt[base + d * t_len + j] = x;
                    }
                }
            }
        }
        kt
    };
    let tasks = g.batch * g.heads * blocks;
    let outs: Vec<Vec<f32>> = map_range(tasks, |task| {
        let (b, rest) = (task / (g.heads * blocks), task % (g.heads * blocks));
        let (h, blk) = (rest / blocks, rest % blocks);
        let kvh = h / group;
        let (i0, i1) = (blk * BLOCK, ((blk + 1) * BLOCK).min(t_len));
        let (m, n) = (i1 - i0, i1);
        let row0 = b * t_len;
        // S = Q_blk · K[0..i1]ᵀ
        let mut s = vec![0.0f32; m * n];
        gemm_into(
            m,
            n,
            hd,
            View {
                data: q,
                offset: (row0 + i0) * qw + h * hd,
                rs: qw,
                cs: 1,
            },
            View {
                data: &kt,
                offset: (b * g.kv_heads + kvh) * hd * t_len,
                rs: t_len,
                cs: 1,
            },
            &mut s,
            0,
            n,
            false,
            gemm::Parallelism::None,
        );
        for r in 0..m {
            let row = &mut s[r * n..(r + 1) * n];
            let last = i0 + r; // keys 0..=last are visible
            let mut mx = f32::NEG_INFINITY;
            for x in row[..=last].iter_mut() {
                *x *= scale;
                mx = mx.max(*x);
            }
            let inv = 1.0 / super::math::exp_shift_sum(&mut row[..=last], mx);
            row[..=last].iter_mut().for_each(|x| *x *= inv);
            row[last + 1..].iter_mut().for_each(|x| *x = 0.0);
        }
        // O = P · V[0..i1]
        let mut o = vec![0.0f32; m * hd];
        gemm_into(
            m,
            hd,
            n,
            View {
                data: &s,
                offset: 0,
                rs: n,
                cs: 1,
            },
            View {
                data: v,
                offset: row0 * kw + kvh * hd,
                rs: kw,
                cs: 1,
            },
            &mut o,
            0,
            hd,
            false,
            gemm::Parallelism::None,
        );
        if xsa {
            for r in 0..m {
                let vt = &v[(row0 + i0 + r) * kw + kvh * hd..][..hd];
                let norm = vt.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                let y = &mut o[r * hd..(r + 1) * hd];
                let dot: f32 = y.iter().zip(vt).map(|(a, b)| a * b / norm).sum();
                y.iter_mut().zip(vt).for_each(|(a, b)| *a -= dot * b / norm);
            }
        }
        o
    });
    let mut out = vec![0.0f32; g.batch * t_len * qw];
    for (task, o) in outs.into_iter().enumerate() {
        let (b, rest) = (task / (g.heads * blocks), task % (g.heads * blocks));
        let (h, blk) = (rest / blocks, rest % blocks);
        let i0 = blk * BLOCK;
        for (r, chunk) in o.chunks_exact(hd).enumerate() {
            let dst = (b * t_len + i0 + r) * qw + h * hd;
            out[dst..dst + hd].copy_from_slice(chunk);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct O(T^2) reference, one query at a time.
    fn naive(q: &[f32], k: &[f32], v: &[f32], g: &AttnGeometry, xsa: bool) -> Vec<f32> {
        let (hd, qw, kw) = (g.head_dim, g.heads * g.head_dim, g.kv_heads * g.head_dim);
        let mut out = vec![0.0; g.batch * g.seq * qw];
        for b in 0..g.batch {
            for h in 0..g.heads {
                let kvh = h / (g.heads / g.kv_heads);
                for t in 0..g.seq {
                    let qv = &q[(b * g.seq + t) * qw + h * hd..][..hd];
                    let sc: Vec<f32> = (0..=t)
                        .map(|j| {
                            let kv = &k[(b * g.seq + j) * kw + kvh * hd..][..hd];
                            qv.iter().zip(kv).map(|(a, c)| a * c).sum::<f32>() / (hd as f32).sqrt()
                        })
                        .collect();
                    let mx = sc.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = sc.iter().map(|s| (s - mx).exp()).collect();
                    let z: f32 = e.iter().sum();
                    let y = &mut out[(b * g.seq + t) * qw + h * hd..][..hd];
                    for (j, p) in e.iter().enumerate() {
                        let vv = &v[(b * g.seq + j) * kw + kvh * hd..][..hd];
                        y.iter_mut().zip(vv).for_each(|(a, c)| *a += p / z * c);
                    }
                    if xsa {
                        let vt = &v[(b * g.seq + t) * kw + kvh * hd..][..hd];
                        let n2: f32 = vt.iter().map(|x| x * x).sum();
                        let d: f32 = y.iter().zip(vt).map(|(a, c)| a * c).sum();
                        y.iter_mut().zip(vt).for_each(|(a, c)| *a -= d / n2 * c);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_across_blocks() {
        for xsa in [false, true] {
            let g = AttnGeometry {
                batch: 2,
                seq: 150,
                heads: 4,
                kv_heads: 2,
                head_dim: 8,
            };
            let n = g.batch * g.seq;
            let f = |i: usize, s: f32| (i as f32 * s).sin() * 2.0;
            let q: Vec<f32> = (0..n * 32).map(|i| f(i, 0.37)).collect();
            let k: Vec<f32> = (0..n * 16).map(|i| f(i, 0.91)).collect();
            let v: Vec<f32> = (0..n * 16).map(|i| f(i, 0.13)).collect();
            let got = attention(&q, &k, &v, &g, xsa);
            let want = naive(&q, &k, &v, &g, xsa);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 1e-4, "xsa={xsa} max err {err}");
        }
    }
}
