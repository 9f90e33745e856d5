//! Muon (spec 5.1): Nesterov momentum, then the update is orthogonalised by five Newton-Schulz
//! iterations and scaled by `sqrt(max(1, rows/cols))`; decoupled weight decay.
//!
//! ```text
//! buf ← μ·buf + g ;  u = g + μ·buf (nesterov) ;  O = NS5(u)
//! p ← p·(1 − lr·wd) − lr·sqrt(max(1, rows/cols))·O
//! NS5: X = u/(‖u‖_F + 1e-7), transposed if rows > cols;  5× { A = X·Xᵀ ; B = b·A + c·A² ; X = a·X + B·X }
//! ```
//! The challenge runs NS in bf16 on the GPU; this is the float32 oracle.

use crate::backend::cpu::matmul::{gemm_into, View};
use crate::backend::cpu::par::gemm_parallelism;
use crate::{Error, Result};

/// The quintic's coefficients `(a, b, c)`.
pub const NS_COEFFS: (f32, f32, f32) = (3.4445, -4.7750, 2.0315);

/// Hyper-parameters (baseline: lr 0.04, momentum 0.95 warmed from 0.85, 5 steps, no decay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MuonConfig {
    pub lr: f32,
    pub momentum: f32,
    pub ns_steps: usize,
    pub nesterov: bool,
    pub weight_decay: f32,
}

impl Default for MuonConfig {
    fn default() -> Self {
        MuonConfig {
            lr: 0.04,
            momentum: 0.95,
            ns_steps: 5,
            nesterov: true,
            weight_decay: 0.0,
        }
    }
}

/// Muon state: one momentum buffer per matrix.
#[derive(Debug, Clone)]
pub struct Muon {
    pub cfg: MuonConfig,
    pub(crate) bufs: Vec<Vec<f32>>,
}

/// One matrix parameter for [`Muon::step`]: row-major values and their shape.
pub struct MatrixParam<'a> {
    pub values: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
}

fn view(data: &[f32], rs: usize, cs: usize) -> View<'_> {
    View {
        data,
        offset: 0,
        rs,
        cs,
    }
}

/// `out[m×n] = a[m×k] · b[k×n]` with row-major or transposed operands given by strides.
fn mm(m: usize, n: usize, k: usize, a: View, b: View) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    gemm_into(m, n, k, a, b, &mut out, 0, n, false, gemm_parallelism());
    out
}

/// Newton-Schulz orthogonalisation of a `rows × cols` matrix (row-major), `steps` iterations.
pub fn newton_schulz(g: &[f32], rows: usize, cols: usize, steps: usize) -> Vec<f32> {
    let (a, b, c) = NS_COEFFS;
    let norm = g
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt() as f32;
    let inv = 1.0 / (norm + 1e-7);
    // Work on the wide orientation (r ≤ c) so X·Xᵀ is the small r×r product.
    let transposed = rows > cols;
    let (r, c_) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let mut x: Vec<f32> = if transposed {
        let mut t = vec![0.0; r * c_];
        for i in 0..rows {
            for j in 0..cols {
                t[j * rows + i] = g[i * cols + j] * inv;
            }
        }
        t
    } else {
        g.iter().map(|&v| v * inv).collect()
    };
    for _ in 0..steps {
        // A = X·Xᵀ  [r×r]
        let am = mm(r, r, c_, view(&x, c_, 1), view(&x, 1, c_));
        // A² (A is symmetric)
        let a2 = mm(r, r, r, view(&am, r, 1), view(&am, r, 1));
        let bm: Vec<f32> = am.iter().zip(&a2).map(|(&p, &q)| b * p + c * q).collect();
        // X = a·X + B·X
        let bx = mm(r, c_, r, view(&bm, r, 1), view(&x, c_, 1));
        x.iter_mut().zip(&bx).for_each(|(xv, &d)| *xv = a * *xv + d);
    }
    if transposed {
        let mut t = vec![0.0; rows * cols];
        for i in 0..r {
            for j in 0..c_ {
                t[j * cols + i] = x[i * c_ + j];
            }
        }
        t
    } else {
        x
    }
}

impl Muon {
    pub fn new(cfg: MuonConfig) -> Self {
        Muon {
            cfg,
            bufs: Vec::new(),
        }
    }

