//! Muon (spec 5.1): Nesterov momentum, then the update is orthogonalised by five Newton-Schulz
//! iterations and scaled by `sqrt(max(1, rows/cols))`; decoupled weight decay.
//!
//! ```text
//! buf ← μ·buf + g ;  u = g + μ·buf (nesterov) ;  O = NS5(u)
//! p ← p·(1 − lr·wd) − lr·sqrt(max(1, rows/cols))·O
//! NS5: X = u/(‖u‖_F + 1e-7), transposed if rows > cols;  5× { A = X·Xᵀ ; B = b·A + c·A² ; X = a·X + B·X }
//! ```
//! The challenge runs NS in bf16 on the GPU. By default this is the float32 oracle; with
//! [`MuonConfig::bf16`] every intermediate of NS5 and the scaled update are rounded to bf16 in
//! the order `train_gpt.py`'s `zeropower_via_newtonschulz5` computes them (products accumulate
//! in f32, as bf16 tensor-core and CPU matmuls do, then round).

use crate::backend::cpu::optim::{muon_apply, muon_momentum};
pub use crate::backend::cpu::optim::{newton_schulz, newton_schulz_bf16, NS_COEFFS};
use crate::backend::train::TrainBackend;
use crate::{Error, Result};

/// Hyper-parameters (baseline: lr 0.04, momentum 0.95 warmed from 0.85, 5 steps, no decay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MuonConfig {
    pub lr: f32,
    pub momentum: f32,
    pub ns_steps: usize,
    pub nesterov: bool,
    pub weight_decay: f32,
    /// Emulate the challenge's bf16 Newton-Schulz (and bf16 update buffer); float32 when off.
    pub bf16: bool,
}

impl Default for MuonConfig {
    fn default() -> Self {
        MuonConfig {
            lr: 0.04,
            momentum: 0.95,
            ns_steps: 5,
            nesterov: true,
            weight_decay: 0.0,
            bf16: false,
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

/// Where [`Muon::step_with`] runs Newton-Schulz: on the host ([`HostNs`]) or on a training
/// backend's device ([`OnBackend`]), where the GEMMs are fast (the challenge's ~2e11 flops of
/// NS per step of the 9-layer baseline are most of a CPU step).
pub trait NewtonSchulz {
    /// [`newton_schulz`] of `u` `[rows, cols]`, or [`newton_schulz_bf16`] when `bf16`.
    fn orthogonalize(
        &self,
        u: &[f32],
        rows: usize,
        cols: usize,
        steps: usize,
        bf16: bool,
    ) -> Result<Vec<f32>>;
}

/// Newton-Schulz on the host: the oracle functions of this module.
pub struct HostNs;

impl NewtonSchulz for HostNs {
    fn orthogonalize(
        &self,
        u: &[f32],
        rows: usize,
        cols: usize,
        steps: usize,
        bf16: bool,
    ) -> Result<Vec<f32>> {
        Ok(if bf16 {
            newton_schulz_bf16(u, rows, cols, steps)
        } else {
            newton_schulz(u, rows, cols, steps)
        })
    }
}

/// Newton-Schulz on a backend: upload, [`TrainBackend::newton_schulz`], download.
pub struct OnBackend<'a, B>(pub &'a B);

impl<B: TrainBackend> NewtonSchulz for OnBackend<'_, B> {
    fn orthogonalize(
        &self,
        u: &[f32],
        rows: usize,
        cols: usize,
        steps: usize,
        bf16: bool,
    ) -> Result<Vec<f32>> {
        let t = self.0.upload(u, rows, cols)?;
        let o = self.0.newton_schulz(&t, steps, bf16)?;
        self.0.download(&o)
    }
}

/// Muon's update scale `sqrt(max(1, rows/cols))`.
pub fn shape_scale(rows: usize, cols: usize) -> f32 {
    (rows as f32 / cols as f32).max(1.0).sqrt()
}

impl Muon {
    pub fn new(cfg: MuonConfig) -> Self {
        Muon {
            cfg,
            bufs: Vec::new(),
        }
    }

    /// One update of `params` with `grads` (same order every call), Newton-Schulz on the host.
    pub fn step(&mut self, params: &mut [MatrixParam], grads: &[&[f32]]) -> Result<()> {
        self.step_with(&HostNs, params, grads)
    }

    /// [`Muon::step`] with Newton-Schulz run by `ns`.
    pub fn step_with(
        &mut self,
        ns: &dyn NewtonSchulz,
        params: &mut [MatrixParam],
        grads: &[&[f32]],
    ) -> Result<()> {
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
            bf16,
        } = self.cfg;
        for ((p, g), buf) in params.iter_mut().zip(grads).zip(&mut self.bufs) {
            let u = muon_momentum(buf, g, mu, nesterov);
            // With bf16, `g *= sqrt(max(1, rows/cols))` on the bf16 NS output is rounded to bf16,
            // then `p -= lr·g` in f32.
            let o = ns.orthogonalize(&u, p.rows, p.cols, ns_steps, bf16)?;
            muon_apply(
                p.values,
                &o,
                1.0 - lr * weight_decay,
                lr,
                shape_scale(p.rows, p.cols),
                bf16,
            );
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
            bf16: false,
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
