//! The embedding API: load a compressed model once, then score or continue text.
//!
//! [`Model`] bundles the weights (on the CPU backend, or any other through
//! [`Model::from_bytes_on`]) with their SentencePiece tokenizer.
//! [`Model::score`] gives per-token log-probabilities and the text's bits per byte, exactly as
//! `pgolf-rt score` computes them; [`Model::generate`] continues a prompt over a KV cache
//! ([`Model::generate_with`] streams it). Both also come resumable, for callers that must not
//! block (a browser's event loop): [`Model::scorer`] scores a text a few windows per
//! [`TextScorer::step`], and [`Model::generator`] picks one token per [`Generator::next_piece`].
//! The same API runs in a browser through `bindings/wasm` (build the runtime with
//! `default-features = false`).
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
use crate::backend::{Backend, Precision};
use crate::eval::plan::{Adaptation, EvalPlan, EvalReport, OnProgress};
use crate::eval::windows::{pack, Packed};
use crate::eval::{
    check_finite, run_windows, score_window, sliding_windows, text_score, EvalOptions, TextScore,
    Window,
};
use crate::model::{ConfigOverrides, Decoder, DeviceModel, LayerSteps, ModelConfig, ModelWeights};
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

/// A ready-to-use model with its tokenizer, on the CPU backend (or on `B`, see
/// [`Model::from_bytes_on`]).
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
pub struct Model<B: Backend = CpuBackend> {
    model: DeviceModel<B>,
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
        Model::build_on(backend, art, tokenizer, &opts.overrides)
    }

    /// The precision its matrix products run at.
    pub fn precision(&self) -> Precision {
        self.model.backend().precision()
    }

    /// Evaluates a token stream (BOS-delimited documents, as in a challenge shard) as `plan`
    /// says: standard or sliding windows, LoRA or full-model TTT (any recipe), the online
    /// mixer, the legality audit ([`crate::eval::plan`]); what `pgolf-rt eval` runs for the
    /// same flags. A plan without adaptation runs at this model's precision; TTT trains in
    /// float32 (the CPU backward), from a float32 copy of the weights made for the call.
    ///
    /// ```
    /// use pgolf_rt::eval::plan::{Adaptation, AuditPlan, EvalPlan};
    /// use pgolf_rt::eval::{FullTttConfig, TttRecipe};
    /// let artifact = "../../shared/reference/baseline9L_int8_zlib.ptz";
    /// let tokenizer = "../../shared/data/tokenizers/pg_sp1024_bpe.model";
    /// if std::path::Path::new(artifact).exists() {
    ///     let model = pgolf_rt::Model::load(artifact, tokenizer)?;
    ///     let mut tokens = vec![model.tokenizer().bos_id()];
    ///     tokens.extend(model.tokenizer().encode(&"The museum opened last June. ".repeat(60)));
    ///     let plain = EvalPlan { seq_len: 128, ..EvalPlan::default() };
    ///     let ttt = FullTttConfig { chunk: 256, ..TttRecipe::Pr461.config(model.config(), &FullTttConfig::default()) };
    ///     let adapted = EvalPlan {
    ///         adapt: Adaptation::Full(ttt),
    ///         audit: Some(AuditPlan::default()),
    ///         ..plain.clone()
    ///     };
    ///     let (a, b) = (model.evaluate(&plain, &tokens)?, model.evaluate(&adapted, &tokens)?);
    ///     assert!(b.audit.unwrap().passed());
    ///     assert_eq!(a.result.tokens, b.result.tokens);
    ///     assert!(b.result.val_bpb < a.result.val_bpb, "TTT learns the repeated sentence");
    /// }
    /// # Ok::<(), pgolf_rt::Error>(())
    /// ```
    pub fn evaluate(&self, plan: &EvalPlan, tokens: &[u32]) -> Result<EvalReport> {
        self.evaluate_with(plan, tokens, None)
    }

    /// [`Model::evaluate`] calling `progress` as it goes: targets scored (no adaptation),
    /// documents (LoRA TTT) or chunks (full TTT) done, with the totals so far for TTT.
    pub fn evaluate_with(
        &self,
        plan: &EvalPlan,
        tokens: &[u32],
        progress: Option<&mut OnProgress>,
    ) -> Result<EvalReport> {
        match plan.adapt {
            Adaptation::None => plan.run_inference(&self.model, tokens, &self.lut, progress),
            _ => {
                let be = self.model.backend();
                let weights = ModelWeights {
                    config: self.model.config.clone(),
                    params: self.model.params.try_map(|_, _, t| {
                        let (r, c) = be.shape(t);
                        crate::model::Matrix::new(r, c, be.download(t)?)
                    })?,
                };
                plan.run(CpuBackend::new(), &weights, tokens, &self.lut, progress)
            }
        }
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
        let mut g = self.generator(prompt, n, sampling, decoding)?;
        while let Some(piece) = g.next_piece()? {
            if !on_piece(&piece) {
                break;
            }
        }
        let rest = g.finish();
        if !rest.is_empty() {
            on_piece(&rest);
        }
        Ok(g.into_generation())
    }

    /// [`Model::generate_with`] as an iterator the caller drives: each
    /// [`Generator::next_piece`] picks one token (the same tokens, for the same seed and
    /// `decoding`), so a caller that must not block (a browser's event loop) can stop between
    /// any two tokens. Errors, before any work, for a temperature that is not a finite number
    /// `>= 0`.
    ///
    /// ```
    /// use pgolf_rt::{Decoding, Model, Sampling};
    /// let artifact = "../../shared/reference/baseline9L_int8_zlib.ptz";
    /// let tokenizer = "../../shared/data/tokenizers/pg_sp1024_bpe.model";
    /// if std::path::Path::new(artifact).exists() {
    ///     let model = Model::load(artifact, tokenizer)?;
    ///     let s = Sampling { temperature: 0.8, top_k: 40, seed: 5 };
    ///     let mut g = model.generator("Once upon a time", 8, &s, Decoding::Cached)?;
    ///     let mut text = String::new();
    ///     while let Some(piece) = g.next_piece()? {
    ///         text.push_str(&piece); // show it, check for a stop request, ...
    ///     }
    ///     text.push_str(&g.finish());
    ///     assert_eq!(text, model.generate("Once upon a time", 8, &s)?);
    /// }
    /// # Ok::<(), pgolf_rt::Error>(())
    /// ```
    pub fn generator(
        &self,
        prompt: &str,
        n: usize,
        sampling: &Sampling,
        decoding: Decoding,
    ) -> Result<Generator<'_>> {
        if !sampling.temperature.is_finite() || sampling.temperature < 0.0 {
            return Err(Error::Usage(format!(
                "temperature {} must be a finite number >= 0",
                sampling.temperature
            )));
        }
        let mut ids = vec![self.tokenizer.bos_id()];
        ids.extend(self.tokenizer.encode(prompt));
        let mut detok = Detokenizer::new(&self.tokenizer);
        for &id in &ids {
            detok.push(id);
        }
        Ok(Generator {
            model: self,
            sampling: sampling.clone(),
            decoding,
            prompt_tokens: ids.len(),
            ids,
            remaining: n,
            dec: Decoder::new(&self.model),
            detok,
            rng: SplitMix64(sampling.seed),
            text: String::new(),
        })
    }
}

