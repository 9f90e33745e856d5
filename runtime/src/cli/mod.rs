//! Command-line front end. Each subcommand lives in its own file; shared flags live here.

mod devices;
mod eval;
mod generate;
mod inspect;
mod model_args;
mod parse;
mod progress;
mod score;
mod train;

use clap::{Parser, Subcommand};

/// Run OpenAI parameter-golf language models: evaluate, score text, generate, inspect, train.
#[derive(Parser)]
#[command(name = "pgolf-rt", version, about, long_about = None)]
struct Cli {
    /// Worker threads for the CPU backend (default: all cores; at most PGOLF_MAX_THREADS).
    #[arg(long, global = true, value_parser = parse::at_least_one)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate val_loss and val_bpb of an artifact on challenge shards.
    Eval(Box<eval::EvalArgs>),
    /// Score raw text: per-token log-probabilities and bits per byte.
    Score(score::ScoreArgs),
    /// Continue a prompt, streaming the generated text to standard output.
    Generate(generate::GenerateArgs),
    /// Print an artifact's inferred architecture, tensors and byte budget.
    Inspect(inspect::InspectArgs),
    /// Train a model on challenge shards (train_gpt.py's settings) and export an artifact.
    Train(Box<train::TrainArgs>),
    /// What this build and machine offer: backends, the CUDA device and libraries, precisions.
    Devices(devices::DevicesArgs),
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        let limit = &pgolf_rt::limits::THREADS;
        if n as u64 > limit.get() {
            anyhow::bail!(limit.exceeded(format!("--threads {n}")));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow::anyhow!("cannot start {n} threads: {e}"))?;
    }
    match cli.command {
        Command::Eval(a) => eval::run(*a),
        Command::Score(a) => score::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Train(a) => train::run(*a),
        Command::Devices(a) => devices::run(a),
    }
}
