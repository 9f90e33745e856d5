//! WebAssembly bindings of the pgolf-rt embedding API ([`pgolf_rt::Model`]) for browsers.
//!
//! Build (inside this folder) and generate the JS glue:
//!
//! ```text
//! cargo build --target wasm32-unknown-unknown --release
//! wasm-bindgen --target web --out-dir ../../examples/web/pkg \
//!     ${CARGO_TARGET_DIR:-../../target}/wasm32-unknown-unknown/release/pgolf_rt_wasm.wasm
//! ```
//!
//! From JavaScript:
//!
//! ```text
//! import init, { WasmModel } from "./pkg/pgolf_rt_wasm.js";
//! await init();
//! const model = new WasmModel(artifactBytes, tokenizerBytes);   // Uint8Arrays
//! const s = model.score("Some text.");   // {tokens: [{id, piece, logprob, bits, bytes}], bits_per_byte, ...}
//! const more = model.generate("Once upon a time", 32, 0.8, 40, 1n);
//!
//! // Without blocking (in a Web Worker, yielding to its event loop between steps):
//! const job = model.score_job(longText);
//! while (!job.done) { const p = job.step(1); /* {targets_done, targets_total, bits_per_byte, ...} */ }
//! // or a layer at a time (a large model's window takes seconds): job.step_layers(1)
//! const whole = job.result();   // the same object as model.score(longText), bit for bit
//! // As the challenge scores a stream, with score-first TTT, the mixer and the audit:
//! const r = model.evaluate(text, { seq_len: 128, stride: 64, recipe: "pr461", ttt_chunk: 128,
//!                                  mix: "hedge", audit: true }, (done, total, unit, bpb) => {});
//! // r: {val_bpb, val_loss, tokens, bytes, adapt, mix: {...}, audit: {passed, checks}}
//! const gen = model.generator("Once upon a time", 1000, 0.8, 40, 1n);
//! while (!gen.done) { const { text } = gen.step(1); /* post text, check for a stop request */ }
//! ```

use js_sys::{Array, Object, Promise, Reflect};
use pgolf_rt::backend::wgpu::{Download, WgpuBackend};
use pgolf_rt::backend::Backend;
use pgolf_rt::eval::mixer::MixerConfig;
use pgolf_rt::eval::plan::{Adaptation, AuditPlan, EvalPlan, EvalReport, Progress};
use pgolf_rt::eval::{EvalResult, FullTttConfig, TextScore, TttConfig, TttRecipe};
use pgolf_rt::model::ConfigOverrides;
use pgolf_rt::{Decoding, Generator, Model, Sampling, ScorePass, ScoreProgress, TextScorer};
use std::rc::Rc;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(s: &str);
}

/// Sends Rust panics to the browser console (otherwise they only say "unreachable").
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error(&format!("pgolf-rt panicked: {info}"))
    }));
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) -> Result<(), JsError> {
    Reflect::set(obj, &JsValue::from_str(key), &value.into())
        .map(|_| ())
        .map_err(|_| JsError::new("cannot set a property on a JS object"))
}

fn js_err(e: pgolf_rt::Error) -> JsError {
    JsError::new(&e.to_string())
}

// The jobs ([`ScoreJob`], [`GenerateJob`]) are objects JavaScript holds on their own, and a
// wasm-bindgen object cannot borrow: each owns a clone of the model's `Rc` together with the
// library's scorer or generator that borrows it, as one self-referential cell (`self_cell`
// checks the borrow, so this crate needs no `unsafe`).
self_cell::self_cell!(
    struct ScorerCell {
        owner: Rc<Model>,
        #[covariant]
        dependent: TextScorer,
    }
);

self_cell::self_cell!(
    struct GeneratorCell {
        owner: Rc<Model>,
        #[covariant]
        dependent: Generator,
    }
);

/// The scorer of a model on the browser's WebGPU.
type GpuScorer<'a> = TextScorer<'a, WgpuBackend>;

self_cell::self_cell!(
    struct GpuScorerCell {
        owner: Rc<Model<WgpuBackend>>,
        #[covariant]
        dependent: GpuScorer,
    }
);

