//! `smear` backward (SmearGate, spec 4.3 variant B).
//!
//! Reference: the forward is `y_t = (1 − g) ⊙ x_t + g ⊙ x_{t−1}` within each window of `seq`
//! rows (`x_{−1} = 0` at a window's first row), `g = sigmoid(gate)`. Then
//! `dx_t = (1 − g) ⊙ dy_t + g ⊙ dy_{t+1}` (no second term at a window's last row) and
//! `dgate = g (1 − g) ⊙ Σ_t dy_t ⊙ (x_{t−1} − x_t)`.

use super::super::par;

/// `(dx [rows, cols], dgate [cols])` of the smear over `cols`-wide rows in windows of `seq`.
pub fn smear_backward(x: &[f32], gate: &[f32], dy: &[f32], seq: usize) -> (Vec<f32>, Vec<f32>) {
    let cols = gate.len();
    let g: Vec<f32> = gate.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
    let mut dx = dy.to_vec();
    par::for_each_row(&mut dx, cols, |i, r| {
        let next = (i % seq + 1 < seq).then(|| &dy[(i + 1) * cols..(i + 2) * cols]);
        for c in 0..cols {
            r[c] *= 1.0 - g[c];
            if let Some(n) = next {
                r[c] += g[c] * n[c];
            }
        }
    });
    let mut acc = vec![0.0f64; cols];
    for (i, (xr, dr)) in x.chunks_exact(cols).zip(dy.chunks_exact(cols)).enumerate() {
        let prev = (i % seq != 0).then(|| &x[(i - 1) * cols..i * cols]);
        for c in 0..cols {
            let p = prev.map_or(0.0, |p| p[c]);
            acc[c] += dr[c] as f64 * (p - xr[c]) as f64;
        }
    }
    let dgate = acc
        .iter()
        .zip(&g)
        .map(|(a, &g)| (a * (g as f64) * (1.0 - g as f64)) as f32)
        .collect();
    (dx, dgate)
}

#[cfg(test)]
mod tests {
    /// The forward, naively, in f64.
    fn smear(x: &[f64], gate: &[f64], seq: usize) -> Vec<f64> {
        let cols = gate.len();
        (0..x.len())
            .map(|k| {
                let (i, c) = (k / cols, k % cols);
                let g = 1.0 / (1.0 + (-gate[c]).exp());
                let prev = if i % seq == 0 { 0.0 } else { x[k - cols] };
                (1.0 - g) * x[k] + g * prev
            })
            .collect()
    }

    #[test]
    fn matches_finite_differences() {
        let (rows, cols, seq) = (6, 3, 3);
        let x: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.7).sin()).collect();
        let gate: Vec<f32> = (0..cols).map(|i| (i as f32 * 1.3).cos()).collect();
        let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.4).cos()).collect();
        let (dx, dg) = super::smear_backward(&x, &gate, &w, seq);
        let loss = |x: &[f64], g: &[f64]| -> f64 {
            smear(x, g, seq)
                .iter()
                .zip(&w)
                .map(|(y, w)| y * *w as f64)
                .sum()
        };
        let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let gf: Vec<f64> = gate.iter().map(|&v| v as f64).collect();
        let h = 1e-6;
        for k in 0..x.len() {
            let (mut p, mut m) = (xf.clone(), xf.clone());
            p[k] += h;
            m[k] -= h;
            let num = (loss(&p, &gf) - loss(&m, &gf)) / (2.0 * h);
            assert!((num - dx[k] as f64).abs() < 1e-5, "dx[{k}]");
        }
        for c in 0..cols {
            let (mut p, mut m) = (gf.clone(), gf.clone());
            p[c] += h;
            m[c] -= h;
            let num = (loss(&xf, &p) - loss(&xf, &m)) / (2.0 * h);
            assert!((num - dg[c] as f64).abs() < 1e-5, "dgate[{c}]");
        }
    }
}
