//! A forward pass that keeps the activations each backward op needs (the "tape"), with optional
//! LoRA adapters on the block linears and the head. It calls the same [`Backend`] ops in the same
//! order as [`crate::model::DeviceModel`], so with no adapters (or fresh ones, `B = 0`) its
//! scores equal the inference forward's bit for bit.
//!
//! Supported: the baseline architecture and the 11L lineage's LN-scale, XSA, partial RoPE and
//! activations; BigramHash, SmearGate and value embeddings are rejected (no backward yet).

use super::lora::{Lora, Proj, Site};
use crate::backend::train::TrainBackend;
use crate::backend::{AttnGeometry, RopeSpec};
use crate::model::{Matrix, ModelConfig, ModelWeights};
use crate::{Error, Result};

pub(crate) struct DevBlock<T> {
    pub c_q: T,
    pub c_k: T,
    pub c_v: T,
    pub attn_proj: T,
    pub q_gain: T,
    pub mlp_fc: T,
    pub mlp_proj: T,
    pub attn_scale: T,
    pub mlp_scale: T,
    pub resid_mix: T,
}

/// Model weights on a training backend.
pub struct TrainModel<B: TrainBackend> {
    pub config: ModelConfig,
    pub(crate) backend: B,
    pub(crate) tok_emb: B::Tensor,
    pub(crate) lm_head: Option<B::Tensor>,
    pub(crate) skip_weights: Vec<B::Tensor>,
    pub(crate) blocks: Vec<DevBlock<B::Tensor>>,
}

