//! `pgolf-rt score`: per-token log-probabilities and bits per byte of raw text.

use super::model_args::{load_weights, precision, with_model, ArchArgs, BackendChoice, Precision};
use super::parse;
use anyhow::{Context, Result};
use clap::Args;
use pgolf_rt::eval::{score_tokens, score_window};
use pgolf_rt::tokenizer::Tokenizer;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Compressed artifact (.ptz).
    #[arg(long)]
    artifact: PathBuf,
    /// SentencePiece .model file.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Text to score; `-` or nothing reads standard input (at most PGOLF_MAX_TEXT_BYTES).
    text: Option<String>,
    /// Context window (a text that fits in one window runs at its own length).
    #[arg(long, default_value_t = 1024, value_parser = parse::at_least_one)]
    seq_len: usize,
    /// Stride of the scoring windows once the text is longer than the window (1..=--seq-len).
    #[arg(long, default_value_t = 64, value_parser = parse::at_least_one)]
    stride: usize,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Precision of the matrix products: f32, tf32 (CUDA) or bf16 (CUDA, or CPU with AMX-BF16 or
    /// AVX512-BF16). Default: $PGOLF_PRECISION, else f32.
    #[arg(long)]
    precision: Option<Precision>,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    arch: ArchArgs,
}

impl ScoreArgs {
    /// Checks the flags against each other before anything is read.
    fn validate(&self) -> Result<()> {
        if self.stride > self.seq_len {
            anyhow::bail!(
                "--stride {} must be at most --seq-len {} (the window length)",
                self.stride,
                self.seq_len
            );
        }
        // The window is sized to the text below; the library bounds what runs
        // (PGOLF_MAX_FORWARD_TOKENS), so a large --seq-len over a short text is fine.
        Ok(())
    }
}

pub fn run(a: ScoreArgs) -> Result<()> {
    a.validate()?;
    let text = parse::text_or_stdin(a.text.as_deref())?;
    let (_, weights) = load_weights(&a.artifact, &a.arch)?;
    let tok = Tokenizer::load(&a.tokenizer)?;
    let lut = tok
        .byte_lut_for_model(weights.config.vocab_size)
        .with_context(|| format!("--tokenizer {}", a.tokenizer.display()))?;
    let mut ids = vec![tok.bos_id()];
    ids.extend(tok.encode(&text));
    // The window is sized to the text: a short text is not padded to --seq-len.
    let seq = score_window(&weights.config, ids.len() - 1, a.seq_len);
    let s = with_model!(a.backend, precision(a.precision)?, &weights, |model| {
        score_tokens(&model, &ids, &lut, seq, a.stride.min(seq))?
    });
    println!(
        "{:>6} {:>6}  {:<16} {:>10} {:>8} {:>5}",
        "pos", "id", "piece", "logprob", "bits", "bytes"
    );
    for (i, t) in s.tokens.iter().enumerate() {
        let piece = tok.piece(t.id).unwrap_or("?");
        println!(
            "{:>6} {:>6}  {:<16} {:>10.4} {:>8.3} {:>5}",
            i + 1,
            t.id,
            format!("{piece:?}"),
            t.logprob,
            -t.logprob as f64 / std::f64::consts::LN_2,
            t.bytes
        );
    }
    println!(
        "tokens:{} bytes:{} bits:{:.3} bits_per_byte:{:.6}",
        s.tokens.len(),
        s.total_bytes,
        s.total_bits,
        s.bits_per_byte
    );
    if a.json {
        let j = serde_json::json!({
            "tokens": s.tokens.iter().map(|t| serde_json::json!({"id": t.id, "logprob": t.logprob, "bytes": t.bytes})).collect::<Vec<_>>(),
            "total_bits": s.total_bits,
            "total_bytes": s.total_bytes,
            "bits_per_byte": s.bits_per_byte,
        });
        println!("{j}");
    }
    Ok(())
}
