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

/// Adapters uploaded to a backend: per block one slot per [`crate::train::Proj`], plus the
/// head, each an `(A, B)` pair *stacked over the members*: member `k`'s `A [r, in]` is rows
/// `[k·r, (k+1)·r)` of the slot's `A`, its `B [out, r]` rows `[k·out, (k+1)·out)` of `B`.
/// Built by [`crate::train::TrainModel::upload_lora`] (one member on all rows) or
/// [`crate::train::TrainModel::upload_lora_batched`] (member `k` on the rows of window `k`),
/// so the low-rank products of all members are one [`Backend::linear_segments`] each.
pub struct DeviceLora<T> {
    pub(crate) blocks: Vec<[Option<(T, T)>; 6]>,
    pub(crate) head: Option<(T, T)>,
    /// Number of adapter sets (documents).
    pub(crate) members: usize,
    /// `None`: one member adapting every row; `Some(seq)`: member `k` adapts the forward's rows
    /// `[k·seq, (k+1)·seq)` (window `k` of a batch).
    pub(crate) seq: Option<usize>,
    /// Index into [`crate::train::Lora::adapters`] of each slot (same layout for all members).
    pub(crate) index_blocks: Vec<[Option<usize>; 6]>,
    pub(crate) index_head: Option<usize>,
    pub(crate) count: usize,
}

/// The adapters of one site: the stacked `(A, B)` and, with several members, the row range
/// `segs[k]` that member `k` adapts (`None`: one member on every row).
pub(crate) struct LoraSlot<'a, T> {
    pub(crate) ab: &'a (T, T),
    pub(crate) segs: Option<Vec<(usize, usize)>>,
}

impl<T> DeviceLora<T> {
    /// Number of adapter sets (documents) held.
    pub fn members(&self) -> usize {
        self.members
    }

    /// Every adapter tensor, `A` then `B` of each adapter in [`crate::train::Lora::adapters`]
    /// order (the order of [`crate::train::Lora::params_mut`] and of the backward's
    /// gradients), for an optimizer that steps them where they are.
    pub fn tensors_mut(&mut self) -> Vec<&mut T> {
        let mut by_index: Vec<(usize, &mut (T, T))> = Vec::with_capacity(self.count);
        for (slots, index) in self.blocks.iter_mut().zip(&self.index_blocks) {
            for (ab, i) in slots.iter_mut().zip(index) {
                if let (Some(ab), Some(i)) = (ab.as_mut(), i) {
                    by_index.push((*i, ab));
                }
            }
        }
        if let (Some(ab), Some(i)) = (self.head.as_mut(), self.index_head) {
            by_index.push((i, ab));
        }
        by_index.sort_by_key(|(i, _)| *i);
        by_index
            .into_iter()
            .flat_map(|(_, (a, b))| [a, b])
            .collect()
    }

    /// The adapters of linear `proj` of block `layer`, if adapted.
    pub(crate) fn block_slot(&self, layer: usize, proj: usize) -> Option<LoraSlot<'_, T>> {
        let ab = self.blocks.get(layer)?[proj].as_ref()?;
        let segs = self
            .seq
            .map(|s| (0..self.members).map(|k| (k * s, (k + 1) * s)).collect());
        Some(LoraSlot { ab, segs })
    }

    /// The head adapters for the head's input rows, which are the forward's flat rows `rows`
    /// (each member's rows must be consecutive in `rows`, in member order, as the batched
    /// scorer lists them).
    pub(crate) fn head_slot(&self, rows: &[usize]) -> Result<Option<LoraSlot<'_, T>>> {
        let Some(ab) = self.head.as_ref() else {
            return Ok(None);
        };
        let Some(seq) = self.seq else {
            return Ok(Some(LoraSlot { ab, segs: None }));
        };
        let mut segs = vec![(0usize, 0usize); self.members];
        let mut next = 0; // members before `next` are closed
        for (i, &r) in rows.iter().enumerate() {
            let k = r / seq.max(1);
            if k >= self.members || k + 1 < next {
                return Err(Error::Backend(format!(
                    "batched LoRA: scored row {r} is outside the members or out of member order"
                )));
            }
            if k + 1 > next {
                for s in &mut segs[next..=k] {
                    *s = (i, i);
                }
                next = k + 1;
            }
            segs[k].1 = i + 1;
        }
        for s in &mut segs[next..] {
            *s = (rows.len(), rows.len());
        }
        Ok(Some(LoraSlot {
            ab,
            segs: Some(segs),
        }))
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
    let (a, b) = ad.ab;
    match &ad.segs {
        None => {
            let u = be.linear(x, a)?;
            let d = be.linear(&u, b)?;
            Ok((u, d))
        }
        Some(segs) => {
            let u = be.linear_segments(x, a, segs)?;
            let d = be.linear_segments(&u, b, segs)?;
            Ok((u, d))
        }
    }
}