/// Adapters uploaded to the backend: per block one slot per [`Proj`], plus the head.
pub struct DeviceLora<T> {
    pub(crate) blocks: Vec<[Option<(T, T)>; 6]>,
    pub(crate) head: Option<(T, T)>,
    /// Index into [`Lora::adapters`] of each slot (same layout).
    pub(crate) index_blocks: Vec<[Option<usize>; 6]>,
    pub(crate) index_head: Option<usize>,
    pub(crate) count: usize,
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
        let up = |m: &Matrix| backend.upload(&m.data, m.rows, m.cols);
        let vec = |v: &[f32]| backend.upload(v, 1, v.len());
        let blocks = weights
            .blocks
            .iter()
            .map(|b| {
                Ok(DevBlock {
                    c_q: up(&b.c_q)?,
                    c_k: up(&b.c_k)?,
                    c_v: up(&b.c_v)?,
                    attn_proj: up(&b.attn_proj)?,
                    q_gain: vec(&b.q_gain)?,
                    mlp_fc: up(&b.mlp_fc)?,
                    mlp_proj: up(&b.mlp_proj)?,
                    attn_scale: vec(&b.attn_scale)?,
                    mlp_scale: vec(&b.mlp_scale)?,
                    resid_mix: up(&b.resid_mix)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(TrainModel {
            config: cfg.clone(),
            tok_emb: up(&weights.tok_emb)?,
            lm_head: weights.lm_head.as_ref().map(up).transpose()?,
            skip_weights: (0..weights.skip_weights.rows)
                .map(|r| vec(weights.skip_weights.row(r)))
                .collect::<Result<_>>()?,
            blocks,
            backend,
        })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub(crate) fn head(&self) -> &B::Tensor {
        self.lm_head.as_ref().unwrap_or(&self.tok_emb)
    }

    /// Uploads adapters.
    pub fn upload_lora(&self, lora: &Lora) -> Result<DeviceLora<B::Tensor>> {
        let be = &self.backend;
        let n = self.config.num_layers;
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
}

/// Saved activations of one block.
pub(crate) struct BlockTape<T> {
    pub x_in: T,
    pub xm: T,
    pub n1: T,
    pub q_pre: T,
    pub k_pre: T,
    pub q: T,
    pub k: T,
    pub v: T,
    pub y: T,
    pub o: T,
    pub x1: T,
    pub n2: T,
    pub h: T,
    pub a: T,
    pub m: T,
    /// `x · Aᵀ` of each adapted linear.
    pub u: [Option<T>; 6],
}

/// Everything the backward needs from one forward.
pub struct Tape<T> {
    pub(crate) ids: Vec<u32>,
    pub(crate) geom: AttnGeometry,
    pub(crate) rope: RopeSpec,
    pub(crate) x_emb: T,
    pub(crate) x0: T,
    pub(crate) blocks: Vec<BlockTape<T>>,
    /// For decoder block `j`: the encoder layer whose output was added to its input.
    pub(crate) skip_src: Vec<Option<usize>>,
    /// Output of each encoder block (the U-Net skip values).
    pub(crate) skip_vals: Vec<T>,
    pub(crate) x_final: T,
    /// Final normalised hidden states `[batch*seq, d]`.
    pub h: T,
}

/// `y = x·wᵀ (+ (x·Aᵀ)·Bᵀ)`; returns `(y, x·Aᵀ)`.
pub(crate) fn lora_linear<B: TrainBackend>(
    be: &B,
    x: &B::Tensor,
    w: &B::Tensor,
    ad: Option<&(B::Tensor, B::Tensor)>,
) -> Result<(B::Tensor, Option<B::Tensor>)> {
    let mut y = be.linear(x, w)?;
    match ad {
        None => Ok((y, None)),
        Some((a, b)) => {
            let u = be.linear(x, a)?;
            let d = be.linear(&u, b)?;
            be.add_scalar_scaled(&mut y, &d, 1.0)?;
            Ok((y, Some(u)))
        }
    }
}

impl<B: TrainBackend> TrainModel<B> {
    /// Forward of `batch` windows of `seq` tokens keeping the tape.
    pub fn forward(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        lora: Option<&DeviceLora<B::Tensor>>,
    ) -> Result<Tape<B::Tensor>> {
        let cfg = &self.config;
        let be = &self.backend;
        if ids.len() != batch * seq || seq == 0 {
            return Err(Error::Usage(format!(
                "forward: {} ids for {batch} windows of {seq}",
                ids.len()
            )));
        }
        let x_emb = be.embedding(&self.tok_emb, ids)?;
        let mut x = be.rms_norm(&x_emb, cfg.norm_eps, 1.0)?;
        let x0 = be.copy(&x)?;
        let geom = AttnGeometry {
            batch,
            seq,
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        };
        let rope = RopeSpec {
            base: cfg.rope_base_for(seq),
            dims: cfg.rope_dims,
        };
        let mut skips: Vec<usize> = Vec::new();
        let mut skip_vals: Vec<B::Tensor> = Vec::new();
        let mut skip_src = vec![None; cfg.num_layers.saturating_sub(cfg.num_encoder_layers)];
        let mut tapes = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            if i >= cfg.num_encoder_layers {
                let j = i - cfg.num_encoder_layers;
                if j < self.skip_weights.len() {
                    if let Some(src) = skips.pop() {
                        be.add_scaled(&mut x, &skip_vals[src], &self.skip_weights[j])?;
                        skip_src[j] = Some(src);
                    }
                }
            }
            let (out, t) = self.block(i, x, &x0, &geom, &rope, lora)?;
            x = out;
            tapes.push(t);
            if i < cfg.num_encoder_layers {
                skips.push(i);
                skip_vals.push(be.copy(&x)?);
            }
        }
        let h = be.rms_norm(&x, cfg.norm_eps, 1.0)?;
        Ok(Tape {
            ids: ids.to_vec(),
            geom,
            rope,
            x_emb,
            x0,
            blocks: tapes,
            skip_src,
            skip_vals,
            x_final: x,
            h,
        })
    }

    fn block(
        &self,
        i: usize,
        x_in: B::Tensor,
        x0: &B::Tensor,
        geom: &AttnGeometry,
        rope: &RopeSpec,
        lora: Option<&DeviceLora<B::Tensor>>,
    ) -> Result<(B::Tensor, BlockTape<B::Tensor>)> {
        let (cfg, be, w) = (&self.config, &self.backend, &self.blocks[i]);
        let s = ln_scale(cfg, i);
        let ad = |p: Proj| lora.and_then(|l| l.blocks[i][p.index()].as_ref());
        let xm = be.resid_mix(&x_in, x0, &w.resid_mix)?;
        let n1 = be.rms_norm(&xm, cfg.norm_eps, s)?;
        let (q_pre, uq) = lora_linear(be, &n1, &w.c_q, ad(Proj::Q))?;
        let (k_pre, uk) = lora_linear(be, &n1, &w.c_k, ad(Proj::K))?;
        let (v, uv) = lora_linear(be, &n1, &w.c_v, ad(Proj::V))?;
        let mut q = be.copy(&q_pre)?;
        let mut k = be.copy(&k_pre)?;
        be.qk_norm_rope(&mut q, &mut k, geom, rope, &w.q_gain, cfg.norm_eps)?;
        let y = be.attention(&q, &k, &v, geom, cfg.xsa_layers.contains(&i))?;
        let (o, uo) = lora_linear(be, &y, &w.attn_proj, ad(Proj::O))?;
        let mut x1 = be.copy(&xm)?;
        be.add_scaled(&mut x1, &o, &w.attn_scale)?;
        let n2 = be.rms_norm(&x1, cfg.norm_eps, s)?;
        let (h, ufc) = lora_linear(be, &n2, &w.mlp_fc, ad(Proj::MlpFc))?;
        let a = be.activation(&h, cfg.activation)?;
        let (m, uproj) = lora_linear(be, &a, &w.mlp_proj, ad(Proj::MlpProj))?;
        let mut x2 = be.copy(&x1)?;
        be.add_scaled(&mut x2, &m, &w.mlp_scale)?;
        Ok((
            x2,
            BlockTape {
                x_in,
                xm,
                n1,
                q_pre,
                k_pre,
                q,
                k,
                v,
                y,
                o,
                x1,
                n2,
                h,
                a,
                m,
                u: [uq, uk, uv, uo, ufc, uproj],
            },
        ))
    }

    /// Head input and LoRA delta for the given rows of the tape: `(h_rows, x·Aᵀ, delta)`.
    #[allow(clippy::type_complexity)]
    pub(crate) fn head_inputs(
        &self,
        tape: &Tape<B::Tensor>,
        rows: &[usize],
        lora: Option<&DeviceLora<B::Tensor>>,
    ) -> Result<(B::Tensor, Option<B::Tensor>, Option<B::Tensor>)> {
        let be = &self.backend;
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
        self.backend.nll_delta(
            &hs,
            self.head(),
            delta.as_ref(),
            targets,
            self.config.logit_softcap,
        )
    }
}

pub(crate) fn ln_scale(cfg: &ModelConfig, i: usize) -> f32 {
    if cfg.ln_scale {
        1.0 / ((i + 1) as f32).sqrt()
    } else {
        1.0
    }
}
