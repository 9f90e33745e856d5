//! The training view of a model: [`TrainModel`] wraps a [`DeviceModel`] and runs *its* forward
//! ([`DeviceModel::forward_with`]) with recording on, so the taped forward is the inference
//! forward: with no adapters (or fresh ones, `B = 0`) its scores equal inference's bit for bit.
//! The [`Tape`] keeps the activations each backward op needs; LoRA adapters ([`DeviceLora`]) may
//! sit on the block linears and the head.
//!
//! Supported: the baseline architecture and the 11L lineage's LN-scale, XSA, partial RoPE and
//! activations; BigramHash, SmearGate and value embeddings are rejected (no backward yet).

use super::lora::{Lora, Site};
use crate::backend::train::TrainBackend;
use crate::model::{DeviceLora, DeviceModel, Forward, ModelConfig, ModelWeights, Tape};
use crate::{Error, Result};

/// Model weights on a training backend: a [`DeviceModel`] plus the backward.
pub struct TrainModel<B: TrainBackend> {
    pub(crate) model: DeviceModel<B>,
}

impl<B: TrainBackend> TrainModel<B> {
    /// Uploads `weights`; fails on modules without a backward.
    pub fn new(backend: B, weights: &ModelWeights) -> Result<Self> {
        let cfg = &weights.config;
        if cfg.bigram.is_some() || cfg.smear_gate || cfg.value_embed.is_some() {
            return Err(Error::Config(
                "training: BigramHash, SmearGate and value embeddings have no backward yet".into(),
            ));
        }
        Ok(TrainModel {
            model: DeviceModel::new(backend, weights)?,
        })
    }

    pub fn backend(&self) -> &B {
        self.model.backend()
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.model.config
    }

    /// The inference model these weights belong to.
    pub fn model(&self) -> &DeviceModel<B> {
        &self.model
    }

    /// Uploads adapters.
    pub fn upload_lora(&self, lora: &Lora) -> Result<DeviceLora<B::Tensor>> {
        let be = self.backend();
        let n = self.config().num_layers;
        let mut d = DeviceLora {
            blocks: (0..n).map(|_| Default::default()).collect(),
            head: None,
            index_blocks: vec![[None; 6]; n],
            index_head: None,
            count: lora.adapters.len(),
        };
        for (i, a) in lora.adapters.iter().enumerate() {
            let pair = (
                be.upload(&a.a.data, a.a.rows, a.a.cols)?,
                be.upload(&a.b.data, a.b.rows, a.b.cols)?,
            );
            match a.site {
                Site::Block { layer, which } if layer < n => {
                    d.blocks[layer][which.index()] = Some(pair);
                    d.index_blocks[layer][which.index()] = Some(i);
                }
                Site::Head => {
                    d.head = Some(pair);
                    d.index_head = Some(i);
                }
                Site::Block { layer, .. } => {
                    return Err(Error::Usage(format!("LoRA on missing layer {layer}")))
                }
            }
        }
        Ok(d)
    }

    /// Forward of `batch` windows of `seq` tokens keeping the tape.
    pub fn forward(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        lora: Option<&DeviceLora<B::Tensor>>,
    ) -> Result<Tape<B::Tensor>> {
        match self.model.forward_with(ids, batch, seq, lora, true)? {
            Forward::Taped(tape) => Ok(tape),
            Forward::Hidden(_) => Err(Error::Backend("forward: no tape recorded".into())),
        }
    }

    /// Head input and LoRA delta for the given rows of the tape: `(h_rows, x·Aᵀ, delta)`.
    #[allow(clippy::type_complexity)]
    pub(crate) fn head_inputs(
        &self,
        tape: &Tape<B::Tensor>,
        rows: &[usize],
        lora: Option<&DeviceLora<B::Tensor>>,
    ) -> Result<(B::Tensor, Option<B::Tensor>, Option<B::Tensor>)> {
        let be = self.backend();
        let hs = be.gather_rows(&tape.h, rows)?;
        match lora.and_then(|l| l.head.as_ref()) {
            None => Ok((hs, None, None)),
            Some((a, b)) => {
                let u = be.linear(&hs, a)?;
                let d = be.linear(&u, b)?;
                Ok((hs, Some(u), Some(d)))
            }
        }
    }

    /// Per-row NLL of `targets` at flat positions `rows` of a taped forward.
    pub fn nll(
        &self,
        tape: &Tape<B::Tensor>,
        rows: &[usize],
        targets: &[u32],
        lora: Option<&DeviceLora<B::Tensor>>,
    ) -> Result<Vec<f32>> {
        let (hs, _, delta) = self.head_inputs(tape, rows, lora)?;
        self.backend().nll_delta(
            &hs,
            self.model.head(),
            delta.as_ref(),
            targets,
            self.config().logit_softcap,
        )
    }
}
