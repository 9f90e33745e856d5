//! Which optimizer updates which parameter (spec 3.4): matrices inside the blocks go to Muon,
//! embedding tables and the untied head to their own Adam groups, everything else (control
//! tensors such as scales, gains, mixes and skip weights) to the scalar Adam group. #581 adds
//! the sidecar's 2-D parameters to Muon (`site_gate` too, an `nn.Embedding` but 2-D there);
//! its 3-D convolution kernel and `shared_sparse_scale` go to the scalar group.

use crate::artifact::quant::is_control;

/// An optimizer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// 2-D block matrices: Muon (`MATRIX_LR`).
    Matrix,
    /// `tok_emb` and the other embedding tables: Adam (`TIED_EMBED_LR` or `EMBED_LR`).
    Embed,
    /// Untied `lm_head`: Adam (`HEAD_LR`).
    Head,
    /// Everything else: Adam (`SCALAR_LR`).
    Scalar,
}

/// The optimizer group of a parameter: [`group_of`], except that with `bigram_proj_muon` the
/// BigramHash projection `bigram.proj.weight` goes to Muon (the 1.1271 record; the LeakyReLU
/// record keeps it in the scalar Adam group, spec 4.2).
pub fn optimizer_group(name: &str, shape: &[usize], bigram_proj_muon: bool) -> Group {
    if bigram_proj_muon && name == "bigram.proj.weight" && shape.len() == 2 {
        Group::Matrix
    } else {
        group_of(name, shape)
    }
}

/// The group of a parameter from its state-dict name and shape.
pub fn group_of(name: &str, shape: &[usize]) -> Group {
    if name == "lm_head.weight" {
        Group::Head
    } else if name == "tok_emb.weight" || name.ends_with(".embed.weight") {
        Group::Embed
    } else if (name.starts_with("blocks.") || name.starts_with("shared_sparse."))
        && shape.len() == 2
        && !is_control(name)
    {
        Group::Matrix
    } else {
        Group::Scalar
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_names_fall_in_their_spec_groups() {
        assert_eq!(group_of("tok_emb.weight", &[1024, 512]), Group::Embed);
        assert_eq!(group_of("lm_head.weight", &[1024, 512]), Group::Head);
        assert_eq!(
            group_of("blocks.0.attn.c_q.weight", &[512, 512]),
            Group::Matrix
        );
        assert_eq!(
            group_of("blocks.8.mlp.proj.weight", &[512, 1024]),
            Group::Matrix
        );
        // resid_mix is 2-D but a control tensor.
        assert_eq!(group_of("blocks.0.resid_mix", &[2, 512]), Group::Scalar);
        assert_eq!(group_of("blocks.0.attn.q_gain", &[8]), Group::Scalar);
        assert_eq!(group_of("skip_weights", &[4, 512]), Group::Scalar);
        assert_eq!(group_of("bigram.embed.weight", &[2048, 128]), Group::Embed);
        let proj = ("bigram.proj.weight", [512usize, 128]);
        assert_eq!(optimizer_group(proj.0, &proj.1, false), Group::Scalar);
        assert_eq!(optimizer_group(proj.0, &proj.1, true), Group::Matrix);
        assert_eq!(optimizer_group("bigram.scale", &[], true), Group::Scalar);
        // #581's split of the sidecar.
        for m in ["gate", "value", "proj", "site_gate"] {
            let name = format!("shared_sparse.{m}.weight");
            assert_eq!(group_of(&name, &[16, 64]), Group::Matrix, "{name}");
        }
        assert_eq!(
            group_of("shared_sparse.local.weight", &[16, 1, 3]),
            Group::Scalar
        );
        assert_eq!(group_of("shared_sparse_scale", &[3, 64]), Group::Scalar);
    }
}
