//! The embedding API: load a compressed model once, then score or continue text.
//!
//! [`Model`] bundles the weights (on the CPU backend) with their SentencePiece tokenizer.
//! [`Model::score`] gives per-token log-probabilities and the text's bits per byte, exactly as
//! `pgolf-rt score` computes them; [`Model::generate`] continues a prompt. The same API runs in a
//! browser through `bindings/wasm` (build the runtime with `default-features = false`).
//!
//! The examples run as doctests against the reference artifact in `../shared` when it is there
//! (they do nothing otherwise):
//!
//! ```
//! use pgolf_rt::{Model, Sampling};
//! let artifact = "../../shared/reference/baseline9L_int8_zlib.ptz";
//! let tokenizer = "../../shared/data/tokenizers/pg_sp1024_bpe.model";
//! if std::path::Path::new(artifact).exists() {
//!     let model = Model::load(artifact, tokenizer)?;
//!     let s = model.score("The quick brown fox jumps over the lazy dog.")?;
//!     println!("{:.3} bits per byte over {} tokens", s.bits_per_byte, s.tokens.len());
//!     assert!(s.bits_per_byte > 0.5 && s.bits_per_byte < 4.0);
//!     let more = model.generate("The quick brown", 8, &Sampling::greedy())?;
//!     println!("{more}");
//! }
//! # Ok::<(), pgolf_rt::Error>(())
//! ```

use crate::artifact::Artifact;
use crate::backend::cpu::CpuBackend;
use crate::eval::{score_tokens, score_window, TextScore};
use crate::model::{ConfigOverrides, DeviceModel, ModelConfig, ModelWeights};
use crate::tokenizer::{ByteLut, PieceType, Tokenizer};
use crate::{Error, Result};
use std::path::Path;

/// How [`Model::generate`] picks each next token.
///
/// ```
/// use pgolf_rt::Sampling;
/// let greedy = Sampling::greedy();
/// assert_eq!(greedy.temperature, 0.0);
/// let creative = Sampling { temperature: 1.0, top_k: 50, seed: 7 };
/// assert_ne!(creative, Sampling::default());
/// ```
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
///
/// Loading decompresses and dequantizes the artifact once (about a second for the 17 M-parameter
/// baseline); scoring and generation then reuse the weights. A `Model` is immutable: share it
/// between threads by reference.
///
/// ```
/// let artifact = "../../shared/reference/baseline9L_int8_zlib.ptz";
/// let tokenizer = "../../shared/data/tokenizers/pg_sp1024_bpe.model";
/// if std::path::Path::new(artifact).exists() {
///     let model = pgolf_rt::Model::load(artifact, tokenizer)?;
///     assert_eq!(model.config().vocab_size, 1024);
///     assert_eq!(model.config().num_layers, 9);
///     println!("{} parameters", model.config().param_count());
/// }
/// # Ok::<(), pgolf_rt::Error>(())
/// ```
pub struct Model {
    model: DeviceModel<CpuBackend>,
    tokenizer: Tokenizer,
    lut: ByteLut,
    /// Context window used for scoring and generation.
    pub context: usize,
}

impl Model {
    /// Loads an artifact file (`.ptz`: zlib, zstd or xz) and a SentencePiece `.model` file.
    ///
    /// Errors with [`Error::Io`](crate::Error) naming the path when a file cannot be read, and
    /// with a format error when it is not an artifact or a tokenizer.
    ///
    /// ```
    /// let err = pgolf_rt::Model::load("no/such/model.ptz", "no/such/tokenizer.model");
    /// assert!(err.is_err());
    /// ```
    pub fn load(artifact: impl AsRef<Path>, tokenizer: impl AsRef<Path>) -> Result<Self> {
        Self::build(
            Artifact::load(artifact)?,
            Tokenizer::load(tokenizer)?,
            &ConfigOverrides::default(),
        )
    }

