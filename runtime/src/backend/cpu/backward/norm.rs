//! `rms_norm` backward. Forward: `y = x · s / r`, `r = sqrt(mean(x²) + eps)`.
//!
//! Reference: `dx = (s / r) · (dy − x · (Σ dy·x) / (n · r²))`.

/// Gradient of one row.
pub fn rms_norm_backward_row(x: &[f32], dy: &[f32], dx: &mut [f32], eps: f32, scale: f32) {
    let n = x.len().max(1) as f32;
    let ms = super::super::simd::dot(x, x) / n; // as the forward sums it
    let r2 = ms + eps;
    let r = r2.sqrt();
    let dot: f32 = x.iter().zip(dy).map(|(a, b)| a * b).sum();
    let k = dot / (n * r2);
    let s = scale / r;
    for ((d, &xi), &gi) in dx.iter_mut().zip(x).zip(dy) {
        *d = s * (gi - xi * k);
    }
}
