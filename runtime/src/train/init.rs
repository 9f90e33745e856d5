//! A fresh model: the architecture from its hyper-parameters (`NUM_LAYERS`, `MODEL_DIM`, ...)
//! and the baseline initialisation of spec 3.2:
//!
//! | tensor | init |
//! |---|---|
//! | `tok_emb` (tied) | N(0, `tied_embed_init_std`²) |
//! | `tok_emb` (untied) | N(0, 1) (`nn.Embedding` default) |
//! | `c_q`, `c_k`, `c_v`, `mlp.fc` | U(±1/√in) (`nn.Linear` default) |
//! | `attn.proj`, `mlp.proj`, `lm_head` | zeros |
//! | `q_gain` | `qk_gain_init` |
//! | `attn_scale`, `mlp_scale`, `skip_weights`, `resid_mix[0]` | ones; `resid_mix[1]` zeros |
//! | `bigram.embed`, `bigram.proj` / `bigram.scale` (spec 4.2) | zeros / 0.05 |
//! | `smear.gate` (spec 4.3) | zeros |
//! | `ve_shared.embed` / `ve_shared.proj` / `ve_shared.scale` / `ve_layer_scales` (spec 4.8) | N(0, 0.01²) / zeros / 0.1 / ones |
//! | `shared_sparse.{gate,value,proj}` / `.local` / `.site_gate`, `shared_sparse_scale` (#555/#581) | U(±1/√in) / U(±1/√k) (`nn.Conv1d` default) / zeros |
//!
//! With the orthogonal init (spec 4.4) every matrix of both dims ≥ 64 is drawn orthogonal, and
//! the projections named `*.proj` among them (BigramHash's, VE's, the sidecar's; the blocks' are
//! zero) are scaled by `1/sqrt(2L)`, as the records' `_init_weights` does.
//!
//! The random streams differ from PyTorch's, so runs match PyTorch in distribution, not bit
//! for bit.

use super::groups::{group_of, Group};
use super::lora::SplitMix64;
use crate::model::{ConfigOverrides, ModelConfig, ModelWeights};
use crate::{Error, Result};

/// The shape hyper-parameters of a baseline-family model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Architecture {
    pub vocab_size: usize,
    pub num_layers: usize,
    pub model_dim: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// MLP hidden width = `mlp_mult · model_dim`.
    pub mlp_mult: f32,
    pub tie_embeddings: bool,
    /// BigramHash `(buckets, dim)` (spec 4.2 variant B); `dim == model_dim` has no projection.
    pub bigram: Option<(usize, usize)>,
    /// SmearGate (spec 4.3 variant B).
    pub smear_gate: bool,
    /// Value embeddings `(dim, n)` on the last `n` layers (spec 4.8).
    pub value_embed: Option<(usize, usize)>,
    /// The shared sparse sidecar (#555/#581).
    pub sidecar: Option<SidecarArch>,
}

/// The sidecar's hyper-parameters, as #581 names them (`SPARSE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidecarArch {
    /// `SPARSE_HIDDEN_DIM` (48 in #581).
    pub hidden: usize,
    /// `SPARSE_START_LAYER` (8).
    pub start_layer: usize,
    /// `SPARSE_END_LAYER` (`None`: the last layer).
    pub end_layer: Option<usize>,
    /// `SPARSE_EVERY` (1).
    pub every: usize,
    /// `SPARSE_MAX_SITES` (0: no limit).
    pub max_sites: usize,
}

impl SidecarArch {
    /// Taps of the causal convolution (#581's `kernel_size=3`).
    pub const KERNEL: usize = 3;

    /// The layers it follows, by #581's rule: `start ≤ i ≤ end`, every `every`-th, at most
    /// `max_sites` of them.
    pub fn layers(&self, num_layers: usize) -> Vec<usize> {
        let end = self
            .end_layer
            .unwrap_or(num_layers.saturating_sub(1))
            .min(num_layers.saturating_sub(1));
        let mut l: Vec<usize> = (0..num_layers)
            .filter(|&i| {
                self.hidden > 0
                    && i >= self.start_layer
                    && i <= end
                    && (i - self.start_layer).is_multiple_of(self.every.max(1))
            })
            .collect();
        if self.max_sites > 0 {
            l.truncate(self.max_sites);
        }
        l
    }
}