/// `[{id, piece, prob}]` of a top-k list.
fn top_to_js<B: Backend>(model: &Model<B>, top: Vec<(u32, f32)>) -> Result<JsValue, JsError> {
    let tok = model.tokenizer();
    let out = Array::new();
    for (id, prob) in top {
        let o = Object::new();
        set(&o, "id", id)?;
        set(
            &o,
            "piece",
            tok.piece(id).unwrap_or("").replace('\u{2581}', " "),
        )?;
        set(&o, "prob", prob)?;
        out.push(&o);
    }
    Ok(out.into())
}

fn score_to_js<B: Backend>(model: &Model<B>, s: &TextScore) -> Result<JsValue, JsError> {
    let ids: Vec<u32> = s.tokens.iter().map(|t| t.id).collect();
    let pieces = model.token_texts(&ids);
    let tokens = Array::new_with_length(s.tokens.len() as u32);
    for (i, (t, piece)) in s.tokens.iter().zip(pieces).enumerate() {
        let o = Object::new();
        set(&o, "id", t.id)?;
        set(&o, "piece", piece)?;
        set(&o, "logprob", t.logprob)?;
        set(&o, "bits", -t.logprob as f64 / std::f64::consts::LN_2)?;
        set(&o, "bytes", t.bytes)?;
        tokens.set(i as u32, o.into());
    }
    let out = Object::new();
    set(&out, "tokens", tokens)?;
    set(&out, "num_tokens", s.tokens.len() as u32)?;
    set(&out, "total_bits", s.total_bits)?;
    set(&out, "total_bytes", s.total_bytes as f64)?;
    set(&out, "bits_per_byte", s.bits_per_byte)?;
    set(
        &out,
        "byte_fallback_tokens",
        model.byte_fallback_tokens(&ids) as u32,
    )?;
    Ok(out.into())
}

fn progress_to_js(p: &ScoreProgress) -> Result<JsValue, JsError> {
    let o = Object::new();
    set(&o, "targets_done", p.targets_done as u32)?;
    set(&o, "targets_total", p.targets_total as u32)?;
    set(&o, "windows_done", p.windows_done as u32)?;
    set(&o, "windows_total", p.windows_total as u32)?;
    set(&o, "pass_layers_done", p.pass_layers_done as u32)?;
    set(&o, "layers", p.layers as u32)?;
    set(&o, "bits_per_byte", p.bits_per_byte)?;
    Ok(o.into())
}

/// Field `key` of the JS object `obj`; `None` when it is absent, `undefined` or `null`.
fn field(obj: &JsValue, key: &str) -> Result<Option<JsValue>, JsError> {
    if obj.is_undefined() || obj.is_null() {
        return Ok(None);
    }
    if !obj.is_object() {
        return Err(JsError::new("the evaluation plan must be an object"));
    }
    let v = Reflect::get(obj, &JsValue::from_str(key))
        .map_err(|_| JsError::new("cannot read the evaluation plan"))?;
    Ok((!v.is_undefined() && !v.is_null()).then_some(v))
}

/// A whole number of at least 1 (and below 2^32) in field `key`.
fn count_field(obj: &JsValue, key: &str) -> Result<Option<usize>, JsError> {
    let Some(v) = field(obj, key)? else {
        return Ok(None);
    };
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 && (1.0..4294967296.0).contains(&x) => Ok(Some(x as usize)),
        _ => Err(JsError::new(&format!(
            "plan.{key} must be a whole number of at least 1, not {v:?}"
        ))),
    }
}

fn string_field(obj: &JsValue, key: &str) -> Result<Option<String>, JsError> {
    match field(obj, key)? {
        None => Ok(None),
        Some(v) => v
            .as_string()
            .map(Some)
            .ok_or_else(|| JsError::new(&format!("plan.{key} must be a string, not {v:?}"))),
    }
}

fn bool_field(obj: &JsValue, key: &str) -> Result<bool, JsError> {
    match field(obj, key)? {
        None => Ok(false),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| JsError::new(&format!("plan.{key} must be true or false, not {v:?}"))),
    }
}

