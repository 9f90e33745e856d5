//! Every parameter of a model as one named tree, generic over where a parameter lives.
//!
//! `Params<Matrix>` holds host float32 weights (load, export, checkpoints, the optimizers'
//! oracle), `Params<B::Tensor>` the weights of a [`super::DeviceModel`] or the gradients of a
//! backward, and the optimizers' state is the same tree again. [`Params::leaves`] /
//! [`Params::leaves_mut`] give every parameter under its state-dict name in `train_gpt.py`'s
//! registration order (the one place that maps names to fields, the `walk!` macro), and
//! [`Params::try_map`] builds the same tree over another type. Adding a parameter to the model
//! means adding one field here, its line in `walk!` and `try_map`, and its forward and
//! backward.
//!
//! Every value is a 2-D tensor (`[rows, cols]`); [`Dims`] says how the state dict shapes it
//! (a matrix, a vector `[n]`, a 0-dim scalar `[]`, or a `[1]`).

use super::config::ModelConfig;

/// How a parameter is shaped in the state dict (its value is always `[rows, cols]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dims {
    /// `[rows, cols]`.
    Matrix,
    /// `[cols]` (held as `[1, cols]`).
    Vector,
    /// A 0-dim scalar `[]` (held as `[1, 1]`).
    Scalar,
    /// A one-element `[1]` (held as `[1, 1]`).
    One,
    /// A depthwise `Conv1d` kernel `[rows, 1, cols]` (held as `[rows, cols]`).
    Conv,
}

impl Dims {
    /// The state-dict shape of a `[rows, cols]` value.
    pub fn shape(self, rows: usize, cols: usize) -> Vec<usize> {
        match self {
            Dims::Matrix => vec![rows, cols],
            Dims::Vector => vec![cols],
            Dims::Scalar => vec![],
            Dims::One => vec![1],
            Dims::Conv => vec![rows, 1, cols],
        }
    }
}

/// Whether parameter `name` is read only as the weight of a matrix product, an embedding
/// gather or the head (what [`crate::backend::Backend::upload_weight`] may store in reduced
/// precision): a 2-D matrix that is not a control tensor, nor one of the sidecar's per-site
/// rows (read as biases and scales).
pub fn is_product_weight(name: &str, dims: Dims) -> bool {
    dims == Dims::Matrix
        && !crate::artifact::quant::is_control(name)
        && name != "shared_sparse.site_gate.weight"
        && name != "shared_sparse_scale"
}

/// One transformer block's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockParams<T> {
    pub c_q: T,
    pub c_k: T,
    pub c_v: T,
    pub attn_proj: T,
    pub q_gain: T,
    pub mlp_fc: T,
    pub mlp_proj: T,
    pub attn_scale: T,
    pub mlp_scale: T,
    /// `[2, d]`: row 0 scales the stream, row 1 the embedding stream `x0`.
    pub resid_mix: T,
}

/// BigramHash's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BigramParams<T> {
    pub embed: T,
    /// Projection to the model width; absent when the table is already that wide.
    pub proj: Option<T>,
    /// `[1, 1]`.
    pub scale: T,
}

/// The shared value embedding's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueEmbedParams<T> {
    pub embed: T,
    pub proj: T,
    /// `[1, 1]`.
    pub scale: T,
    /// One `[1, 1]` per value-embedding layer.
    pub layer_scales: Vec<T>,
}

/// The shared sparse sidecar's parameters (PR #555/#581): one module applied after several
/// blocks, with a gate bias and an output scale per site.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarParams<T> {
    /// `[hidden, d]`.
    pub gate: T,
    /// `[hidden, d]`.
    pub value: T,
    /// The causal depthwise kernel `[hidden, k]` (`[hidden, 1, k]` in the state dict).
    pub local: T,
    /// `[d, hidden]`.
    pub proj: T,
    /// `[sites, hidden]`: the gate's bias at each site.
    pub site_gate: T,
    /// `[sites, d]`: the output's scale at each site (`shared_sparse_scale`).
    pub scale: T,
}

/// All parameters of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Params<T> {
    pub tok_emb: T,
    pub bigram: Option<BigramParams<T>>,
    /// `[1, d]`, with SmearGate.
    pub smear_gate: Option<T>,
    /// `[num_skips, d]`, when the model has U-Net skips.
    pub skip_weights: Option<T>,
    pub blocks: Vec<BlockParams<T>>,
    pub sidecar: Option<SidecarParams<T>>,
    pub value_embed: Option<ValueEmbedParams<T>>,
    /// Untied output head; `None` when tied to `tok_emb`.
    pub lm_head: Option<T>,
}

