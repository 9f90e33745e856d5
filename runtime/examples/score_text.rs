//! An application that embeds pgolf-rt: load a compressed model, score a text, print its bits per
//! byte and its most surprising tokens.
//!
//! ```text
//! cargo run --release -p pgolf-rt --example score_text -- [ARTIFACT TOKENIZER] ["text" | -]
//! ```
//!
//! Without paths it uses the default model committed in `models/` (trained by `pgolf-rt train`); `-` or no text reads standard input, or scores a built-in sentence
//! when standard input is a terminal. Exits with status 1 and a message when a file is missing or
//! cannot be loaded, 2 on bad usage.

use pgolf_rt::{Model, Sampling};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const DEFAULT_TEXT: &str = "The quick brown fox jumps over the lazy dog.";

fn default_paths() -> (PathBuf, PathBuf) {
    // <repo>/models; the manifest dir is <repo>/runtime.
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    (
        models.join("pg-tiny-4L128.int8.ptz"),
        models.join("pg_sp1024_bpe.model"),
    )
}

fn run() -> Result<(), (u8, String)> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: score_text [ARTIFACT TOKENIZER] [\"text\" | -]");
        return Ok(());
    }
    let (artifact, tokenizer, text_arg) = match args.as_slice() {
        [] => (default_paths().0, default_paths().1, None),
        [text] => (default_paths().0, default_paths().1, Some(text.clone())),
        [a, t] => (a.into(), t.into(), None),
        [a, t, text] => (a.into(), t.into(), Some(text.clone())),
        _ => {
            return Err((
                2,
                "usage: score_text [ARTIFACT TOKENIZER] [\"text\" | -]".into(),
            ))
        }
    };
    for (what, p) in [("artifact", &artifact), ("tokenizer", &tokenizer)] {
        if !p.is_file() {
            return Err((
                1,
                format!(
                    "{what} not found: {} (pass ARTIFACT TOKENIZER)",
                    p.display()
                ),
            ));
        }
    }
    let text = match text_arg.as_deref() {
        Some("-") => read_stdin()?,
        Some(t) => t.to_string(),
        None if std::io::stdin().is_terminal() => DEFAULT_TEXT.to_string(),
        None => read_stdin()?,
    };

    let start = std::time::Instant::now();
    let model = Model::load(&artifact, &tokenizer).map_err(|e| (1, format!("loading: {e}")))?;
    let loaded = start.elapsed();
    let cfg = model.config();
    println!(
        "model: {} ({} layers, d={}, vocab {}, {} parameters), loaded in {:.2} s",
        artifact.display(),
        cfg.num_layers,
        cfg.model_dim,
        cfg.vocab_size,
        cfg.param_count(),
        loaded.as_secs_f64()
    );

    let start = std::time::Instant::now();
    let s = model
        .score(&text)
        .map_err(|e| (1, format!("scoring: {e}")))?;
    let ids: Vec<u32> = s.tokens.iter().map(|t| t.id).collect();
    let pieces = model.token_texts(&ids);
    let mut worst: Vec<(f64, &str)> = s
        .tokens
        .iter()
        .zip(&pieces)
        .map(|(t, p)| (-t.logprob as f64 / std::f64::consts::LN_2, p.as_str()))
        .collect();
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("most surprising tokens:");
    for (bits, piece) in worst.iter().take(5) {
        println!("  {bits:6.2} bits  {piece:?}");
    }
    println!(
        "tokens: {}  bytes: {}  bits: {:.3}  ({:.0} ms)",
        s.tokens.len(),
        s.total_bytes,
        s.total_bits,
        start.elapsed().as_secs_f64() * 1e3
    );
    if text.len() < 200 {
        let more = model
            .generate(&text, 12, &Sampling::greedy())
            .map_err(|e| (1, format!("generating: {e}")))?;
        println!("greedy continuation: {text:?} + {more:?}");
    }
    println!("bits_per_byte: {:.6}", s.bits_per_byte);
    Ok(())
}

fn read_stdin() -> Result<String, (u8, String)> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| (1, format!("reading standard input: {e}")))?;
    Ok(s)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("score_text: error: {msg}");
            ExitCode::from(code)
        }
    }
}