impl<B: Backend> Model<B> {
    /// A model on another backend than the CPU: the wgpu one, say, to score on a GPU (in a
    /// browser through its WebGPU, where `backend` comes from
    /// [`crate::backend::wgpu::WgpuBackend::new_async`] and scores are read back with
    /// [`TextScorer::start_pass`]). Scoring ([`Model::score`], [`Model::scorer`],
    /// [`Model::top_next`]) runs on `backend`; generation and [`Model::evaluate`] are the CPU
    /// model's.
    ///
    /// ```
    /// use pgolf_rt::{backend::cpu::CpuBackend, model::ConfigOverrides, Model};
    /// let artifact = "../../shared/reference/baseline9L_int8_zlib.ptz";
    /// let tokenizer = "../../shared/data/tokenizers/pg_sp1024_bpe.model";
    /// if std::path::Path::new(artifact).exists() {
    ///     let (a, t) = (std::fs::read(artifact)?, std::fs::read(tokenizer)?);
    ///     let on = Model::from_bytes_on(CpuBackend::new(), &a, &t, &ConfigOverrides::default())?;
    ///     let exact = pgolf_rt::Model::from_bytes_options(&a, &t, &pgolf_rt::LoadOptions {
    ///         precision: Some(pgolf_rt::backend::Precision::F32),
    ///         ..Default::default()
    ///     })?;
    ///     assert_eq!(on.score("Hello, world.")?, exact.score("Hello, world.")?);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_bytes_on(
        backend: B,
        artifact: &[u8],
        tokenizer: &[u8],
        overrides: &ConfigOverrides,
    ) -> Result<Self> {
        Self::build_on(
            backend,
            Artifact::from_bytes(artifact)?,
            Tokenizer::from_bytes(tokenizer)?,
            overrides,
        )
    }

    /// [`Model::from_bytes_on`] from files.
    pub fn load_on(
        backend: B,
        artifact: impl AsRef<Path>,
        tokenizer: impl AsRef<Path>,
        overrides: &ConfigOverrides,
    ) -> Result<Self> {
        Self::build_on(
            backend,
            Artifact::load(artifact)?,
            Tokenizer::load(tokenizer)?,
            overrides,
        )
    }

    fn build_on(
        backend: B,
        art: Artifact,
        tokenizer: Tokenizer,
        overrides: &ConfigOverrides,
    ) -> Result<Self> {
        let weights = ModelWeights::from_artifact(&art, overrides)?;
        let lut = tokenizer.byte_lut_for_model(weights.config.vocab_size)?;
        Ok(Model {
            model: DeviceModel::new(backend, &weights)?,
            tokenizer,
            lut,
            context: 1024,
        })
    }

    /// The backend its forward passes run on.
    pub fn backend(&self) -> &B {
        self.model.backend()
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.model.config
    }

    /// `text` as one document of a token stream: BOS, then its tokens (what [`Model::score`]
    /// scores, and a stream [`Model::evaluate`] takes). Errors for an empty text.
    pub fn text_tokens(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = vec![self.tokenizer.bos_id()];
        ids.extend(self.tokenizer.encode(text));
        if ids.len() == 1 {
            return Err(Error::Usage(
                "nothing to score: the text is empty (no token after BOS)".into(),
            ));
        }
        Ok(ids)
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
    /// Four windows share a forward pass, as in `pgolf-rt score`; it is exactly what a
    /// [`Model::scorer`] stepped to its end gives.
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
        let mut job = self.scorer(text)?;
        job.step(usize::MAX)?;
        job.finish()
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

    /// Starts scoring `text` as [`Model::score`] does (BOS first, the same windows), to be run a
    /// few windows at a time with [`TextScorer::step`]; [`TextScorer::finish`] then gives
    /// exactly [`Model::score`]'s [`TextScore`], every log-probability bit for bit, whatever
    /// the step sizes (a step runs whole groups of four windows per forward pass, the grouping
    /// of [`Model::score`]; [`TextScorer::with_batch`] changes it, e.g. to one window per
    /// pass for the shortest steps). Tokenizes once; errors for an empty text.
    ///
    /// ```
    /// let artifact = "../../shared/reference/baseline9L_int8_zlib.ptz";
    /// let tokenizer = "../../shared/data/tokenizers/pg_sp1024_bpe.model";
    /// if std::path::Path::new(artifact).exists() {
    ///     let model = pgolf_rt::Model::load(artifact, tokenizer)?;
    ///     let text = "It was a bright cold day in April, and the clocks were striking thirteen. ".repeat(60);
    ///     let mut job = model.scorer(&text)?;
    ///     while !job.is_done() {
    ///         let p = job.step(1)?; // one group of windows: show p, check for a stop request, ...
    ///         println!("{} / {} tokens, {:.3} bits per byte so far", p.targets_done, p.targets_total, p.bits_per_byte);
    ///     }
    ///     assert_eq!(job.finish()?, model.score(&text)?);
    ///     assert!(model.scorer("").is_err());
    /// }
    /// # Ok::<(), pgolf_rt::Error>(())
    /// ```
    pub fn scorer(&self, text: &str) -> Result<TextScorer<'_, B>> {
        let ids = self.text_tokens(text)?;
        let targets = ids.len() - 1;
        let seq = score_window(self.config(), targets, self.context);
        let windows = sliding_windows(ids.len(), seq, 64.min(seq))?;
        Ok(TextScorer {
            model: self,
            nll: vec![0.0; targets],
            ids,
            seq,
            batch: SCORE_BATCH,
            windows,
            next_window: 0,
            in_flight: None,
            scored: 0,
            bits: 0.0,
            bytes: 0,
        })
    }

    /// The `k` most likely next tokens after `context` (token ids, BOS first; the last
    /// [`Model::context`] of them are seen), most likely first, with their probabilities.
    /// Errors for an empty context or an id outside the vocabulary.
    ///
    /// ```
    /// let artifact = "../../shared/reference/baseline9L_int8_zlib.ptz";
    /// let tokenizer = "../../shared/data/tokenizers/pg_sp1024_bpe.model";
    /// if std::path::Path::new(artifact).exists() {
    ///     let model = pgolf_rt::Model::load(artifact, tokenizer)?;
    ///     let mut ids = vec![model.tokenizer().bos_id()];
    ///     ids.extend(model.tokenizer().encode("The capital of France is"));
    ///     let top = model.top_next(&ids, 3)?;
    ///     assert_eq!(top.len(), 3);
    ///     assert!(top[0].1 >= top[1].1 && top[1].1 >= top[2].1);
    /// }
    /// # Ok::<(), pgolf_rt::Error>(())
    /// ```
    pub fn top_next(&self, context: &[u32], k: usize) -> Result<Vec<(u32, f32)>> {
        let ctx = &context[context.len().saturating_sub(self.context.max(1))..];
        if ctx.is_empty() {
            return Err(Error::Usage("top_next: the context is empty".into()));
        }
        let vocab = self.config().vocab_size as u32;
        if let Some(bad) = ctx.iter().find(|&&id| id >= vocab) {
            return Err(Error::Usage(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let lp = self
            .model
            .log_probs(ctx, 1, ctx.len(), Some(&[ctx.len() - 1]))?;
        let mut order: Vec<(u32, f32)> = lp
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l.exp()))
            .collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        order.truncate(k);
        Ok(order)
    }

    /// How many of `ids` are byte-fallback tokens: characters the vocabulary has no piece
    /// for, which the model sees as their raw UTF-8 bytes (one token per byte).
    pub fn byte_fallback_tokens(&self, ids: &[u32]) -> usize {
        ids.iter()
            .filter(|&&id| self.tokenizer.piece_type(id) == Some(PieceType::Byte))
            .count()
    }
}