    /// Builds a model from the bytes of an artifact and of a tokenizer (e.g. fetched in a browser).
    ///
    /// ```
    /// let artifact = "../../shared/reference/baseline9L_int8_zlib.ptz";
    /// let tokenizer = "../../shared/data/tokenizers/pg_sp1024_bpe.model";
    /// if std::path::Path::new(artifact).exists() {
    ///     let model = pgolf_rt::Model::from_bytes(&std::fs::read(artifact)?, &std::fs::read(tokenizer)?)?;
    ///     assert!(model.score("Hello, world.")?.bits_per_byte.is_finite());
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
        let lut = tokenizer.byte_lut_for_model(weights.config.vocab_size)?;
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
    /// An empty text, or one without bytes, is an error (its bits per byte are undefined).
    ///
    /// Same numbers as `pgolf-rt score`: windows of [`Model::context`] tokens, advancing by 64
    /// once the text is longer than that. A text that fits in one window runs one forward pass of
    /// its own length (not padded to the full window), which gives the same log-probabilities.
    ///
    /// ```
    /// let artifact = "../../shared/reference/baseline9L_int8_zlib.ptz";
    /// let tokenizer = "../../shared/data/tokenizers/pg_sp1024_bpe.model";
    /// if std::path::Path::new(artifact).exists() {
    ///     let model = pgolf_rt::Model::load(artifact, tokenizer)?;
    ///     let s = model.score("It was a bright cold day in April.")?;
    ///     let ids: Vec<u32> = s.tokens.iter().map(|t| t.id).collect();
    ///     let texts = model.token_texts(&ids);
    ///     for (t, piece) in s.tokens.iter().zip(&texts) {
    ///         let bits = -t.logprob as f64 / std::f64::consts::LN_2;
    ///         println!("{piece:?}: {bits:.2} bits over {} bytes", t.bytes);
    ///     }
    ///     assert_eq!(texts.concat(), "It was a bright cold day in April.");
    ///     assert_eq!(s.total_bytes, 34);
    ///     assert!((s.bits_per_byte - s.total_bits / 34.0).abs() < 1e-12);
    /// }
    /// # Ok::<(), pgolf_rt::Error>(())
    /// ```
    pub fn score(&self, text: &str) -> Result<TextScore> {
        let mut ids = vec![self.tokenizer.bos_id()];
        ids.extend(self.tokenizer.encode(text));
        // One window covers the text: run it at its own length unless that changes the RoPE base.
        let seq = score_window(self.config(), ids.len() - 1, self.context);
        score_tokens(&self.model, &ids, &self.lut, seq, 64.min(seq))
    }