/// The [`EvalPlan`] of a JS plan object (see [`WasmModel::evaluate`]); the defaults are the
/// CLI's.
fn eval_plan(model: &Model, plan: &JsValue) -> Result<EvalPlan, JsError> {
    const KEYS: [&str; 10] = [
        "seq_len",
        "stride",
        "batch",
        "ttt",
        "recipe",
        "ttt_chunk",
        "ttt_epochs",
        "ttt_lr",
        "mix",
        "audit",
    ];
    if plan.is_object() {
        for k in Object::keys(plan.unchecked_ref::<Object>()).iter() {
            let k = k.as_string().unwrap_or_default();
            if !KEYS.contains(&k.as_str()) {
                return Err(JsError::new(&format!(
                    "unknown plan field {k:?} (known: {})",
                    KEYS.join(", ")
                )));
            }
        }
    }
    let seq_len = count_field(plan, "seq_len")?.unwrap_or(model.context);
    let stride = count_field(plan, "stride")?;
    let batch = count_field(plan, "batch")?.unwrap_or(EvalPlan::default().batch);
    let recipe = match string_field(plan, "recipe")? {
        Some(r) => Some(r.parse::<TttRecipe>().map_err(js_err)?),
        None => None,
    };
    let chunk = count_field(plan, "ttt_chunk")?;
    let epochs = count_field(plan, "ttt_epochs")?;
    let lr = match field(plan, "ttt_lr")? {
        None => None,
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 => Some(x as f32),
            _ => {
                return Err(JsError::new(&format!(
                    "plan.ttt_lr must be a finite number >= 0, not {v:?}"
                )))
            }
        },
    };
    let ttt = string_field(plan, "ttt")?;
    let adapt = match (ttt.as_deref(), recipe) {
        (None | Some("none"), None) => {
            if chunk.is_some() || epochs.is_some() || lr.is_some() {
                return Err(JsError::new(
                    "plan.ttt_chunk, ttt_epochs and ttt_lr need plan.ttt or plan.recipe",
                ));
            }
            Adaptation::None
        }
        (Some("lora"), None) => {
            let mut c = TttConfig::default();
            c.chunk = chunk.unwrap_or(c.chunk);
            c.epochs = epochs.unwrap_or(c.epochs);
            c.optimizer.lr = lr.unwrap_or(c.optimizer.lr);
            Adaptation::Lora(c)
        }
        (Some("lora"), Some(_)) => {
            return Err(JsError::new(
                "plan.recipe names a full-model recipe: it does not go with ttt \"lora\"",
            ))
        }
        (None | Some("full"), recipe) => {
            let base = FullTttConfig {
                seq_len,
                stride,
                batch,
                chunk: chunk.unwrap_or(FullTttConfig::default().chunk),
                ..FullTttConfig::default()
            };
            let mut c = recipe
                .unwrap_or(TttRecipe::Pr461)
                .config(model.config(), &base);
            // A recipe with a flat schedule (lr_min = lr) stays flat under another ttt_lr.
            let flat = c.lr_min == c.lr;
            c.epochs = epochs.unwrap_or(c.epochs);
            if let Some(lr) = lr {
                c.lr = lr;
                // As the CLI: a flat schedule follows the new rate, and the floor never
                // exceeds the peak.
                if flat || c.lr_min > c.lr {
                    c.lr_min = c.lr;
                }
            }
            Adaptation::Full(c)
        }
        (Some(other), _) => {
            return Err(JsError::new(&format!(
                "plan.ttt must be \"none\", \"lora\" or \"full\", not {other:?}"
            )))
        }
    };
    let mix = match string_field(plan, "mix")?.as_deref() {
        None | Some("none") => None,
        Some("hedge") => Some(MixerConfig::default()),
        Some(other) => {
            return Err(JsError::new(&format!(
                "plan.mix must be \"none\" or \"hedge\", not {other:?}"
            )))
        }
    };
    let plan = EvalPlan {
        seq_len,
        stride,
        batch,
        adapt,
        mix,
        audit: bool_field(plan, "audit")?.then(AuditPlan::default),
    };
    plan.validate().map_err(js_err)?;
    Ok(plan)
}

fn result_fields(o: &Object, r: &EvalResult) -> Result<(), JsError> {
    set(o, "val_bpb", r.val_bpb)?;
    set(o, "val_loss", r.val_loss)?;
    set(o, "tokens", r.tokens as f64)?;
    set(o, "bytes", r.bytes as f64)?;
    set(o, "seconds", r.seconds)
}

