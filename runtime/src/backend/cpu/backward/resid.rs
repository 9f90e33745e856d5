//! Backward of the element-wise residual ops.
//!
//! * `resid_mix`: `y = a ⊙ x + b ⊙ x0` (`mix = [a; b]`): `dx = a ⊙ dy`, `dx0 = b ⊙ dy`,
//!   `da = Σ_rows dy ⊙ x`, `db = Σ_rows dy ⊙ x0`.
//! * `add_scaled`: `x += s ⊙ y`: `dy = s ⊙ dout`, `ds = Σ_rows dout ⊙ y` (`dx = dout`).

/// `Σ_rows a ⊙ b` over `cols`-wide rows, accumulated in f64.
pub fn col_dot(a: &[f32], b: &[f32], cols: usize) -> Vec<f32> {
    let mut acc = vec![0.0f64; cols];
    for (ra, rb) in a.chunks_exact(cols).zip(b.chunks_exact(cols)) {
        for c in 0..cols {
            acc[c] += (ra[c] * rb[c]) as f64;
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// `s ⊙ dy` row by row.
pub fn scale_cols(dy: &[f32], s: &[f32]) -> Vec<f32> {
    let cols = s.len();
    let mut out = dy.to_vec();
    for r in out.chunks_exact_mut(cols) {
        r.iter_mut().zip(s).for_each(|(v, s)| *v *= s);
    }
    out
}
