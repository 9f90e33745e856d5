//! Causal grouped-query attention, exact (full softmax in f32), fused per query tile so the
//! upper triangle is never computed.
//!
//! Reference semantics: for window `b`, query head `h`, KV group `g = h / (H / Hkv)`,
//! `y[t] = sum_{j<=t} softmax_j(q_t·k_j / sqrt(hd)) v_j`; with XSA,
//! `y[t] -= (y[t]·v̂_t) v̂_t` where `v̂_t = v_t / max(|v_t|, 1e-12)`.
//!
//! Layout of the work: K and V of each (window, KV head) are packed once (K as `[T/16][hd][16]`
//! panels, V as contiguous `[T, hd]`); then each task takes [`TILE`] query positions of a window
//! and, for each KV group in turn, all the group's query heads together (so K/V are read once
//! per group and the scratch is reused), computes
//! `S = Q·Kᵀ` over the causal prefix of keys, the row softmax (normalisation deferred to the
//! output), and `O = P·V`, all through one small register-blocked kernel ([`kernel`]).

use super::par::{for_each_chunk, map_range};
use crate::backend::AttnGeometry;
pub(super) use kernel::softmax_row_wide;

/// Query positions per task (times the group size in rows).
const TILE: usize = 32;
/// Rows and columns of the micro-kernel's output block.
const MR: usize = 6;
const NR: usize = 16;

/// `q [B*T, H*hd]`, `k`/`v` `[B*T, Hkv*hd]` -> `[B*T, H*hd]`.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], g: &AttnGeometry, xsa: bool) -> Vec<f32> {
    let (t_len, hd) = (g.seq, g.head_dim);
    let (qw, kw) = (g.heads * hd, g.kv_heads * hd);
    let group = g.heads / g.kv_heads;
    let t_pad = t_len.div_ceil(NR) * NR;
    let hd_pad = hd.div_ceil(NR) * NR;
    let scale = 1.0 / (hd as f32).sqrt();
    let kern = kernel::select();
    // Per (window, KV head): K as NR-key panels [hd][NR], V as [t_pad, hd_pad]; padding is zero.
    let packed: Vec<(Vec<f32>, Vec<f32>)> = map_range(g.batch * g.kv_heads, |task| {
        let (b, kvh) = (task / g.kv_heads, task % g.kv_heads);
        let mut kp = vec![0.0f32; t_pad * hd];
        let mut vp = vec![0.0f32; t_pad * hd_pad];
        for j in 0..t_len {
            let src = (b * t_len + j) * kw + kvh * hd;
            let (panel, lane) = (j / NR, j % NR);
            for (d, &x) in k[src..src + hd].iter().enumerate() {
                kp[(panel * hd + d) * NR + lane] = x;
            }
            vp[j * hd_pad..j * hd_pad + hd].copy_from_slice(&v[src..src + hd]);
        }
        (kp, vp)
    });
    let mut out = vec![0.0f32; g.batch * t_len * qw];
    // One task per (window, TILE query positions): its output rows are contiguous, and its
    // scratch serves every KV group in turn.
    for_each_chunk(&mut out, t_len * qw, |b, win| {
        for_each_chunk(win, TILE * qw, |tile, dst| {
            let (i0, i1) = (tile * TILE, ((tile + 1) * TILE).min(t_len));
            let m = i1 - i0;
            // Rows are (query head in the group, position): row = hs * m + r; the padding rows
            // of `qt` stay zero and their outputs are never read.
            let rows = group * m;
            let rows_pad = rows.div_ceil(MR) * MR;
            let n = i1.div_ceil(NR) * NR; // keys 0..i1, padded to whole panels
            let mut qt = vec![0.0f32; rows_pad * hd];
            let mut s = vec![0.0f32; rows_pad * n];
            let mut o = vec![0.0f32; rows_pad * hd_pad];
            let mut inv = vec![0.0f32; rows];
            for kvh in 0..g.kv_heads {
                let (kp, vp) = &packed[b * g.kv_heads + kvh];
                for hs in 0..group {
                    let h = kvh * group + hs;
                    for r in 0..m {
                        let src = (b * t_len + i0 + r) * qw + h * hd;
                        qt[(hs * m + r) * hd..][..hd].copy_from_slice(&q[src..src + hd]);
                    }
                }
                // S = Q · Kᵀ, one NR-key panel at a time.
                for r0 in (0..rows_pad).step_by(MR) {
                    for p in 0..n / NR {
                        kern(
                            hd,
                            &qt[r0 * hd..],
                            hd,
                            &kp[p * hd * NR..],
                            NR,
                            &mut s[r0 * n + p * NR..],
                            n,
                        );
                    }
                }
                // Row softmax over the visible keys; P keeps exp(s - max), 1/sum goes to O.
                for (row, (sr, iv)) in s.chunks_exact_mut(n).zip(inv.iter_mut()).enumerate() {
                    let last = i0 + row % m; // keys 0..=last are visible
                    *iv = 1.0 / kernel::softmax_row(&mut sr[..=last], scale);
                    sr[last + 1..].fill(0.0);
                }
                // O = P · V.
                for r0 in (0..rows_pad).step_by(MR) {
                    for c0 in (0..hd_pad).step_by(NR) {
                        kern(
                            n,
                            &s[r0 * n..],
                            n,
                            &vp[c0..],
                            hd_pad,
                            &mut o[r0 * hd_pad + c0..],
                            hd_pad,
                        );
                    }
                }
                for (row, &iv) in inv.iter().enumerate() {
                    let (hs, r) = (row / m, row % m);
                    let y = &mut dst[r * qw + (kvh * group + hs) * hd..][..hd];
                    let or = &o[row * hd_pad..][..hd];
                    y.iter_mut().zip(or).for_each(|(a, b)| *a = b * iv);
                    if xsa {
                        let vt = &v[(b * t_len + i0 + r) * kw + kvh * hd..][..hd];
                        let norm = vt.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                        let dot: f32 = y.iter().zip(vt).map(|(a, b)| a * b / norm).sum();
                        y.iter_mut().zip(vt).for_each(|(a, b)| *a -= dot * b / norm);
                    }
                }
            }
        });
    });
    out
}