fn report_to_js(plan: &EvalPlan, rep: &EvalReport) -> Result<JsValue, JsError> {
    let out = Object::new();
    result_fields(&out, &rep.result)?;
    set(&out, "adapt", plan.adapt.name())?;
    let mix = match &rep.mixed {
        None => JsValue::NULL,
        Some(m) => {
            let o = Object::new();
            set(&o, "neural_val_bpb", m.neural().val_bpb)?;
            let experts = Array::new();
            for e in &m.experts {
                let x = Object::new();
                set(&x, "name", e.expert.name())?;
                set(&x, "enabled", e.enabled)?;
                set(&x, "val_bpb", e.result.val_bpb)?;
                set(&x, "final_weight", e.final_weight)?;
                experts.push(&x);
            }
            set(&o, "experts", experts)?;
            o.into()
        }
    };
    set(&out, "mix", mix)?;
    let audit = match &rep.audit {
        None => JsValue::NULL,
        Some(a) => {
            let o = Object::new();
            set(&o, "passed", a.passed())?;
            let checks = Array::new();
            for c in &a.checks {
                let x = Object::new();
                set(&x, "name", c.name.as_str())?;
                set(&x, "passed", c.passed)?;
                set(&x, "detail", c.detail.as_str())?;
                checks.push(&x);
            }
            set(&o, "checks", checks)?;
            o.into()
        }
    };
    set(&out, "audit", audit)?;
    Ok(out.into())
}

fn sampling(temperature: f32, top_k: u32, seed: u64) -> Sampling {
    Sampling {
        temperature,
        top_k: top_k as usize,
        seed,
    }
}

/// A model and its tokenizer, loaded from the bytes of a compressed artifact and a `.model` file.
#[wasm_bindgen]
pub struct WasmModel {
    model: Rc<Model>,
}

#[wasm_bindgen]
impl WasmModel {
    /// Decompresses (zlib, zstd or xz, in pure Rust), dequantizes and prepares the model.
    #[wasm_bindgen(constructor)]
    pub fn new(artifact_bytes: &[u8], tokenizer_bytes: &[u8]) -> Result<WasmModel, JsError> {
        Ok(WasmModel {
            model: Rc::new(Model::from_bytes(artifact_bytes, tokenizer_bytes).map_err(js_err)?),
        })
    }

    /// Scores `text` as one document (BOS first), in one call, one window per forward pass
    /// (as [`WasmModel::score_job`] steps, so the two agree bit for bit). Returns
    /// `{tokens: [{id, piece, logprob, bits, bytes}], num_tokens, total_bits, total_bytes,
    /// bits_per_byte, byte_fallback_tokens}`; `piece` is the text the token stands for (pieces
    /// concatenate to the text), `logprob` is in nats, `bits = -logprob / ln 2`.
    pub fn score(&self, text: &str) -> Result<JsValue, JsError> {
        let mut job = self.model.scorer(text).map_err(js_err)?.with_batch(1);
        job.step(usize::MAX).map_err(js_err)?;
        score_to_js(&self.model, &job.finish().map_err(js_err)?)
    }

    /// Starts scoring `text` window by window (see [`ScoreJob`]); errors for an empty text.
    pub fn score_job(&self, text: &str) -> Result<ScoreJob, JsError> {
        let cell = ScorerCell::try_new(self.model.clone(), |m| {
            // One window per forward pass: each step as short as it can be (Stop).
            m.scorer(text).map(|s| s.with_batch(1))
        })
        .map_err(js_err)?;
        Ok(ScoreJob { cell })
    }

    /// Continues `prompt` by `n` tokens and returns the continuation's text. `temperature` 0 is
    /// greedy; `top_k` 0 keeps every token; the same `seed` gives the same text.
    pub fn generate(
        &self,
        prompt: &str,
        n: u32,
        temperature: f32,
        top_k: u32,
        seed: u64,
    ) -> Result<String, JsError> {
        self.generate_decoding(prompt, n, temperature, top_k, seed, false)
    }

