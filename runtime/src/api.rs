//! The embedding API: load a compressed model once, then score or continue text.
//!
//! [`Model`] bundles the weights (on the CPU backend) with their SentencePiece tokenizer.
//! [`Model::score`] gives per-token log-probabilities and the text's bits per byte, exactly as
//! `pgolf-rt score` computes them; [`Model::generate`] continues a prompt over a KV cache
//! ([`Model::generate_with`] streams it). The same API runs in a browser through
//! `bindings/wasm` (build the runtime with `default-features = false`).
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
use crate::backend::Precision;
use crate::eval::{score_tokens, score_window, TextScore};
use crate::model::{ConfigOverrides, Decoder, DeviceModel, ModelConfig, ModelWeights};
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

/// How [`Model::load_options`] and [`Model::from_bytes_options`] build a model.
///
/// ```
/// use pgolf_rt::{backend::Precision, LoadOptions};
/// // The float32 parity path (what `pgolf-rt score` uses by default) instead of the fastest.
/// let exact = LoadOptions { precision: Some(Precision::F32), ..LoadOptions::default() };
/// assert_eq!(LoadOptions::default().precision, None);
/// # let _ = exact;
/// ```
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Architecture overrides (what an artifact's shapes cannot tell).
    pub overrides: ConfigOverrides,
    /// Precision of the matrix products: `None` (the default) takes the fastest this CPU has
    /// ([`CpuBackend::fastest`]: bf16 on AMX-BF16 or AVX512-BF16, float32 elsewhere and in
    /// WebAssembly); `Some(p)` asks for `p` and errors where the CPU cannot run it.
    pub precision: Option<Precision>,
}