    /// One update of `params` with `grads` (same order every call).
    pub fn step(&mut self, params: &mut [MatrixParam], grads: &[&[f32]]) -> Result<()> {
        if params.len() != grads.len()
            || params
                .iter()
                .zip(grads)
                .any(|(p, g)| p.values.len() != g.len() || p.rows * p.cols != g.len())
        {
            return Err(Error::Usage("muon: params and grads differ".into()));
        }
        if self.bufs.is_empty() {
            self.bufs = grads.iter().map(|g| vec![0.0; g.len()]).collect();
        }
        let MuonConfig {
            lr,
            momentum: mu,
            ns_steps,
            nesterov,
            weight_decay,
        } = self.cfg;
        for ((p, g), buf) in params.iter_mut().zip(grads).zip(&mut self.bufs) {
            buf.iter_mut()
                .zip(g.iter())
                .for_each(|(b, &g)| *b = mu * *b + g);
            let u: Vec<f32> = if nesterov {
                g.iter()
                    .zip(buf.iter())
                    .map(|(&g, &b)| g + mu * b)
                    .collect()
            } else {
                buf.clone()
            };
            let o = newton_schulz(&u, p.rows, p.cols, ns_steps);
            let scale = lr * (p.rows as f32 / p.cols as f32).max(1.0).sqrt();
            let decay = 1.0 - lr * weight_decay;
            p.values
                .iter_mut()
                .zip(&o)
                .for_each(|(w, &o)| *w = *w * decay - scale * o);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_ns(g: &[f32], rows: usize, cols: usize, steps: usize) -> Vec<f64> {
        let (a, b, c) = (3.4445f64, -4.7750f64, 2.0315f64);
        let n = g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() + 1e-7;
        let tr = rows > cols;
        let (r, k) = if tr { (cols, rows) } else { (rows, cols) };
        let at = |i: usize, j: usize| if tr { g[j * cols + i] } else { g[i * cols + j] };
        let mut x: Vec<f64> = (0..r * k).map(|e| at(e / k, e % k) as f64 / n).collect();
        for _ in 0..steps {
            let mut am = vec![0.0; r * r];
            for i in 0..r {
                for j in 0..r {
                    am[i * r + j] = (0..k).map(|t| x[i * k + t] * x[j * k + t]).sum();
                }
            }
            let mut bm = vec![0.0; r * r];
            for i in 0..r {
                for j in 0..r {
                    let a2: f64 = (0..r).map(|t| am[i * r + t] * am[t * r + j]).sum();
                    bm[i * r + j] = b * am[i * r + j] + c * a2;
                }
            }
            let mut nx = vec![0.0; r * k];
            for i in 0..r {
                for j in 0..k {
                    let bx: f64 = (0..r).map(|t| bm[i * r + t] * x[t * k + j]).sum();
                    nx[i * k + j] = a * x[i * k + j] + bx;
                }
            }
            x = nx;
        }
        (0..rows * cols)
            .map(|e| {
                let (i, j) = (e / cols, e % cols);
                if tr {
                    x[j * k + i]
                } else {
                    x[i * k + j]
                }
            })
            .collect()
    }

    fn sample(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn newton_schulz_matches_a_naive_f64_reference_both_orientations() {
        for (rows, cols) in [(12, 20), (20, 12), (16, 16)] {
            let g = sample(rows * cols, 7);
            let got = newton_schulz(&g, rows, cols, 5);
            let want = naive_ns(&g, rows, cols, 5);
            for (a, b) in got.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-4, "{rows}x{cols}: {a} vs {b}");
            }
            // Approximately orthogonal: the rows of the wide orientation have norms near 1
            // (the quintic lands singular values in roughly [0.7, 1.2]).
            let (r, k) = (rows.min(cols), rows.max(cols));
            for i in 0..r {
                let n2: f32 = (0..k)
                    .map(|t| {
                        let v = if rows > cols {
                            got[t * cols + i]
                        } else {
                            got[i * cols + t]
                        };
                        v * v
                    })
                    .sum();
                assert!((0.3..1.6).contains(&n2), "row {i} norm² {n2}");
            }
        }
    }

    #[test]
    fn step_applies_nesterov_momentum_scale_and_decay() {
        let (rows, cols) = (8, 4);
        let g = sample(rows * cols, 3);
        let mut w = sample(rows * cols, 11);
        let w0 = w.clone();
        let cfg = MuonConfig {
            lr: 0.1,
            momentum: 0.9,
            ns_steps: 5,
            nesterov: true,
            weight_decay: 0.5,
        };
        let mut opt = Muon::new(cfg);
        opt.step(
            &mut [MatrixParam {
                values: &mut w,
                rows,
                cols,
            }],
            &[&g],
        )
        .unwrap();
        // buf = g, u = g + 0.9·g = 1.9·g; NS is scale invariant.
        let o = newton_schulz(&g, rows, cols, 5);
        let s = 0.1 * 2f32.sqrt();
        for i in 0..w.len() {
            let want = w0[i] * (1.0 - 0.05) - s * o[i];
            assert!((w[i] - want).abs() < 1e-5, "{i}: {} vs {want}", w[i]);
        }
        assert!(opt
            .step(
                &mut [MatrixParam {
                    values: &mut w,
                    rows,
                    cols
                }],
                &[&g[1..]]
            )
            .is_err());
    }
}
