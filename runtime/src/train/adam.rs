//! Optimisers over flat parameter slices: Adam (spec 5.2: `m ← β1 m + (1−β1) g`,
//! `v ← β2 v + (1−β2) g²`, `p ← p − lr · (m / (1−β1ᵗ)) / (sqrt(v / (1−β2ᵗ)) + eps)`, as
//! `torch.optim.Adam`), AdamW (decoupled decay `p ← p (1 − lr·wd)` first) and plain SGD.

use crate::backend::cpu::optim::{adam_update, AdamStep, SgdStep};
use crate::backend::train::TrainBackend;
use crate::{Error, Result};

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    Adam,
    AdamW { weight_decay: f32 },
    Sgd,
}

impl std::str::FromStr for OptimizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "adam" => Ok(OptimizerKind::Adam),
            "adamw" => Ok(OptimizerKind::AdamW { weight_decay: 0.01 }),
            "sgd" => Ok(OptimizerKind::Sgd),
            _ => Err(Error::Usage(format!(
                "unknown optimizer {s:?} (adam, adamw, sgd)"
            ))),
        }
    }
}

/// Hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    pub kind: OptimizerKind,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl Default for AdamConfig {
    /// The LoRA TTT recipe: Adam lr 0.01, betas (0.9, 0.95), eps 1e-10.
    fn default() -> Self {
        AdamConfig {
            kind: OptimizerKind::Adam,
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-10,
        }
    }
}

/// Optimiser state for a list of parameter slices.
#[derive(Debug, Clone)]
pub struct Adam {
    pub cfg: AdamConfig,
    pub step: u64,
    pub(crate) m: Vec<Vec<f32>>,
    pub(crate) v: Vec<Vec<f32>>,
}

impl Adam {
    pub fn new(cfg: AdamConfig) -> Self {
        Adam {
            cfg,
            step: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }

    /// Zeroes the moments and the step count.
    pub fn reset(&mut self) {
        self.step = 0;
        self.m.clear();
        self.v.clear();
    }

    /// The factors of the current step (`self.step` already counted): bias corrections in f64
    /// as `torch.optim.Adam` computes them, then rounded to f32.
    pub fn factors(&self) -> AdamStep {
        factors(&self.cfg, self.step)
    }

    /// One update of `params` with `grads` (same lengths, same order every call).
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) -> Result<()> {
        if params.len() != grads.len() || params.iter().zip(grads).any(|(p, g)| p.len() != g.len())
        {
            return Err(Error::Usage("optimizer: params and grads differ".into()));
        }
        if self.m.is_empty() {
            self.m = params.iter().map(|p| vec![0.0; p.len()]).collect();
            self.v = self.m.clone();
        }
        self.step += 1;
        let c = self.cfg;
        match c.kind {
            OptimizerKind::Sgd => {
                for (p, g) in params.iter_mut().zip(grads) {
                    p.iter_mut().zip(g.iter()).for_each(|(p, g)| *p -= c.lr * g);
                }
            }
            OptimizerKind::Adam | OptimizerKind::AdamW { .. } => {
                let s = self.factors();
                for ((p, g), (m, v)) in params
                    .iter_mut()
                    .zip(grads)
                    .zip(self.m.iter_mut().zip(self.v.iter_mut()))
                {
                    adam_update(p, g, m, v, &s);
                }
            }
        }
        Ok(())
    }
}

/// The factors of step `step` (counted from 1) of `c`: bias corrections in f64 as
/// `torch.optim.Adam` computes them, then rounded to f32.
fn factors(c: &AdamConfig, step: u64) -> AdamStep {
    let bc1 = 1.0 - (c.beta1 as f64).powi(step as i32);
    let bc2 = 1.0 - (c.beta2 as f64).powi(step as i32);
    AdamStep {
        beta1: c.beta1,
        beta2: c.beta2,
        eps: c.eps,
        step_size: (c.lr as f64 / bc1) as f32,
        bc2_sqrt: bc2.sqrt() as f32,
        decay: match c.kind {
            OptimizerKind::AdamW { weight_decay } => 1.0 - c.lr * weight_decay,
            _ => 1.0,
        },
    }
}

