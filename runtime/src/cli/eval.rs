//! `pgolf-rt eval`: standard or sliding-window evaluation of an artifact on challenge shards.

use super::model_args::{load_weights, with_model, ArchArgs, BackendChoice};
use super::progress;
use anyhow::{Context, Result};
use clap::Args;
use pgolf_rt::data::load_tokens;
use pgolf_rt::backend::Backend;
use pgolf_rt::eval::{eval_sliding, eval_standard, EvalOptions, EvalResult};
use pgolf_rt::model::DeviceModel;
use pgolf_rt::tokenizer::ByteLut;
use pgolf_rt::tokenizer::Tokenizer;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Compressed artifact (.ptz: torch.save + zlib/zstd/xz).
    #[arg(long)]
    artifact: PathBuf,
    /// Shard file, directory, or glob (e.g. 'data/fineweb_val_*.bin').
    #[arg(long)]
    data: String,
    /// SentencePiece .model file (for the byte counts of bits per byte).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Window length.
    #[arg(long, default_value_t = 1024)]
    seq_len: usize,
    /// Sliding-window eval with this stride (omit for standard eval).
    #[arg(long)]
    stride: Option<usize>,
    /// Sliding-window eval with the default stride of 64.
    #[arg(long)]
    sliding: bool,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Evaluate only the first N tokens of the stream.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    arch: ArchArgs,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let (_, weights) = load_weights(&a.artifact, &a.arch)?;
    let tokenizer = Tokenizer::load(&a.tokenizer)?;
    let lut = tokenizer.byte_lut(weights.config.vocab_size);
    let mut tokens = load_tokens(&a.data)?;
    if let Some(n) = a.max_tokens {
        tokens.truncate(n);
    }
    if let Some(&bad) = tokens
        .iter()
        .find(|&&t| t as usize >= weights.config.vocab_size)
    {
        anyhow::bail!(
            "{}: token id {bad} is outside the model's vocabulary of {}",
            a.data,
            weights.config.vocab_size
        );
    }
    let stride = a.stride.or(if a.sliding { Some(64) } else { None });
    let (r, backend) = with_model!(a.backend, &weights, |model| {
        (evaluate(&model, &tokens, &lut, &a, stride)?, model.backend_name())
    });
    let mode = if stride.is_some() {
        "sliding"
    } else {
        "standard"
    };
    println!(
        "{mode} eval  backend:{}  seq_len:{}  stride:{}",
        backend,
        a.seq_len,
        stride.map_or("-".into(), |s| s.to_string())
    );
    println!(
        "val_loss:{:.8} val_bpb:{:.8} tokens:{} bytes:{} seconds:{:.2} tokens_per_s:{:.0}",
        r.val_loss,
        r.val_bpb,
        r.tokens,
        r.bytes,
        r.seconds,
        r.tokens as f64 / r.seconds
    );
    if a.json {
        let j = serde_json::json!({
            "val_loss": r.val_loss,
            "val_bpb": r.val_bpb,
            "tokens": r.tokens,
            "bytes": r.bytes,
            "seconds": r.seconds,
            "mode": mode,
            "seq_len": a.seq_len,
            "stride": stride,
            "backend": backend,
            "artifact": a.artifact.display().to_string(),
        });
        println!("{j}");
    }
    Ok(())
}

fn evaluate<B: Backend>(
    model: &DeviceModel<B>,
    tokens: &[u32],
    lut: &ByteLut,
    a: &EvalArgs,
    stride: Option<usize>,
) -> Result<EvalResult> {
    let pb = progress::bar(0, "targets");
    let mut on_progress = |done: usize, total: usize| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    };
    let opts = EvalOptions {
        seq_len: a.seq_len,
        batch: a.batch,
        progress: Some(&mut on_progress),
    };
    let r = match stride {
        Some(s) => eval_sliding(model, tokens, lut, s, opts),
        None => eval_standard(model, tokens, lut, opts),
    }
    .context("evaluation failed")?;
    pb.finish_and_clear();
    Ok(r)
}