/// Windows per forward pass of [`Model::score`] (what `pgolf-rt score` runs too).
const SCORE_BATCH: usize = 4;

/// A text being scored a few windows at a time: what [`Model::scorer`] returns.
///
/// Each [`TextScorer::step`] runs the next windows of [`Model::score`]'s sliding-window scheme
/// and reports how far it got; [`TextScorer::finish`] gives the whole [`TextScore`].
pub struct TextScorer<'m, B: Backend = CpuBackend> {
    model: &'m Model<B>,
    /// BOS then the text's tokens.
    ids: Vec<u32>,
    /// Window length.
    seq: usize,
    /// Windows per forward pass (each step runs whole groups of them, aligned from the first
    /// window, so the scores never depend on how the work is stepped).
    batch: usize,
    windows: Vec<Window>,
    /// Windows `[0, next_window)` are scored.
    next_window: usize,
    /// The next group's forward, part-way through its layers ([`TextScorer::step_layers`]).
    in_flight: Option<InFlight<'m, B>>,
    /// Negative log-likelihood of every target; `[0, scored)` are computed.
    nll: Vec<f32>,
    scored: usize,
    /// Sums over the scored targets (for the progress report).
    bits: f64,
    bytes: u64,
}

/// A group of windows whose forward pass is part-way through its layers.
struct InFlight<'m, B: Backend> {
    /// The group is windows `[next_window, to)`.
    to: usize,
    packed: Packed,
    steps: LayerSteps<'m, B>,
}

