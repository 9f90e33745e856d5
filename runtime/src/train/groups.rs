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

/// Which matrices outside the blocks go to Muon instead of their Adam group: the records differ
/// (spec 4.2). All off is [`group_of`] alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MuonRoute {
    /// `bigram.proj.weight` (1.1271 record, #489, #581, #687; the LeakyReLU record keeps it in
    /// the scalar Adam group).
    pub bigram_proj: bool,
    /// `bigram.embed.weight` (#489; the others put the table with `tok_emb`).
    pub bigram_embed: bool,
    /// `ve_shared.proj.weight` (#687).
    pub ve_proj: bool,
}

/// The optimizer group of a parameter: [`group_of`], except the matrices `route` sends to Muon.
pub fn optimizer_group(name: &str, shape: &[usize], route: MuonRoute) -> Group {
    let to_muon = match name {
        "bigram.proj.weight" => route.bigram_proj,
        "bigram.embed.weight" => route.bigram_embed,
        "ve_shared.proj.weight" => route.ve_proj,
        _ => false,
    };
    if to_muon && shape.len() == 2 {
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
        let route = |bigram_proj, bigram_embed, ve_proj| MuonRoute {
            bigram_proj,
            bigram_embed,
            ve_proj,
        };
        let all = route(true, true, true);
        assert_eq!(
            optimizer_group(proj.0, &proj.1, MuonRoute::default()),
            Group::Scalar
        );
        assert_eq!(
            optimizer_group(proj.0, &proj.1, route(true, false, false)),
            Group::Matrix
        );
        assert_eq!(optimizer_group("bigram.scale", &[], all), Group::Scalar);
        let table = ("bigram.embed.weight", [2048usize, 128]);
        assert_eq!(
            optimizer_group(table.0, &table.1, route(true, false, true)),
            Group::Embed
        );
        assert_eq!(
            optimizer_group(table.0, &table.1, route(false, true, false)),
            Group::Matrix
        );
        let ve = ("ve_shared.proj.weight", [256usize, 128]);
        assert_eq!(
            optimizer_group(ve.0, &ve.1, route(true, true, false)),
            Group::Scalar
        );
        assert_eq!(
            optimizer_group(ve.0, &ve.1, route(false, false, true)),
            Group::Matrix
        );
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