/// Calls `$f(name, dims, value)` for every parameter of `$p` in the state dict's order, with
/// the values borrowed by `$($r)+` (`&` or `&mut`). The one list of names.
macro_rules! walk {
    ($p:expr, $f:expr, $($r:tt)+) => {{
        let p = $p;
        let f = &mut $f;
        f("tok_emb.weight".to_string(), Dims::Matrix, $($r)+ p.tok_emb);
        if let Some(b) = $($r)+ p.bigram {
            f("bigram.embed.weight".to_string(), Dims::Matrix, $($r)+ b.embed);
            if let Some(x) = $($r)+ b.proj {
                f("bigram.proj.weight".to_string(), Dims::Matrix, x);
            }
            f("bigram.scale".to_string(), Dims::Scalar, $($r)+ b.scale);
        }
        if let Some(g) = $($r)+ p.smear_gate {
            f("smear.gate".to_string(), Dims::Vector, g);
        }
        if let Some(s) = $($r)+ p.skip_weights {
            f("skip_weights".to_string(), Dims::Matrix, s);
        }
        for (i, b) in ($($r)+ p.blocks).into_iter().enumerate() {
            let n = |leaf: &str| format!("blocks.{i}.{leaf}");
            f(n("attn.c_q.weight"), Dims::Matrix, $($r)+ b.c_q);
            f(n("attn.c_k.weight"), Dims::Matrix, $($r)+ b.c_k);
            f(n("attn.c_v.weight"), Dims::Matrix, $($r)+ b.c_v);
            f(n("attn.proj.weight"), Dims::Matrix, $($r)+ b.attn_proj);
            f(n("attn.q_gain"), Dims::Vector, $($r)+ b.q_gain);
            f(n("mlp.fc.weight"), Dims::Matrix, $($r)+ b.mlp_fc);
            f(n("mlp.proj.weight"), Dims::Matrix, $($r)+ b.mlp_proj);
            f(n("attn_scale"), Dims::Vector, $($r)+ b.attn_scale);
            f(n("mlp_scale"), Dims::Vector, $($r)+ b.mlp_scale);
            f(n("resid_mix"), Dims::Matrix, $($r)+ b.resid_mix);
        }
        if let Some(sc) = $($r)+ p.sidecar {
            f("shared_sparse.gate.weight".to_string(), Dims::Matrix, $($r)+ sc.gate);
            f("shared_sparse.value.weight".to_string(), Dims::Matrix, $($r)+ sc.value);
            f("shared_sparse.local.weight".to_string(), Dims::Conv, $($r)+ sc.local);
            f("shared_sparse.proj.weight".to_string(), Dims::Matrix, $($r)+ sc.proj);
            f("shared_sparse.site_gate.weight".to_string(), Dims::Matrix, $($r)+ sc.site_gate);
            f("shared_sparse_scale".to_string(), Dims::Matrix, $($r)+ sc.scale);
        }
        if let Some(v) = $($r)+ p.value_embed {
            f("ve_shared.embed.weight".to_string(), Dims::Matrix, $($r)+ v.embed);
            f("ve_shared.proj.weight".to_string(), Dims::Matrix, $($r)+ v.proj);
            f("ve_shared.scale".to_string(), Dims::Scalar, $($r)+ v.scale);
            for (k, x) in ($($r)+ v.layer_scales).into_iter().enumerate() {
                f(format!("ve_layer_scales.{k}"), Dims::One, x);
            }
        }
        if let Some(h) = $($r)+ p.lm_head {
            f("lm_head.weight".to_string(), Dims::Matrix, h);
        }
    }};
}

impl<T> Params<T> {
    /// Every parameter: `(state-dict name, dims, value)`, in the state dict's order.
    pub fn leaves(&self) -> Vec<(String, Dims, &T)> {
        let mut out = Vec::new();
        walk!(self, |n, d, v| out.push((n, d, v)), &);
        out
    }

    /// [`Params::leaves`], mutably.
    pub fn leaves_mut(&mut self) -> Vec<(String, Dims, &mut T)> {
        let mut out = Vec::new();
        walk!(self, |n, d, v| out.push((n, d, v)), &mut);
        out
    }

    /// The values alone, mutably, in the state dict's order.
    pub fn values_mut(&mut self) -> Vec<&mut T> {
        self.leaves_mut().into_iter().map(|(_, _, v)| v).collect()
    }

