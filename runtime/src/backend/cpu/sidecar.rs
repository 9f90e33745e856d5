//! The two element-wise ops of the shared sparse sidecar (PR #555/#581) and their backwards,
//! the float32 oracles behind [`crate::backend::Backend::causal_conv`],
//! [`crate::backend::Backend::silu_gate`] and their `TrainBackend` backwards (every backend
//! runs these by default).
//!
//! Reference semantics, on `[rows, cols]` row-major values cut into windows of `seq` rows:
//! - [`causal_conv`]: a depthwise causal convolution of kernel `k` along each window,
//!   `y[t, c] = Σ_j w[c, j] · x[t − (k−1) + j, c]`, terms before the window's first row being
//!   zero: PyTorch's `Conv1d(groups=cols, bias=False)` after `F.pad(x, (k−1, 0))`, `w` being
//!   its `[cols, 1, k]` weight;
//! - [`silu_gate`]: `y = silu(pre + bias) ⊙ v` with a per-column `bias` (`silu(a) = a·σ(a)`).
//!
//! Backwards: `dx[s, c] = Σ_j w[c, j] · dy[s + (k−1) − j, c]` (rows inside the window) and
//! `dw[c, j] = Σ_t dy[t, c] · x[t − (k−1) + j, c]`; for the gate, with `a = pre + bias`,
//! `dpre = dy ⊙ v ⊙ σ(a)(1 + a(1 − σ(a)))`, `dbias = Σ_rows dpre`, `dv = dy ⊙ silu(a)`.

use super::par;
use crate::{Error, Result};

/// Checks `x [rows, cols]` cut into windows of `seq` against a `[cols, k]` kernel.
fn check_conv(rows: usize, cols: usize, x: usize, w: (usize, usize), seq: usize) -> Result<()> {
    if x != rows * cols || w.0 != cols || w.1 == 0 {
        return Err(Error::Backend(format!(
            "causal_conv: a {rows}x{cols} input needs a [{cols}, k] kernel, got [{}, {}]",
            w.0, w.1
        )));
    }
    if seq == 0 || !rows.is_multiple_of(seq) {
        return Err(Error::Backend(format!(
            "causal_conv: {rows} rows is not a whole number of windows of {seq}"
        )));
    }
    Ok(())
}

/// The taps of output row `t`: `(j, t − (k−1) + j)` for each input row inside `t`'s window.
fn taps(t: usize, k: usize, seq: usize) -> impl Iterator<Item = (usize, usize)> {
    let p = t % seq;
    (0..k).filter_map(move |j| {
        let back = k - 1 - j;
        (back <= p).then(|| (j, t - back))
    })
}

/// The output rows that read input row `s`: `(j, s + (k−1) − j)` for each inside `s`'s window.
fn readers(s: usize, k: usize, seq: usize) -> impl Iterator<Item = (usize, usize)> {
    let p = s % seq;
    (0..k).filter_map(move |j| {
        let fwd = k - 1 - j;
        (p + fwd < seq).then(|| (j, s + fwd))
    })
}

/// `y [rows, cols]` of the causal depthwise convolution of `x` by `w [cols, k]`.
pub fn causal_conv(
    x: &[f32],
    rows: usize,
    cols: usize,
    w: &[f32],
    k: usize,
    seq: usize,
) -> Result<Vec<f32>> {
    check_conv(rows, cols, x.len(), (w.len() / k.max(1), k), seq)?;
    let mut y = vec![0.0f32; rows * cols];
    par::for_each_row(&mut y, cols, |t, out| {
        for (j, src) in taps(t, k, seq) {
            let xr = &x[src * cols..(src + 1) * cols];
            for c in 0..cols {
                out[c] += w[c * k + j] * xr[c];
            }
        }
    });
    Ok(y)
}