/// One group of windows' forward pass whose scores are still on the device: what
/// [`TextScorer::start_pass`] returns, for a caller that downloads them itself (a browser, which
/// cannot wait for its GPU) and hands them to [`TextScorer::finish_pass`].
pub struct ScorePass<B: Backend> {
    /// The group is windows `[from, to)`.
    from: usize,
    to: usize,
    /// The text's targets the rows of `nll` score, in order.
    targets: Vec<usize>,
    nll: B::Tensor,
}

impl<B: Backend> ScorePass<B> {
    /// The pass's negative log-likelihoods, `[rows, 1]` on the device.
    pub fn nll(&self) -> &B::Tensor {
        &self.nll
    }

    /// Tokens the pass scores (the rows of [`ScorePass::nll`]).
    pub fn targets(&self) -> usize {
        self.targets.len()
    }
}

/// How far a [`TextScorer`] got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreProgress {
    /// Tokens scored so far (they are always the text's first ones).
    pub targets_done: usize,
    /// Tokens of the text (after BOS).
    pub targets_total: usize,
    pub windows_done: usize,
    pub windows_total: usize,
    /// Layers the next group's forward pass has run ([`TextScorer::step_layers`]; 0 between
    /// groups), of `layers`.
    pub pass_layers_done: usize,
    pub layers: usize,
    /// Bits per byte of the tokens scored so far (NaN while they hold no byte).
    pub bits_per_byte: f64,
}

impl<'m, B: Backend> TextScorer<'m, B> {
    /// Runs the next `windows` windows (at least one, rounded up to whole groups of
    /// [`TextScorer::with_batch`] windows; fewer when fewer are left) and returns the progress. Does nothing once every window ran. Errors when the model gives a token a
    /// non-finite log-probability.
    pub fn step(&mut self, windows: usize) -> Result<ScoreProgress> {
        let mut groups = windows.max(1).div_ceil(self.batch);
        if let Some(f) = self.in_flight.take() {
            // The group a layer step started counts as one.
            self.land(f)?;
            groups -= 1;
        }
        let from = self.next_window;
        let to = from
            .saturating_add(groups.saturating_mul(self.batch))
            .min(self.windows.len());
        if from < to {
            // Whole groups of `batch` windows per forward pass: a window's log-probabilities
            // can depend, at float rounding, on which windows share its pass, and they must
            // not depend on the steps.
            let opts = EvalOptions {
                seq_len: self.seq,
                batch: self.batch,
                progress: None,
            };
            let nll = &mut self.nll;
            run_windows(
                &self.model.model,
                &self.ids,
                &self.windows[from..to],
                opts,
                |t, v| nll[t] = v,
            )?;
            self.account(to)?;
        }
        Ok(self.progress())
    }