    /// The same tree with `f(name, dims, value)` in place of every value (called in the
    /// state dict's order); the first error stops it.
    pub fn try_map<U, E>(
        &self,
        mut f: impl FnMut(&str, Dims, &T) -> Result<U, E>,
    ) -> Result<Params<U>, E> {
        // Names and dims come from the walk; the tree is rebuilt here in the same order (a unit
        // test holds the two to the same sequence).
        let mut names = self.leaves().into_iter().map(|(n, d, _)| (n, d));
        let mut g = |v: &T| {
            let (n, d) = names.next().expect("try_map visits the walk's leaves");
            f(&n, d, v)
        };
        let tok_emb = g(&self.tok_emb)?;
        let bigram = match &self.bigram {
            Some(b) => Some(BigramParams {
                embed: g(&b.embed)?,
                proj: b.proj.as_ref().map(&mut g).transpose()?,
                scale: g(&b.scale)?,
            }),
            None => None,
        };
        let smear_gate = self.smear_gate.as_ref().map(&mut g).transpose()?;
        let skip_weights = self.skip_weights.as_ref().map(&mut g).transpose()?;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            blocks.push(BlockParams {
                c_q: g(&b.c_q)?,
                c_k: g(&b.c_k)?,
                c_v: g(&b.c_v)?,
                attn_proj: g(&b.attn_proj)?,
                q_gain: g(&b.q_gain)?,
                mlp_fc: g(&b.mlp_fc)?,
                mlp_proj: g(&b.mlp_proj)?,
                attn_scale: g(&b.attn_scale)?,
                mlp_scale: g(&b.mlp_scale)?,
                resid_mix: g(&b.resid_mix)?,
            });
        }
        let sidecar = match &self.sidecar {
            Some(sc) => Some(SidecarParams {
                gate: g(&sc.gate)?,
                value: g(&sc.value)?,
                local: g(&sc.local)?,
                proj: g(&sc.proj)?,
                site_gate: g(&sc.site_gate)?,
                scale: g(&sc.scale)?,
            }),
            None => None,
        };
        let value_embed = match &self.value_embed {
            Some(v) => Some(ValueEmbedParams {
                embed: g(&v.embed)?,
                proj: g(&v.proj)?,
                scale: g(&v.scale)?,
                layer_scales: v
                    .layer_scales
                    .iter()
                    .map(&mut g)
                    .collect::<Result<_, E>>()?,
            }),
            None => None,
        };
        let lm_head = self.lm_head.as_ref().map(&mut g).transpose()?;
        Ok(Params {
            tok_emb,
            bigram,
            smear_gate,
            skip_weights,
            blocks,
            sidecar,
            value_embed,
            lm_head,
        })
    }

    /// [`Params::try_map`] with an infallible `f`.
    pub fn map<U>(&self, mut f: impl FnMut(&str, Dims, &T) -> U) -> Params<U> {
        let r: Result<Params<U>, std::convert::Infallible> = self.try_map(|n, d, v| Ok(f(n, d, v)));
        match r {
            Ok(p) => p,
            Err(e) => match e {},
        }
    }

    /// Calls `f(name, a, b)` on the values of two trees of the same model, pairwise; an error
    /// if their names differ (trees of different models).
    pub fn zip_mut<U>(
        &mut self,
        other: &Params<U>,
        mut f: impl FnMut(&str, &mut T, &U) -> crate::Result<()>,
    ) -> crate::Result<()> {
        let (a, b) = (self.leaves_mut(), other.leaves());
        if a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| x.0 != y.0) {
            return Err(crate::Error::Backend(
                "parameters of different models paired".into(),
            ));
        }
        for ((n, _, x), (_, _, y)) in a.into_iter().zip(b) {
            f(&n, x, y)?;
        }
        Ok(())
    }

    /// The output head (`tok_emb` when tied).
    pub fn head(&self) -> &T {
        self.lm_head.as_ref().unwrap_or(&self.tok_emb)
    }
}