impl Architecture {
    /// The challenge baseline: 9 layers, d 512, 8 heads / 4 KV, MLP 2x, vocab 1024, tied.
    pub fn baseline() -> Self {
        Architecture {
            vocab_size: 1024,
            num_layers: 9,
            model_dim: 512,
            num_heads: 8,
            num_kv_heads: 4,
            mlp_mult: 2.0,
            tie_embeddings: true,
            bigram: None,
            smear_gate: false,
            value_embed: None,
            sidecar: None,
        }
    }

    /// State-dict names and shapes of this architecture.
    fn shapes(&self) -> Result<Vec<(String, Vec<usize>)>> {
        let (v, d, h, kvh) = (
            self.vocab_size,
            self.model_dim,
            self.num_heads,
            self.num_kv_heads,
        );
        if v == 0 || d == 0 || h == 0 || kvh == 0 || self.num_layers == 0 {
            return Err(Error::Usage(
                "vocab, layers, model dim and heads must be positive".into(),
            ));
        }
        if d % h != 0 || h % kvh != 0 || (d / h) % 2 != 0 {
            return Err(Error::Usage(format!(
                "MODEL_DIM {d} must split into {h} heads of even width, and NUM_HEADS into \
                 NUM_KV_HEADS {kvh} groups"
            )));
        }
        let hid = (self.mlp_mult * d as f32) as usize;
        if hid == 0 {
            return Err(Error::Usage("MLP_MULT gives an empty MLP".into()));
        }
        let kv = kvh * (d / h);
        let skips = self.num_layers / 2;
        let mut out = vec![("tok_emb.weight".to_string(), vec![v, d])];
        if skips > 0 {
            out.push(("skip_weights".into(), vec![skips, d]));
        }
        for i in 0..self.num_layers {
            let p = format!("blocks.{i}.");
            out.extend([
                (format!("{p}attn.c_q.weight"), vec![d, d]),
                (format!("{p}attn.c_k.weight"), vec![kv, d]),
                (format!("{p}attn.c_v.weight"), vec![kv, d]),
                (format!("{p}attn.proj.weight"), vec![d, d]),
                (format!("{p}attn.q_gain"), vec![h]),
                (format!("{p}mlp.fc.weight"), vec![hid, d]),
                (format!("{p}mlp.proj.weight"), vec![d, hid]),
                (format!("{p}attn_scale"), vec![d]),
                (format!("{p}mlp_scale"), vec![d]),
                (format!("{p}resid_mix"), vec![2, d]),
            ]);
        }
        if let Some((buckets, dim)) = self.bigram {
            if buckets < 2 || dim == 0 {
                return Err(Error::Usage(format!(
                    "BigramHash needs at least 2 buckets and a positive dim (got {buckets} x {dim})"
                )));
            }
            out.push(("bigram.embed.weight".into(), vec![buckets, dim]));
            if dim != d {
                out.push(("bigram.proj.weight".into(), vec![d, dim]));
            }
            out.push(("bigram.scale".into(), vec![]));
        }
        if self.smear_gate {
            out.push(("smear.gate".into(), vec![d]));
        }
        if let Some((dim, n)) = self.value_embed {
            if dim == 0 || n == 0 || n > self.num_layers {
                return Err(Error::Usage(format!(
                    "value embeddings need a positive dim and 1..={} layers (got {dim}, {n})",
                    self.num_layers
                )));
            }
            out.push(("ve_shared.embed.weight".into(), vec![v, dim]));
            out.push(("ve_shared.proj.weight".into(), vec![kv, dim]));
            out.push(("ve_shared.scale".into(), vec![]));
            for k in 0..n {
                out.push((format!("ve_layer_scales.{k}"), vec![1]));
            }
        }
        if let Some(sc) = &self.sidecar {
            let (h, n) = (sc.hidden, sc.layers(self.num_layers).len());
            if h == 0 || n == 0 || sc.every == 0 {
                return Err(Error::Usage(format!(
                    "the sparse sidecar needs a positive hidden width and every, and at least \
                     one layer from SPARSE_START_LAYER {} (got hidden {h}, every {}, {n} sites)",
                    sc.start_layer, sc.every
                )));
            }
            out.extend([
                ("shared_sparse.gate.weight".into(), vec![h, d]),
                ("shared_sparse.value.weight".into(), vec![h, d]),
                (
                    "shared_sparse.local.weight".into(),
                    vec![h, 1, SidecarArch::KERNEL],
                ),
                ("shared_sparse.proj.weight".into(), vec![d, h]),
                ("shared_sparse.site_gate.weight".into(), vec![n, h]),
                ("shared_sparse_scale".into(), vec![n, d]),
            ]);
        }
        if !self.tie_embeddings {
            out.push(("lm_head.weight".into(), vec![v, d]));
        }
        Ok(out)
    }

