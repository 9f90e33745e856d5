//! The AVX512-BF16 kernel: up to 4 rows x 4 column blocks (64 columns) of float32 accumulators
//! in 16 registers; per bf16 pair of depth, each row's pair is broadcast and multiplied into
//! each block's 16 packed pairs with one `vdpbf16ps`. Reference: [`super::reference_linear`].
//! Also the activations' conversion to bf16 (`vcvtne2ps2bf16`).

use super::{Job, OutPtr, PackedWeight, NB};
use std::arch::x86_64::*;
use std::ops::Range;

/// `src` rounded to bf16 into `dst` (same length), 32 values per instruction. Nearest-even
/// like [`super::to_bf16`], except that the instruction treats float32 subnormal inputs
/// (|v| < 1.2e-38) as zero.
///
/// # Safety
/// The CPU has AVX512F and AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn convert(src: &[f32], dst: &mut [u16]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    // SAFETY: every load/store reads or writes 32 elements at `i < n - 31`.
    unsafe {
        while i + 32 <= n {
            let lo = _mm512_loadu_ps(src.as_ptr().add(i));
            let hi = _mm512_loadu_ps(src.as_ptr().add(i + 16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.as_mut_ptr().add(i) as *mut __m512i, v);
            i += 32;
        }
    }
    for j in i..n {
        dst[j] = super::to_bf16(src[j]);
    }
}

/// Output rows `rows` by the columns of packed column-block pairs `pairs` (those below
/// `job.ncols`), `job.kbs` depth blocks deep.
///
/// # Safety
/// The CPU has AVX512F and AVX512-BF16; `a` holds at least `rows.end` rows of `job.lda` bf16
/// values (`job.lda >= 32 * job.kbs`); `job.kbs` is at most the weight's depth blocks; `out`
/// points at rows of `job.ldo >= job.ncols` floats, at least `rows.end` of them, and no other
/// thread writes these rows x columns meanwhile.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn strip(
    a: &[u16],
    job: &Job,
    rows: Range<usize>,
    pairs: Range<usize>,
    w: &PackedWeight,
    out: OutPtr,
) {
    debug_assert!(a.len() >= rows.end * job.lda);
    let blocks = (2 * pairs.start)..(2 * pairs.end);
    let mut i = rows.start;
    while i < rows.end {
        let r = (rows.end - i).min(4);
        let mut nb = blocks.start;
        while nb < blocks.end {
            let j = if blocks.end - nb >= 4 { 4 } else { 2 };
            // SAFETY: rows i..i+r and column blocks nb..nb+j lie inside the caller's ranges.
            unsafe {
                match (r, j) {
                    (4, 4) => micro::<4, 4>(a, job, i, nb, w, out),
                    (3, 4) => micro::<3, 4>(a, job, i, nb, w, out),
                    (2, 4) => micro::<2, 4>(a, job, i, nb, w, out),
                    (1, 4) => micro::<1, 4>(a, job, i, nb, w, out),
                    (4, _) => micro::<4, 2>(a, job, i, nb, w, out),
                    (3, _) => micro::<3, 2>(a, job, i, nb, w, out),
                    (2, _) => micro::<2, 2>(a, job, i, nb, w, out),
                    _ => micro::<1, 2>(a, job, i, nb, w, out),
                }
            }
            nb += j;
        }
        i += r;
    }
}

/// Rows `i0..i0+R` x column blocks `nb0..nb0+J`.
///
/// # Safety
/// As [`strip`], for these rows and blocks (blocks `< w.col_blocks()`).
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro<const R: usize, const J: usize>(
    a: &[u16],
    job: &Job,
    i0: usize,
    nb0: usize,
    w: &PackedWeight,
    out: OutPtr,
) {
    let (n, k_pad) = (job.ncols, job.lda);
    let mut acc = [[_mm512_setzero_ps(); J]; R];
    let b: [*const u16; J] = std::array::from_fn(|j| w.col_block(nb0 + j).as_ptr());
    let arow: [*const u16; R] = std::array::from_fn(|r| a[(i0 + r) * k_pad..].as_ptr());
    // SAFETY: pair p of a row is at 2p < k_pad; pair row p of a column block is the 32 values
    // at 32p < k_pad * NB (the block's length); output writes are masked to columns < n.
    unsafe {
        for p in 0..job.kbs * super::KB / 2 {
            let bv: [__m512bh; J] = std::array::from_fn(|j| {
                std::mem::transmute(_mm512_loadu_si512(b[j].add(p * 2 * NB) as *const __m512i))
            });
            for r in 0..R {
                let pair = (arow[r].add(2 * p) as *const i32).read_unaligned();
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                for j in 0..J {
                    acc[r][j] = _mm512_dpbf16_ps(acc[r][j], av, bv[j]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            let o = out.0.add((i0 + r) * job.ldo);
            for (j, v) in row.iter().enumerate() {
                let c = (nb0 + j) * NB;
                if c + NB <= n {
                    _mm512_storeu_ps(o.add(c), *v);
                } else if c < n {
                    let mask: __mmask16 = ((1u32 << (n - c)) - 1) as __mmask16;
                    _mm512_mask_storeu_ps(o.add(c), mask, *v);
                }
            }
        }
    }
}
