//! Parameter-free RMSNorm: `y = x / sqrt(mean(x^2) + eps) * scale` (PyTorch `F.rms_norm`).
//!
//! `mean(x^2)` is summed with [`simd::LANES`] partial sums ([`simd::dot`]), the same order on
//! every CPU; the kernels are compiled per instruction set ([`simd::multiversion!`]).

use super::simd::{self, multiversion};

/// `scale / sqrt(mean(x^2) + eps)`.
#[inline(always)]
pub fn inv_rms(x: &[f32], eps: f32, scale: f32) -> f32 {
    let ms = simd::dot(x, x) / x.len().max(1) as f32;
    scale / (ms + eps).sqrt()
}

multiversion! {
    /// Normalises one vector in place.
    pub fn rms_norm_in_place(x: &mut [f32], eps: f32, scale: f32) {
        let inv = inv_rms(x, eps, scale);
        x.iter_mut().for_each(|v| *v *= inv);
    }
}

multiversion! {
    /// `y = rms_norm(x)`, the same arithmetic as [`rms_norm_in_place`] without a copy of `x`
    /// first.
    pub fn rms_norm_into(x: &[f32], y: &mut [f32], eps: f32, scale: f32) {
        let inv = inv_rms(x, eps, scale);
        y.iter_mut().zip(x).for_each(|(o, v)| *o = v * inv);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_rms() {
        let mut x = vec![3.0, -4.0, 0.0, 1.0];
        super::rms_norm_in_place(&mut x, 0.0, 1.0);
        let ms: f32 = x.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!((ms - 1.0).abs() < 1e-6);
        assert!(x[0] > 0.0 && x[1] < 0.0);
    }

    #[test]
    fn into_equals_in_place_and_f64() {
        for n in [1, 7, 64, 512, 1000] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.77).sin() * 3.0).collect();
            let mut a = x.clone();
            super::rms_norm_in_place(&mut a, 1e-6, 1.5);
            let mut b = vec![f32::NAN; n];
            super::rms_norm_into(&x, &mut b, 1e-6, 1.5);
            assert_eq!(a, b, "n {n}");
            let ms: f64 = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
            let inv = 1.5 / (ms + 1e-6).sqrt();
            for (&g, &v) in a.iter().zip(&x) {
                assert!((g as f64 - v as f64 * inv).abs() < 1e-5, "n {n}");
            }
        }
    }
}
