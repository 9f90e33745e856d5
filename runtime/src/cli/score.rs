//! `pgolf-rt score`: per-token log-probabilities and bits per byte of raw text.

use super::model_args::{load_weights, precision, with_model, ArchArgs, BackendChoice, Precision};
use anyhow::{Context, Result};
use clap::Args;
use pgolf_rt::eval::score_tokens;
use pgolf_rt::tokenizer::Tokenizer;
use std::io::Read;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Compressed artifact (.ptz).
    #[arg(long)]
    artifact: PathBuf,
    /// SentencePiece .model file.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Text to score; `-` or nothing reads standard input.
    text: Option<String>,
    /// Context window.
    #[arg(long, default_value_t = 1024)]
    seq_len: usize,
    /// Stride of the scoring windows once the text is longer than the window.
    #[arg(long, default_value_t = 64)]
    stride: usize,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Precision of the matrix products: f32 or tf32 (CUDA). Default: $PGOLF_PRECISION, else f32.
    #[arg(long)]
    precision: Option<Precision>,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    arch: ArchArgs,
}

pub fn run(a: ScoreArgs) -> Result<()> {
    let text = match a.text.as_deref() {
        Some("-") | None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            s
        }
        Some(t) => t.to_string(),
    };
    let (_, weights) = load_weights(&a.artifact, &a.arch)?;
    let tok = Tokenizer::load(&a.tokenizer)?;
    let lut = tok.byte_lut(weights.config.vocab_size);
    let mut ids = vec![tok.bos_id()];
    ids.extend(tok.encode(&text));
    if let Some(&bad) = ids
        .iter()
        .find(|&&t| t as usize >= weights.config.vocab_size)
    {
        anyhow::bail!("the tokenizer produced id {bad}, outside the model's vocabulary of {}: wrong tokenizer for this model?", weights.config.vocab_size);
    }
    let s = with_model!(a.backend, precision(a.precision)?, &weights, |model| {
        score_tokens(&model, &ids, &lut, a.seq_len, a.stride)?
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
