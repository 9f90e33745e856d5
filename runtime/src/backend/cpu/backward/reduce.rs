//! Full reductions for the gradients of scalar parameters.
//!
//! Reference: `dot(a, b) = Σ_i a_i · b_i` over all elements (so `x += s · y` gives
//! `ds = dot(dout, y)`), accumulated in f64.

/// `Σ a ⊙ b` in f64.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&a, &b)| a as f64 * b as f64).sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_naive() {
        let a = [1.0f32, -2.0, 0.5, 3.0];
        let b = [0.25f32, 4.0, -2.0, 1.0];
        let mut want = 0.0f64;
        for i in 0..4 {
            want += (a[i] * b[i]) as f64;
        }
        assert_eq!(super::dot(&a, &b), want);
    }
}