/// `(dx [rows, cols], dw [cols, k])` of [`causal_conv`] given its input `x` and `dy`.
pub fn causal_conv_backward(
    x: &[f32],
    rows: usize,
    cols: usize,
    w: &[f32],
    k: usize,
    dy: &[f32],
    seq: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    check_conv(rows, cols, x.len(), (w.len() / k.max(1), k), seq)?;
    if dy.len() != x.len() {
        return Err(Error::Backend(
            "causal_conv_backward: dy and x differ in shape".into(),
        ));
    }
    let mut dx = vec![0.0f32; rows * cols];
    par::for_each_row(&mut dx, cols, |s, out| {
        for (j, dst) in readers(s, k, seq) {
            let dr = &dy[dst * cols..(dst + 1) * cols];
            for c in 0..cols {
                out[c] += w[c * k + j] * dr[c];
            }
        }
    });
    let mut acc = vec![0.0f64; cols * k];
    for t in 0..rows {
        let dr = &dy[t * cols..(t + 1) * cols];
        for (j, src) in taps(t, k, seq) {
            let xr = &x[src * cols..(src + 1) * cols];
            for c in 0..cols {
                acc[c * k + j] += dr[c] as f64 * xr[c] as f64;
            }
        }
    }
    Ok((dx, acc.into_iter().map(|v| v as f32).collect()))
}

fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + (-a).exp())
}

fn check_gate(pre: usize, bias: usize, v: usize, op: &str) -> Result<()> {
    if bias == 0 || pre != v || !pre.is_multiple_of(bias) {
        return Err(Error::Backend(format!(
            "{op}: {pre} gate values, {v} values and a bias of {bias} do not line up"
        )));
    }
    Ok(())
}

/// `silu(pre + bias) ⊙ v`, `bias` one value per column.
pub fn silu_gate(pre: &[f32], bias: &[f32], v: &[f32]) -> Result<Vec<f32>> {
    check_gate(pre.len(), bias.len(), v.len(), "silu_gate")?;
    let cols = bias.len();
    let mut y = vec![0.0f32; pre.len()];
    par::for_each_row(&mut y, cols, |r, out| {
        let (p, vr) = (&pre[r * cols..][..cols], &v[r * cols..][..cols]);
        for c in 0..cols {
            let a = p[c] + bias[c];
            out[c] = a * sigmoid(a) * vr[c];
        }
    });
    Ok(y)
}