    /// Runs the next `layers` layers (at least one) of the forward passes [`TextScorer::step`]
    /// runs, the same groups of windows: a group's head and scores come with its last layer.
    /// The scores are the same, bit for bit, however the work is stepped; a step is one
    /// layer of one pass, for a Stop button that must answer within a fraction of a window of
    /// a large model. Does nothing once every window ran.
    pub fn step_layers(&mut self, layers: usize) -> Result<ScoreProgress> {
        for _ in 0..layers.max(1) {
            if self.is_done() {
                break;
            }
            let mut f = match self.in_flight.take() {
                Some(f) => f,
                None => self.start_group()?,
            };
            f.steps.step()?;
            if f.steps.is_done() {
                self.land(f)?;
            } else {
                self.in_flight = Some(f);
            }
        }
        Ok(self.progress())
    }

    /// The next group's forward, its embeddings run.
    fn start_group(&self) -> Result<InFlight<'m, B>> {
        let model: &'m Model<B> = self.model;
        let to = (self.next_window + self.batch).min(self.windows.len());
        let packed = pack(&self.ids, &self.windows[self.next_window..to], self.seq)?;
        let steps = model
            .model
            .layer_steps(packed.ids.clone(), to - self.next_window, self.seq)?;
        Ok(InFlight { to, packed, steps })
    }

    /// Finishes the group in flight: its remaining layers, its head, its scores.
    fn land(&mut self, f: InFlight<'m, B>) -> Result<()> {
        let nll = f.steps.nll(&f.packed.tgt, Some(&f.packed.rows))?;
        for (&t, v) in f.packed.targets.iter().zip(nll) {
            self.nll[t] = v;
        }
        self.account(f.to)
    }

    /// Runs the next group of windows' forward pass (the group [`TextScorer::step`] and
    /// [`TextScorer::step_layers`] would run; the rest of it, if a layer step started it) and
    /// leaves its scores on the device, where [`Backend::nll_tensor`] keeps them: the caller
    /// downloads [`ScorePass::nll`] when it can and hands the values to
    /// [`TextScorer::finish_pass`]. This is how a browser scores on its GPU: it must not wait
    /// for a download, so it reads one back asynchronously
    /// ([`crate::backend::wgpu::WgpuBackend::start_download`]) and finishes the pass when it
    /// arrives. The scores are the same, bit for bit, as the other steps give. `None` once every
    /// window ran. A pass dropped unfinished changes nothing (the next start runs it again).
    pub fn start_pass(&mut self) -> Result<Option<ScorePass<B>>> {
        if self.is_done() {
            return Ok(None);
        }
        let f = match self.in_flight.take() {
            Some(f) => f,
            None => self.start_group()?,
        };
        let Packed {
            tgt, rows, targets, ..
        } = f.packed;
        let nll = f.steps.nll_tensor(&tgt, Some(&rows))?;
        Ok(Some(ScorePass {
            from: self.next_window,
            to: f.to,
            targets,
            nll,
        }))
    }

    /// Takes the downloaded values of `pass` (one per row of [`ScorePass::nll`]): the pass's
    /// windows count as run. Errors for a pass that is not the next one (started before
    /// another pass or step finished its windows) or values of the wrong length, and as
    /// [`TextScorer::step`] does for a non-finite log-probability.
    pub fn finish_pass(&mut self, pass: ScorePass<B>, nll: &[f32]) -> Result<ScoreProgress> {
        if pass.from != self.next_window || self.in_flight.is_some() {
            return Err(Error::Usage(format!(
                "this pass scores windows {}..{} but the scorer is at window {}",
                pass.from, pass.to, self.next_window
            )));
        }
        if nll.len() != pass.targets.len() {
            return Err(Error::Usage(format!(
                "the pass scores {} tokens, {} values came",
                pass.targets.len(),
                nll.len()
            )));
        }
        for (&t, &v) in pass.targets.iter().zip(nll) {
            self.nll[t] = v;
        }
        self.account(pass.to)?;
        Ok(self.progress())
    }

    /// Windows `[next_window, to)` ran: checks and sums their targets.
    fn account(&mut self, to: usize) -> Result<()> {
        self.next_window = to;
        let w = &self.windows[to - 1];
        let end = w.start + w.len;
        check_finite(&self.nll, &self.ids, self.scored..end)?;
        for t in self.scored..end {
            self.bits += self.nll[t] as f64 / std::f64::consts::LN_2;
            self.bytes += self.model.lut.bytes_for(self.ids[t], self.ids[t + 1]) as u64;
        }
        self.scored = end;
        Ok(())
    }

    /// Runs `windows_per_pass` windows in each forward pass (default 4, what [`Model::score`]
    /// runs; 1 makes each step as short as it can be, for a responsive page). Set it before the
    /// first step: the scores depend on the grouping at float rounding, never on the steps.
    pub fn with_batch(mut self, windows_per_pass: usize) -> Self {
        self.batch = windows_per_pass.max(1);
        self
    }

    /// How far it got.
    pub fn progress(&self) -> ScoreProgress {
        ScoreProgress {
            targets_done: self.scored,
            targets_total: self.nll.len(),
            windows_done: self.next_window,
            windows_total: self.windows.len(),
            pass_layers_done: self.in_flight.as_ref().map_or(0, |f| f.steps.layers_done()),
            layers: self.model.config().num_layers,
            bits_per_byte: if self.bytes == 0 {
                f64::NAN
            } else {
                self.bits / self.bytes as f64
            },
        }
    }

    /// Whether every window ran.
    pub fn is_done(&self) -> bool {
        self.next_window == self.windows.len()
    }

    /// Tokens one forward pass of a window runs (its length; every window has it but, in a
    /// text shorter than [`Model::context`], the only one).
    pub fn window_len(&self) -> usize {
        self.seq
    }

    /// The scored token ids: BOS, then the text's tokens.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The whole score, the same as [`Model::score`]'s. Errors before every window ran, and as
    /// [`Model::score`] does (a text without bytes).
    pub fn finish(&self) -> Result<TextScore> {
        if !self.is_done() {
            return Err(Error::Usage(format!(
                "the score is not finished: {} of {} windows ran",
                self.next_window,
                self.windows.len()
            )));
        }
        // The same sums, in the same order, as `eval::score_tokens` (what `pgolf-rt score` runs).
        text_score(&self.ids, &self.nll, &self.model.lut)
    }

    /// The `k` tokens the model found most likely at scored token `target` (0 is the text's
    /// first token), with their probabilities, from the context of the window that scored it.
    /// Errors for a token not scored yet.
    pub fn alternatives(&self, target: usize, k: usize) -> Result<Vec<(u32, f32)>> {
        self.model.top_next(self.context_of(target)?, k)
    }

    /// The token ids the window that scored `target` saw up to it (BOS-led, `target`'s own
    /// input last): the context [`TextScorer::alternatives`] ranks the next token after, for a
    /// caller that ranks it on another model (a page scoring on WebGPU asks its CPU model, since
    /// it cannot wait for the GPU). Errors for a token not scored yet.
    pub fn context_of(&self, target: usize) -> Result<&[u32]> {
        if target >= self.scored {
            return Err(Error::Usage(format!(
                "token {target} is not scored yet ({} of {} are)",
                self.scored,
                self.nll.len()
            )));
        }
        let w = self
            .windows
            .iter()
            .find(|w| w.start + w.score_from <= target && target < w.start + w.len)
            .ok_or_else(|| Error::Usage(format!("no window scores token {target}")))?;
        Ok(&self.ids[w.start..=target])
    }
}