/// [`Adam`] over tensors on a training backend: the moments (or, for SGD, the momentum
/// buffers, unused at momentum 0) live beside the parameters on the device and each update is
/// the backend's `adam_update` / `sgd_update` op, whose host oracle is the one [`Adam::step`]
/// runs: the same values on the CPU backend, and nothing crosses to the host on a GPU. What
/// LoRA TTT steps its adapters with.
pub struct DeviceAdam<T> {
    pub cfg: AdamConfig,
    pub step: u64,
    /// Per parameter: `(m, v)` (Adam, AdamW) or `(buffer, unused)` (SGD).
    state: Vec<(T, T)>,
}

impl<T> DeviceAdam<T> {
    pub fn new(cfg: AdamConfig) -> Self {
        DeviceAdam {
            cfg,
            step: 0,
            state: Vec::new(),
        }
    }

    /// One update of `params` with `grads` (same shapes, same order every call).
    pub fn step<B: TrainBackend<Tensor = T>>(
        &mut self,
        be: &B,
        params: &mut [&mut T],
        grads: &[&T],
    ) -> Result<()> {
        if params.len() != grads.len()
            || params
                .iter()
                .zip(grads)
                .any(|(p, g)| be.shape(p) != be.shape(g))
            || (!self.state.is_empty() && self.state.len() != params.len())
        {
            return Err(Error::Usage("optimizer: params and grads differ".into()));
        }
        if self.state.is_empty() {
            for p in params.iter() {
                let (r, c) = be.shape(p);
                self.state.push((be.zeros(r, c)?, be.zeros(r, c)?));
            }
        }
        self.step += 1;
        let c = self.cfg;
        for ((p, g), (m, v)) in params.iter_mut().zip(grads).zip(&mut self.state) {
            match c.kind {
                // `p -= lr · g`: torch's SGD without momentum or decay, as `Adam::step` runs it.
                OptimizerKind::Sgd => be.sgd_update(
                    p,
                    g,
                    m,
                    &SgdStep {
                        lr: c.lr,
                        momentum: 0.0,
                        weight_decay: 0.0,
                        grad_scale: 1.0,
                        first: true,
                    },
                )?,
                OptimizerKind::Adam | OptimizerKind::AdamW { .. } => {
                    be.adam_update(p, g, m, v, &factors(&c, self.step))?
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_adam_steps_match_hand_computation() {
        let cfg = AdamConfig {
            kind: OptimizerKind::Adam,
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
        };
        let mut opt = Adam::new(cfg);
        let mut p = vec![1.0f32, -2.0];
        opt.step(&mut [p.as_mut_slice()], &[&[0.5, -1.0]]).unwrap();
        // Step 1: m̂ = g, v̂ = g², update = lr · g / (|g| + eps) = ±0.1.
        assert!(
            (p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6,
            "{p:?}"
        );
        opt.step(&mut [p.as_mut_slice()], &[&[0.25, 0.0]]).unwrap();
        // Step 2, p[0]: m = 0.9·0.05 + 0.1·0.25 = 0.07, m̂ = 0.07/0.19;
        // v = 0.95·0.0125 + 0.05·0.0625 = 0.015, v̂ = 0.015/0.0975.
        let want0 = 0.9 - 0.1 * (0.07 / 0.19) / ((0.015f64 / 0.0975).sqrt() + 1e-8);
        // p[1]: m = 0.9·(−0.1) = −0.09, m̂ = −0.09/0.19; v = 0.95·0.05 = 0.0475, v̂ = 0.0475/0.0975.
        let want1 = -1.9 + 0.1 * (0.09 / 0.19) / ((0.0475f64 / 0.0975).sqrt() + 1e-8);
        assert!((p[0] as f64 - want0).abs() < 1e-6, "{} vs {want0}", p[0]);
        assert!((p[1] as f64 - want1).abs() < 1e-6, "{} vs {want1}", p[1]);
    }

    #[test]
    fn sgd_and_adamw() {
        let mut p = vec![1.0f32];
        let mut sgd = Adam::new(AdamConfig {
            kind: OptimizerKind::Sgd,
            lr: 0.5,
            ..AdamConfig::default()
        });
        sgd.step(&mut [p.as_mut_slice()], &[&[2.0]]).unwrap();
        assert_eq!(p[0], 0.0);
        let mut p = vec![1.0f32];
        let mut w = Adam::new(AdamConfig {
            kind: OptimizerKind::AdamW { weight_decay: 0.5 },
            lr: 0.1,
            ..AdamConfig::default()
        });
        w.step(&mut [p.as_mut_slice()], &[&[0.0]]).unwrap();
        assert!((p[0] - 0.95).abs() < 1e-7);
    }

    /// [`DeviceAdam`] on the CPU backend is [`Adam`] bit for bit (what lets LoRA TTT step its
    /// adapters on the device without changing a score): Adam, AdamW and SGD, two tensors of
    /// different shapes, four steps; and it refuses grads of another shape.
    #[test]
    fn device_adam_is_the_host_adam_bit_for_bit() {
        use crate::backend::cpu::CpuBackend;
        use crate::backend::Backend;
        let be = CpuBackend::new();
        let shapes = [(3usize, 5usize), (1, 7)];
        let vals = |n: usize, seed: f32| -> Vec<f32> {
            (0..n).map(|i| ((i as f32 + 1.0) * seed).sin()).collect()
        };
        for kind in [
            OptimizerKind::Adam,
            OptimizerKind::AdamW { weight_decay: 0.1 },
            OptimizerKind::Sgd,
        ] {
            let cfg = AdamConfig {
                kind,
                lr: 0.03,
                ..AdamConfig::default()
            };
            let mut host: Vec<Vec<f32>> = shapes
                .iter()
                .enumerate()
                .map(|(i, &(r, c))| vals(r * c, 0.7 + i as f32))
                .collect();
            let mut dev: Vec<_> = shapes
                .iter()
                .zip(&host)
                .map(|(&(r, c), h)| be.upload(h, r, c).unwrap())
                .collect();
            let (mut ha, mut da) = (Adam::new(cfg), DeviceAdam::new(cfg));
            for step in 0..4 {
                let grads: Vec<Vec<f32>> = shapes
                    .iter()
                    .enumerate()
                    .map(|(i, &(r, c))| vals(r * c, 1.3 + step as f32 + i as f32))
                    .collect();
                let g_dev: Vec<_> = shapes
                    .iter()
                    .zip(&grads)
                    .map(|(&(r, c), g)| be.upload(g, r, c).unwrap())
                    .collect();
                let mut hp: Vec<&mut [f32]> = host.iter_mut().map(|v| v.as_mut_slice()).collect();
                let hg: Vec<&[f32]> = grads.iter().map(|v| v.as_slice()).collect();
                ha.step(&mut hp, &hg).unwrap();
                let mut dp: Vec<_> = dev.iter_mut().collect();
                da.step(&be, &mut dp, &g_dev.iter().collect::<Vec<_>>())
                    .unwrap();
                for (h, d) in host.iter().zip(&dev) {
                    assert_eq!(h, &be.download(d).unwrap(), "{kind:?} step {step}");
                }
            }
            let wrong = be.upload(&[0.0; 15], 5, 3).unwrap();
            let mut dp: Vec<_> = dev.iter_mut().collect();
            assert!(da.step(&be, &mut dp, &[&wrong, &wrong]).is_err());
        }
    }
}
