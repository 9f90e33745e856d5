//! The training view of a model: [`TrainModel`] wraps a [`DeviceModel`] and runs *its* forward
//! ([`DeviceModel::forward_with`]) with recording on, so the taped forward is the inference
//! forward: with no adapters (or fresh ones, `B = 0`) its scores equal inference's bit for bit.
//! The [`Tape`] keeps the activations each backward op needs; LoRA adapters ([`DeviceLora`]) may
//! sit on the block linears and the head.
//!
//! Supported: the baseline architecture and the 11L lineage's LN-scale, XSA, partial RoPE,
//! activations, BigramHash, SmearGate and value embeddings (spec 4.2, 4.3, 4.8; variant B).

use super::lora::{Lora, Site};
use crate::backend::train::TrainBackend;
use crate::model::adapters::lora_delta;
use crate::model::{
    DeviceLora, DeviceModel, Forward, ModelConfig, ModelWeights, Params, RowViews, Scalars, Tape,
};
use crate::{Error, Result};

/// The rows ops take one at a time (skip weights, the sidecar's sites), copied on the backend.
fn param_rows<B: TrainBackend>(be: &B, p: &Params<B::Tensor>) -> Result<RowViews<B::Tensor>> {
    RowViews::of(p, |t| be.shape(t).0, |t, r| be.row(t, r))
}

/// Model weights on a training backend: a [`DeviceModel`] plus the backward.
pub struct TrainModel<B: TrainBackend> {
    pub(crate) model: DeviceModel<B>,
}

impl<B: TrainBackend> TrainModel<B> {
    /// Uploads `weights`.
    pub fn new(backend: B, weights: &ModelWeights) -> Result<Self> {
        Ok(TrainModel {
            model: DeviceModel::new(backend, weights)?,
        })
    }

    /// A model from parameters already on `backend`. Its parameter rows (skip weights, sidecar
    /// sites) are copied on the device; the scalar parameters the forward multiplies by are
    /// read back in one download (or taken from `scalars` when the caller already has them).
    pub(crate) fn from_params(
        backend: B,
        config: ModelConfig,
        params: Params<B::Tensor>,
        scalars: Option<Scalars>,
    ) -> Result<Self> {
        let scalars = match scalars {
            Some(s) => s,
            None => {
                let t = Scalars::tensors(&params);
                let v = if t.is_empty() {
                    Vec::new()
                } else {
                    backend.read_values(&t)?
                };
                Scalars::from_values(&params, &v)
            }
        };
        let rows = param_rows(&backend, &params)?;
        Ok(TrainModel {
            model: DeviceModel::assemble(backend, config, params, rows, scalars),
        })
    }

    /// The parameters on the backend, to update in place; [`TrainModel::refresh`] afterwards.
    pub(crate) fn params_mut(&mut self) -> &mut Params<B::Tensor> {
        &mut self.model.params
    }

    /// The parameters on the backend.
    pub(crate) fn params(&self) -> &Params<B::Tensor> {
        &self.model.params
    }

    /// After an in-place update of the parameters: their rows copied again on the device,
    /// and the scalar factors set to `scalars`.
    pub(crate) fn refresh(&mut self, scalars: Scalars) -> Result<()> {
        self.model.rows = param_rows(self.model.backend(), &self.model.params)?;
        self.model.scalars = scalars;
        Ok(())
    }

