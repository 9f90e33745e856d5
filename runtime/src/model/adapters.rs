//! LoRA adapters on a backend: an optional part of the forward pass ([`DeviceModel`]'s block
//! linears become `y = x·wᵀ + (x·Aᵀ)·Bᵀ`). Inference uses them to score with adapted weights
//! (test-time training); training also records `x·Aᵀ` for the backward.
//!
//! Adapters may be *batched*: several independent adapter sets ("members"), each applied only
//! to its own flat rows of the forward (e.g. one member per document window of a batch), so
//! documents scored together never share adapter weights.
//!
//! [`DeviceModel`]: super::DeviceModel

use crate::backend::Backend;
use crate::{Error, Result};

/// One adapter set of a [`DeviceLora`] and the rows it applies to.
pub(crate) struct LoraMember<T> {
    /// Flat rows (of the forward's `[batch*seq]` rows) this member adapts; `None`: all rows.
    pub(crate) rows: Option<Vec<usize>>,
    /// Per block one slot per [`crate::train::Proj`].
    pub(crate) blocks: Vec<[Option<(T, T)>; 6]>,
    pub(crate) head: Option<(T, T)>,
}

/// Adapters uploaded to a backend: per member, per block one slot per [`crate::train::Proj`],
/// plus the head. Built by [`crate::train::TrainModel::upload_lora`] (one member on all rows)
/// or [`crate::train::TrainModel::upload_lora_batched`] (one member per batch row).
pub struct DeviceLora<T> {
    pub(crate) members: Vec<LoraMember<T>>,
    /// Index into [`crate::train::Lora::adapters`] of each slot (same layout for all members).
    pub(crate) index_blocks: Vec<[Option<usize>; 6]>,
    pub(crate) index_head: Option<usize>,
    pub(crate) count: usize,
}

/// The adapters of one site across the members of a [`DeviceLora`]: `(member, rows, (A, B))`
/// each.
pub(crate) struct LoraSlot<'a, T> {
    pub(crate) parts: Vec<SlotPart<'a, T>>,
}

/// One member's part of a [`LoraSlot`]: `(member, rows, (A, B))`.
pub(crate) type SlotPart<'a, T> = (usize, Option<&'a [usize]>, &'a (T, T));

impl<T> DeviceLora<T> {
    /// Number of adapter sets (documents) held.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// The adapters of linear `proj` of block `layer`, if adapted.
    pub(crate) fn block_slot(&self, layer: usize, proj: usize) -> Option<LoraSlot<'_, T>> {
        self.index_blocks.get(layer)?[proj]?;
        let parts = self
            .members
            .iter()
            .enumerate()
            .filter_map(|(k, m)| Some((k, m.rows.as_deref(), m.blocks[layer][proj].as_ref()?)))
            .collect();
        Some(LoraSlot { parts })
    }
}

/// `y = x·wᵀ (+ (x·Aᵀ)·Bᵀ)`; returns `(y, x·Aᵀ)`. With several members, each member's delta
/// is added to its own rows only (`x·Aᵀ` is zero on rows no member covers).
pub(crate) fn lora_linear<B: Backend>(
    be: &B,
    x: &B::Tensor,
    w: &B::Tensor,
    ad: Option<LoraSlot<'_, B::Tensor>>,
) -> Result<(B::Tensor, Option<B::Tensor>)> {
    let mut y = be.linear(x, w)?;
    match ad {
        None => Ok((y, None)),
        Some(ad) => {
            let (u, d) = lora_delta(be, x, &ad)?;
            be.add_scalar_scaled(&mut y, &d, 1.0)?;
            Ok((y, Some(u)))
        }
    }
}

/// The low-rank part alone: `(u, d)` with `u = x·Aᵀ` and `d = u·Bᵀ`, each member's on its own
/// rows of `x` (zero on rows no member covers).
pub(crate) fn lora_delta<B: Backend>(
    be: &B,
    x: &B::Tensor,
    ad: &LoraSlot<'_, B::Tensor>,
) -> Result<(B::Tensor, B::Tensor)> {
    if let [(_, None, (a, b))] = ad.parts.as_slice() {
        let u = be.linear(x, a)?;
        let d = be.linear(&u, b)?;
        return Ok((u, d));
    }
    let total = be.shape(x).0;
    let (r, out) = match ad.parts.first() {
        Some((_, _, (a, b))) => (be.shape(a).0, be.shape(b).0),
        None => return Err(Error::Backend("LoRA slot without adapters".into())),
    };
    let mut dh = vec![0.0f32; total * out];
    let mut uh = vec![0.0f32; total * r];
    for (_, rows, (a, b)) in &ad.parts {
        let rows =
            rows.ok_or_else(|| Error::Backend("batched LoRA: member without rows".into()))?;
        if rows.is_empty() {
            continue;
        }
        let xg = be.gather_rows(x, rows)?;
        let u = be.linear(&xg, a)?;
        let d = be.linear(&u, b)?;
        let (ug, dg) = (be.download(&u)?, be.download(&d)?);
        for (k, &row) in rows.iter().enumerate() {
            if row >= total {
                return Err(Error::Backend(format!(
                    "batched LoRA: row {row} of {total}"
                )));
            }
            dh[row * out..(row + 1) * out].copy_from_slice(&dg[k * out..(k + 1) * out]);
            uh[row * r..(row + 1) * r].copy_from_slice(&ug[k * r..(k + 1) * r]);
        }
    }
    Ok((be.upload(&uh, total, r)?, be.upload(&dh, total, out)?))
}
