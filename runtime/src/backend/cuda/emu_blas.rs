//! cuBLAS's `sgemm` / `sgemmStridedBatched` for the emulator, written from cuBLAS's definition
//! of the call (see [`BlasGemm`]) and nothing else: column-major storage, `op(A)`/`op(B)`,
//! leading dimensions, batch strides, `alpha`/`beta` (with `C` not read when `beta == 0`),
//! and TF32 (`cvt.rna`) or bf16 (nearest even) operand rounding when the call asks for it. It
//! shares no code with the CPU backend's matrix products, so comparing `CudaBackend<EmuGpu>`
//! with the CPU oracle tests the backend's translation of row-major products into cuBLAS
//! calls ([`BlasGemm::from_row`]) and every launcher's operand order, transposes and offsets.
//!
//! Summation: each output is a dot product over `k` in 16 interleaved fp32 partial sums
//! (fused multiply-adds where the CPU has them), which is neither cuBLAS's order nor the CPU
//! oracle's; the results agree with both to fp32 rounding of a sum, ~1e-6 relative.

use super::gpu::{BlasGemm, GemmMath};
use crate::backend::cpu::par::for_each_chunk;

/// `x` rounded to TF32 (8-bit exponent, 10-bit mantissa), to nearest with ties away from
/// zero: PTX's `cvt.rna.tf32.f32`, as the emulator's tensor-core fragments round.
pub fn round_tf32(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    f32::from_bits(x.to_bits().wrapping_add(0x1000) & !0x1fff)
}

/// `x` rounded to bfloat16 (8-bit exponent, 7-bit stored mantissa), to nearest with ties to
/// even: what PyTorch's `.bfloat16()` and PTX's `cvt.rn.bf16.f32` do, and how the emulator
/// takes cuBLAS's `CUBLAS_COMPUTE_32F_FAST_16BF` to round its operands. NaN stays NaN.
pub fn round_bf16(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let b = x.to_bits();
    let lsb = (b >> 16) & 1;
    f32::from_bits(b.wrapping_add(0x7fff + lsb) & 0xffff_0000)
}

