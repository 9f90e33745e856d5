//! Causal grouped-query attention, exact (full softmax in f32), fused per query tile so the
//! upper triangle is never computed.
//!
//! Reference semantics: for window `b`, query head `h`, KV group `g = h / (H / Hkv)`,
//! `y[t] = sum_{j<=t} softmax_j(q_t·k_j / sqrt(hd)) v_j`; with XSA,
//! `y[t] -= (y[t]·v̂_t) v̂_t` where `v̂_t = v_t / max(|v_t|, 1e-12)`.
//!
//! Layout of the work: K and V of each (window, KV head) are packed once (K as `[T/NR][hd][NR]`
//! panels, V as contiguous `[T, hd]`); then each task takes [`TILE`] query positions of a window
//! and, for each KV group in turn, all the group's query heads together (so K/V are read once
//! per group and the scratch is reused), computes
//! `S = Q·Kᵀ` over the causal prefix of keys, the row softmax (normalisation deferred to the
//! output), and `O = P·V`, all through one small register-blocked `MR x NR` kernel ([`kernel`]):
//! 8 x 32 on AVX-512, 6 x 16 on AVX2+FMA and in portable code. The kernel is chosen at run time.

use super::par::{for_each_chunk, init_default, map_range};
use crate::backend::AttnGeometry;
pub(super) use kernel::softmax_row_wide;
pub(crate) use kernel::Choice;

/// Query positions per task (times the group size in rows).
const TILE: usize = 32;

/// `q [B*T, H*hd]`, `k`/`v` `[B*T, Hkv*hd]` -> `[B*T, H*hd]`, on the fastest kernel this CPU has.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], g: &AttnGeometry, xsa: bool) -> Vec<f32> {
    attention_with(Choice::fastest(), q, k, v, g, xsa)
}

/// [`attention`] on a given kernel (one of [`Choice::available`]; tests run each).
pub(crate) fn attention_with(
    choice: Choice,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &AttnGeometry,
    xsa: bool,
) -> Vec<f32> {
    match choice {
        #[cfg(target_arch = "x86_64")]
        Choice::Avx512 => run::<8, 32>(q, k, v, g, xsa, kernel::avx512, softmax_row_wide),
        #[cfg(target_arch = "x86_64")]
        Choice::Avx2Fma => run::<6, 16>(q, k, v, g, xsa, kernel::avx2_fma, kernel::softmax_row),
        Choice::Portable => run::<6, 16>(
            q,
            k,
            v,
            g,
            xsa,
            kernel::portable::<6, 16>,
            kernel::softmax_row,
        ),
    }
}

/// The work of [`attention`] with an `MR x NR` kernel `kern` and the row softmax `softmax`.
fn run<const MR: usize, const NR: usize>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &AttnGeometry,
    xsa: bool,
    kern: kernel::Kernel,
    softmax: fn(&mut [f32], f32) -> f32,
) -> Vec<f32> {
    let (t_len, hd) = (g.seq, g.head_dim);
    let kw = g.kv_heads * hd;
    let group = g.heads / g.kv_heads;
    let t_pad = t_len.div_ceil(NR) * NR;
    let hd_pad = hd.div_ceil(NR) * NR;
    let scale = 1.0 / (hd as f32).sqrt();
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
    for_each_query_tile(g, TILE, |b, i0, i1, dst| {
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
            gather_queries(q, g, b, i0, m, kvh, |row, src| {
                qt[row * hd..][..hd].copy_from_slice(src)
            });
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
                *iv = 1.0 / softmax(&mut sr[..=last], scale);
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
            write_group(dst, &o, hd_pad, &inv, v, g, b, i0, m, kvh, xsa);
        }
    })
}

/// A new `[B*T, H*hd]` output whose (window `b`, query positions `i0..i1`) tiles of `tile`
/// positions are written by `f(b, i0, i1, dst)` in parallel, `dst` being those positions'
/// rows, zeroed in the tile's own task just before `f` gets them.
pub(super) fn for_each_query_tile<F>(g: &AttnGeometry, tile: usize, f: F) -> Vec<f32>
where
    F: Fn(usize, usize, usize, &mut [f32]) + Sync + Send,
{
    let qw = g.heads * g.head_dim;
    let n = g.batch * g.seq * qw;
    let mut out: Vec<f32> = Vec::with_capacity(n);
    if n > 0 {
        for_each_chunk(&mut out.spare_capacity_mut()[..n], g.seq * qw, |b, win| {
            for_each_chunk(win, tile * qw, |t, dst| {
                let i0 = t * tile;
                f(b, i0, (i0 + tile).min(g.seq), init_default(dst))
            });
        });
    }
    // SAFETY: the windows of `seq·qw` values cover all `n`, their tiles cover each window,
    // and every tile was initialised by `init_default`.
    unsafe { out.set_len(n) };
    out
}

