//! The trainable tensors of a [`ModelWeights`] as flat slices, in one fixed order, so that a
//! gradient (a `ModelWeights` of the same layout, as [`super::Gradients::base`] returns) and the
//! weights line up slice for slice.
//!
//! Order: `tok_emb`, `lm_head` (if untied), `skip_weights`, then per block `c_q`, `c_k`, `c_v`,
//! `attn_proj`, `q_gain`, `mlp_fc`, `mlp_proj`, `attn_scale`, `mlp_scale`, `resid_mix`. Blocks
//! `0..freeze_blocks` are left out (frozen). BigramHash, SmearGate and value embeddings have no
//! backward and are never listed.

use crate::model::{BlockWeights, ModelWeights};

fn block_mut(b: &mut BlockWeights) -> [&mut [f32]; 10] {
    [
        &mut b.c_q.data,
        &mut b.c_k.data,
        &mut b.c_v.data,
        &mut b.attn_proj.data,
        &mut b.q_gain,
        &mut b.mlp_fc.data,
        &mut b.mlp_proj.data,
        &mut b.attn_scale,
        &mut b.mlp_scale,
        &mut b.resid_mix.data,
    ]
}

fn block(b: &BlockWeights) -> [&[f32]; 10] {
    [
        &b.c_q.data,
        &b.c_k.data,
        &b.c_v.data,
        &b.attn_proj.data,
        &b.q_gain,
        &b.mlp_fc.data,
        &b.mlp_proj.data,
        &b.attn_scale,
        &b.mlp_scale,
        &b.resid_mix.data,
    ]
}

/// The trainable tensors of `w` (blocks before `freeze_blocks` excluded), mutable.
pub fn trainable_mut(w: &mut ModelWeights, freeze_blocks: usize) -> Vec<&mut [f32]> {
    let mut out: Vec<&mut [f32]> = vec![&mut w.tok_emb.data];
    if let Some(h) = w.lm_head.as_mut() {
        out.push(&mut h.data);
    }
    out.push(&mut w.skip_weights.data);
    for b in w.blocks.iter_mut().skip(freeze_blocks) {
        out.extend(block_mut(b));
    }
    out
}

/// The same tensors as [`trainable_mut`], read-only (for gradients).
pub fn trainable(w: &ModelWeights, freeze_blocks: usize) -> Vec<&[f32]> {
    let mut out: Vec<&[f32]> = vec![&w.tok_emb.data];
    if let Some(h) = w.lm_head.as_ref() {
        out.push(&h.data);
    }
    out.push(&w.skip_weights.data);
    for b in w.blocks.iter().skip(freeze_blocks) {
        out.extend(block(b));
    }
    out
}
