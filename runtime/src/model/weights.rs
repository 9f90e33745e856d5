//! Typed float32 weights of one model, checked against its [`ModelConfig`].
//!
//! Construction consumes named tensors and fails on any missing, mis-shaped or unknown tensor:
//! silently ignoring a module we do not implement would give a wrong score, not an error.

use super::config::{ConfigOverrides, ModelConfig};
use crate::artifact::Artifact;
use crate::{Error, Result};
use std::collections::BTreeMap;

/// A row-major matrix (`nn.Linear` layout: `[out, in]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    /// Wraps row-major data; `data.len()` must be `rows * cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != rows * cols {
            return Err(Error::Config(format!(
                "matrix {rows}x{cols} given {} values",
                data.len()
            )));
        }
        Ok(Matrix { rows, cols, data })
    }

    /// A zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Matrix {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// Weights of one transformer block.
#[derive(Debug, Clone)]
pub struct BlockWeights {
    pub c_q: Matrix,
    pub c_k: Matrix,
    pub c_v: Matrix,
    pub attn_proj: Matrix,
    pub q_gain: Vec<f32>,
    pub mlp_fc: Matrix,
    pub mlp_proj: Matrix,
    pub attn_scale: Vec<f32>,
    pub mlp_scale: Vec<f32>,
    /// `[2, d]`: row 0 scales the stream, row 1 the embedding stream `x0`.
    pub resid_mix: Matrix,
}

/// BigramHash weights.
#[derive(Debug, Clone)]
pub struct BigramWeights {
    pub embed: Matrix,
    /// Projection to the model width; absent when the table is already that wide.
    pub proj: Option<Matrix>,
    pub scale: f32,
}

/// Value-embedding weights.
#[derive(Debug, Clone)]
pub struct ValueEmbedWeights {
    pub embed: Matrix,
    pub proj: Matrix,
    pub scale: f32,
    pub layer_scales: Vec<f32>,
}

/// All weights of a model.
#[derive(Debug, Clone)]
pub struct ModelWeights {
    pub config: ModelConfig,
    pub tok_emb: Matrix,
    /// Untied output head; `None` when tied to `tok_emb`.
    pub lm_head: Option<Matrix>,
    /// `[num_skips, d]`.
    pub skip_weights: Matrix,
    pub blocks: Vec<BlockWeights>,
    pub bigram: Option<BigramWeights>,
    pub smear_gate: Option<Vec<f32>>,
    pub value_embed: Option<ValueEmbedWeights>,
}

struct Named(BTreeMap<String, (Vec<usize>, Vec<f32>)>);

impl Named {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (s, v) = self
            .0
            .remove(name)
            .ok_or_else(|| Error::Config(format!("missing tensor `{name}`")))?;
        // A 0-dim scalar and a [1] vector are interchangeable.
        let numel: usize = shape.iter().product();
        let same = s == shape || (numel == 1 && s.iter().product::<usize>() == 1);
        if !same {
            return Err(Error::Config(format!(
                "`{name}` has shape {s:?}, expected {shape:?}"
            )));
        }
        Ok(v)
    }
    fn mat(&mut self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        Matrix::new(rows, cols, self.take(name, &[rows, cols])?)
    }
    fn scalar(&mut self, name: &str) -> Result<f32> {
        Ok(self.take(name, &[])?[0])
    }
}

impl ModelWeights {
    /// Builds weights from `(name, shape, values)` triples.
    pub fn from_tensors(
        tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
        overrides: &ConfigOverrides,
    ) -> Result<Self> {
        let shapes: Vec<(&str, &[usize])> = tensors
            .iter()
            .map(|(n, s, _)| (n.as_str(), s.as_slice()))
            .collect();
        let cfg = ModelConfig::infer(&shapes, overrides)?;
        let mut named = Named(tensors.into_iter().map(|(n, s, v)| (n, (s, v))).collect());
        let (d, v, kv, hid) = (cfg.model_dim, cfg.vocab_size, cfg.kv_dim(), cfg.mlp_hidden);
        let tok_emb = named.mat("tok_emb.weight", v, d)?;
        let lm_head = if cfg.tied_embeddings {
            None
        } else {
            Some(named.mat("lm_head.weight", v, d)?)
        };
        let skip_weights = if cfg.num_skips > 0 {
            named.mat("skip_weights", cfg.num_skips, d)?
        } else {
            Matrix::zeros(0, d)
        };
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("blocks.{i}.");
            blocks.push(BlockWeights {
                c_q: named.mat(&format!("{p}attn.c_q.weight"), d, d)?,
                c_k: named.mat(&format!("{p}attn.c_k.weight"), kv, d)?,
                c_v: named.mat(&format!("{p}attn.c_v.weight"), kv, d)?,
                attn_proj: named.mat(&format!("{p}attn.proj.weight"), d, d)?,
                q_gain: named.take(&format!("{p}attn.q_gain"), &[cfg.num_heads])?,
                mlp_fc: named.mat(&format!("{p}mlp.fc.weight"), hid, d)?,
                mlp_proj: named.mat(&format!("{p}mlp.proj.weight"), d, hid)?,
                attn_scale: named.take(&format!("{p}attn_scale"), &[d])?,
                mlp_scale: named.take(&format!("{p}mlp_scale"), &[d])?,
                resid_mix: named.mat(&format!("{p}resid_mix"), 2, d)?,
            });
        }
        let bigram = match cfg.bigram {
            Some(b) => Some(BigramWeights {
                embed: named.mat("bigram.embed.weight", b.buckets, b.dim)?,
                proj: if b.dim != d {
                    Some(named.mat("bigram.proj.weight", d, b.dim)?)
                } else {
                    None
                },
                scale: named.scalar("bigram.scale")?,
            }),
            None => None,
        };
        let smear_gate = if cfg.smear_gate {
            Some(named.take("smear.gate", &[d])?)
        } else {
            None
        };
        let value_embed = match &cfg.value_embed {
            Some(ve) => Some(ValueEmbedWeights {
                embed: named.mat("ve_shared.embed.weight", v, ve.dim)?,
                proj: named.mat("ve_shared.proj.weight", kv, ve.dim)?,
                scale: named.scalar("ve_shared.scale")?,
                layer_scales: (0..ve.layers.len())
                    .map(|k| named.scalar(&format!("ve_layer_scales.{k}")))
                    .collect::<Result<_>>()?,
            }),
            None => None,
        };
        if !named.0.is_empty() {
            let left: Vec<&str> = named.0.keys().map(|s| s.as_str()).collect();
            return Err(Error::Config(format!(
                "tensors this runtime does not implement: {}",
                left.join(", ")
            )));
        }
        Ok(ModelWeights {
            config: cfg,
            tok_emb,
            lm_head,
            skip_weights,
            blocks,
            bigram,
            smear_gate,
            value_embed,
        })
    }

    /// Builds weights from a loaded artifact.
    pub fn from_artifact(artifact: &Artifact, overrides: &ConfigOverrides) -> Result<Self> {
        let tensors = artifact
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone(), t.values.clone()))
            .collect();
        Self::from_tensors(tensors, overrides)
    }

    /// The output head matrix (`tok_emb` when tied).
    pub fn head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.tok_emb)
    }
}