/// A ready-to-use model with its tokenizer, on the CPU backend.
///
/// [`Model::load`] and [`Model::from_bytes`] run the matrix products at the fastest precision
/// the CPU has (see [`LoadOptions::precision`]; [`Model::precision`] says which): in bf16 a
/// text's bits per byte are within about 1e-3 of float32's. Ask for
/// `Some(Precision::F32)` for the values `pgolf-rt score` prints by default.
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
        Self::load_options(artifact, tokenizer, &LoadOptions::default())
    }

    /// Like [`Model::load`], with architecture overrides (what an artifact's shapes cannot tell).
    pub fn load_with(
        artifact: impl AsRef<Path>,
        tokenizer: impl AsRef<Path>,
        ov: &ConfigOverrides,
    ) -> Result<Self> {
        let opts = LoadOptions {
            overrides: ov.clone(),
            ..LoadOptions::default()
        };
        Self::load_options(artifact, tokenizer, &opts)
    }

    /// Like [`Model::load`], with [`LoadOptions`] (overrides, precision).
    ///
    /// ```
    /// use pgolf_rt::{backend::Precision, LoadOptions, Model};
    /// let artifact = "../../shared/reference/baseline9L_int8_zlib.ptz";
    /// let tokenizer = "../../shared/data/tokenizers/pg_sp1024_bpe.model";
    /// if std::path::Path::new(artifact).exists() {
    ///     let f32 = LoadOptions { precision: Some(Precision::F32), ..LoadOptions::default() };
    ///     let exact = Model::load_options(artifact, tokenizer, &f32)?;
    ///     assert_eq!(exact.precision(), Precision::F32);
    ///     let fast = Model::load(artifact, tokenizer)?;
    ///     let (a, b) = (exact.score("Hello, world.")?, fast.score("Hello, world.")?);
    ///     assert!((a.bits_per_byte - b.bits_per_byte).abs() < 2e-2);
    /// }
    /// # Ok::<(), pgolf_rt::Error>(())
    /// ```
    pub fn load_options(
        artifact: impl AsRef<Path>,
        tokenizer: impl AsRef<Path>,
        opts: &LoadOptions,
    ) -> Result<Self> {
        Self::build(Artifact::load(artifact)?, Tokenizer::load(tokenizer)?, opts)
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
        Self::from_bytes_options(artifact, tokenizer, &LoadOptions::default())
    }

    /// Like [`Model::from_bytes`], with architecture overrides.
    pub fn from_bytes_with(
        artifact: &[u8],
        tokenizer: &[u8],
        ov: &ConfigOverrides,
    ) -> Result<Self> {
        let opts = LoadOptions {
            overrides: ov.clone(),
            ..LoadOptions::default()
        };
        Self::from_bytes_options(artifact, tokenizer, &opts)
    }

    /// Like [`Model::from_bytes`], with [`LoadOptions`].
    pub fn from_bytes_options(
        artifact: &[u8],
        tokenizer: &[u8],
        opts: &LoadOptions,
    ) -> Result<Self> {
        Self::build(
            Artifact::from_bytes(artifact)?,
            Tokenizer::from_bytes(tokenizer)?,
            opts,
        )
    }

    fn build(art: Artifact, tokenizer: Tokenizer, opts: &LoadOptions) -> Result<Self> {
        let backend = match opts.precision {
            None => CpuBackend::fastest(),
            Some(p) => CpuBackend::with_precision(p)?,
        };
        let weights = ModelWeights::from_artifact(&art, &opts.overrides)?;
        let lut = tokenizer.byte_lut_for_model(weights.config.vocab_size)?;
        Ok(Model {
            model: DeviceModel::new(backend, &weights)?,
            tokenizer,
            lut,
            context: 1024,
        })
    }

    /// The precision its matrix products run at.
    pub fn precision(&self) -> Precision {
        self.model.backend().precision()
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
        let mut d = Detokenizer::new(&self.tokenizer);
        let mut out: Vec<String> = ids.iter().map(|&id| d.push(id)).collect();
        if let Some(last) = out.last_mut() {
            last.push_str(&d.finish());
        }
        out
    }

    /// Continues `prompt` by `n` tokens and returns the continuation's text, such that
    /// `prompt + continuation` reads as the model's text (a continuation that starts a new word
    /// starts with its space).
    ///
    /// The prompt (after BOS) runs once through the model, then each new token costs one
    /// position's forward over a KV cache ([`crate::model::Decoder`]), up to
    /// [`Model::context`] tokens; [`Decoding`] says what happens past that, and
    /// [`Model::generate_with`] streams the text and can run the full recompute instead.
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
        let g = self.generate_with(prompt, n, sampling, Decoding::Cached, |_| true)?;
        Ok(g.text)
    }

    /// [`Model::generate`], streaming: `on_piece` gets the text of each new token as soon as it
    /// is picked (an empty string while a character spans several byte tokens; once more at the
    /// end with U+FFFD per byte of a character left unfinished) and stops the generation by
    /// returning `false`. The pieces concatenate to [`Generation::text`].
    ///
    /// `decoding` chooses the forward per token: [`Decoding::Cached`] (one position over a KV
    /// cache) or [`Decoding::Recompute`] (the whole window again, the reference). Both pick the
    /// same tokens for the same seed while the text fits in [`Model::context`] tokens.
    ///
    /// ```
    /// use pgolf_rt::{Decoding, Model, Sampling};
    /// let artifact = "../../shared/reference/baseline9L_int8_zlib.ptz";
    /// let tokenizer = "../../shared/data/tokenizers/pg_sp1024_bpe.model";
    /// if std::path::Path::new(artifact).exists() {
    ///     let model = Model::load(artifact, tokenizer)?;
    ///     let mut pieces = Vec::new();
    ///     let g = model.generate_with("It was a bright cold day", 6, &Sampling::greedy(), Decoding::Cached, |p| {
    ///         pieces.push(p.to_string());
    ///         pieces.len() < 4 // stop after four tokens
    ///     })?;
    ///     assert_eq!((g.tokens.len(), pieces.concat()), (4, g.text.clone()));
    ///     let full = model.generate_with("It was a bright cold day", 4, &Sampling::greedy(), Decoding::Recompute, |_| true)?;
    ///     assert_eq!(full.tokens, g.tokens);
    /// }
    /// # Ok::<(), pgolf_rt::Error>(())
    /// ```
    pub fn generate_with(
        &self,
        prompt: &str,
        n: usize,
        sampling: &Sampling,
        decoding: Decoding,
        mut on_piece: impl FnMut(&str) -> bool,
    ) -> Result<Generation> {
        if !sampling.temperature.is_finite() || sampling.temperature < 0.0 {
            return Err(Error::Usage(format!(
                "temperature {} must be a finite number >= 0",
                sampling.temperature
            )));
        }
        let context = self.context.max(1);
        let mut ids = vec![self.tokenizer.bos_id()];
        ids.extend(self.tokenizer.encode(prompt));
        let prompt_tokens = ids.len();
        let mut detok = Detokenizer::new(&self.tokenizer);
        for &id in &ids {
            detok.push(id);
        }
        let mut dec = Decoder::new(&self.model);
        let mut rng = SplitMix64(sampling.seed);
        let mut text = String::new();
        for _ in 0..n {
            let lp = match decoding {
                Decoding::Recompute => {
                    let ctx = &ids[ids.len().saturating_sub(context)..];
                    let last = ctx.len() - 1;
                    self.model.log_probs(ctx, 1, ctx.len(), Some(&[last]))?
                }
                // The first token, or a full window: prefill the last `context` (first) or
                // `context / 2` (full window) tokens.
                Decoding::Cached if dec.is_empty() => {
                    dec.prefill(&ids[ids.len().saturating_sub(context)..])?
                }
                Decoding::Cached if dec.len() >= context => {
                    dec.prefill(&ids[ids.len().saturating_sub((context / 2).max(1))..])?
                }
                Decoding::Cached => dec.step(ids[ids.len() - 1])?,
            };
            let id = pick(&lp, sampling, &mut rng);
            ids.push(id);
            let piece = detok.push(id);
            text.push_str(&piece);
            if !on_piece(&piece) {
                break;
            }
        }
        let rest = detok.finish();
        if !rest.is_empty() {
            text.push_str(&rest);
            on_piece(&rest);
        }
        Ok(Generation {
            text,
            tokens: ids.split_off(prompt_tokens),
            prompt_tokens,
        })
    }
}