    /// [`WasmModel::generate`] with the forward per token chosen: `recompute` runs the whole
    /// window again for every new token (the reference, to compare against), otherwise one
    /// position over the KV cache. The same text while it fits in the context.
    pub fn generate_decoding(
        &self,
        prompt: &str,
        n: u32,
        temperature: f32,
        top_k: u32,
        seed: u64,
        recompute: bool,
    ) -> Result<String, JsError> {
        let decoding = if recompute {
            Decoding::Recompute
        } else {
            Decoding::Cached
        };
        let s = sampling(temperature, top_k, seed);
        self.model
            .generate_with(prompt, n as usize, &s, decoding, |_| true)
            .map(|g| g.text)
            .map_err(js_err)
    }

    /// Starts generating what [`WasmModel::generate`] would, token by token (see
    /// [`GenerateJob`]): the same tokens for the same seed.
    pub fn generator(
        &self,
        prompt: &str,
        n: u32,
        temperature: f32,
        top_k: u32,
        seed: u64,
    ) -> Result<GenerateJob, JsError> {
        let s = sampling(temperature, top_k, seed);
        let cell = GeneratorCell::try_new(self.model.clone(), |m| {
            m.generator(prompt, n as usize, &s, Decoding::Cached)
        })
        .map_err(js_err)?;
        Ok(GenerateJob { cell })
    }

    /// Evaluates `text` as one document (BOS, then its tokens) the way the challenge scores a
    /// stream: `pgolf-rt eval --text` with the same settings gives the same numbers. `plan` is an
    /// object whose fields are all optional:
    /// `{seq_len (the context), stride (none: standard windows), batch (8), ttt ("none", "lora"
    /// or "full"; a recipe means "full"), recipe ("pr461", "pr489", "pr581", "pr687"),
    /// ttt_chunk, ttt_epochs, ttt_lr, mix ("none" or "hedge"), audit (false)}`, each as the
    /// CLI flag of that name. The stream is cut to whole windows of `seq_len` targets, as in
    /// the challenge. `on_progress(done, total, unit, bits_per_byte)` (optional) is called as
    /// the work goes (`unit`: "targets", "docs" or "chunks"; `bits_per_byte` so far, NaN
    /// without TTT). Returns `{val_bpb, val_loss, tokens, bytes, seconds, adapt, mix:
    /// {neural_val_bpb, experts: [{name, enabled, val_bpb, final_weight}]} or null, audit:
    /// {passed, checks: [{name, passed, detail}]} or null}`. This call blocks until done:
    /// run it in a Web Worker.
    pub fn evaluate(
        &self,
        text: &str,
        plan: JsValue,
        on_progress: Option<js_sys::Function>,
    ) -> Result<JsValue, JsError> {
        let plan = eval_plan(&self.model, &plan)?;
        let tokens = self.model.text_tokens(text).map_err(js_err)?;
        let mut call = |p: &Progress| {
            if let Some(f) = &on_progress {
                let bpb = p.totals.map_or(f64::NAN, |a| {
                    a.nll_sum / std::f64::consts::LN_2 / a.bytes as f64
                });
                // A throwing callback must not abort the evaluation; the page sees its own error.
                let _ = f.call4(
                    &JsValue::NULL,
                    &JsValue::from(p.done as f64),
                    &JsValue::from(p.total as f64),
                    &JsValue::from_str(p.unit),
                    &JsValue::from(bpb),
                );
            }
        };
        let report = self
            .model
            .evaluate_with(&plan, &tokens, Some(&mut call))
            .map_err(js_err)?;
        report_to_js(&plan, &report)
    }

    /// `{summary, param_count, vocab_size, num_layers, model_dim, num_heads, num_kv_heads,
    /// mlp_hidden, tied_embeddings, context}`; `summary` is the architecture as `pgolf-rt inspect`
    /// prints it.
    pub fn info(&self) -> Result<JsValue, JsError> {
        let c = self.model.config();
        let o = Object::new();
        set(&o, "summary", c.to_string())?;
        set(&o, "param_count", c.param_count() as f64)?;
        set(&o, "vocab_size", c.vocab_size as u32)?;
        set(&o, "num_layers", c.num_layers as u32)?;
        set(&o, "model_dim", c.model_dim as u32)?;
        set(&o, "num_heads", c.num_heads as u32)?;
        set(&o, "num_kv_heads", c.num_kv_heads as u32)?;
        set(&o, "mlp_hidden", c.mlp_hidden as u32)?;
        set(&o, "tied_embeddings", c.tied_embeddings)?;
        set(&o, "context", self.model.context as u32)?;
        Ok(o.into())
    }

