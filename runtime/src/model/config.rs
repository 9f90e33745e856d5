//! Architecture of a parameter-golf GPT, inferred from tensor names and shapes.
//!
//! Shapes tell layers, width, heads (from `q_gain`), KV heads, MLP width, vocabulary, tied head,
//! U-Net skips and optional modules (BigramHash, SmearGate, value embeddings). They cannot tell
//! the RoPE base and rotated dims, the soft-cap, the activation, LN-scale damping or which layers
//! use XSA: those come from [`ConfigOverrides`] with the baseline's values as defaults.

use crate::{Error, Result};
use std::fmt;

/// MLP activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `relu(x)^2` (baseline).
    Relu2,
    /// `leaky_relu(x, slope)^2` (LeakyReLU(0.5)^2 records).
    LeakyRelu2 { slope: f32 },
}

impl std::str::FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "relu2" | "relu^2" => Ok(Activation::Relu2),
            "leaky_relu2" | "leaky-relu2" | "leaky_relu^2" => {
                Ok(Activation::LeakyRelu2 { slope: 0.5 })
            }
            _ => Err(Error::Usage(format!(
                "unknown activation {s:?} (expected relu2 or leaky_relu2)"
            ))),
        }
    }
}

/// BigramHash embedding (spec 4.2, variant B): `scale * proj(embed[hash(prev, cur)])`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BigramConfig {
    /// Number of hash buckets (`B`); bucket `B - 1` means "no previous token".
    pub buckets: usize,
    /// Width of the bigram table (projected to the model width when different).
    pub dim: usize,
}

/// Shared value embedding added to the value projection of some layers (spec 4.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueEmbedConfig {
    /// Table width (128 in the records).
    pub dim: usize,
    /// Physical layer indices that receive it, in `ve_layer_scales` order.
    pub layers: Vec<usize>,
}

/// The shared sparse sidecar (PR #555/#581): after each of `layers`, the stream gets
/// `x += scale[s] ⊙ proj(silu(gate(n) + site_gate[s]) ⊙ conv(value(n)))`, `n = rms(x)`,
/// `conv` a causal depthwise convolution of `kernel` taps, `s` the site's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarConfig {
    /// Width of the gate and value paths (48 in #581).
    pub hidden: usize,
    /// Taps of the causal convolution (3 in #581).
    pub kernel: usize,
    /// Physical layers after which it runs, in site order.
    pub layers: Vec<usize>,
}

impl SidecarConfig {
    /// The site index of physical layer `layer`, if the sidecar follows it.
    pub fn site_of(&self, layer: usize) -> Option<usize> {
        self.layers.iter().position(|&l| l == layer)
    }
}

/// Full architecture description.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub model_dim: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub mlp_hidden: usize,
    /// Head shares the token embedding (`lm_head` absent).
    pub tied_embeddings: bool,
    /// Blocks in the encoder half (`num_layers / 2`); the rest form the decoder.
    pub num_encoder_layers: usize,
    /// Number of U-Net skip connections (`skip_weights` rows).
    pub num_skips: usize,
    pub rope_base: f32,
    /// Rotated dims per head (partial RoPE); equal to `head_dim` for full RoPE.
    pub rope_dims: usize,
    /// NTK rule (spec 4.5): when a window is longer than this, the RoPE base grows as
    /// `base * (S / n)^(rd / (rd - 2))`. `None` disables it.
    pub rope_ntk_train_len: Option<usize>,
    pub logit_softcap: f32,
    pub activation: Activation,
    /// Multiply both norm outputs of block `i` by `1/sqrt(i+1)` (spec 4.6).
    pub ln_scale: bool,
    /// Physical layers that apply exclusive self-attention (spec 4.7).
    pub xsa_layers: Vec<usize>,
    pub bigram: Option<BigramConfig>,
    /// SmearGate (spec 4.3 variant B) present.
    pub smear_gate: bool,
    pub value_embed: Option<ValueEmbedConfig>,
    pub sidecar: Option<SidecarConfig>,
    /// RMSNorm epsilon (float32 machine epsilon, as `F.rms_norm(eps=None)` in fp32).
    pub norm_eps: f32,
}