    /// The full model config, inferred from the shapes exactly as for a loaded artifact (the
    /// sidecar's layers, which shapes cannot tell, from its hyper-parameters unless
    /// `overrides` names them).
    pub fn config(&self, overrides: &ConfigOverrides) -> Result<ModelConfig> {
        let shapes = self.shapes()?;
        let refs: Vec<(&str, &[usize])> = shapes
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice()))
            .collect();
        let mut ov = overrides.clone();
        if let (Some(sc), None) = (&self.sidecar, &ov.sidecar_layers) {
            ov.sidecar_layers = Some(sc.layers(self.num_layers));
        }
        ModelConfig::infer(&refs, &ov)
    }
}

/// Initialisation knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InitConfig {
    pub seed: u64,
    pub tied_embed_init_std: f32,
    pub qk_gain_init: f32,
    /// Orthogonal init (gain 1) of every non-zero-init block matrix and of the BigramHash / VE
    /// projections with both dims ≥ 64, as the 11-layer lineage does (spec 4.4); otherwise
    /// `nn.Linear`'s uniform init.
    pub orthogonal: bool,
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig {
            seed: 1337,
            tied_embed_init_std: 0.005,
            qk_gain_init: 1.5,
            orthogonal: false,
        }
    }
}

/// Standard normal draw (Box-Muller).
fn normal(rng: &mut SplitMix64) -> f32 {
    let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// A random `rows × cols` matrix with orthonormal rows (rows ≤ cols) or columns: Gaussian draws
/// orthonormalised by modified Gram-Schmidt in f64 (what `nn.init.orthogonal_` gives, in law).
fn orthogonal(rows: usize, cols: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let (n, len) = (rows.min(cols), rows.max(cols));
    let mut vecs: Vec<Vec<f64>> = Vec::with_capacity(n);
    while vecs.len() < n {
        let mut v: Vec<f64> = (0..len).map(|_| normal(rng) as f64).collect();
        for u in &vecs {
            let d: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= d * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 1e-6 {
            v.iter_mut().for_each(|a| *a /= norm);
            vecs.push(v);
        }
    }
    let mut out = vec![0.0f32; rows * cols];
    for (i, v) in vecs.iter().enumerate() {
        for (j, &x) in v.iter().enumerate() {
            let (r, c) = if rows <= cols { (i, j) } else { (j, i) };
            out[r * cols + c] = x as f32;
        }
    }
    out
}

/// Fresh weights for `config` (spec 3.2).
pub fn init_weights(config: &ModelConfig, init: &InitConfig) -> ModelWeights {
    let mut w = ModelWeights::zeros(config);
    let mut rng = SplitMix64(init.seed);
    for p in w.params_mut() {
        let name = p.name.as_str();
        let leaf = name.rsplit('.').next().unwrap_or(name);
        match (name, leaf) {
            ("tok_emb.weight", _) => {
                let std = if config.tied_embeddings {
                    init.tied_embed_init_std
                } else {
                    1.0
                };
                p.values
                    .iter_mut()
                    .for_each(|v| *v = std * normal(&mut rng));
            }
            ("skip_weights", _) | (_, "attn_scale") | (_, "mlp_scale") => p.values.fill(1.0),
            ("bigram.scale", _) => p.values.fill(0.05),
            ("ve_shared.scale", _) => p.values.fill(0.1),
            ("ve_shared.embed.weight", _) => {
                p.values
                    .iter_mut()
                    .for_each(|v| *v = 0.01 * normal(&mut rng));
            }
            _ if name.starts_with("ve_layer_scales.") => p.values.fill(1.0),
            (_, "q_gain") => p.values.fill(init.qk_gain_init),
            (_, "resid_mix") => {
                let d = p.shape[1];
                p.values[..d].fill(1.0);
                p.values[d..].fill(0.0);
            }
            _ if name.ends_with("attn.proj.weight") || name.ends_with("mlp.proj.weight") => {}
            ("shared_sparse.site_gate.weight", _) | ("shared_sparse_scale", _) => {}
            ("shared_sparse.local.weight", _) => {
                let bound = 1.0 / (p.shape[2] as f32).sqrt();
                p.values
                    .iter_mut()
                    .for_each(|v| *v = bound * (2.0 * rng.next_f32() - 1.0));
            }
            // Spec 4.4: the model-level orthogonal init also re-draws the BigramHash and VE
            // projections that their constructors zeroed (that is what makes those paths train),
            // and scales every `*.proj` it draws by 1/sqrt(2L).
            _ if (group_of(name, &p.shape) == Group::Matrix
                || name == "bigram.proj.weight"
                || name == "ve_shared.proj.weight")
                && init.orthogonal
                && p.shape[0] >= 64
                && p.shape[1] >= 64 =>
            {
                let mut o = orthogonal(p.shape[0], p.shape[1], &mut rng);
                if name.ends_with(".proj.weight") {
                    let s = 1.0 / ((2 * config.num_layers) as f32).sqrt();
                    o.iter_mut().for_each(|v| *v *= s);
                }
                p.values.copy_from_slice(&o);
            }
            _ if group_of(name, &p.shape) == Group::Matrix => {
                let bound = 1.0 / (p.shape[1] as f32).sqrt();
                p.values
                    .iter_mut()
                    .for_each(|v| *v = bound * (2.0 * rng.next_f32() - 1.0));
            }
            _ => {} // lm_head, bigram tables and projections, smear gate, VE projection: zeros
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_layers_follow_581s_rule() {
        let sc = SidecarArch {
            hidden: 48,
            start_layer: 8,
            end_layer: None,
            every: 1,
            max_sites: 0,
        };
        assert_eq!(sc.layers(11), vec![8, 9, 10]);
        assert_eq!(SidecarArch { every: 2, ..sc }.layers(11), vec![8, 10]);
        assert_eq!(SidecarArch { max_sites: 2, ..sc }.layers(11), vec![8, 9]);
        assert_eq!(
            SidecarArch {
                end_layer: Some(9),
                ..sc
            }
            .layers(11),
            vec![8, 9]
        );
        assert!(SidecarArch {
            start_layer: 11,
            ..sc
        }
        .layers(11)
        .is_empty());
        let mut a = Architecture::baseline();
        a.num_layers = 11;
        a.sidecar = Some(SidecarArch {
            start_layer: 12,
            ..sc
        });
        assert!(a.config(&ConfigOverrides::default()).is_err(), "no site");
        a.sidecar = Some(sc);
        let cfg = a.config(&ConfigOverrides::default()).unwrap();
        let s = cfg.sidecar.as_ref().unwrap();
        assert_eq!(
            (s.hidden, s.kernel, s.layers.clone()),
            (48, 3, vec![8, 9, 10])
        );
        // #581's count: 3 matrices of 48x512, 48x3 taps, 3 x (48 + 512) site values.
        let base = Architecture { sidecar: None, ..a };
        let extra = cfg.param_count()
            - base
                .config(&ConfigOverrides::default())
                .unwrap()
                .param_count();
        assert_eq!(extra, 3 * 48 * 512 + 48 * 3 + 3 * (48 + 512));
    }

    /// Spec 4.4: orthogonal `*.proj` matrices are scaled by 1/sqrt(2L) (here BigramHash's).
    #[test]
    fn orthogonal_projections_are_scaled() {
        let mut a = Architecture::baseline();
        a.num_layers = 2;
        a.model_dim = 128;
        a.bigram = Some((64, 64));
        let cfg = a.config(&ConfigOverrides::default()).unwrap();
        let init = InitConfig {
            orthogonal: true,
            ..InitConfig::default()
        };
        let w = init_weights(&cfg, &init);
        let p = w.bigram.as_ref().unwrap().proj.as_ref().unwrap();
        assert_eq!((p.rows, p.cols), (128, 64));
        for c in 0..64 {
            let n: f32 = (0..128)
                .map(|r| p.data[r * 64 + c].powi(2))
                .sum::<f32>()
                .sqrt();
            assert!(
                (n - 0.5).abs() < 1e-4,
                "column {c}: norm {n}, want 1/sqrt(4)"
            );
        }
        // A block matrix is orthogonal and not scaled: c_q's rows have unit norm.
        let q = &w.blocks[0].c_q;
        let n: f32 = q.row(3).iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4, "{n}");
    }

    #[test]
    fn baseline_architecture_has_the_spec_parameter_count() {
        let cfg = Architecture::baseline()
            .config(&ConfigOverrides::default())
            .unwrap();
        assert_eq!(cfg.param_count(), 17_059_912);
        assert_eq!(cfg.num_skips, 4);
        let w = init_weights(&cfg, &InitConfig::default());
        let b = &w.blocks[0];
        assert!(b.attn_proj.data.iter().all(|&v| v == 0.0));
        assert!(b.c_q.data.iter().all(|v| v.abs() <= 1.0 / 512f32.sqrt()));
        assert!(b.c_q.data.iter().any(|&v| v != 0.0));
        assert_eq!(b.q_gain.data, vec![1.5; 8]);
        assert_eq!(b.resid_mix.row(1), &[0.0; 512][..]);
        let std = (w.tok_emb.data.iter().map(|v| v * v).sum::<f32>() / w.tok_emb.data.len() as f32)
            .sqrt();
        assert!((std - 0.005).abs() < 2e-4, "tok_emb std {std}");
    }

    #[test]
    fn lineage_modules_get_their_tensors_and_inits() {
        let mut a = Architecture::baseline();
        a.num_layers = 4;
        a.bigram = Some((64, 32));
        a.smear_gate = true;
        a.value_embed = Some((16, 2));
        let cfg = a.config(&ConfigOverrides::default()).unwrap();
        assert_eq!(cfg.bigram.map(|b| (b.buckets, b.dim)), Some((64, 32)));
        assert!(cfg.smear_gate);
        assert_eq!(cfg.value_embed.as_ref().unwrap().layers, vec![2, 3]);
        let w = init_weights(&cfg, &InitConfig::default());
        let bg = w.bigram.as_ref().unwrap();
        assert_eq!(
            (bg.scale.value(), bg.proj.as_ref().unwrap().rows),
            (0.05, 512)
        );
        assert!(bg.embed.data.iter().all(|&v| v == 0.0));
        assert_eq!(
            w.smear_gate.as_ref().map(|g| &g.data[..]),
            Some(&[0.0; 512][..])
        );
        let ve = w.value_embed.as_ref().unwrap();
        let ls: Vec<f32> = ve.layer_scales.iter().map(|m| m.value()).collect();
        assert_eq!((ve.scale.value(), ls), (0.1, vec![1.0, 1.0]));
        assert!(ve.embed.data.iter().any(|&v| v != 0.0));
        assert_eq!(w.clone().params_mut().len(), 2 + 4 * 10 + 3 + 1 + 5);
    }

    #[test]
    fn orthogonal_init_has_orthonormal_rows_or_columns() {
        let mut rng = SplitMix64(5);
        for (r, c) in [(8, 20), (20, 8)] {
            let m = orthogonal(r, c, &mut rng);
            let (n, wide) = (r.min(c), r <= c);
            for i in 0..n {
                for j in 0..n {
                    let dot: f32 = (0..r.max(c))
                        .map(|k| {
                            let at =
                                |v: usize, k: usize| if wide { m[v * c + k] } else { m[k * c + v] };
                            at(i, k) * at(j, k)
                        })
                        .sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-5, "{r}x{c} ({i},{j}): {dot}");
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut a = Architecture::baseline();
        a.num_kv_heads = 3;
        assert!(a.config(&ConfigOverrides::default()).is_err());
    }
}