/// `(dpre, dbias [cols], dv)` of [`silu_gate`].
pub fn silu_gate_backward(
    pre: &[f32],
    bias: &[f32],
    v: &[f32],
    dy: &[f32],
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    check_gate(pre.len(), bias.len(), v.len(), "silu_gate_backward")?;
    if dy.len() != pre.len() {
        return Err(Error::Backend(
            "silu_gate_backward: dy and the gate differ in shape".into(),
        ));
    }
    let cols = bias.len();
    let (mut dpre, mut dv) = (vec![0.0f32; pre.len()], vec![0.0f32; pre.len()]);
    for i in 0..pre.len() {
        let a = pre[i] + bias[i % cols];
        let s = sigmoid(a);
        dpre[i] = dy[i] * v[i] * s * (1.0 + a * (1.0 - s));
        dv[i] = dy[i] * a * s;
    }
    let mut acc = vec![0.0f64; cols];
    for r in dpre.chunks_exact(cols) {
        for (a, &d) in acc.iter_mut().zip(r) {
            *a += d as f64;
        }
    }
    Ok((dpre, acc.into_iter().map(|v| v as f32).collect(), dv))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(n: usize, s: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + 1.0) * s).sin()).collect()
    }

    /// The convolution written as PyTorch does it: pad each window by `k-1` zeros on the left,
    /// then a cross-correlation (f64).
    fn conv_naive(
        x: &[f32],
        rows: usize,
        cols: usize,
        w: &[f32],
        k: usize,
        seq: usize,
    ) -> Vec<f64> {
        let mut y = vec![0.0f64; rows * cols];
        for win in 0..rows / seq {
            for c in 0..cols {
                let mut padded = vec![0.0f64; k - 1];
                padded.extend((0..seq).map(|p| x[(win * seq + p) * cols + c] as f64));
                for p in 0..seq {
                    y[(win * seq + p) * cols + c] =
                        (0..k).map(|j| w[c * k + j] as f64 * padded[p + j]).sum();
                }
            }
        }
        y
    }

    #[test]
    fn conv_matches_padded_cross_correlation_and_stays_in_its_window() {
        let (rows, cols, k, seq) = (8, 3, 3, 4);
        let (x, w) = (vals(rows * cols, 0.37), vals(cols * k, 0.91));
        let y = causal_conv(&x, rows, cols, &w, k, seq).unwrap();
        let want = conv_naive(&x, rows, cols, &w, k, seq);
        for (a, b) in y.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
        // Window 1's first row sees only itself: nothing leaks from window 0.
        let r = seq * cols;
        for c in 0..cols {
            assert!((y[r + c] - w[c * k + k - 1] * x[r + c]).abs() < 1e-7);
        }
    }

    /// Central differences of `L = Σ g ⊙ f(...)` in f64 against the analytic backward.
    #[test]
    fn conv_backward_matches_finite_differences() {
        let (rows, cols, k, seq) = (6, 2, 3, 3);
        let (x, w, g) = (
            vals(rows * cols, 0.53),
            vals(cols * k, 1.7),
            vals(rows * cols, 0.29),
        );
        let loss = |x: &[f32], w: &[f32]| -> f64 {
            conv_naive(x, rows, cols, w, k, seq)
                .iter()
                .zip(&g)
                .map(|(a, &b)| a * b as f64)
                .sum()
        };
        let (dx, dw) = causal_conv_backward(&x, rows, cols, &w, k, &g, seq).unwrap();
        let h = 1e-3f32;
        for i in 0..x.len() {
            let (mut p, mut m) = (x.clone(), x.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (loss(&p, &w) - loss(&m, &w)) / (2.0 * h as f64);
            assert!(
                (fd - dx[i] as f64).abs() < 1e-4,
                "dx[{i}]: {fd} vs {}",
                dx[i]
            );
        }
        for i in 0..w.len() {
            let (mut p, mut m) = (w.clone(), w.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (loss(&x, &p) - loss(&x, &m)) / (2.0 * h as f64);
            assert!(
                (fd - dw[i] as f64).abs() < 1e-4,
                "dw[{i}]: {fd} vs {}",
                dw[i]
            );
        }
    }

    #[test]
    fn gate_backward_matches_finite_differences() {
        let (rows, cols) = (4, 3);
        let (pre, bias, v, g) = (
            vals(rows * cols, 0.8),
            vals(cols, 2.1),
            vals(rows * cols, 0.45),
            vals(rows * cols, 0.33),
        );
        let loss = |pre: &[f32], bias: &[f32], v: &[f32]| -> f64 {
            (0..pre.len())
                .map(|i| {
                    let a = (pre[i] + bias[i % cols]) as f64;
                    a / (1.0 + (-a).exp()) * v[i] as f64 * g[i] as f64
                })
                .sum()
        };
        let y = silu_gate(&pre, &bias, &v).unwrap();
        assert!(
            (y[4] as f64 - {
                let a = (pre[4] + bias[1]) as f64;
                a / (1.0 + (-a).exp()) * v[4] as f64
            })
            .abs()
                < 1e-6
        );
        let (dpre, dbias, dv) = silu_gate_backward(&pre, &bias, &v, &g).unwrap();
        let h = 1e-3f32;
        let fd = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / (2.0 * h as f64);
        for i in 0..pre.len() {
            let d = fd(&|e| {
                let mut p = pre.clone();
                p[i] += e;
                loss(&p, &bias, &v)
            });
            assert!((d - dpre[i] as f64).abs() < 1e-4, "dpre[{i}]");
            let d = fd(&|e| {
                let mut q = v.clone();
                q[i] += e;
                loss(&pre, &bias, &q)
            });
            assert!((d - dv[i] as f64).abs() < 1e-4, "dv[{i}]");
        }
        for c in 0..cols {
            let d = fd(&|e| {
                let mut b = bias.clone();
                b[c] += e;
                loss(&pre, &b, &v)
            });
            assert!((d - dbias[c] as f64).abs() < 1e-4, "dbias[{c}]");
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(causal_conv(&[0.0; 6], 3, 2, &[0.0; 6], 3, 2).is_err());
        assert!(causal_conv(&[0.0; 6], 3, 2, &[0.0; 4], 2, 3).is_ok());
        assert!(causal_conv(&[0.0; 6], 3, 2, &[0.0; 3], 3, 3).is_err());
        assert!(silu_gate(&[0.0; 6], &[0.0; 4], &[0.0; 6]).is_err());
        assert!(silu_gate(&[0.0; 6], &[0.0; 3], &[0.0; 5]).is_err());
    }
}
