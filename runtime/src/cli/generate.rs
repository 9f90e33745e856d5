//! `pgolf-rt generate`: continue a prompt, streaming the text as it is produced.

use super::model_args::{cpu_backend, precision, ArchArgs, Precision};
use super::parse;
use anyhow::{Context, Result};
use clap::Args;
use pgolf_rt::{Decoding, LoadOptions, Model, Sampling};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Most tokens one `generate` may ask for.
pub const MAX_TOKENS: usize = 100_000;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Compressed artifact (.ptz).
    #[arg(long)]
    artifact: PathBuf,
    /// SentencePiece .model file.
    #[arg(long)]
    tokenizer: PathBuf,
    /// The prompt; `-` reads standard input (at most PGOLF_MAX_TEXT_BYTES). Only the
    /// continuation is printed.
    prompt: String,
    /// Tokens to generate (1..=100000).
    #[arg(long, default_value_t = 64, value_parser = tokens)]
    tokens: usize,
    /// Softmax temperature (0: greedy, always the most likely token).
    #[arg(long, default_value_t = 0.8, value_parser = temperature, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample from the K most likely tokens only (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Seed of the sampler (same seed, same text).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Context window in tokens; with the KV cache, a full window restarts from its last half.
    #[arg(long, default_value_t = 1024, value_parser = parse::at_least_one)]
    context: usize,
    /// Run the whole window through the model for every token (the reference; slower).
    #[arg(long)]
    no_kv_cache: bool,
    /// Precision of the matrix products: f32 or bf16 (CPU with AMX-BF16 or AVX512-BF16).
    /// Default: $PGOLF_PRECISION, else f32.
    #[arg(long)]
    precision: Option<Precision>,
    #[command(flatten)]
    arch: ArchArgs,
}

/// A token count in `1..=MAX_TOKENS`.
fn tokens(s: &str) -> Result<usize, String> {
    let v = parse::at_least_one(s)?;
    if v > MAX_TOKENS {
        return Err(format!("{v} is more than {MAX_TOKENS}"));
    }
    Ok(v)
}

/// A finite temperature `>= 0`.
fn temperature(s: &str) -> Result<f32, String> {
    let v = parse::finite_f32(s)?;
    if v < 0.0 {
        return Err(format!("{s} is negative (0 means greedy)"));
    }
    Ok(v)
}

pub fn run(a: GenerateArgs) -> Result<()> {
    parse::check_forward(a.context, 1, "--context")?;
    let prompt = parse::text_or_stdin(Some(&a.prompt))?;
    // The library's errors name the file.
    // bf16 on a CPU without a kernel says so and runs float32, as `score` does.
    let precision = cpu_backend(precision(a.precision)?, false)?.precision();
    let opts = LoadOptions {
        overrides: a.arch.overrides()?,
        precision: Some(precision),
    };
    let mut model = Model::load_options(&a.artifact, &a.tokenizer, &opts)?;
    model.context = a.context;
    let sampling = Sampling {
        temperature: a.temperature,
        top_k: a.top_k,
        seed: a.seed,
    };
    let decoding = if a.no_kv_cache {
        Decoding::Recompute
    } else {
        Decoding::Cached
    };
    let mut out = std::io::stdout().lock();
    let mut write_err = None;
    let start = Instant::now();
    let mut first = None;
    let g = model.generate_with(&prompt, a.tokens, &sampling, decoding, |piece| {
        // The first token comes right after the prompt's forward: that is the prefill time.
        first.get_or_insert_with(Instant::now);
        match out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                write_err = Some(e);
                false
            }
        }
    })?;
    let end = Instant::now();
    if let Some(e) = write_err {
        return Err(e).context("cannot write to standard output");
    }
    writeln!(out).context("cannot write to standard output")?;
    let first = first.unwrap_or(end);
    let prefill = first - start;
    let rest = (end - first).as_secs_f64();
    let n = g.tokens.len();
    let rate = if n > 1 && rest > 0.0 {
        format!("{:.1} tokens/s", (n - 1) as f64 / rest)
    } else {
        "n/a".into()
    };
    eprintln!(
        "generated {n} tokens in {:.3} s; decode {rate} after the first; prefill {} tokens in {:.3} s ({}, {} threads)",
        (end - start).as_secs_f64(),
        g.prompt_tokens,
        prefill.as_secs_f64(),
        if a.no_kv_cache { "full recompute" } else { "kv cache" },
        rayon::current_num_threads()
    );
    Ok(())
}