/// What shapes cannot tell. `None` keeps the default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigOverrides {
    pub rope_base: Option<f32>,
    pub rope_dims: Option<usize>,
    pub rope_ntk_train_len: Option<Option<usize>>,
    pub logit_softcap: Option<f32>,
    pub activation: Option<Activation>,
    pub ln_scale: Option<bool>,
    /// Apply XSA on the last N layers.
    pub xsa_last: Option<usize>,
    /// The layers the shared sparse sidecar follows, in site order (default: the last layers,
    /// one per site, as #581's `SPARSE_START_LAYER=8` on 11 layers).
    pub sidecar_layers: Option<Vec<usize>>,
}

impl ModelConfig {
    /// Infers the architecture from `(name, shape)` pairs of a state dict.
    pub fn infer(tensors: &[(&str, &[usize])], ov: &ConfigOverrides) -> Result<Self> {
        let shape = |name: &str| tensors.iter().find(|(n, _)| *n == name).map(|(_, s)| *s);
        let need = |name: &str| {
            shape(name).ok_or_else(|| Error::Config(format!("missing tensor `{name}`")))
        };
        let mat = |name: &str| -> Result<(usize, usize)> {
            match need(name)? {
                [r, c] => Ok((*r, *c)),
                s => Err(Error::Config(format!(
                    "`{name}` should be 2-D, has shape {s:?}"
                ))),
            }
        };
        let (vocab_size, model_dim) = mat("tok_emb.weight")?;
        let num_layers = tensors
            .iter()
            .filter_map(|(n, _)| {
                n.strip_prefix("blocks.")?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |m| m + 1);
        if num_layers == 0 {
            return Err(Error::Config("no `blocks.N.*` tensors found".into()));
        }
        let num_heads = match need("blocks.0.attn.q_gain")? {
            [h] if *h > 0 => *h,
            s => {
                return Err(Error::Config(format!(
                    "`q_gain` has shape {s:?}, expected [heads]"
                )))
            }
        };
        if model_dim % num_heads != 0 {
            return Err(Error::Config(format!(
                "model dim {model_dim} is not divisible by {num_heads} heads"
            )));
        }
        let head_dim = model_dim / num_heads;
        let (kv_dim, _) = mat("blocks.0.attn.c_k.weight")?;
        if kv_dim % head_dim != 0 || kv_dim == 0 || num_heads % (kv_dim / head_dim) != 0 {
            return Err(Error::Config(format!(
                "c_k has {kv_dim} rows: not a whole number of KV heads of width {head_dim} dividing {num_heads} heads"
            )));
        }
        let num_kv_heads = kv_dim / head_dim;
        let (mlp_hidden, _) = mat("blocks.0.mlp.fc.weight")?;
        let tied_embeddings = shape("lm_head.weight").is_none();
        let num_skips = match shape("skip_weights") {
            Some([n, d]) if *d == model_dim => *n,
            Some(s) => return Err(Error::Config(format!("`skip_weights` has shape {s:?}"))),
            None => 0,
        };
        let num_encoder_layers = num_layers / 2;
        if num_skips > num_encoder_layers.min(num_layers - num_encoder_layers) {
            return Err(Error::Config(format!(
                "{num_skips} skip weights for {num_layers} layers"
            )));
        }
        let bigram = match shape("bigram.embed.weight") {
            Some([b, d]) => Some(BigramConfig {
                buckets: *b,
                dim: *d,
            }),
            Some(s) => {
                return Err(Error::Config(format!(
                    "`bigram.embed.weight` has shape {s:?}"
                )))
            }
            None => None,
        };
        let smear_gate = shape("smear.gate").is_some();
        let value_embed = match shape("ve_shared.embed.weight") {
            Some([_, d]) => {
                let n = tensors
                    .iter()
                    .filter(|(n, _)| n.starts_with("ve_layer_scales."))
                    .count();
                // Shapes do not say which layers; the records put them on the last `n` layers.
                Some(ValueEmbedConfig {
                    dim: *d,
                    layers: (num_layers.saturating_sub(n)..num_layers).collect(),
                })
            }
            Some(s) => {
                return Err(Error::Config(format!(
                    "`ve_shared.embed.weight` has shape {s:?}"
                )))
            }
            None => None,
        };
        let sidecar = infer_sidecar(&shape, model_dim, num_layers, ov)?;
        let rope_dims = ov.rope_dims.unwrap_or(head_dim);
        if rope_dims == 0 || rope_dims > head_dim || !rope_dims.is_multiple_of(2) {
            return Err(Error::Usage(format!(
                "rope dims {rope_dims} must be even and in 2..={head_dim}"
            )));
        }
        let xsa_last = ov.xsa_last.unwrap_or(0);
        if xsa_last > num_layers {
            return Err(Error::Usage(format!(
                "--xsa-last {xsa_last} exceeds {num_layers} layers"
            )));
        }
        let softcap = ov.logit_softcap.unwrap_or(30.0);
        if !softcap.is_finite() || softcap < 0.0 {
            return Err(Error::Usage(format!(
                "softcap {softcap} must be a finite number >= 0 (0 disables it)"
            )));
        }
        let rope_base = ov.rope_base.unwrap_or(10_000.0);
        if !rope_base.is_finite() || rope_base <= 1.0 {
            return Err(Error::Usage(format!(
                "rope base {rope_base} must be a finite number > 1"
            )));
        }
        let cfg = ModelConfig {
            vocab_size,
            model_dim,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            mlp_hidden,
            tied_embeddings,
            num_encoder_layers,
            num_skips,
            rope_base,
            rope_dims,
            rope_ntk_train_len: ov.rope_ntk_train_len.unwrap_or(None),
            logit_softcap: softcap,
            activation: ov.activation.unwrap_or(Activation::Relu2),
            ln_scale: ov.ln_scale.unwrap_or(false),
            xsa_layers: (num_layers - xsa_last..num_layers).collect(),
            bigram,
            smear_gate,
            value_embed,
            sidecar,
            norm_eps: f32::EPSILON,
        };
        Ok(cfg)
    }

    /// Width of the K and V projections.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Parameter count of a model with this architecture (as PyTorch counts it).
    pub fn param_count(&self) -> usize {
        let d = self.model_dim;
        let per_block =
            d * d * 2 + 2 * self.kv_dim() * d + 2 * self.mlp_hidden * d + self.num_heads + 4 * d;
        let mut n = self.vocab_size * d + self.num_layers * per_block + self.num_skips * d;
        if !self.tied_embeddings {
            n += self.vocab_size * d;
        }
        if let Some(b) = self.bigram {
            n += b.buckets * b.dim + 1 + if b.dim != d { b.dim * d } else { 0 };
        }
        if self.smear_gate {
            n += d;
        }
        if let Some(ve) = &self.value_embed {
            n += self.vocab_size * ve.dim + ve.dim * self.kv_dim() + 1 + ve.layers.len();
        }
        if let Some(sc) = &self.sidecar {
            n += 3 * sc.hidden * d + sc.hidden * sc.kernel + sc.layers.len() * (sc.hidden + d);
        }
        n
    }

    /// The submission lineage these modules come from, as far as the tensors tell.
    pub fn lineage(&self) -> &'static str {
        match (
            &self.sidecar,
            &self.value_embed,
            self.bigram,
            self.smear_gate,
        ) {
            (Some(_), _, _, _) => "shared sparse sidecar (PR #555 / #581)",
            (None, Some(_), _, _) => "11-layer lineage with value embeddings (PR #606 / #687)",
            (None, None, Some(_), true) => {
                "BigramHash + SmearGate (PR #489 and the 11-layer records)"
            }
            (None, None, None, false) if self.num_skips > 0 => "baseline (U-Net skips)",
            _ => "baseline variant",
        }
    }