/// `[rows, cols]` of every parameter of `config`.
pub fn layout(config: &ModelConfig) -> Params<(usize, usize)> {
    let (d, v, kv, hid) = (
        config.model_dim,
        config.vocab_size,
        config.kv_dim(),
        config.mlp_hidden,
    );
    let block = || BlockParams {
        c_q: (d, d),
        c_k: (kv, d),
        c_v: (kv, d),
        attn_proj: (d, d),
        q_gain: (1, config.num_heads),
        mlp_fc: (hid, d),
        mlp_proj: (d, hid),
        attn_scale: (1, d),
        mlp_scale: (1, d),
        resid_mix: (2, d),
    };
    Params {
        tok_emb: (v, d),
        bigram: config.bigram.map(|b| BigramParams {
            embed: (b.buckets, b.dim),
            proj: (b.dim != d).then_some((d, b.dim)),
            scale: (1, 1),
        }),
        smear_gate: config.smear_gate.then_some((1, d)),
        skip_weights: (config.num_skips > 0).then_some((config.num_skips, d)),
        blocks: (0..config.num_layers).map(|_| block()).collect(),
        sidecar: config.sidecar.as_ref().map(|sc| SidecarParams {
            gate: (sc.hidden, d),
            value: (sc.hidden, d),
            local: (sc.hidden, sc.kernel),
            proj: (d, sc.hidden),
            site_gate: (sc.layers.len(), sc.hidden),
            scale: (sc.layers.len(), d),
        }),
        value_embed: config.value_embed.as_ref().map(|ve| ValueEmbedParams {
            embed: (v, ve.dim),
            proj: (kv, ve.dim),
            scale: (1, 1),
            layer_scales: vec![(1, 1); ve.layers.len()],
        }),
        lm_head: (!config.tied_embeddings).then_some((v, d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree with every optional part present, each value its own index.
    fn full() -> Params<usize> {
        let mut i = 0;
        let mut n = || {
            i += 1;
            i
        };
        Params {
            tok_emb: n(),
            bigram: Some(BigramParams {
                embed: n(),
                proj: Some(n()),
                scale: n(),
            }),
            smear_gate: Some(n()),
            skip_weights: Some(n()),
            blocks: (0..2)
                .map(|_| BlockParams {
                    c_q: n(),
                    c_k: n(),
                    c_v: n(),
                    attn_proj: n(),
                    q_gain: n(),
                    mlp_fc: n(),
                    mlp_proj: n(),
                    attn_scale: n(),
                    mlp_scale: n(),
                    resid_mix: n(),
                })
                .collect(),
            sidecar: Some(SidecarParams {
                gate: n(),
                value: n(),
                local: n(),
                proj: n(),
                site_gate: n(),
                scale: n(),
            }),
            value_embed: Some(ValueEmbedParams {
                embed: n(),
                proj: n(),
                scale: n(),
                layer_scales: vec![n(), n()],
            }),
            lm_head: Some(n()),
        }
    }

    #[test]
    fn try_map_visits_the_walks_leaves_in_order() {
        let p = full();
        let mut seen = Vec::new();
        let q = p.map(|name, dims, &v| {
            seen.push((name.to_string(), dims, v));
            v * 10
        });
        let walked: Vec<(String, Dims, usize)> =
            p.leaves().into_iter().map(|(n, d, &v)| (n, d, v)).collect();
        assert_eq!(seen, walked);
        // The values are the walk's in the same order: 1, 2, 3, ...
        let vals: Vec<usize> = walked.iter().map(|x| x.2).collect();
        assert_eq!(vals, (1..=vals.len()).collect::<Vec<_>>());
        assert!(q
            .leaves()
            .iter()
            .zip(&walked)
            .all(|(a, b)| *a.2 == b.2 * 10));
        let names: Vec<&str> = walked.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names[0], "tok_emb.weight");
        assert_eq!(names[4], "smear.gate");
        assert_eq!(names[6], "blocks.0.attn.c_q.weight");
        assert_eq!(*names.last().unwrap(), "lm_head.weight");
        let uniq: std::collections::HashSet<&&str> = names.iter().collect();
        assert_eq!(uniq.len(), names.len(), "names are unique");
    }

    #[test]
    fn zip_refuses_trees_of_different_models() {
        let mut a = full();
        let b = full();
        a.zip_mut(&b, |_, x, y| {
            *x += *y;
            Ok(())
        })
        .unwrap();
        assert_eq!(a.tok_emb, 2);
        let mut c = full();
        c.lm_head = None;
        assert!(c.zip_mut(&b, |_, _, _| Ok(())).is_err());
    }

    #[test]
    fn dims_give_the_state_dict_shapes() {
        assert_eq!(Dims::Matrix.shape(3, 4), vec![3, 4]);
        assert_eq!(Dims::Vector.shape(1, 4), vec![4]);
        assert!(Dims::Scalar.shape(1, 1).is_empty());
        assert_eq!(Dims::One.shape(1, 1), vec![1]);
        assert_eq!(Dims::Conv.shape(48, 3), vec![48, 1, 3]);
    }
}