/// The `MR x NR` micro-kernel and the softmax row, with an AVX2+FMA version chosen at run time
/// on x86-64 and a portable one elsewhere (and for wasm32).
mod kernel {
    use super::super::math::exp;
    use super::{MR, NR};

    /// `c[r][j] = sum_p a[r*lda + p] * b[p*ldb + j]` for `r < MR`, `j < NR`, `p < k`
    /// (`c` row stride `ldc`, overwritten).
    pub type Kernel = fn(usize, &[f32], usize, &[f32], usize, &mut [f32], usize);

    fn check(k: usize, a: &[f32], lda: usize, b: &[f32], ldb: usize, c: &[f32], ldc: usize) {
        if k > 0 {
            assert!((MR - 1) * lda + k <= a.len(), "kernel lhs out of bounds");
            assert!((k - 1) * ldb + NR <= b.len(), "kernel rhs out of bounds");
        }
        assert!((MR - 1) * ldc + NR <= c.len(), "kernel dst out of bounds");
    }

    /// The fastest kernel this CPU supports.
    pub fn select() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return avx2_fma;
            }
        }
        portable
    }

    fn portable(k: usize, a: &[f32], lda: usize, b: &[f32], ldb: usize, c: &mut [f32], ldc: usize) {
        check(k, a, lda, b, ldb, c, ldc);
        let mut acc = [[0.0f32; NR]; MR];
        for p in 0..k {
            let br = &b[p * ldb..p * ldb + NR];
            for (r, accr) in acc.iter_mut().enumerate() {
                let av = a[r * lda + p];
                accr.iter_mut().zip(br).for_each(|(c, &bv)| *c += av * bv);
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            c[r * ldc..r * ldc + NR].copy_from_slice(accr);
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn avx2_fma(k: usize, a: &[f32], lda: usize, b: &[f32], ldb: usize, c: &mut [f32], ldc: usize) {
        check(k, a, lda, b, ldb, c, ldc);
        // SAFETY: `select` returns this only when AVX2 and FMA are present; `check` bounds every
        // index the kernel reads or writes.
        unsafe { avx2_fma_inner(k, a.as_ptr(), lda, b.as_ptr(), ldb, c.as_mut_ptr(), ldc) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_fma_inner(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        use std::arch::x86_64::*;
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for p in 0..k {
            let b0 = _mm256_loadu_ps(b.add(p * ldb));
            let b1 = _mm256_loadu_ps(b.add(p * ldb + 8));
            for (r, accr) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*a.add(r * lda + p));
                accr[0] = _mm256_fmadd_ps(av, b0, accr[0]);
                accr[1] = _mm256_fmadd_ps(av, b1, accr[1]);
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            _mm256_storeu_ps(c.add(r * ldc), accr[0]);
            _mm256_storeu_ps(c.add(r * ldc + 8), accr[1]);
        }
    }

    /// `x[i] = e^(scale·x[i] - max)` with `max` the largest `scale·x[i]`; returns the sum.
    pub fn softmax_row(x: &mut [f32], scale: f32) -> f32 {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the features were just detected.
                return unsafe { softmax_row_avx2(x, scale) };
            }
        }
        softmax_row_body::<8>(x, scale)
    }

    /// [`softmax_row`] with 16 lanes on AVX-512 (another order of the sum): what the bf16
    /// attention uses, whose own rounding is far larger than the order's.
    pub fn softmax_row_wide(x: &mut [f32], scale: f32) -> f32 {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the feature was just detected.
                return unsafe { softmax_row_avx512(x, scale) };
            }
        }
        softmax_row(x, scale)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn softmax_row_avx2(x: &mut [f32], scale: f32) -> f32 {
        softmax_row_body::<8>(x, scale)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn softmax_row_avx512(x: &mut [f32], scale: f32) -> f32 {
        softmax_row_body::<16>(x, scale)
    }

    /// Same arithmetic on every path with `L` lanes (no FMA contraction); only the vector width
    /// differs.
    #[inline(always)]
    fn softmax_row_body<const L: usize>(x: &mut [f32], scale: f32) -> f32 {
        let mut lanes = [f32::NEG_INFINITY; L];
        let mut chunks = x.chunks_exact_mut(L);
        for c in &mut chunks {
            for (l, v) in lanes.iter_mut().zip(c.iter_mut()) {
                *v *= scale;
                // Plain compare (a single max instruction): scores are finite.
                *l = if *v > *l { *v } else { *l };
            }
        }
        let mut mx = lanes.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        for v in chunks.into_remainder() {
            *v *= scale;
            mx = mx.max(*v);
        }
        let mut sum = [0.0f32; L];
        let mut chunks = x.chunks_exact_mut(L);
        for c in &mut chunks {
            for (l, v) in sum.iter_mut().zip(c.iter_mut()) {
                *v = exp(*v - mx);
                *l += *v;
            }
        }
        let mut tail = 0.0;
        for v in chunks.into_remainder() {
            *v = exp(*v - mx);
            tail += *v;
        }
        sum.iter().sum::<f32>() + tail
    }
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
        // (heads, kv_heads, head_dim): GQA groups of 2, 1 and 4; head_dim below, at and not a
        // multiple of the kernel width.
        for (heads, kv_heads, head_dim) in [(4, 2, 8), (2, 2, 16), (4, 1, 20), (2, 1, 64)] {
            for xsa in [false, true] {
                let g = AttnGeometry {
                    batch: 2,
                    seq: 150,
                    heads,
                    kv_heads,
                    head_dim,
                };
                let n = g.batch * g.seq;
                let f = |i: usize, s: f32| (i as f32 * s).sin() * 2.0;
                let q: Vec<f32> = (0..n * heads * head_dim).map(|i| f(i, 0.37)).collect();
                let k: Vec<f32> = (0..n * kv_heads * head_dim).map(|i| f(i, 0.91)).collect();
                let v: Vec<f32> = (0..n * kv_heads * head_dim).map(|i| f(i, 0.13)).collect();
                let got = attention(&q, &k, &v, &g, xsa);
                let want = naive(&q, &k, &v, &g, xsa);
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(
                    err < 1e-4,
                    "{heads}/{kv_heads}/{head_dim} xsa={xsa} max err {err}"
                );
            }
        }
    }
}