/// Calls `put(row, q_row)` for the queries of KV head `kvh`'s group at positions `i0..i0+m` of
/// window `b`, row = (query head in the group) · m + (position − i0).
pub(super) fn gather_queries(
    q: &[f32],
    g: &AttnGeometry,
    b: usize,
    i0: usize,
    m: usize,
    kvh: usize,
    mut put: impl FnMut(usize, &[f32]),
) {
    let (hd, qw) = (g.head_dim, g.heads * g.head_dim);
    let group = g.heads / g.kv_heads;
    for hs in 0..group {
        let h = kvh * group + hs;
        for r in 0..m {
            let src = (b * g.seq + i0 + r) * qw + h * hd;
            put(hs * m + r, &q[src..src + hd]);
        }
    }
}

/// Writes KV head `kvh`'s group into the tile's output rows `dst`: row `row` of the unnormalised
/// `o` (row stride `o_stride`) times `inv[row]`, then, with XSA, minus its projection on the
/// position's own unit value vector.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_group(
    dst: &mut [f32],
    o: &[f32],
    o_stride: usize,
    inv: &[f32],
    v: &[f32],
    g: &AttnGeometry,
    b: usize,
    i0: usize,
    m: usize,
    kvh: usize,
    xsa: bool,
) {
    let (hd, qw, kw) = (g.head_dim, g.heads * g.head_dim, g.kv_heads * g.head_dim);
    let group = g.heads / g.kv_heads;
    for (row, &iv) in inv.iter().enumerate() {
        let (hs, r) = (row / m, row % m);
        let y = &mut dst[r * qw + (kvh * group + hs) * hd..][..hd];
        let or = &o[row * o_stride..][..hd];
        y.iter_mut().zip(or).for_each(|(a, b)| *a = b * iv);
        if xsa {
            let vt = &v[(b * g.seq + i0 + r) * kw + kvh * hd..][..hd];
            let norm = vt.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            let dot: f32 = y.iter().zip(vt).map(|(a, b)| a * b / norm).sum();
            y.iter_mut().zip(vt).for_each(|(a, b)| *a -= dot * b / norm);
        }
    }
}

/// The `MR x NR` micro-kernels and the softmax row: AVX-512 (8 x 32) and AVX2+FMA (6 x 16)
/// versions chosen at run time on x86-64, a portable one (6 x 16) elsewhere (and for wasm32).
mod kernel {
    use super::super::math::exp;

    /// `c[r][j] = sum_p a[r*lda + p] * b[p*ldb + j]` for `r < MR`, `j < NR`, `p < k`
    /// (`c` row stride `ldc`, overwritten), `MR x NR` being the kernel's block.
    pub type Kernel = fn(usize, &[f32], usize, &[f32], usize, &mut [f32], usize);

