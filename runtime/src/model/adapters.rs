//! LoRA adapters on a backend: an optional part of the forward pass ([`DeviceModel`]'s block
//! linears become `y = x·wᵀ + (x·Aᵀ)·Bᵀ`). Inference uses them to score with adapted weights
//! (test-time training); training also records `x·Aᵀ` for the backward.
//!
//! [`DeviceModel`]: super::DeviceModel

use crate::backend::Backend;
use crate::Result;

/// Adapters uploaded to a backend: per block one slot per [`crate::train::Proj`], plus the head.
/// Built by [`crate::train::TrainModel::upload_lora`].
pub struct DeviceLora<T> {
    pub(crate) blocks: Vec<[Option<(T, T)>; 6]>,
    pub(crate) head: Option<(T, T)>,
    /// Index into [`crate::train::Lora::adapters`] of each slot (same layout).
    pub(crate) index_blocks: Vec<[Option<usize>; 6]>,
    pub(crate) index_head: Option<usize>,
    pub(crate) count: usize,
}

/// `y = x·wᵀ (+ (x·Aᵀ)·Bᵀ)`; returns `(y, x·Aᵀ)`.
pub(crate) fn lora_linear<B: Backend>(
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
