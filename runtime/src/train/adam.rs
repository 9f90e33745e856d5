//! Optimisers over flat parameter slices: Adam (spec 5.2: `m ← β1 m + (1−β1) g`,
//! `v ← β2 v + (1−β2) g²`, `p ← p − lr · (m / (1−β1ᵗ)) / (sqrt(v / (1−β2ᵗ)) + eps)`, as
//! `torch.optim.Adam`), AdamW (decoupled decay `p ← p (1 − lr·wd)` first) and plain SGD.

use crate::backend::cpu::optim::{adam_update, AdamStep};
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
        let c = self.cfg;
        let bc1 = 1.0 - (c.beta1 as f64).powi(self.step as i32);
        let bc2 = 1.0 - (c.beta2 as f64).powi(self.step as i32);
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
}
