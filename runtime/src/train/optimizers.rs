//! The challenge's optimizer set (spec 5.1, 5.2): Muon for block matrices, and three Adam
//! groups (embeddings, untied head, scalars) with their own learning rates; all learning rates
//! follow the schedule's multiplier. Optional global-norm gradient clipping first.

use super::adam::{Adam, AdamConfig, OptimizerKind};
use super::groups::{optimizer_group, Group, MuonRoute};
use super::muon::{HostNs, MatrixParam, Muon, MuonConfig, NewtonSchulz};
use super::sgd::{clip_coef, global_norm};
use crate::model::ModelWeights;
use crate::Result;

/// Base learning rates of the groups (baseline defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearningRates {
    /// `EMBED_LR`: token embedding when untied.
    pub embed: f32,
    /// `TIED_EMBED_LR`: token embedding when tied to the head.
    pub tied_embed: f32,
    /// `HEAD_LR`: untied head.
    pub head: f32,
    /// `MATRIX_LR`: Muon.
    pub matrix: f32,
    /// `SCALAR_LR`: control tensors.
    pub scalar: f32,
}

impl Default for LearningRates {
    fn default() -> Self {
        LearningRates {
            embed: 0.6,
            tied_embed: 0.05,
            head: 0.008,
            matrix: 0.04,
            scalar: 0.04,
        }
    }
}

/// Optimizer hyper-parameters besides the learning rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimizerConfig {
    pub lrs: LearningRates,
    pub beta1: f32,
    pub beta2: f32,
    pub adam_eps: f32,
    /// Decoupled decay of the Adam groups (AdamW when > 0; 11-layer lineage: 0.04).
    pub adam_weight_decay: f32,
    /// Muon (its `lr` is replaced by `lrs.matrix`, its momentum by the schedule's).
    pub muon: MuonConfig,
    /// Clip the global gradient norm to this (0 disables).
    pub grad_clip_norm: f32,
    /// Which matrices outside the blocks Muon takes (spec 4.2; the records differ).
    pub muon_route: MuonRoute,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            lrs: LearningRates::default(),
            beta1: 0.9,
            beta2: 0.95,
            adam_eps: 1e-8,
            adam_weight_decay: 0.0,
            muon: MuonConfig::default(),
            grad_clip_norm: 0.0,
            muon_route: MuonRoute::default(),
        }
    }
}

/// One Adam group's parameters and gradients for a step.
type AdamBatch<'a> = (Vec<&'a mut [f32]>, Vec<&'a [f32]>);

/// State of every optimizer.
#[derive(Debug, Clone)]
pub struct Optimizers {
    pub cfg: OptimizerConfig,
    tied: bool,
    pub(crate) muon: Muon,
    pub(crate) embed: Adam,
    pub(crate) head: Adam,
    pub(crate) scalar: Adam,
}

/// The Adam groups in a fixed order (checkpoints name them so).
pub(crate) const ADAM_GROUPS: [(Group, &str); 3] = [
    (Group::Embed, "embed"),
    (Group::Head, "head"),
    (Group::Scalar, "scalar"),
];

impl Optimizers {
    pub fn new(cfg: OptimizerConfig, tied_embeddings: bool) -> Self {
        let kind = if cfg.adam_weight_decay > 0.0 {
            OptimizerKind::AdamW {
                weight_decay: cfg.adam_weight_decay,
            }
        } else {
            OptimizerKind::Adam
        };
        let adam = |lr| {
            Adam::new(AdamConfig {
                kind,
                lr,
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: cfg.adam_eps,
            })
        };
        let embed_lr = if tied_embeddings {
            cfg.lrs.tied_embed
        } else {
            cfg.lrs.embed
        };
        Optimizers {
            cfg,
            tied: tied_embeddings,
            muon: Muon::new(MuonConfig {
                lr: cfg.lrs.matrix,
                ..cfg.muon
            }),
            embed: adam(embed_lr),
            head: adam(cfg.lrs.head),
            scalar: adam(cfg.lrs.scalar),
        }
    }

    /// Every group's learning rate at multiplier `lr_mul`, and Muon's momentum.
    pub(crate) fn set_schedule(&mut self, lr_mul: f32, muon_momentum: f32) {
        let lrs = self.cfg.lrs;
        self.muon.cfg.lr = lrs.matrix * lr_mul;
        self.muon.cfg.momentum = muon_momentum;
        self.embed.cfg.lr = if self.tied { lrs.tied_embed } else { lrs.embed } * lr_mul;
        self.head.cfg.lr = lrs.head * lr_mul;
        self.scalar.cfg.lr = lrs.scalar * lr_mul;
    }

    pub(crate) fn adam_mut(&mut self, g: Group) -> &mut Adam {
        match g {
            Group::Embed => &mut self.embed,
            Group::Head => &mut self.head,
            _ => &mut self.scalar,
        }
    }

    /// One step: clip, set the scheduled learning rates and momentum, update every group.
    /// Returns the gradient norm before clipping. Muon's Newton-Schulz runs on the host.
    pub fn step(
        &mut self,
        weights: &mut ModelWeights,
        grads: &mut ModelWeights,
        lr_mul: f32,
        muon_momentum: f32,
    ) -> Result<f64> {
        self.step_with(&HostNs, weights, grads, lr_mul, muon_momentum)
    }

    /// [`Optimizers::step`] with Muon's Newton-Schulz run by `ns` (the trainer passes its
    /// backend).
    pub fn step_with(
        &mut self,
        ns: &dyn NewtonSchulz,
        weights: &mut ModelWeights,
        grads: &mut ModelWeights,
        lr_mul: f32,
        muon_momentum: f32,
    ) -> Result<f64> {
        let norm = global_norm(
            &grads
                .params_mut()
                .iter()
                .map(|p| &*p.values)
                .collect::<Vec<_>>(),
        );
        let coef = clip_coef(norm, self.cfg.grad_clip_norm);
        if coef < 1.0 {
            for p in grads.params_mut() {
                p.values.iter_mut().for_each(|g| *g *= coef);
            }
        }
        self.set_schedule(lr_mul, muon_momentum);

        let mut params = weights.params_mut();
        let grads = grads.params_mut();
        let mut mats = Vec::new();
        let mut mat_grads: Vec<&[f32]> = Vec::new();
        let mut adam: [AdamBatch; 3] = Default::default();
        for (p, g) in params.iter_mut().zip(grads.iter()) {
            match optimizer_group(&p.name, &p.shape, self.cfg.muon_route) {
                Group::Matrix => {
                    mats.push(MatrixParam {
                        rows: p.shape[0],
                        cols: p.shape[1],
                        values: &mut *p.values,
                    });
                    mat_grads.push(&*g.values);
                }
                grp => {
                    let k = ADAM_GROUPS.iter().position(|(x, _)| *x == grp).unwrap_or(2);
                    adam[k].0.push(&mut *p.values);
                    adam[k].1.push(&*g.values);
                }
            }
        }
        if !mats.is_empty() {
            self.muon.step_with(ns, &mut mats, &mat_grads)?;
        }
        for ((grp, _), (ps, gs)) in ADAM_GROUPS.iter().zip(adam.iter_mut()) {
            if !ps.is_empty() {
                self.adam_mut(*grp).step(ps, gs)?;
            }
        }
        Ok(norm)
    }
}