    /// The text each token stands for, in order, such that the strings concatenate to the
    /// decoded text (`▁` shown as a space, byte-fallback pieces reassembled into UTF-8: a
    /// character split over several byte tokens belongs to the token that completes it).
    /// Control tokens (BOS) give empty strings. Useful to display a [`TextScore`] token by token.
    ///
    /// ```
    /// let artifact = "../../shared/reference/baseline9L_int8_zlib.ptz";
    /// let tokenizer = "../../shared/data/tokenizers/pg_sp1024_bpe.model";
    /// if std::path::Path::new(tokenizer).exists() {
    ///     let model = pgolf_rt::Model::load(artifact, tokenizer)?;
    ///     let ids = model.tokenizer().encode("naïve café");
    ///     assert_eq!(model.token_texts(&ids).concat(), "naïve café");
    /// }
    /// # Ok::<(), pgolf_rt::Error>(())
    /// ```
    pub fn token_texts(&self, ids: &[u32]) -> Vec<String> {
        let tok = &self.tokenizer;
        let spec = tok.normalizer_spec();
        let strip_first = spec.add_dummy_prefix || spec.remove_extra_whitespaces;
        let mut out = Vec::with_capacity(ids.len());
        let mut pending: Vec<u8> = Vec::new();
        let mut started = false;
        for &id in ids {
            let piece = tok.piece(id).unwrap_or("");
            match tok.piece_type(id) {
                Some(PieceType::Byte) => {
                    if let Some(b) = piece
                        .strip_prefix("<0x")
                        .and_then(|p| p.strip_suffix('>'))
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        pending.push(b);
                    }
                }
                Some(PieceType::Control) | None => {}
                Some(PieceType::Unknown) => {
                    pending.extend_from_slice(tok.trainer_spec().unk_surface.as_bytes())
                }
                _ => {
                    let mut text = piece.replace('\u{2581}', " ");
                    if !started && strip_first && text.starts_with(' ') {
                        text.remove(0);
                    }
                    pending.extend_from_slice(text.as_bytes());
                }
            }
            let mut s = String::new();
            drain_utf8(&mut pending, &mut s);
            started |= !s.is_empty();
            out.push(s);
        }
        if !pending.is_empty() {
            // Trailing bytes of an unfinished character: SentencePiece prints U+FFFD for each.
            let n = pending.len();
            if let Some(last) = out.last_mut() {
                last.extend(std::iter::repeat_n('\u{FFFD}', n));
            }
        }
        out
    }

    /// Continues `prompt` by `n` tokens and returns the continuation's text, such that
    /// `prompt + continuation` reads as the model's text (a continuation that starts a new word
    /// starts with its space).
    ///
    /// Each token runs the model over the whole context (up to [`Model::context`] tokens): fine
    /// for short continuations.
    ///
    /// ```
    /// use pgolf_rt::{Model, Sampling};
    /// let artifact = "../../shared/reference/baseline9L_int8_zlib.ptz";
    /// let tokenizer = "../../shared/data/tokenizers/pg_sp1024_bpe.model";
    /// if std::path::Path::new(artifact).exists() {
    ///     let model = Model::load(artifact, tokenizer)?;
    ///     let greedy = model.generate("The museum opened last June, and", 8, &Sampling::greedy())?;
    ///     assert!(greedy.starts_with(' '), "{greedy:?}");
    ///     let s = Sampling { temperature: 0.8, top_k: 40, seed: 3 };
    ///     assert_eq!(model.generate("Once upon a time", 8, &s)?, model.generate("Once upon a time", 8, &s)?);
    /// }
    /// # Ok::<(), pgolf_rt::Error>(())
    /// ```
    pub fn generate(&self, prompt: &str, n: usize, sampling: &Sampling) -> Result<String> {
        if !sampling.temperature.is_finite() || sampling.temperature < 0.0 {
            return Err(Error::Usage(format!(
                "temperature {} must be a finite number >= 0",
                sampling.temperature
            )));
        }
        let mut ids = vec![self.tokenizer.bos_id()];
        ids.extend(self.tokenizer.encode(prompt));
        let first_new = ids.len();
        let mut rng = SplitMix64(sampling.seed);
        for _ in 0..n {
            let ctx = &ids[ids.len().saturating_sub(self.context.max(1))..];
            let last = ctx.len() - 1;
            let lp = self.model.log_probs(ctx, 1, ctx.len(), Some(&[last]))?;
            ids.push(pick(&lp, sampling, &mut rng));
        }
        Ok(self.token_texts(&ids)[first_new..].concat())
    }
}

/// Moves the complete characters at the front of `pending` into `out`; an invalid byte becomes
/// U+FFFD; an incomplete character at the end stays pending.
fn drain_utf8(pending: &mut Vec<u8>, out: &mut String) {
    let mut i = 0;
    while i < pending.len() {
        match std::str::from_utf8(&pending[i..]) {
            Ok(s) => {
                out.push_str(s);
                i = pending.len();
            }
            Err(e) => {
                let good = e.valid_up_to();
                out.push_str(std::str::from_utf8(&pending[i..i + good]).unwrap_or_default());
                i += good;
                if e.error_len().is_none() {
                    break;
                }
                out.push('\u{FFFD}');
                i += 1;
            }
        }
    }
    pending.drain(..i);
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
    fn drain_utf8_keeps_unfinished_characters() {
        let mut pending = "é".as_bytes()[..1].to_vec();
        let mut out = String::new();
        drain_utf8(&mut pending, &mut out);
        assert_eq!((out.as_str(), pending.len()), ("", 1));
        pending.extend_from_slice(&"é".as_bytes()[1..]);
        pending.push(b'x');
        drain_utf8(&mut pending, &mut out);
        assert_eq!((out.as_str(), pending.len()), ("éx", 0));
        let mut bad = vec![0xff, b'a'];
        drain_utf8(&mut bad, &mut out);
        assert_eq!(out, "éx\u{FFFD}a");
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