    /// The attention kernels, by instruction set.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Choice {
        /// Plain Rust, any CPU.
        Portable,
        /// AVX2 + FMA, 8-lane vectors.
        #[cfg(target_arch = "x86_64")]
        Avx2Fma,
        /// AVX-512F, 16-lane vectors.
        #[cfg(target_arch = "x86_64")]
        Avx512,
    }

    impl Choice {
        /// Every kernel this CPU can run, slowest first.
        pub fn available() -> Vec<Choice> {
            #[allow(unused_mut)]
            let mut v = vec![Choice::Portable];
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    v.push(Choice::Avx2Fma);
                }
                if std::is_x86_feature_detected!("avx512f") {
                    v.push(Choice::Avx512);
                }
            }
            v
        }

        /// The fastest kernel this CPU supports.
        pub fn fastest() -> Choice {
            static FASTEST: std::sync::OnceLock<Choice> = std::sync::OnceLock::new();
            *FASTEST.get_or_init(|| {
                *Choice::available()
                    .last()
                    .expect("portable is always there")
            })
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check<const MR: usize, const NR: usize>(
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        c: &[f32],
        ldc: usize,
    ) {
        if k > 0 {
            assert!((MR - 1) * lda + k <= a.len(), "kernel lhs out of bounds");
            assert!((k - 1) * ldb + NR <= b.len(), "kernel rhs out of bounds");
        }
        assert!((MR - 1) * ldc + NR <= c.len(), "kernel dst out of bounds");
    }

    pub fn portable<const MR: usize, const NR: usize>(
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
    ) {
        check::<MR, NR>(k, a, lda, b, ldb, c, ldc);
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
    pub fn avx2_fma(
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
    ) {
        check::<6, 16>(k, a, lda, b, ldb, c, ldc);
        assert!(
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
            "the AVX2 attention kernel on a CPU without AVX2+FMA"
        );
        // SAFETY: the features were just checked; `check` bounds every index the kernel reads
        // or writes.
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
        let mut acc = [[_mm256_setzero_ps(); 2]; 6];
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

    #[cfg(target_arch = "x86_64")]
    pub fn avx512(
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
    ) {
        check::<8, 32>(k, a, lda, b, ldb, c, ldc);
        assert!(
            std::is_x86_feature_detected!("avx512f"),
            "the AVX-512 attention kernel on a CPU without AVX-512F"
        );
        // SAFETY: the feature was just checked; `check` bounds every index the kernel reads or
        // writes.
        unsafe { avx512_inner(k, a.as_ptr(), lda, b.as_ptr(), ldb, c.as_mut_ptr(), ldc) }
    }

    /// 8 rows x 2 vectors of 16: 16 accumulators, 2 loads of `b` and 8 broadcasts of `a` per
    /// step of `k` for 16 FMAs (FMA-bound on two FMA ports and two load ports).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_inner(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        use std::arch::x86_64::*;
        let mut acc = [[_mm512_setzero_ps(); 2]; 8];
        for p in 0..k {
            let b0 = _mm512_loadu_ps(b.add(p * ldb));
            let b1 = _mm512_loadu_ps(b.add(p * ldb + 16));
            for (r, accr) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * lda + p));
                accr[0] = _mm512_fmadd_ps(av, b0, accr[0]);
                accr[1] = _mm512_fmadd_ps(av, b1, accr[1]);
            }
        }
        for (r, accr) in acc.iter().enumerate() {
            _mm512_storeu_ps(c.add(r * ldc), accr[0]);
            _mm512_storeu_ps(c.add(r * ldc + 16), accr[1]);
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

    /// [`softmax_row`] on AVX-512 (16 lanes, FMAs: another order of the sum and other
    /// roundings, each within a few ulp), else [`softmax_row`].
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

    /// Two passes over the row: the max of the raw scores (`scale > 0`, so it is the max of
    /// the scaled ones), then `e^(scale·x − max)` with one FMA before [`exp_avx512`], stored and
    /// summed. The row's tail is done with masks.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn softmax_row_avx512(x: &mut [f32], scale: f32) -> f32 {
        use super::super::math::exp_avx512;
        use std::arch::x86_64::*;
        debug_assert!(scale > 0.0);
        let (len, ptr) = (x.len(), x.as_mut_ptr());
        let full = len / 16 * 16;
        let tail: __mmask16 = ((1u32 << (len - full)) - 1) as u16;
        let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..full).step_by(16) {
            vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(ptr.add(i)));
        }
        if tail != 0 {
            let v = _mm512_mask_loadu_ps(vmax, tail, ptr.add(full));
            vmax = _mm512_max_ps(vmax, v);
        }
        let mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax) * scale);
        let vs = _mm512_set1_ps(scale);
        let mut sum = _mm512_setzero_ps();
        for i in (0..full).step_by(16) {
            let e = exp_avx512(_mm512_fmsub_ps(_mm512_loadu_ps(ptr.add(i)), vs, mx));
            _mm512_storeu_ps(ptr.add(i), e);
            sum = _mm512_add_ps(sum, e);
        }
        if tail != 0 {
            let v = _mm512_maskz_loadu_ps(tail, ptr.add(full));
            let e = exp_avx512(_mm512_fmsub_ps(v, vs, mx));
            _mm512_mask_storeu_ps(ptr.add(full), tail, e);
            sum = _mm512_mask_add_ps(sum, tail, sum, e);
        }
        _mm512_reduce_add_ps(sum)
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
/// Direct O(T²) attention, one query at a time, with f64 sums: the oracle of the float32
/// kernels (`round` the identity) and of the bf16 ones (`round` to bf16). `round` is applied to
/// `Q`, `K`, `V` and to each probability before its product with `V`; the output is divided by
/// the sum of the unrounded probabilities; XSA in float32 on the result.
#[cfg(test)]
pub(super) fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &AttnGeometry,
    xsa: bool,
    round: fn(f32) -> f32,
) -> Vec<f32> {
    let r = |x: f32| round(x) as f64;
    let (hd, qw, kw) = (g.head_dim, g.heads * g.head_dim, g.kv_heads * g.head_dim);
    let mut out = vec![0.0; g.batch * g.seq * qw];
    for b in 0..g.batch {
        for h in 0..g.heads {
            let kvh = h / (g.heads / g.kv_heads);
            for t in 0..g.seq {
                let qv = &q[(b * g.seq + t) * qw + h * hd..][..hd];
                let sc: Vec<f64> = (0..=t)
                    .map(|j| {
                        let kv = &k[(b * g.seq + j) * kw + kvh * hd..][..hd];
                        qv.iter().zip(kv).map(|(&a, &c)| r(a) * r(c)).sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|s| (s - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                let y = &mut out[(b * g.seq + t) * qw + h * hd..][..hd];
                let mut acc = vec![0.0f64; hd];
                for (j, &pj) in e.iter().enumerate() {
                    let vv = &v[(b * g.seq + j) * kw + kvh * hd..][..hd];
                    let pj = r(pj as f32);
                    acc.iter_mut().zip(vv).for_each(|(a, &c)| *a += pj * r(c));
                }
                y.iter_mut()
                    .zip(&acc)
                    .for_each(|(a, c)| *a = (c / z) as f32);
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

/// Deterministic `q`, `k`, `v` of geometry `g` (values in [-2, 2]) for the attention tests.
#[cfg(test)]
pub(super) fn test_qkv(g: &AttnGeometry) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = g.batch * g.seq;
    let f =
        |len: usize, s: f32| -> Vec<f32> { (0..len).map(|i| (i as f32 * s).sin() * 2.0).collect() };
    (
        f(n * g.heads * g.head_dim, 0.37),
        f(n * g.kv_heads * g.head_dim, 0.91),
        f(n * g.kv_heads * g.head_dim, 0.13),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_rows_match_f64() {
        for len in (1..40).chain([100, 1023, 1024]) {
            let row: Vec<f32> = (0..len).map(|i| (i as f32 * 0.71).sin() * 30.0).collect();
            let scale = 0.125;
            let mx = row
                .iter()
                .map(|&x| (x * scale) as f64)
                .fold(f64::MIN, f64::max);
            let want: Vec<f64> = row
                .iter()
                .map(|&x| ((x * scale) as f64 - mx).exp())
                .collect();
            let want_sum: f64 = want.iter().sum();
            for (name, f) in [
                (
                    "softmax_row",
                    kernel::softmax_row as fn(&mut [f32], f32) -> f32,
                ),
                ("softmax_row_wide", softmax_row_wide),
            ] {
                let mut got = row.clone();
                let sum = f(&mut got, scale);
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g as f64 - w).abs() <= 1e-6 * w.max(1e-30),
                        "{name} len {len} [{i}]: {g} vs {w}"
                    );
                }
                assert!(
                    (sum as f64 - want_sum).abs() <= 1e-6 * want_sum,
                    "{name} len {len}: sum {sum} vs {want_sum}"
                );
            }
        }
    }

    #[test]
    fn matches_naive_across_blocks() {
        // (heads, kv_heads, head_dim): GQA groups of 2, 1 and 4; head_dim below, at and not a
        // multiple of the kernels' widths (16 and 32), and above one width.
        for (heads, kv_heads, head_dim) in
            [(4, 2, 8), (2, 2, 16), (4, 1, 20), (2, 1, 64), (2, 2, 40)]
        {
            for xsa in [false, true] {
                let g = AttnGeometry {
                    batch: 2,
                    seq: 150,
                    heads,
                    kv_heads,
                    head_dim,
                };
                let (q, k, v) = test_qkv(&g);
                let want = reference(&q, &k, &v, &g, xsa, |x| x);
                for choice in Choice::available() {
                    let got = attention_with(choice, &q, &k, &v, &g, xsa);
                    let err = crate::backend::cpu::max_abs_diff(&got, &want);
                    assert!(
                        err < 1e-4,
                        "{choice:?} {heads}/{kv_heads}/{head_dim} xsa={xsa} max err {err}"
                    );
                }
            }
        }
    }
}
