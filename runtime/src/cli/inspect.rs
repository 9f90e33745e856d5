//! `pgolf-rt inspect`: the inferred architecture, every tensor, and the byte budget.

use super::model_args::ArchArgs;
use anyhow::Result;
use clap::Args;
use pgolf_rt::artifact::{Artifact, QuantScheme, SIZE_CAP_BYTES};
use pgolf_rt::model::ModelWeights;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Compressed artifact (.ptz).
    artifact: PathBuf,
    /// Size of the training script counted against the cap, in bytes.
    #[arg(long, default_value_t = 0)]
    code_bytes: usize,
    /// Also write a per-tensor summary (TSV) for `scripts/check_torch_load.py`.
    #[arg(long)]
    summary: Option<PathBuf>,
    #[command(flatten)]
    arch: ArchArgs,
}

pub fn run(a: InspectArgs) -> Result<()> {
    let art = Artifact::load(&a.artifact)?;
    println!("artifact          {}", a.artifact.display());
    println!("compression       {:?}", art.compression);
    println!("container         {:?}", art.format);
    println!(
        "payload           {} bytes (torch.save zip, decompressed)",
        art.payload_bytes
    );
    let total = art.file_bytes + a.code_bytes;
    let pct = 100.0 * total as f64 / SIZE_CAP_BYTES as f64;
    println!(
        "budget            {} bytes file + {} bytes code = {} of {} ({pct:.2}%), {}",
        art.file_bytes,
        a.code_bytes,
        total,
        SIZE_CAP_BYTES,
        if total <= SIZE_CAP_BYTES {
            format!("{} bytes to spare", SIZE_CAP_BYTES - total)
        } else {
            format!("OVER the cap by {} bytes", total - SIZE_CAP_BYTES)
        }
    );
    println!();
    match ModelWeights::from_artifact(&art, &a.arch.overrides()?) {
        Ok(w) => println!("{}\n", w.config),
        Err(e) => println!("architecture      cannot be inferred: {e}\n"),
    }
    println!(
        "{:<36} {:>14} {:>10} {:>6} {:>11}",
        "tensor", "shape", "scheme", "dtype", "bytes"
    );
    let mut params = 0usize;
    for t in &art.tensors {
        params += t.values.len();
        let scheme = match &t.scheme {
            QuantScheme::PerRow { bits } => format!("int{bits}/row"),
            QuantScheme::PerTensor { bits } => format!("int{bits}/tensor"),
            QuantScheme::Passthrough { stored } => format!("{stored:?}").to_lowercase(),
        };
        println!(
            "{:<36} {:>14} {:>10} {:>6} {:>11}",
            t.name,
            format!("{:?}", t.shape),
            scheme,
            format!("{:?}", t.dtype).to_lowercase(),
            t.stored_bytes
        );
    }
    println!("{} tensors, {params} parameters", art.tensors.len());
    if let Some(p) = &a.summary {
        pgolf_rt::artifact::write_atomic(p, art.summary_tsv().as_bytes())?;
        println!("summary written to {}", p.display());
    }
    Ok(())
}