/// The forward [`Model::generate_with`] runs for each new token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decoding {
    /// A KV cache ([`crate::model::Decoder`]): the prompt's forward once, then one position per
    /// token. When the window is full ([`Model::context`] tokens), the cache restarts from the
    /// last `context / 2` tokens (one prefill), so each token sees between `context / 2` and
    /// `context` tokens of context. The full recompute slides instead: past the window, every
    /// token sees exactly the last `context` tokens. Within the window both give the same
    /// log-probabilities (to about 1e-6) and so the same tokens.
    #[default]
    Cached,
    /// The whole window (the last [`Model::context`] tokens, from position 0) through the model
    /// for every new token: the reference, quadratic in the context.
    Recompute,
}

/// What [`Model::generate_with`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The continuation's text (the streamed pieces, concatenated).
    pub text: String,
    /// The generated token ids, in order.
    pub tokens: Vec<u32>,
    /// Tokens of the prompt as the model saw them (BOS included).
    pub prompt_tokens: usize,
}

/// Token ids to text one at a time: what [`Model::token_texts`] gives for a whole sequence.
struct Detokenizer<'t> {
    tok: &'t Tokenizer,
    /// Drop the space of the first piece (the SentencePiece dummy prefix).
    strip_first: bool,
    /// Bytes of a character not yet complete.
    pending: Vec<u8>,
    started: bool,
}

impl<'t> Detokenizer<'t> {
    fn new(tok: &'t Tokenizer) -> Self {
        let spec = tok.normalizer_spec();
        Detokenizer {
            tok,
            strip_first: spec.add_dummy_prefix || spec.remove_extra_whitespaces,
            pending: Vec::new(),
            started: false,
        }
    }

    /// The text token `id` completes.
    fn push(&mut self, id: u32) -> String {
        let tok = self.tok;
        let piece = tok.piece(id).unwrap_or("");
        match tok.piece_type(id) {
            Some(PieceType::Byte) => {
                if let Some(b) = piece
                    .strip_prefix("<0x")
                    .and_then(|p| p.strip_suffix('>'))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    self.pending.push(b);
                }
            }
            Some(PieceType::Control) | None => {}
            Some(PieceType::Unknown) => self
                .pending
                .extend_from_slice(tok.trainer_spec().unk_surface.as_bytes()),
            _ => {
                let mut text = piece.replace('\u{2581}', " ");
                if !self.started && self.strip_first && text.starts_with(' ') {
                    text.remove(0);
                }
                self.pending.extend_from_slice(text.as_bytes());
            }
        }
        let mut s = String::new();
        drain_utf8(&mut self.pending, &mut s);
        self.started |= !s.is_empty();
        s
    }

    /// Trailing bytes of an unfinished character: SentencePiece prints U+FFFD for each.
    fn finish(&mut self) -> String {
        let n = std::mem::take(&mut self.pending).len();
        std::iter::repeat_n('\u{FFFD}', n).collect()
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
