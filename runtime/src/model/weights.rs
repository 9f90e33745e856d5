//! Typed float32 weights of one model, checked against its [`ModelConfig`].
//!
//! Construction consumes named tensors and fails on any missing, mis-shaped or unknown tensor:
//! silently ignoring a module we do not implement would give a wrong score, not an error.

use super::config::{ConfigOverrides, ModelConfig};
use super::params::{layout, BigramParams, BlockParams, Params, ValueEmbedParams};
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

    /// A `[1, 1]` matrix holding `v` (a scalar parameter).
    pub fn scalar(v: f32) -> Self {
        Matrix {
            rows: 1,
            cols: 1,
            data: vec![v],
        }
    }

    /// A `[1, n]` matrix holding `v` (a vector parameter).
    pub fn vector(v: Vec<f32>) -> Self {
        Matrix {
            rows: 1,
            cols: v.len(),
            data: v,
        }
    }

    /// The value of a `[1, 1]` matrix (its first value).
    pub fn value(&self) -> f32 {
        self.data.first().copied().unwrap_or(0.0)
    }
}

/// One block's host weights.
pub type BlockWeights = BlockParams<Matrix>;
/// BigramHash's host weights.
pub type BigramWeights = BigramParams<Matrix>;
/// The value embedding's host weights.
pub type ValueEmbedWeights = ValueEmbedParams<Matrix>;

/// All weights of a model: its config and its parameters as host float32 matrices (every
/// field of [`Params`] is reachable as `weights.field` through `Deref`).
#[derive(Debug, Clone)]
pub struct ModelWeights {
    pub config: ModelConfig,
    pub params: Params<Matrix>,
}

impl std::ops::Deref for ModelWeights {
    type Target = Params<Matrix>;
    fn deref(&self) -> &Params<Matrix> {
        &self.params
    }
}

impl std::ops::DerefMut for ModelWeights {
    fn deref_mut(&mut self) -> &mut Params<Matrix> {
        &mut self.params
    }
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
        self.params.head()
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
        ModelWeights {
            config: config.clone(),
            params: layout(config).map(|_, _, &(r, c)| Matrix::zeros(r, c)),
        }
    }

    /// Every parameter under its state-dict name, in the order `train_gpt.py`'s module tree
    /// registers them ([`Params::leaves_mut`]), as flat slices with their state-dict shapes:
    /// what export, checkpoints and the optimizer groups take.
    pub fn params_mut(&mut self) -> Vec<Param<'_>> {
        self.params
            .leaves_mut()
            .into_iter()
            .map(|(name, dims, m)| Param {
                name,
                shape: dims.shape(m.rows, m.cols),
                values: &mut m.data,
            })
            .collect()
    }
}
