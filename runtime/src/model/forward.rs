//! The forward pass (spec 3.3 and the variants of section 4), written once for every backend.
//!
//! ```text
//! x = E[ids] (+ bigram)      ; x = rms(x) ; x = smear(x)? ; x0 = x
//! encoder blocks i < L/2     : x = Block_i(x, x0), push x
//! decoder blocks             : x += skip_w[j] ⊙ pop() ; x = Block(x, x0)
//! h = rms(x)                 ; logits = c·tanh(h·Eᵀ / c)
//! Block: x = mix0⊙x + mix1⊙x0 ; x += attn_scale ⊙ Attn(rms(x)·s) ; x += mlp_scale ⊙ MLP(rms(x)·s)
//! ```

use super::config::ModelConfig;
use super::weights::{Matrix, ModelWeights};
use crate::backend::{AttnGeometry, Backend, RopeSpec};
use crate::{Error, Result};

struct DeviceBlock<T> {
    c_q: T,
    c_k: T,
    c_v: T,
    attn_proj: T,
    q_gain: T,
    mlp_fc: T,
    mlp_proj: T,
    attn_scale: T,
    mlp_scale: T,
    resid_mix: T,
}

struct DeviceBigram<T> {
    embed: T,
    proj: Option<T>,
    scale: f32,
}

struct DeviceValueEmbed<T> {
    embed: T,
    proj: T,
    scale: f32,
    layer_scales: Vec<f32>,
}

/// A model whose weights live on a backend, ready to run forward passes.
pub struct DeviceModel<B: Backend> {
    pub config: ModelConfig,
    backend: B,
    tok_emb: B::Tensor,
    head: Option<B::Tensor>,
    skip_weights: Vec<B::Tensor>,
    blocks: Vec<DeviceBlock<B::Tensor>>,
    bigram: Option<DeviceBigram<B::Tensor>>,
    smear_gate: Option<B::Tensor>,
    value_embed: Option<DeviceValueEmbed<B::Tensor>>,
}

