//! Reading back any `torch.save` dict of float tensors, integers and strings (what
//! [`super::torch::save`] writes): the container of training checkpoints. Artifacts go through
//! [`super::Artifact`] instead, which also interprets the quantized layouts.

use super::pickle::Value;
use super::torch::as_tensor;
use super::{compress, err, pickle, zip};
use crate::Result;

/// An owned object tree: the inverse of [`super::torch::SaveValue`] for float tensors.
#[derive(Debug, Clone, PartialEq)]
pub enum StateValue {
    /// Values widened to f32 (f32 tensors round-trip exactly).
    Tensor {
        shape: Vec<usize>,
        values: Vec<f32>,
    },
    Int(i64),
    Str(String),
    Dict(Vec<(String, StateValue)>),
}

impl StateValue {
    /// Entry `key` of a dict.
    pub fn get(&self, key: &str) -> Option<&StateValue> {
        match self {
            StateValue::Dict(d) => d.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Decodes a (possibly compressed) `torch.save` file into a [`StateValue`] tree.
pub fn load_state(bytes: &[u8]) -> Result<StateValue> {
    let (_, payload) = compress::decompress(bytes)?;
    let archive = zip::TorchArchive::parse(&payload)?;
    let root = pickle::load(archive.pickle)?;
    convert(&root, &archive, 0)
}

fn convert(v: &Value, ar: &zip::TorchArchive, depth: usize) -> Result<StateValue> {
    if depth > 32 {
        return Err(err("state: nesting too deep"));
    }
    if let Some(t) = as_tensor(v, ar)? {
        return Ok(StateValue::Tensor {
            values: t.to_f32(),
            shape: t.shape,
        });
    }
    Ok(match v {
        Value::Int(i) => StateValue::Int(*i),
        Value::Str(s) => StateValue::Str(s.clone()),
        Value::Dict(d) => StateValue::Dict(
            d.iter()
                .map(|(k, v)| {
                    let k = k
                        .as_str()
                        .ok_or_else(|| err("state: dict key is not a string"))?;
                    Ok((k.to_string(), convert(v, ar, depth + 1)?))
                })
                .collect::<Result<_>>()?,
        ),
        other => {
            return Err(err(format!(
                "state: unsupported value (a {})",
                other.kind()
            )))
        }
    })
}