    /// Context window (tokens) used for scoring and generation.
    #[wasm_bindgen(getter)]
    pub fn context(&self) -> u32 {
        self.model.context as u32
    }
}

/// A text being scored a window at a time, from [`WasmModel::score_job`]: call `step(n)` until
/// `done`, yielding to the event loop in between, then `result()`.
#[wasm_bindgen]
pub struct ScoreJob {
    cell: ScorerCell,
}

#[wasm_bindgen]
impl ScoreJob {
    /// Runs the next `windows` windows (at least one) and returns
    /// `{targets_done, targets_total, windows_done, windows_total, pass_layers_done, layers,
    /// bits_per_byte}`
    /// (`bits_per_byte` of the tokens scored so far).
    pub fn step(&mut self, windows: u32) -> Result<JsValue, JsError> {
        let p = self
            .cell
            .with_dependent_mut(|_, s| s.step(windows as usize))
            .map_err(js_err)?;
        progress_to_js(&p)
    }

    /// Runs the next `layers` layers (at least one) of the windows' forward passes: the same
    /// scores bit for bit as `step`, in steps short enough for a Stop button with a large
    /// model. Returns the object `step` returns (`pass_layers_done` of `layers`: how far the
    /// window in flight is).
    pub fn step_layers(&mut self, layers: u32) -> Result<JsValue, JsError> {
        let p = self
            .cell
            .with_dependent_mut(|_, s| s.step_layers(layers as usize))
            .map_err(js_err)?;
        progress_to_js(&p)
    }

    /// The progress so far (the same object as `step` returns).
    pub fn progress(&self) -> Result<JsValue, JsError> {
        progress_to_js(&self.cell.borrow_dependent().progress())
    }

    /// Whether every window ran.
    #[wasm_bindgen(getter)]
    pub fn done(&self) -> bool {
        self.cell.borrow_dependent().is_done()
    }

    /// Tokens each window's forward pass runs.
    #[wasm_bindgen(getter)]
    pub fn window_len(&self) -> u32 {
        self.cell.borrow_dependent().window_len() as u32
    }

    /// Byte-fallback tokens in the text (characters the vocabulary has no piece for).
    #[wasm_bindgen(getter)]
    pub fn byte_fallback_tokens(&self) -> u32 {
        let c = &self.cell;
        c.borrow_owner()
            .byte_fallback_tokens(c.borrow_dependent().ids()) as u32
    }

    /// The whole score, the same object (and numbers) as [`WasmModel::score`]; an error until
    /// `done`.
    pub fn result(&self) -> Result<JsValue, JsError> {
        let s = self.cell.borrow_dependent().finish().map_err(js_err)?;
        score_to_js(self.cell.borrow_owner(), &s)
    }

    /// The `k` tokens the model found most likely in place of scored token `target` (0 is the
    /// text's first), from the context that scored it: `[{id, piece, prob}]`, most likely first.
    pub fn alternatives(&self, target: u32, k: u32) -> Result<JsValue, JsError> {
        let top = self
            .cell
            .borrow_dependent()
            .alternatives(target as usize, k as usize)
            .map_err(js_err)?;
        top_to_js(self.cell.borrow_owner(), top)
    }
}

/// Opens the browser's WebGPU (adapter and device) and builds the model on it from the same
/// bytes as [`WasmModel::new`]: a promise of a [`WasmGpuModel`], rejected where the browser has
/// no WebGPU or no adapter it may use (then score on the CPU, [`WasmModel`]). Weights are f16 on
/// the GPU where the adapter offers `shader-f16`, else f32.
#[wasm_bindgen(js_name = gpuModel)]
pub async fn gpu_model(
    artifact_bytes: Vec<u8>,
    tokenizer_bytes: Vec<u8>,
) -> Result<WasmGpuModel, JsError> {
    let backend = WgpuBackend::new_async().await.map_err(js_err)?;
    let model = Model::from_bytes_on(
        backend,
        &artifact_bytes,
        &tokenizer_bytes,
        &ConfigOverrides::default(),
    )
    .map_err(js_err)?;
    Ok(WasmGpuModel {
        model: Rc::new(model),
    })
}

