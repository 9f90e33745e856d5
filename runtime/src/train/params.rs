//! The trainable tensors of a [`ModelWeights`] as flat slices, in the one fixed order of
//! [`ModelWeights::params_mut`], so that a gradient (a `ModelWeights` of the same layout, as
//! [`super::Gradients::base`] returns) and the weights line up slice for slice. Blocks
//! `0..freeze_blocks` are left out (frozen).

use crate::model::ModelWeights;

/// Whether `name` belongs to one of the first `freeze_blocks` blocks.
pub(crate) fn frozen(name: &str, freeze_blocks: usize) -> bool {
    name.strip_prefix("blocks.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| i < freeze_blocks)
}

/// The trainable tensors of `w` (blocks before `freeze_blocks` excluded).
pub fn trainable_mut(w: &mut ModelWeights, freeze_blocks: usize) -> Vec<&mut [f32]> {
    w.params_mut()
        .into_iter()
        .filter(|p| !frozen(&p.name, freeze_blocks))
        .map(|p| p.values)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freezing_drops_exactly_the_first_blocks() {
        assert!(frozen("blocks.0.attn.c_q.weight", 1));
        assert!(!frozen("blocks.1.attn.c_q.weight", 1));
        assert!(!frozen("blocks.10.mlp_scale", 2));
        assert!(!frozen("tok_emb.weight", 9));
        assert!(!frozen("skip_weights", 9));
    }
}