    /// RoPE base actually used for a forward window of `window` tokens (NTK rule, spec 4.5).
    pub fn rope_base_for(&self, window: usize) -> f32 {
        match self.rope_ntk_train_len {
            Some(n) if window > n && self.rope_dims > 2 => {
                let rd = self.rope_dims as f64;
                (self.rope_base as f64 * (window as f64 / n as f64).powf(rd / (rd - 2.0))) as f32
            }
            _ => self.rope_base,
        }
    }
}

/// The sidecar from `shared_sparse.*` shapes: `gate [hidden, d]`, `local [hidden, 1, k]`,
/// `site_gate [sites, hidden]`, `shared_sparse_scale [sites, d]`; the layers from `ov` or the
/// last `sites` layers.
fn infer_sidecar<'a>(
    shape: &impl Fn(&str) -> Option<&'a [usize]>,
    d: usize,
    layers: usize,
    ov: &ConfigOverrides,
) -> Result<Option<SidecarConfig>> {
    let Some(gate) = shape("shared_sparse.gate.weight") else {
        return Ok(None);
    };
    let bad = |what: String| Err(Error::Config(format!("shared sparse sidecar: {what}")));
    let hidden = match gate {
        [h, c] if *c == d && *h > 0 => *h,
        s => return bad(format!("`shared_sparse.gate.weight` has shape {s:?}")),
    };
    let kernel = match shape("shared_sparse.local.weight") {
        Some([h, 1, k]) if *h == hidden && *k > 0 => *k,
        s => {
            return bad(format!(
                "`shared_sparse.local.weight` has shape {s:?}, expected [{hidden}, 1, k]"
            ))
        }
    };
    let sites = match shape("shared_sparse.site_gate.weight") {
        Some([n, h]) if *h == hidden && *n > 0 => *n,
        s => {
            return bad(format!(
                "`shared_sparse.site_gate.weight` has shape {s:?}, expected [sites, {hidden}]"
            ))
        }
    };
    let site_layers = match &ov.sidecar_layers {
        Some(l) => l.clone(),
        None if sites <= layers => (layers - sites..layers).collect(),
        None => return bad(format!("{sites} sites for {layers} layers")),
    };
    if site_layers.len() != sites {
        return bad(format!(
            "{} sidecar layers given for {sites} sites",
            site_layers.len()
        ));
    }
    if site_layers.iter().any(|&l| l >= layers) || site_layers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::Usage(format!(
            "sidecar layers {site_layers:?} must be increasing and below {layers}"
        )));
    }
    Ok(Some(SidecarConfig {
        hidden,
        kernel,
        layers: site_layers,
    }))
}

