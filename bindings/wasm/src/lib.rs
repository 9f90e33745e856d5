//! WebAssembly bindings of the pgolf-rt embedding API ([`pgolf_rt::Model`]) for browsers.
//!
//! Build (inside this folder) and generate the JS glue:
//!
//! ```text
//! cargo build --target wasm32-unknown-unknown --release
//! wasm-bindgen --target web --out-dir ../../examples/web/pkg \
//!     ../../target/wasm32-unknown-unknown/release/pgolf_rt_wasm.wasm
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
//! ```

use js_sys::{Array, Object, Reflect};
use pgolf_rt::{Model, Sampling};
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

/// A model and its tokenizer, loaded from the bytes of a compressed artifact and a `.model` file.
#[wasm_bindgen]
pub struct WasmModel {
    model: Model,
}

#[wasm_bindgen]
impl WasmModel {
    /// Decompresses (zlib, zstd or xz, in pure Rust), dequantizes and prepares the model.
    #[wasm_bindgen(constructor)]
    pub fn new(artifact_bytes: &[u8], tokenizer_bytes: &[u8]) -> Result<WasmModel, JsError> {
        Ok(WasmModel {
            model: Model::from_bytes(artifact_bytes, tokenizer_bytes).map_err(js_err)?,
        })
    }

    /// Scores `text` as one document (BOS first). Returns
    /// `{tokens: [{id, piece, logprob, bits, bytes}], num_tokens, total_bits, total_bytes,
    /// bits_per_byte}`; `piece` is the text the token stands for (pieces concatenate to the
    /// text), `logprob` is in nats, `bits = -logprob / ln 2`.
    pub fn score(&self, text: &str) -> Result<JsValue, JsError> {
        let s = self.model.score(text).map_err(js_err)?;
        let ids: Vec<u32> = s.tokens.iter().map(|t| t.id).collect();
        let pieces = self.model.token_texts(&ids);
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
        Ok(out.into())
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
        let sampling = Sampling {
            temperature,
            top_k: top_k as usize,
            seed,
        };
        self.model
            .generate(prompt, n as usize, &sampling)
            .map_err(js_err)
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