/// A continuation being generated one token at a time: what [`Model::generator`] returns.
pub struct Generator<'m> {
    model: &'m Model,
    sampling: Sampling,
    decoding: Decoding,
    /// The prompt's tokens (BOS first), then the generated ones.
    ids: Vec<u32>,
    prompt_tokens: usize,
    /// Tokens still to generate.
    remaining: usize,
    dec: Decoder<'m>,
    detok: Detokenizer<'m>,
    rng: SplitMix64,
    text: String,
}

impl Generator<'_> {
    /// Picks the next token and returns the text it completes (empty while a character spans
    /// several byte tokens), or `None` once the requested tokens are out (or after
    /// [`Generator::finish`]).
    pub fn next_piece(&mut self) -> Result<Option<String>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let model = &self.model.model;
        let context = self.model.context.max(1);
        let ids = &self.ids;
        let lp = match self.decoding {
            Decoding::Recompute => {
                let ctx = &ids[ids.len().saturating_sub(context)..];
                let last = ctx.len() - 1;
                model.log_probs(ctx, 1, ctx.len(), Some(&[last]))?
            }
            // The first token, or a full window: prefill the last `context` (first) or
            // `context / 2` (full window) tokens.
            Decoding::Cached if self.dec.is_empty() => self
                .dec
                .prefill(&ids[ids.len().saturating_sub(context)..])?,
            Decoding::Cached if self.dec.len() >= context => self
                .dec
                .prefill(&ids[ids.len().saturating_sub((context / 2).max(1))..])?,
            Decoding::Cached => self.dec.step(ids[ids.len() - 1])?,
        };
        let id = pick(&lp, &self.sampling, &mut self.rng);
        self.ids.push(id);
        self.remaining -= 1;
        let piece = self.detok.push(id);
        self.text.push_str(&piece);
        Ok(Some(piece))
    }

    /// Ends the generation (later [`Generator::next_piece`] calls return `None`) and returns
    /// the text still owed: U+FFFD per byte of a character left unfinished, usually empty.
    pub fn finish(&mut self) -> String {
        self.remaining = 0;
        let rest = self.detok.finish();
        self.text.push_str(&rest);
        rest
    }

    /// Tokens of the prompt as the model sees them (BOS included).
    pub fn prompt_ids(&self) -> &[u32] {
        &self.ids[..self.prompt_tokens]
    }

    /// Tokens still to pick (0 once the requested ones are out or after
    /// [`Generator::finish`]).
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.ids.len() - self.prompt_tokens
    }

    /// What was generated ([`Generator::finish`]ed first).
    pub fn into_generation(mut self) -> Generation {
        self.finish();
        Generation {
            text: self.text,
            tokens: self.ids.split_off(self.prompt_tokens),
            prompt_tokens: self.prompt_tokens,
        }
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

    /// The committed default model (a small one: these tests run in a second or two).
    fn tiny() -> Model {
        Model::load(
            "../models/pg-tiny-4L128.int8.ptz",
            "../models/pg_sp1024_bpe.model",
        )
        .expect("the committed default model in models/")
    }

    /// A text of several windows (the sample text repeated: about 1,700 tokens).
    fn long_text() -> String {
        std::fs::read_to_string("../examples/web/fixed_text.txt")
            .expect("examples/web/fixed_text.txt")
            .repeat(6)
    }

    #[test]
    fn stepping_a_scorer_gives_exactly_the_whole_score() {
        let model = tiny();
        let text = long_text();
        let whole = model.score(&text).unwrap();
        let one_per_pass = {
            let mut job = model.scorer(&text).unwrap().with_batch(1);
            job.step(usize::MAX).unwrap();
            job.finish().unwrap()
        };
        for (batch, per_step) in [(4, 1), (4, 3), (4, 4), (4, 100), (1, 1), (1, 3)] {
            let mut job = model.scorer(&text).unwrap().with_batch(batch);
            let total = job.progress().windows_total;
            assert!(total > 4, "{total} windows: the text should need several");
            assert!(job.finish().is_err(), "finish before the last window");
            let mut last_done = 0;
            while !job.is_done() {
                let p = job.step(per_step).unwrap();
                assert!(p.targets_done > last_done && p.bits_per_byte.is_finite());
                last_done = p.targets_done;
            }
            assert_eq!(last_done, whole.tokens.len());
            // TokenScores and totals bit for bit, whatever the steps.
            let want = if batch == 4 { &whole } else { &one_per_pass };
            assert_eq!(&job.finish().unwrap(), want, "{per_step} windows per step");
            let partial = job.progress().bits_per_byte;
            assert!((partial - want.bits_per_byte).abs() < 1e-9, "{partial}");
        }
        // Another grouping of the windows into passes: the same to float rounding.
        assert!((one_per_pass.bits_per_byte - whole.bits_per_byte).abs() < 1e-6);
        for (a, b) in one_per_pass.tokens.iter().zip(&whole.tokens) {
            assert_eq!((a.id, a.bytes), (b.id, b.bytes));
            assert!((a.logprob - b.logprob).abs() < 1e-4, "{a:?} {b:?}");
        }
        // `pgolf-rt score` (four windows per forward pass): exactly `Model::score`.
        let ids: Vec<u32> = std::iter::once(model.tokenizer().bos_id())
            .chain(model.tokenizer().encode(&text))
            .collect();
        let cli = crate::eval::score_tokens(&model.model, &ids, &model.lut, 1024, 64).unwrap();
        assert_eq!(cli.bits_per_byte, whole.bits_per_byte);
        for (a, b) in cli.tokens.iter().zip(&whole.tokens) {
            assert_eq!((a.id, a.bytes, a.logprob), (b.id, b.bytes, b.logprob));
        }
        let short = model.scorer("Hello, world.").unwrap();
        assert_eq!(short.progress().windows_total, 1);
        assert!(model.scorer("").is_err());
    }

    /// Layer steps ([`TextScorer::step_layers`]), alone and mixed with window steps: the same
    /// score bit for bit, each step one layer, progress inside the pass in flight.
    #[test]
    fn stepping_a_scorer_by_layers_gives_exactly_the_whole_score() {
        let model = tiny();
        let layers = model.config().num_layers;
        let text = long_text();
        for batch in [4, 1] {
            let whole = {
                let mut job = model.scorer(&text).unwrap().with_batch(batch);
                job.step(usize::MAX).unwrap();
                job.finish().unwrap()
            };
            for (per_step, mixed) in [(1, false), (3, false), (1, true), (layers + 1, true)] {
                let mut job = model.scorer(&text).unwrap().with_batch(batch);
                let mut steps = 0;
                while !job.is_done() {
                    let before = job.progress();
                    let p = if mixed && steps % 3 == 2 {
                        job.step(1).unwrap()
                    } else {
                        job.step_layers(per_step).unwrap()
                    };
                    steps += 1;
                    assert_eq!(p.layers, layers);
                    assert!(p.pass_layers_done < layers);
                    if per_step == 1 && !mixed {
                        // One layer: either one more layer of the pass, or the pass landed.
                        let landed = p.windows_done > before.windows_done;
                        assert!(
                            landed || p.pass_layers_done == before.pass_layers_done + 1,
                            "{before:?} -> {p:?}"
                        );
                        assert_eq!(landed, before.pass_layers_done == layers - 1);
                    }
                }
                let got = job.finish().unwrap();
                assert_eq!(
                    got, whole,
                    "batch {batch}, {per_step} layers per step, mixed {mixed}"
                );
                let windows = job.progress().windows_total;
                if per_step == 1 && !mixed {
                    assert_eq!(steps, windows.div_ceil(batch) * layers);
                }
            }
        }
    }

    #[test]
    fn alternatives_come_from_the_scoring_window() {
        let model = tiny();
        let mut job = model
            .scorer("The quick brown fox jumps over the lazy dog.")
            .unwrap();
        assert!(job.alternatives(0, 3).is_err(), "not scored yet");
        job.step(1).unwrap();
        let top = job.alternatives(2, 3).unwrap();
        assert_eq!(top.len(), 3);
        assert!(top[0].1 >= top[1].1 && top[1].1 >= top[2].1 && top[0].1 <= 1.0);
        let n = job.ids().len() - 1;
        assert!(job.alternatives(n, 3).is_err());
    }

    #[test]
    fn a_generator_picks_the_tokens_of_generate_with() {
        let model = tiny();
        for (decoding, sampling) in [
            (
                Decoding::Cached,
                Sampling {
                    temperature: 0.8,
                    top_k: 40,
                    seed: 11,
                },
            ),
            (Decoding::Cached, Sampling::greedy()),
            (
                Decoding::Recompute,
                Sampling {
                    temperature: 1.0,
                    top_k: 0,
                    seed: 3,
                },
            ),
        ] {
            let want = model
                .generate_with(
                    "The museum opened last June, and",
                    24,
                    &sampling,
                    decoding,
                    |_| true,
                )
                .unwrap();
            let mut g = model
                .generator("The museum opened last June, and", 24, &sampling, decoding)
                .unwrap();
            let mut pieces = String::new();
            while let Some(p) = g.next_piece().unwrap() {
                pieces.push_str(&p);
            }
            pieces.push_str(&g.finish());
            assert_eq!(g.generated(), 24);
            assert_eq!(g.prompt_ids().len(), want.prompt_tokens);
            let got = g.into_generation();
            assert_eq!(
                (&got, &pieces),
                (&want, &want.text),
                "{decoding:?} {sampling:?}"
            );
        }
        let bad = Sampling {
            temperature: -1.0,
            ..Sampling::greedy()
        };
        assert!(model.generator("x", 4, &bad, Decoding::Cached).is_err());
    }

    #[test]
    fn stopping_a_generator_keeps_what_it_picked() {
        let model = tiny();
        let mut g = model
            .generator(
                "Once upon a time",
                100,
                &Sampling::greedy(),
                Decoding::Cached,
            )
            .unwrap();
        for _ in 0..5 {
            assert!(g.next_piece().unwrap().is_some());
        }
        g.finish();
        assert_eq!(g.next_piece().unwrap(), None);
        let first5 = model
            .generate("Once upon a time", 5, &Sampling::greedy())
            .unwrap();
        assert_eq!(g.into_generation().text, first5);
    }

    #[test]
    fn byte_fallback_tokens_are_counted() {
        let model = tiny();
        let plain = model.tokenizer().encode("plain words");
        assert_eq!(model.byte_fallback_tokens(&plain), 0);
        let cjk = model.tokenizer().encode("日本");
        assert!(model.byte_fallback_tokens(&cjk) >= 6, "{cjk:?}");
    }
}