impl fmt::Display for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "layers            {} ({} encoder + {} decoder, {} U-Net skips)",
            self.num_layers,
            self.num_encoder_layers,
            self.num_layers - self.num_encoder_layers,
            self.num_skips
        )?;
        writeln!(f, "model dim         {}", self.model_dim)?;
        writeln!(
            f,
            "heads             {} query / {} KV, head dim {}",
            self.num_heads, self.num_kv_heads, self.head_dim
        )?;
        writeln!(
            f,
            "mlp hidden        {} ({:.2}x), activation {:?}",
            self.mlp_hidden,
            self.mlp_hidden as f32 / self.model_dim as f32,
            self.activation
        )?;
        writeln!(
            f,
            "vocab             {} ({} head)",
            self.vocab_size,
            if self.tied_embeddings {
                "tied"
            } else {
                "untied"
            }
        )?;
        writeln!(
            f,
            "rope              base {}, {} of {} dims rotated, NTK {:?}",
            self.rope_base, self.rope_dims, self.head_dim, self.rope_ntk_train_len
        )?;
        writeln!(f, "logit softcap     {}", self.logit_softcap)?;
        writeln!(f, "ln scale          {}", self.ln_scale)?;
        writeln!(f, "xsa layers        {:?}", self.xsa_layers)?;
        writeln!(
            f,
            "bigram hash       {}",
            self.bigram.map_or("none".into(), |b| format!(
                "{} buckets x {}",
                b.buckets, b.dim
            ))
        )?;
        writeln!(f, "smear gate        {}", self.smear_gate)?;
        writeln!(
            f,
            "value embeddings  {}",
            self.value_embed.as_ref().map_or("none".into(), |v| format!(
                "dim {} on layers {:?}",
                v.dim, v.layers
            ))
        )?;
        writeln!(
            f,
            "sparse sidecar    {}",
            self.sidecar.as_ref().map_or("none".into(), |s| format!(
                "hidden {}, {}-tap causal conv, after layers {:?}",
                s.hidden, s.kernel, s.layers
            ))
        )?;
        writeln!(f, "recognised as     {}", self.lineage())?;
        write!(f, "parameters        {}", self.param_count())
    }
}
