//! The embedding API: load a compressed model once, then score or continue text.
//!
//! ```no_run
//! use pgolf_rt::{Model, Sampling};
//! let model = Model::load("model.ptz", "tokenizer.model")?;
//! let s = model.score("The quick brown fox.")?;
//! println!("{:.3} bits per byte over {} tokens", s.bits_per_byte, s.tokens.len());
//! let more = model.generate("The quick brown", 20, &Sampling::greedy())?;
//! println!("{more}");
//! # Ok::<(), pgolf_rt::Error>(())
//! ```

use crate::artifact::Artifact;
use crate::backend::cpu::CpuBackend;
use crate::eval::{score_tokens, TextScore};
use crate::model::{ConfigOverrides, DeviceModel, ModelConfig, ModelWeights};
use crate::tokenizer::{ByteLut, Tokenizer};
use crate::{Error, Result};
use std::path::Path;

/// How [`Model::generate`] picks each next token.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; `0` means greedy (arg-max).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (`0` keeps all).
    pub top_k: usize,
    /// Seed of the sampler's random stream (same seed, same text).
    pub seed: u64,
}

impl Sampling {
    /// Always the most likely token.
    pub fn greedy() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            seed: 0,
        }
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.8,
            top_k: 40,
            seed: 0,
        }
    }
}

/// A ready-to-use model with its tokenizer, on the CPU backend.
pub struct Model {
    model: DeviceModel<CpuBackend>,
    tokenizer: Tokenizer,
    lut: ByteLut,
    /// Context window used for scoring and generation.
    pub context: usize,
}

impl Model {
    /// Loads an artifact file and a SentencePiece `.model` file.
    pub fn load(artifact: impl AsRef<Path>, tokenizer: impl AsRef<Path>) -> Result<Self> {
        Self::build(
            Artifact::load(artifact)?,
            Tokenizer::load(tokenizer)?,
            &ConfigOverrides::default(),
        )
    }

    /// Builds a model from the bytes of an artifact and of a tokenizer (e.g. fetched in a browser).
    pub fn from_bytes(artifact: &[u8], tokenizer: &[u8]) -> Result<Self> {
        Self::build(
            Artifact::from_bytes(artifact)?,
            Tokenizer::from_bytes(tokenizer)?,
            &ConfigOverrides::default(),
        )
    }

    /// Like [`Model::from_bytes`], with architecture overrides.
    pub fn from_bytes_with(
        artifact: &[u8],
        tokenizer: &[u8],
        ov: &ConfigOverrides,
    ) -> Result<Self> {
        Self::build(
            Artifact::from_bytes(artifact)?,
            Tokenizer::from_bytes(tokenizer)?,
            ov,
        )
    }

    fn build(art: Artifact, tokenizer: Tokenizer, ov: &ConfigOverrides) -> Result<Self> {
        let weights = ModelWeights::from_artifact(&art, ov)?;
        let vocab = weights.config.vocab_size;
        if tokenizer.vocab_size() > vocab {
            return Err(Error::Usage(format!(
                "tokenizer has {} pieces but the model only {vocab}: wrong tokenizer?",
                tokenizer.vocab_size()
            )));
        }
        let lut = tokenizer.byte_lut(vocab);
        Ok(Model {
            model: DeviceModel::new(CpuBackend::new(), &weights)?,
            tokenizer,
            lut,
            context: 1024,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.model.config
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Scores `text` as a document (BOS first): per-token log-probabilities and bits per byte.
    pub fn score(&self, text: &str) -> Result<TextScore> {
        let mut ids = vec![self.tokenizer.bos_id()];
        ids.extend(self.tokenizer.encode(text));
        score_tokens(
            &self.model,
            &ids,
            &self.lut,
            self.context,
            64.min(self.context),
        )
    }

    /// Continues `prompt` by `n` tokens and returns the continuation's text.
    pub fn generate(&self, prompt: &str, n: usize, sampling: &Sampling) -> Result<String> {
        if sampling.temperature.is_nan() || sampling.temperature < 0.0 {
            return Err(Error::Usage(format!(
                "temperature {} must be >= 0",
                sampling.temperature
            )));
        }
        let mut ids = vec![self.tokenizer.bos_id()];
        ids.extend(self.tokenizer.encode(prompt));
        let first_new = ids.len();
        let mut rng = SplitMix64(sampling.seed);
        for _ in 0..n {
            let ctx = &ids[ids.len().saturating_sub(self.context)..];
            let last = ctx.len() - 1;
            let lp = self.model.log_probs(ctx, 1, ctx.len(), Some(&[last]))?;
            ids.push(pick(&lp, sampling, &mut rng));
        }
        Ok(self.tokenizer.decode(&ids[first_new..]))
    }
}

fn pick(logprobs: &[f32], s: &Sampling, rng: &mut SplitMix64) -> u32 {
    let argmax = || {
        logprobs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };
    if s.temperature == 0.0 {
        return argmax();
    }
    let mut cand: Vec<(usize, f32)> = logprobs.iter().copied().enumerate().collect();
    cand.sort_by(|a, b| b.1.total_cmp(&a.1));
    if s.top_k > 0 {
        cand.truncate(s.top_k);
    }
    let mx = cand[0].1;
    let w: Vec<f64> = cand
        .iter()
        .map(|&(_, l)| (((l - mx) / s.temperature) as f64).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.next_f64() * total;
    for (i, wi) in w.iter().enumerate() {
        if u < *wi {
            return cand[i].0 as u32;
        }
        u -= wi;
    }
    cand[cand.len() - 1].0 as u32
}

/// Small deterministic PRNG for sampling (no dependency, same stream on every platform).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_argmax_and_top1_equals_greedy() {
        let lp = [-3.0f32, -0.1, -2.0];
        let mut rng = SplitMix64(7);
        assert_eq!(pick(&lp, &Sampling::greedy(), &mut rng), 1);
        let top1 = Sampling {
            temperature: 1.0,
            top_k: 1,
            seed: 0,
        };
        assert_eq!(pick(&lp, &top1, &mut rng), 1);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let lp = [0.25f32.ln(), 0.75f32.ln()];
        let s = Sampling {
            temperature: 1.0,
            top_k: 0,
            seed: 1,
        };
        let mut rng = SplitMix64(1);
        let ones = (0..20_000).filter(|_| pick(&lp, &s, &mut rng) == 1).count();
        assert!((ones as f64 / 20_000.0 - 0.75).abs() < 0.02, "{ones}");
    }
}
