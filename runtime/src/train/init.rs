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
        if !self.tie_embeddings {
            out.push(("lm_head.weight".into(), vec![v, d]));
        }
        Ok(out)
    }

    /// The full model config, inferred from the shapes exactly as for a loaded artifact.
    pub fn config(&self, overrides: &ConfigOverrides) -> Result<ModelConfig> {
        let shapes = self.shapes()?;
        let refs: Vec<(&str, &[usize])> = shapes
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice()))
            .collect();
        ModelConfig::infer(&refs, overrides)
    }
}

/// Initialisation knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InitConfig {
    pub seed: u64,
    pub tied_embed_init_std: f32,
    pub qk_gain_init: f32,
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig {
            seed: 1337,
            tied_embed_init_std: 0.005,
            qk_gain_init: 1.5,
        }
    }
}

/// Standard normal draw (Box-Muller).
fn normal(rng: &mut SplitMix64) -> f32 {
    let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
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
            (_, "q_gain") => p.values.fill(init.qk_gain_init),
            (_, "resid_mix") => {
                let d = p.shape[1];
                p.values[..d].fill(1.0);
                p.values[d..].fill(0.0);
            }
            _ if name.ends_with("attn.proj.weight") || name.ends_with("mlp.proj.weight") => {}
            _ if group_of(name, &p.shape) == Group::Matrix => {
                let bound = 1.0 / (p.shape[1] as f32).sqrt();
                p.values
                    .iter_mut()
                    .for_each(|v| *v = bound * (2.0 * rng.next_f32() - 1.0));
            }
            _ => {} // lm_head: zeros
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(b.q_gain, vec![1.5; 8]);
        assert_eq!(b.resid_mix.row(1), &[0.0; 512][..]);
        let std = (w.tok_emb.data.iter().map(|v| v * v).sum::<f32>() / w.tok_emb.data.len() as f32)
            .sqrt();
        assert!((std - 0.005).abs() < 2e-4, "tok_emb std {std}");
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut a = Architecture::baseline();
        a.num_kv_heads = 3;
        assert!(a.config(&ConfigOverrides::default()).is_err());
    }
}