/// A model on the browser's WebGPU, from [`gpu_model`]: it scores texts
/// ([`WasmGpuModel::score_job`]); generation and evaluation stay on the CPU model.
#[wasm_bindgen]
pub struct WasmGpuModel {
    model: Rc<Model<WgpuBackend>>,
}

#[wasm_bindgen]
impl WasmGpuModel {
    /// `{name, backend, device_type, f16_weights}` of the WebGPU adapter in use.
    pub fn adapter(&self) -> Result<JsValue, JsError> {
        let be = self.model.backend();
        let i = be.adapter_info();
        let o = Object::new();
        set(&o, "name", i.name.clone())?;
        set(&o, "backend", format!("{:?}", i.backend))?;
        set(&o, "device_type", format!("{:?}", i.device_type))?;
        set(&o, "f16_weights", be.f16_weights())?;
        set(&o, "summary", be.name())?;
        Ok(o.into())
    }

    /// Starts scoring `text` on the GPU as [`WasmModel::score_job`] does on the CPU (the same
    /// windows, one per forward pass), a pass at a time (see [`GpuScoreJob`]); errors for an
    /// empty text.
    pub fn score_job(&self, text: &str) -> Result<GpuScoreJob, JsError> {
        let cell = GpuScorerCell::try_new(self.model.clone(), |m| {
            m.scorer(text).map(|s| s.with_batch(1))
        })
        .map_err(js_err)?;
        Ok(GpuScoreJob {
            cell,
            pending: None,
        })
    }
}

/// A text being scored on WebGPU, from [`WasmGpuModel::score_job`]. The browser cannot wait for
/// its GPU, so each pass is two calls: `submit()` queues the next window's forward pass and the
/// download of its scores and returns a promise that resolves when they arrived (`null` once
/// `done`); then `collect()` takes them and returns the progress object of
/// [`ScoreJob::step`]. Between the two the worker's event loop runs (a Stop is seen at once; a
/// pass dropped unfinished changes nothing).
#[wasm_bindgen]
pub struct GpuScoreJob {
    cell: GpuScorerCell,
    pending: Option<(ScorePass<WgpuBackend>, Download)>,
}

#[wasm_bindgen]
impl GpuScoreJob {
    /// Queues the next pass; a promise that resolves once its scores can be collected, or
    /// `null` when every window ran. An error while a pass is on its way (collect it first).
    pub fn submit(&mut self) -> Result<Option<Promise>, JsError> {
        if self.pending.is_some() {
            return Err(JsError::new(
                "a pass is already on its way: await it and collect() first",
            ));
        }
        let Some(pass) = self
            .cell
            .with_dependent_mut(|_, s| s.start_pass())
            .map_err(js_err)?
        else {
            return Ok(None);
        };
        let mut resolve = None;
        let promise = Promise::new(&mut |res, _rej| resolve = Some(res));
        let resolve = resolve.ok_or_else(|| JsError::new("Promise gave no resolve function"))?;
        let d = self
            .cell
            .borrow_owner()
            .backend()
            .start_download(pass.nll(), move || {
                let _ = resolve.call0(&JsValue::NULL);
            })
            .map_err(js_err)?;
        self.pending = Some((pass, d));
        Ok(Some(promise))
    }

    /// Takes the scores of the pass `submit` queued (after its promise resolved) and returns
    /// the progress, as [`ScoreJob::step`] does.
    pub fn collect(&mut self) -> Result<JsValue, JsError> {
        let (pass, d) = self
            .pending
            .take()
            .ok_or_else(|| JsError::new("no pass on its way: submit() first"))?;
        let v = self
            .cell
            .borrow_owner()
            .backend()
            .finish_download(d)
            .map_err(js_err)?;
        let p = self
            .cell
            .with_dependent_mut(|_, s| s.finish_pass(pass, &v))
            .map_err(js_err)?;
        progress_to_js(&p)
    }

