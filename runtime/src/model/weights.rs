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
        let mut weights = ModelWeights::zeros(&cfg);
        for p in weights.params_mut() {
            let v = named.take(&p.name, &p.shape)?;
            p.values.copy_from_slice(&v);
        }
        if !named.0.is_empty() {
            let left: Vec<&str> = named.0.keys().map(|s| s.as_str()).collect();
            return Err(Error::Config(format!(
                "tensors this runtime does not implement: {}",
                left.join(", ")
            )));
        }
        Ok(weights)
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

/// One parameter tensor under its state-dict name (`blocks.3.attn.c_q.weight`, ...).
#[derive(Debug)]
pub struct Param<'a> {
    pub name: String,
    /// Shape as the state dict holds it (`[]` for 0-dim scalars such as `bigram.scale`).
    pub shape: Vec<usize>,
    pub values: &'a mut [f32],
}

impl ModelWeights {
    /// All-zero weights of the shape `config` describes (a gradient accumulator, or a blank to
    /// fill by name).
    pub fn zeros(config: &ModelConfig) -> Self {
        let (d, v, kv, hid) = (
            config.model_dim,
            config.vocab_size,
            config.kv_dim(),
            config.mlp_hidden,
        );
        let block = || BlockWeights {
            c_q: Matrix::zeros(d, d),
            c_k: Matrix::zeros(kv, d),
            c_v: Matrix::zeros(kv, d),
            attn_proj: Matrix::zeros(d, d),
            q_gain: vec![0.0; config.num_heads],
            mlp_fc: Matrix::zeros(hid, d),
            mlp_proj: Matrix::zeros(d, hid),
            attn_scale: vec![0.0; d],
            mlp_scale: vec![0.0; d],
            resid_mix: Matrix::zeros(2, d),
        };
        ModelWeights {
            config: config.clone(),
            tok_emb: Matrix::zeros(v, d),
            lm_head: (!config.tied_embeddings).then(|| Matrix::zeros(v, d)),
            skip_weights: Matrix::zeros(config.num_skips, d),
            blocks: (0..config.num_layers).map(|_| block()).collect(),
            bigram: config.bigram.map(|b| BigramWeights {
                embed: Matrix::zeros(b.buckets, b.dim),
                proj: (b.dim != d).then(|| Matrix::zeros(d, b.dim)),
                scale: 0.0,
            }),
            smear_gate: config.smear_gate.then(|| vec![0.0; d]),
            value_embed: config.value_embed.as_ref().map(|ve| ValueEmbedWeights {
                embed: Matrix::zeros(v, ve.dim),
                proj: Matrix::zeros(kv, ve.dim),
                scale: 0.0,
                layer_scales: vec![0.0; ve.layers.len()],
            }),
        }
    }

    /// Every parameter under its state-dict name, in the order `train_gpt.py`'s module tree
    /// registers them. The one place that maps names to fields for export, checkpoints and the
    /// optimizer groups.
    pub fn params_mut(&mut self) -> Vec<Param<'_>> {
        fn push<'a>(out: &mut Vec<Param<'a>>, name: String, shape: Vec<usize>, v: &'a mut [f32]) {
            out.push(Param {
                name,
                shape,
                values: v,
            });
        }
        fn mat<'a>(out: &mut Vec<Param<'a>>, name: String, m: &'a mut Matrix) {
            push(out, name, vec![m.rows, m.cols], &mut m.data);
        }
        let mut out = Vec::new();
        let o = &mut out;
        mat(o, "tok_emb.weight".into(), &mut self.tok_emb);
        if let Some(b) = &mut self.bigram {
            mat(o, "bigram.embed.weight".into(), &mut b.embed);
            if let Some(p) = &mut b.proj {
                mat(o, "bigram.proj.weight".into(), p);
            }
            push(
                o,
                "bigram.scale".into(),
                vec![],
                std::slice::from_mut(&mut b.scale),
            );
        }
        if let Some(g) = &mut self.smear_gate {
            push(o, "smear.gate".into(), vec![g.len()], g);
        }
        if self.skip_weights.rows > 0 {
            mat(o, "skip_weights".into(), &mut self.skip_weights);
        }
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let p = format!("blocks.{i}.");
            mat(o, format!("{p}attn.c_q.weight"), &mut b.c_q);
            mat(o, format!("{p}attn.c_k.weight"), &mut b.c_k);
            mat(o, format!("{p}attn.c_v.weight"), &mut b.c_v);
            mat(o, format!("{p}attn.proj.weight"), &mut b.attn_proj);
            push(
                o,
                format!("{p}attn.q_gain"),
                vec![b.q_gain.len()],
                &mut b.q_gain,
            );
            mat(o, format!("{p}mlp.fc.weight"), &mut b.mlp_fc);
            mat(o, format!("{p}mlp.proj.weight"), &mut b.mlp_proj);
            push(
                o,
                format!("{p}attn_scale"),
                vec![b.attn_scale.len()],
                &mut b.attn_scale,
            );
            push(
                o,
                format!("{p}mlp_scale"),
                vec![b.mlp_scale.len()],
                &mut b.mlp_scale,
            );
            mat(o, format!("{p}resid_mix"), &mut b.resid_mix);
        }
        if let Some(ve) = &mut self.value_embed {
            mat(o, "ve_shared.embed.weight".into(), &mut ve.embed);
            mat(o, "ve_shared.proj.weight".into(), &mut ve.proj);
            push(
                o,
                "ve_shared.scale".into(),
                vec![],
                std::slice::from_mut(&mut ve.scale),
            );
            for (k, x) in ve.layer_scales.iter_mut().enumerate() {
                push(
                    o,
                    format!("ve_layer_scales.{k}"),
                    vec![1],
                    std::slice::from_mut(x),
                );
            }
        }
        if let Some(h) = &mut self.lm_head {
            mat(o, "lm_head.weight".into(), h);
        }
        out
    }
}
