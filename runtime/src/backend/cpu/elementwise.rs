//! Row kernels of the element-wise ops between the matrix products, compiled per instruction
//! set ([`simd::multiversion!`]; the same values on every CPU).
//!
//! Reference semantics, per element `c` of a row:
//! - [`resid_mix_row`]: `out[c] = a[c]·x[c] + b[c]·x0[c]`;
//! - [`add_scaled_row`]: `x[c] += s[c]·y[c]`;
//! - [`activation_row`]: `out[c] = relu(x[c])²`, or with a slope `leaky_relu(x[c], slope)²`;
//! - [`scale_row`]: `x[c] *= s`.

use super::simd::multiversion;

multiversion! {
    /// `out = a ⊙ x + b ⊙ x0`.
    pub fn resid_mix_row(out: &mut [f32], x: &[f32], x0: &[f32], a: &[f32], b: &[f32]) {
        for ((((o, &xv), &x0v), &av), &bv) in out.iter_mut().zip(x).zip(x0).zip(a).zip(b) {
            *o = av * xv + bv * x0v;
        }
    }
}

multiversion! {
    /// `x += s ⊙ y`.
    pub fn add_scaled_row(x: &mut [f32], y: &[f32], s: &[f32]) {
        for ((xv, &yv), &sv) in x.iter_mut().zip(y).zip(s) {
            *xv += sv * yv;
        }
    }
}

multiversion! {
    /// `x *= s`.
    pub fn scale_row(x: &mut [f32], s: f32) {
        x.iter_mut().for_each(|v| *v *= s);
    }
}

multiversion! {
    /// `out = act(x)²` with `act` ReLU (`leaky = None`) or LeakyReLU with that slope.
    pub fn activation_row(out: &mut [f32], x: &[f32], leaky: Option<f32>) {
        match leaky {
            None => out.iter_mut().zip(x).for_each(|(o, &v)| {
                let a = v.max(0.0);
                *o = a * a;
            }),
            Some(slope) => out.iter_mut().zip(x).for_each(|(o, &v)| {
                let a = if v >= 0.0 { v } else { slope * v };
                *o = a * a;
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_match_their_definitions() {
        let n = 37;
        let f = |s: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * s).sin() * 2.0).collect() };
        let (x, x0, a, b) = (f(0.3), f(0.7), f(1.1), f(1.3));
        let mut out = vec![f32::NAN; n];
        resid_mix_row(&mut out, &x, &x0, &a, &b);
        for c in 0..n {
            assert_eq!(out[c], a[c] * x[c] + b[c] * x0[c]);
        }
        let mut y = x.clone();
        add_scaled_row(&mut y, &x0, &a);
        for c in 0..n {
            assert_eq!(y[c], x[c] + a[c] * x0[c]);
        }
        let mut z = x.clone();
        scale_row(&mut z, 0.5);
        for c in 0..n {
            assert_eq!(z[c], x[c] * 0.5);
        }
        activation_row(&mut out, &x, None);
        for c in 0..n {
            assert_eq!(out[c], x[c].max(0.0).powi(2));
        }
        activation_row(&mut out, &x, Some(0.5));
        for c in 0..n {
            let l = if x[c] >= 0.0 { x[c] } else { 0.5 * x[c] };
            assert_eq!(out[c], l * l);
        }
    }
}