impl<B: Backend> DeviceModel<B> {
    /// Uploads `weights` to `backend`.
    pub fn new(backend: B, weights: &ModelWeights) -> Result<Self> {
        let up = |m: &Matrix| backend.upload(&m.data, m.rows, m.cols);
        let vec = |v: &[f32]| backend.upload(v, 1, v.len());
        let blocks = weights
            .blocks
            .iter()
            .map(|b| {
                Ok(DeviceBlock {
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
        let skip_weights = (0..weights.skip_weights.rows)
            .map(|r| vec(weights.skip_weights.row(r)))
            .collect::<Result<_>>()?;
        let bigram = match &weights.bigram {
            Some(b) => Some(DeviceBigram {
                embed: up(&b.embed)?,
                proj: b.proj.as_ref().map(up).transpose()?,
                scale: b.scale,
            }),
            None => None,
        };
        let value_embed = match &weights.value_embed {
            Some(v) => Some(DeviceValueEmbed {
                embed: up(&v.embed)?,
                proj: up(&v.proj)?,
                scale: v.scale,
                layer_scales: v.layer_scales.clone(),
            }),
            None => None,
        };
        Ok(DeviceModel {
            config: weights.config.clone(),
            tok_emb: up(&weights.tok_emb)?,
            head: weights.lm_head.as_ref().map(up).transpose()?,
            skip_weights,
            blocks,
            bigram,
            smear_gate: weights.smear_gate.as_deref().map(vec).transpose()?,
            value_embed,
            backend,
        })
    }

    /// The backend the weights live on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend's name.
    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    fn head(&self) -> &B::Tensor {
        self.head.as_ref().unwrap_or(&self.tok_emb)
    }

    /// Final normalised hidden states `[batch*seq, d]` for `batch` windows of `seq` tokens
    /// (`ids` is row-major `[batch, seq]`; each window starts at position 0).
    pub fn hidden(&self, ids: &[u32], batch: usize, seq: usize) -> Result<B::Tensor> {
        let cfg = &self.config;
        let be = &self.backend;
        if ids.len() != batch * seq || seq == 0 {
            return Err(Error::Usage(format!(
                "forward: {} ids for {batch} windows of {seq}",
                ids.len()
            )));
        }
        let mut x = be.embedding(&self.tok_emb, ids)?;
        if let Some(bg) = &self.bigram {
            let idx = bigram_indices(ids, seq, bg_buckets(cfg));
            let mut e = be.embedding(&bg.embed, &idx)?;
            if let Some(p) = &bg.proj {
                e = be.linear(&e, p)?;
            }
            be.add_scalar_scaled(&mut x, &e, bg.scale)?;
        }
        x = be.rms_norm(&x, cfg.norm_eps, 1.0)?;
        if let Some(g) = &self.smear_gate {
            x = be.smear(&x, g, seq)?;
        }
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
        let mut skips = Vec::with_capacity(cfg.num_encoder_layers);
        for i in 0..cfg.num_layers {
            if i >= cfg.num_encoder_layers {
                let j = i - cfg.num_encoder_layers;
                if j < self.skip_weights.len() {
                    if let Some(s) = skips.pop() {
                        be.add_scaled(&mut x, &s, &self.skip_weights[j])?;
                    }
                }
            }
            x = self.block(i, x, &x0, ids, &geom, &rope)?;
            if i < cfg.num_encoder_layers {
                skips.push(be.copy(&x)?);
            }
        }
        be.rms_norm(&x, cfg.norm_eps, 1.0)
    }

    fn block(
        &self,
        i: usize,
        x: B::Tensor,
        x0: &B::Tensor,
        ids: &[u32],
        geom: &AttnGeometry,
        rope: &RopeSpec,
    ) -> Result<B::Tensor> {
        let (cfg, be, w) = (&self.config, &self.backend, &self.blocks[i]);
        let s = if cfg.ln_scale {
            1.0 / ((i + 1) as f32).sqrt()
        } else {
            1.0
        };
        let mut x = be.resid_mix(&x, x0, &w.resid_mix)?;
        let n = be.rms_norm(&x, cfg.norm_eps, s)?;
        let mut q = be.linear(&n, &w.c_q)?;
        let mut k = be.linear(&n, &w.c_k)?;
        let mut v = be.linear(&n, &w.c_v)?;
        if let (Some(ve), Some(cv)) = (&self.value_embed, &cfg.value_embed) {
            if let Some(slot) = cv.layers.iter().position(|&l| l == i) {
                let e = be.embedding(&ve.embed, ids)?;
                let p = be.linear(&e, &ve.proj)?;
                be.add_scalar_scaled(&mut v, &p, ve.layer_scales[slot] * ve.scale)?;
            }
        }
        be.qk_norm_rope(&mut q, &mut k, geom, rope, &w.q_gain, cfg.norm_eps)?;
        let y = be.attention(&q, &k, &v, geom, cfg.xsa_layers.contains(&i))?;
        let o = be.linear(&y, &w.attn_proj)?;
        be.add_scaled(&mut x, &o, &w.attn_scale)?;
        let n = be.rms_norm(&x, cfg.norm_eps, s)?;
        let h = be.linear(&n, &w.mlp_fc)?;
        let a = be.activation(&h, cfg.activation)?;
        let m = be.linear(&a, &w.mlp_proj)?;
        be.add_scaled(&mut x, &m, &w.mlp_scale)?;
        Ok(x)
    }

    /// Per-position NLL of `targets` (same layout as `ids`). With `rows`, only those flat
    /// positions are scored (the head runs on them alone) and the result follows their order.
    pub fn nll(
        &self,
        ids: &[u32],
        targets: &[u32],
        batch: usize,
        seq: usize,
        rows: Option<&[usize]>,
    ) -> Result<Vec<f32>> {
        if targets.len() != ids.len() {
            return Err(Error::Usage("nll: targets and ids differ in length".into()));
        }
        let h = self.hidden(ids, batch, seq)?;
        let be = &self.backend;
        match rows {
            Some(rows) => {
                if let Some(&r) = rows.iter().find(|&&r| r >= ids.len()) {
                    return Err(Error::Usage(format!("nll: row {r} out of range")));
                }
                let hs = be.gather_rows(&h, rows)?;
                let t: Vec<u32> = rows.iter().map(|&r| targets[r]).collect();
                be.nll(&hs, self.head(), &t, self.config.logit_softcap)
            }
            None => be.nll(&h, self.head(), targets, self.config.logit_softcap),
        }
    }

    /// Log-probabilities `[rows, vocab]` for the given flat positions (all when `None`).
    pub fn log_probs(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        rows: Option<&[usize]>,
    ) -> Result<Vec<f32>> {
        let h = self.hidden(ids, batch, seq)?;
        let be = &self.backend;
        let h = match rows {
            Some(rows) => be.gather_rows(&h, rows)?,
            None => h,
        };
        be.log_probs(&h, self.head(), self.config.logit_softcap)
    }
}

fn bg_buckets(cfg: &ModelConfig) -> usize {
    cfg.bigram.map_or(1, |b| b.buckets)
}

/// BigramHash bucket per position (spec 4.2 variant B, int32 arithmetic): position 0 of a window
/// gets the reserved bucket `B-1`; later positions `((36313·cur) XOR (27191·prev)) mod (B-1)`.
pub fn bigram_indices(ids: &[u32], seq: usize, buckets: usize) -> Vec<u32> {
    let m = (buckets.max(2) - 1) as i32;
    ids.iter()
        .enumerate()
        .map(|(i, &cur)| {
            if i % seq == 0 {
                m as u32
            } else {
                let prev = ids[i - 1] as i32;
                let h = (36313i32.wrapping_mul(cur as i32)) ^ (27191i32.wrapping_mul(prev));
                h.rem_euclid(m) as u32
            }
        })
        .collect()
}