    /// The progress so far (the object `collect` returns).
    pub fn progress(&self) -> Result<JsValue, JsError> {
        progress_to_js(&self.cell.borrow_dependent().progress())
    }

    /// Whether every window ran.
    #[wasm_bindgen(getter)]
    pub fn done(&self) -> bool {
        self.cell.borrow_dependent().is_done()
    }

    /// Tokens each window's forward pass runs.
    #[wasm_bindgen(getter)]
    pub fn window_len(&self) -> u32 {
        self.cell.borrow_dependent().window_len() as u32
    }

    /// Byte-fallback tokens in the text (characters the vocabulary has no piece for).
    #[wasm_bindgen(getter)]
    pub fn byte_fallback_tokens(&self) -> u32 {
        let c = &self.cell;
        c.borrow_owner()
            .byte_fallback_tokens(c.borrow_dependent().ids()) as u32
    }

    /// The whole score, the object [`WasmModel::score`] returns; an error until `done`.
    pub fn result(&self) -> Result<JsValue, JsError> {
        let s = self.cell.borrow_dependent().finish().map_err(js_err)?;
        score_to_js(self.cell.borrow_owner(), &s)
    }

    /// [`ScoreJob::alternatives`], ranked by `cpu` (the same model on the CPU: reading a GPU's
    /// answer would have to wait for it) from the context that scored `target`.
    pub fn alternatives(&self, target: u32, k: u32, cpu: &WasmModel) -> Result<JsValue, JsError> {
        let ctx = self
            .cell
            .borrow_dependent()
            .context_of(target as usize)
            .map_err(js_err)?;
        let top = cpu.model.top_next(ctx, k as usize).map_err(js_err)?;
        top_to_js(&cpu.model, top)
    }
}

/// A continuation being generated token by token, from [`WasmModel::generator`]: call `step(k)`
/// until `done` (or `stop()`), yielding to the event loop in between.
#[wasm_bindgen]
pub struct GenerateJob {
    cell: GeneratorCell,
}

#[wasm_bindgen]
impl GenerateJob {
    /// Picks up to `k` more tokens (at least one) and returns `{text, tokens, done}`: the text
    /// they complete, how many were picked, and whether the generation is over (then `text`
    /// ends with what is still owed: U+FFFD per byte of an unfinished character).
    pub fn step(&mut self, k: u32) -> Result<JsValue, JsError> {
        let (text, tokens, done) = self
            .cell
            .with_dependent_mut(|_, g| {
                let mut text = String::new();
                let mut tokens = 0u32;
                while tokens < k.max(1) {
                    match g.next_piece()? {
                        Some(piece) => text.push_str(&piece),
                        None => break,
                    }
                    tokens += 1;
                }
                let done = g.remaining() == 0;
                if done {
                    text.push_str(&g.finish());
                }
                Ok::<_, pgolf_rt::Error>((text, tokens, done))
            })
            .map_err(js_err)?;
        let o = Object::new();
        set(&o, "text", text)?;
        set(&o, "tokens", tokens)?;
        set(&o, "done", done)?;
        Ok(o.into())
    }

    /// Ends the generation early; returns the text still owed (usually empty).
    pub fn stop(&mut self) -> String {
        self.cell.with_dependent_mut(|_, g| g.finish())
    }

    /// Whether the generation is over (every token picked, or stopped).
    #[wasm_bindgen(getter)]
    pub fn done(&self) -> bool {
        self.cell.borrow_dependent().remaining() == 0
    }

    /// Tokens generated so far.
    #[wasm_bindgen(getter)]
    pub fn generated(&self) -> u32 {
        self.cell.borrow_dependent().generated() as u32
    }

    /// Tokens of the prompt as the model sees them (BOS included).
    #[wasm_bindgen(getter)]
    pub fn prompt_tokens(&self) -> u32 {
        self.cell.borrow_dependent().prompt_ids().len() as u32
    }

    /// Byte-fallback tokens in the prompt (characters the vocabulary has no piece for).
    #[wasm_bindgen(getter)]
    pub fn prompt_byte_fallback_tokens(&self) -> u32 {
        let c = &self.cell;
        c.borrow_owner()
            .byte_fallback_tokens(c.borrow_dependent().prompt_ids()) as u32
    }
}
