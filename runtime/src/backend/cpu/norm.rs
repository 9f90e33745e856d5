//! Parameter-free RMSNorm: `y = x / sqrt(mean(x^2) + eps) * scale` (PyTorch `F.rms_norm`).

/// Normalises one vector in place.
pub fn rms_norm_in_place(x: &mut [f32], eps: f32, scale: f32) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32;
    let inv = scale / (ms + eps).sqrt();
    x.iter_mut().for_each(|v| *v *= inv);
}

/// `y = rms_norm(x)`, the same arithmetic as [`rms_norm_in_place`] without a copy of `x` first.
pub fn rms_norm_into(x: &[f32], y: &mut [f32], eps: f32, scale: f32) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32;
    let inv = scale / (ms + eps).sqrt();
    y.iter_mut().zip(x).for_each(|(o, v)| *o = v * inv);
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
}