/// Runs `g` on host memory: `a`, `b` and `c` start at the matrices' first elements and hold
/// at least [`BlasGemm::extents`] values (the caller checks with `check_gemm`).
pub fn sgemm(g: &BlasGemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (m, n, k) = (g.m, g.n, g.k);
    if m == 0 || n == 0 {
        return;
    }
    let round = |x: f32| match g.math {
        GemmMath::F32 => x,
        GemmMath::Tf32 => round_tf32(x),
        GemmMath::Bf16 => round_bf16(x),
    };
    for batch in 0..g.batch {
        let (a, b) = (&a[batch * g.stride_a..], &b[batch * g.stride_b..]);
        // op(A) as m rows of k, op(B) as n rows of k: every dot product reads two contiguous
        // rows. `op(X)[r, l]` is `X[r + l·ld]`, or `X[l + r·ld]` when transposed.
        let op_a = |r: usize, l: usize| {
            if g.transa {
                a[l + r * g.lda]
            } else {
                a[r + l * g.lda]
            }
        };
        let op_b = |l: usize, col: usize| {
            if g.transb {
                b[col + l * g.ldb]
            } else {
                b[l + col * g.ldb]
            }
        };
        let pa: Vec<f32> = (0..m * k).map(|i| round(op_a(i / k, i % k))).collect();
        let pb: Vec<f32> = (0..n * k).map(|i| round(op_b(i % k, i / k))).collect();
        let c = &mut c[batch * g.stride_c..];
        let c = &mut c[..(n - 1) * g.ldc + m];
        // One task per block of columns; each column `col` is `c[col·ldc ..][..m]`.
        const COLS: usize = 16;
        for_each_chunk(c, COLS * g.ldc, |blk, cols| {
            for (j, col) in cols.chunks_mut(g.ldc).enumerate() {
                let ci = blk * COLS + j;
                let brow = &pb[ci * k..(ci + 1) * k];
                for (r, out) in col[..m].iter_mut().enumerate() {
                    let s = dot(&pa[r * k..(r + 1) * k], brow);
                    let old = if g.beta == 0.0 { 0.0 } else { g.beta * *out };
                    *out = g.alpha * s + old;
                }
            }
        });
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features `dot_fma` is compiled for.
        return unsafe { dot_fma(a, b) };
    }
    dot_lanes::<false>(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_fma(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes::<true>(a, b)
}

/// 16 partial sums, then a pairwise fold; `FMA` fuses each multiply-add.
#[inline(always)]
fn dot_lanes<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0.0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
            acc[i] = if FMA {
                x[i].mul_add(y[i], acc[i])
            } else {
                acc[i] + x[i] * y[i]
            };
        }
    }
    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[i] = if FMA {
            x.mul_add(*y, acc[i])
        } else {
            acc[i] + x * y
        };
    }
    let mut w = L;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] += acc[i + w];
        }
    }
    acc[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::gpu::RowGemm;

    fn vals(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + 1.0) * seed).sin()).collect()
    }

    /// The row-major product `g` by its definition (f64 sums).
    fn row_ref(g: &RowGemm, a: &[f32], b: &[f32], c0: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; g.m * g.n];
        for r in 0..g.m {
            for cc in 0..g.n {
                let mut s = 0.0f64;
                for l in 0..g.k {
                    let x = if g.a_t {
                        a[l * g.m + r]
                    } else {
                        a[r * g.k + l]
                    };
                    let y = if g.b_t {
                        b[cc * g.k + l]
                    } else {
                        b[l * g.n + cc]
                    };
                    s += x as f64 * y as f64;
                }
                if g.accumulate {
                    s += c0[r * g.n + cc] as f64;
                }
                out[r * g.n + cc] = s as f32;
            }
        }
        out
    }

    /// Every transpose combination, with and without accumulation, through the row-major
    /// translation: the column-major call computes the row-major product.
    #[test]
    fn row_major_products_through_the_cublas_call() {
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (8, 2, 16), (5, 9, 1), (33, 17, 40)] {
            for (a_t, b_t, accumulate) in [
                (false, false, false),
                (false, true, false),
                (true, false, false),
                (true, true, true),
                (false, true, true),
            ] {
                let g = RowGemm {
                    m,
                    n,
                    k,
                    a_t,
                    b_t,
                    accumulate,
                };
                let (a, b) = (vals(m * k, 0.37), vals(n * k, 0.91));
                let c0: Vec<f32> = (0..m * n)
                    .map(|i| if accumulate { i as f32 * 0.5 } else { f32::NAN })
                    .collect();
                let mut c = c0.clone();
                let call = BlasGemm::from_row(&g, GemmMath::F32);
                call.validate().unwrap();
                // cuBLAS's A is our B, its B our A.
                sgemm(&call, &b, &a, &mut c);
                let want = row_ref(&g, &a, &b, &c0);
                for (i, (x, y)) in c.iter().zip(&want).enumerate() {
                    assert!(
                        (x - y).abs() <= 1e-6 * y.abs().max(1.0),
                        "{g:?}: c[{i}] {x} vs {y}"
                    );
                }
            }
        }
        let lin = BlasGemm::from_row(&RowGemm::linear(3, 4, 5), GemmMath::F32);
        assert!(lin.transa && !lin.transb);
        assert_eq!((lin.lda, lin.ldb, lin.ldc), (5, 5, 4));
    }

    /// A wrong leading dimension or transpose flag in the call gives a wrong product (or is
    /// refused by cuBLAS's own argument rules), so a launcher that passes one fails its tests.
    #[test]
    fn wrong_leading_dimensions_and_transposes_are_caught() {
        let g = RowGemm::linear(6, 5, 7);
        let (a, b) = (vals(6 * 7, 0.37), vals(5 * 7, 0.91));
        let want = row_ref(&g, &a, &b, &[]);
        let right = BlasGemm::from_row(&g, GemmMath::F32);
        let run = |call: &BlasGemm| -> Option<Vec<f32>> {
            call.validate().ok()?;
            let [na, nb, _] = call.extents();
            if na > b.len() || nb > a.len() {
                return None; // check_gemm refuses it: reaches past the buffers
            }
            let mut c = vec![f32::NAN; 6 * 5];
            sgemm(call, &b, &a, &mut c);
            Some(c)
        };
        let close = |c: &[f32]| c.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(&run(&right).unwrap()));
        let wrongs = [
            BlasGemm {
                lda: right.lda - 1,
                ..right
            },
            BlasGemm {
                ldb: right.ldb + 1,
                ..right
            },
            BlasGemm {
                transa: !right.transa,
                lda: 5,
                ..right
            },
            BlasGemm {
                transb: !right.transb,
                ldb: 6,
                ..right
            },
        ];
        for w in &wrongs {
            if let Some(c) = run(w) {
                assert!(!close(&c), "{w:?} computed the right product");
            }
        }
    }

    #[test]
    fn strided_batches_beta_and_tf32_rounding() {
        let g = RowGemm::linear(4, 3, 6);
        let one = BlasGemm::from_row(&g, GemmMath::F32);
        let (sa, sb, sc) = (3 * 6 + 2, 4 * 6 + 1, 4 * 3 + 3);
        let call = BlasGemm {
            alpha: 2.0,
            beta: 0.5,
            ..one
        }
        .batched(3, sa, sb, sc);
        let (a, b) = (vals(sa * 3, 0.21), vals(sb * 3, 0.67));
        let c0 = vals(sc * 3, 0.05);
        let mut c = c0.clone();
        sgemm(&call, &a, &b, &mut c);
        for i in 0..3 {
            let mut ci = c0[i * sc..].to_vec();
            sgemm(
                &BlasGemm {
                    alpha: 2.0,
                    beta: 0.5,
                    ..one
                },
                &a[i * sa..],
                &b[i * sb..],
                &mut ci,
            );
            assert_eq!(&c[i * sc..i * sc + 12], &ci[..12], "batch {i}");
            // The padding between batch entries of C is not written.
            assert_eq!(&c[i * sc + 12..i * sc + 15], &c0[i * sc + 12..i * sc + 15]);
        }
        assert_eq!(round_tf32(1.0 + 1.0 / 4096.0), 1.0);
        assert_eq!(round_tf32(1.0 + 3.0 / 2048.0), 1.0 + 2.0 / 1024.0);
        assert_eq!(
            round_tf32(1.0 + 1.0 / 2048.0),
            1.0 + 1.0 / 1024.0,
            "a tie rounds away"
        );
        assert_eq!(round_tf32(-(1.0 + 1.0 / 2048.0)), -(1.0 + 1.0 / 1024.0));
        assert_eq!(round_tf32(-1.5), -1.5);
        let t = BlasGemm {
            math: GemmMath::Tf32,
            ..one
        };
        let mut ct = vec![0.0; 12];
        let mut cf = vec![0.0; 12];
        sgemm(&t, &a, &b, &mut ct);
        sgemm(&one, &a, &b, &mut cf);
        let d = ct
            .iter()
            .zip(&cf)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            d > 0.0 && d < 1e-2,
            "TF32 differs from fp32 by rounding only: {d}"
        );
    }

    /// bf16 rounding is to nearest with ties to even, and agrees with the `half` crate's
    /// conversion (an independent implementation) on a sweep of values, signs and specials.
    #[test]
    fn bf16_rounding_is_nearest_even() {
        let ulp = 1.0 / 128.0;
        assert_eq!(
            round_bf16(1.0 + ulp / 2.0),
            1.0,
            "a tie rounds to the even 1.0"
        );
        assert_eq!(
            round_bf16(1.0 + 1.5 * ulp),
            1.0 + 2.0 * ulp,
            "a tie rounds to even"
        );
        assert_eq!(round_bf16(1.0 + 0.6 * ulp), 1.0 + ulp);
        assert_eq!(round_bf16(-(1.0 + 0.6 * ulp)), -(1.0 + ulp));
        assert_eq!(
            round_bf16(f32::MAX),
            f32::INFINITY,
            "overflows like a conversion"
        );
        assert_eq!(round_bf16(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert!(round_bf16(f32::NAN).is_nan());
        let mut x = 1.0e-30f32;
        while x < 1.0e30 {
            for v in [x, -x, x * 1.000_03, x * 0.999_97] {
                assert_eq!(
                    round_bf16(v).to_bits(),
                    half::bf16::from_f32(v).to_f32().to_bits(),
                    "{v:e}"
                );
            }
            x *= 1.37;
        }
    }

    /// A bf16 call is the product of the bf16-rounded operands (exact products, fp32 sums):
    /// within the fp32 summation bound of that reference, and away from the fp32 product by no
    /// more than the operands' rounding (2 · 2⁻⁹ relative each, summed over k).
    #[test]
    fn bf16_products_round_both_operands() {
        let (m, n, k) = (5, 7, 300);
        let g = RowGemm::linear(m, n, k);
        let (a, b) = (vals(m * k, 0.37), vals(n * k, 0.71));
        let call = BlasGemm::from_row(&g, GemmMath::Bf16);
        let mut got = vec![0.0; m * n];
        // cuBLAS's A is our b (see `from_row`).
        sgemm(&call, &b, &a, &mut got);
        let (ar, br): (Vec<f32>, Vec<f32>) = (
            a.iter().map(|&x| round_bf16(x)).collect(),
            b.iter().map(|&x| round_bf16(x)).collect(),
        );
        let want = row_ref(&g, &ar, &br, &[]);
        let exact = row_ref(&g, &a, &b, &[]);
        let abs_sum = k as f32; // |a|, |b| <= 1
        for i in 0..m * n {
            let d = (got[i] - want[i]).abs();
            assert!(
                d <= k as f32 * f32::EPSILON * abs_sum,
                "{i}: {d:e} from the bf16 reference"
            );
            let e = (got[i] - exact[i]).abs();
            assert!(e <= 2.0 * 2f32.powi(-9) * abs_sum, "{i}: {e:e} from fp32");
        }
        assert!(
            got != exact,
            "bf16 must round: identical to the fp32 product"
        );
    }
}