    /// The host copies of the scalar factors the forward uses.
    pub(crate) fn scalars(&self) -> &Scalars {
        &self.model.scalars
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

    /// Uploads adapters (one set, applied to every row of a forward).
    pub fn upload_lora(&self, lora: &Lora) -> Result<DeviceLora<B::Tensor>> {
        self.upload_members(&[lora], None)
    }

    /// Uploads one adapter set per batch row: `loras[b]` adapts only rows
    /// `[b*seq, (b+1)*seq)` of a forward of `loras.len()` windows of `seq` tokens, so the
    /// windows of a batch are scored and trained with independent adapters.
    pub fn upload_lora_batched(
        &self,
        loras: &[&Lora],
        seq: usize,
    ) -> Result<DeviceLora<B::Tensor>> {
        self.upload_members(loras, Some(seq))
    }

    /// Adapter sets already on the device (one each, from [`TrainModel::upload_lora`]) stacked
    /// for one forward of `parts.len()` windows of `seq` tokens, as
    /// [`TrainModel::upload_lora_batched`] stacks host ones: window `k` is adapted by
    /// `parts[k]`. Each site's `A` and `B` are copied on the device
    /// ([`crate::backend::train::TrainBackend::concat_rows`]); nothing crosses to or from the
    /// host. What batched LoRA TTT runs, each document's adapters living on the device.
    pub fn stack_lora(
        &self,
        parts: &[&DeviceLora<B::Tensor>],
        seq: usize,
    ) -> Result<DeviceLora<B::Tensor>> {
        let be = self.backend();
        let first = *parts
            .first()
            .ok_or_else(|| Error::Usage("LoRA stack: no adapters".into()))?;
        if parts.iter().any(|p| {
            p.members != 1
                || p.index_blocks != first.index_blocks
                || p.index_head != first.index_head
                || p.count != first.count
        }) {
            return Err(Error::Usage(
                "batched LoRA: each part must be one adapter set, all with the same sites".into(),
            ));
        }
        fn stack<B: TrainBackend>(
            be: &B,
            pairs: &[Option<&(B::Tensor, B::Tensor)>],
        ) -> Result<Option<(B::Tensor, B::Tensor)>> {
            if pairs.iter().all(Option::is_none) {
                return Ok(None);
            }
            let pairs: Vec<&(B::Tensor, B::Tensor)> = pairs
                .iter()
                .map(|p| p.ok_or_else(|| Error::Usage("batched LoRA: sites differ".into())))
                .collect::<Result<_>>()?;
            let a: Vec<&B::Tensor> = pairs.iter().map(|p| &p.0).collect();
            let b: Vec<&B::Tensor> = pairs.iter().map(|p| &p.1).collect();
            Ok(Some((be.concat_rows(&a)?, be.concat_rows(&b)?)))
        }
        let blocks = (0..first.blocks.len())
            .map(|layer| {
                let mut slots: [Option<(B::Tensor, B::Tensor)>; 6] = Default::default();
                for (which, slot) in slots.iter_mut().enumerate() {
                    let pairs: Vec<_> = parts
                        .iter()
                        .map(|p| p.blocks[layer][which].as_ref())
                        .collect();
                    *slot = stack(be, &pairs)?;
                }
                Ok(slots)
            })
            .collect::<Result<Vec<_>>>()?;
        let heads: Vec<_> = parts.iter().map(|p| p.head.as_ref()).collect();
        Ok(DeviceLora {
            blocks,
            head: stack(be, &heads)?,
            members: parts.len(),
            seq: Some(seq),
            index_blocks: first.index_blocks.clone(),
            index_head: first.index_head,
            count: first.count,
        })
    }

    /// Stacks each site's `A` and `B` over the members (member order) and uploads them.
    fn upload_members(&self, loras: &[&Lora], seq: Option<usize>) -> Result<DeviceLora<B::Tensor>> {
        let be = self.backend();
        let n = self.config().num_layers;
        let first = *loras
            .first()
            .ok_or_else(|| Error::Usage("LoRA upload: no adapters".into()))?;
        if loras.iter().any(|l| {
            l.adapters.len() != first.adapters.len()
                || l.adapters
                    .iter()
                    .zip(&first.adapters)
                    .any(|(x, y)| x.site != y.site || x.a.rows != y.a.rows || x.b.rows != y.b.rows)
        }) {
            return Err(Error::Usage(
                "batched LoRA: all documents need the same adapter sites and ranks".into(),
            ));
        }
        let mut d = DeviceLora {
            blocks: (0..n).map(|_| Default::default()).collect(),
            head: None,
            members: loras.len(),
            seq,
            index_blocks: vec![[None; 6]; n],
            index_head: None,
            count: first.adapters.len(),
        };
        for (i, a) in first.adapters.iter().enumerate() {
            let stack = |part: fn(&crate::train::lora::Adapter) -> &crate::model::Matrix| {
                let data: Vec<f32> = loras
                    .iter()
                    .flat_map(|l| part(&l.adapters[i]).data.iter().copied())
                    .collect();
                let m = part(a);
                be.upload(&data, m.rows * loras.len(), m.cols)
            };
            let pair = (stack(|x| &x.a)?, stack(|x| &x.b)?);
            match a.site {
                Site::Block { layer, which } if layer < n => {
                    d.index_blocks[layer][which.index()] = Some(i);
                    d.blocks[layer][which.index()] = Some(pair);
                }
                Site::Head => {
                    d.index_head = Some(i);
                    d.head = Some(pair);
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
        let Some(l) = lora else {
            return Ok((hs, None, None));
        };
        match l.head_slot(rows)? {
            None => Ok((hs, None, None)),
            Some(slot) => {
                let (u, d) = lora_delta(be, &hs, &slot)?;
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
