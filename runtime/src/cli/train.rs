//! `pgolf-rt train`: `train_gpt.py`'s environment variables (or the same names as flags),
//! its log lines, its artifact names; plus checkpoints, EMA, QAT and the int6 export.

use super::model_args::{precision, with_train_backend, BackendChoice, Precision};
use super::parse::{at_least_one, check_forward, finite_f32, finite_f64, switch};
use super::progress;
use anyhow::{bail, Context, Result};
use clap::Args;
use pgolf_rt::artifact::{Artifact, SIZE_CAP_BYTES};
use pgolf_rt::backend::train::TrainBackend;
use pgolf_rt::data::{load_tokens, TokenStream};
use pgolf_rt::eval::{eval_standard, EvalOptions, EvalResult};
use pgolf_rt::model::{Activation, ConfigOverrides, DeviceModel, ModelConfig, ModelWeights};
use pgolf_rt::tokenizer::{ByteLut, Tokenizer};
use pgolf_rt::train::{
    export_weights, init_weights, load_checkpoint, save_checkpoint, Architecture, ExportKind,
    InitConfig, LearningRates, MuonConfig, MuonRoute, OptimizerConfig, QatMode, Schedule,
    SidecarArch, TrainConfig, Trainer,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Train a model from scratch on challenge shards and export it as an artifact.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Folder with `fineweb_train_*.bin` and `fineweb_val_*.bin`.
    #[arg(
        long,
        env = "DATA_PATH",
        default_value = "./data/datasets/fineweb10B_sp1024"
    )]
    data_path: PathBuf,
    /// SentencePiece model (for val_bpb byte counts).
    #[arg(
        long,
        env = "TOKENIZER_PATH",
        default_value = "./data/tokenizers/fineweb_1024_bpe.model"
    )]
    tokenizer_path: PathBuf,
    #[arg(long, env = "RUN_ID", default_value = "pgolf-rt")]
    run_id: String,
    #[arg(long, env = "SEED", default_value_t = 1337)]
    seed: u64,
    #[arg(long, env = "ITERATIONS", default_value_t = 20000)]
    iterations: usize,
    #[arg(long, env = "WARMDOWN_ITERS", default_value_t = 1200)]
    warmdown_iters: usize,
    /// Steps run and discarded before training (the reference's compile warm-up).
    #[arg(long, env = "WARMUP_STEPS", default_value_t = 20)]
    warmup_steps: usize,
    #[arg(long, env = "TRAIN_BATCH_TOKENS", default_value_t = 524_288)]
    train_batch_tokens: usize,
    #[arg(long, env = "TRAIN_SEQ_LEN", default_value_t = 1024)]
    train_seq_len: usize,
    /// Wall-clock cap on training time in seconds (0: none; the schedule then follows ITERATIONS).
    #[arg(long, env = "MAX_WALLCLOCK_SECONDS", default_value_t = 600.0, value_parser = finite_f64)]
    max_wallclock_seconds: f64,
    #[arg(long, env = "VAL_LOSS_EVERY", default_value_t = 1000)]
    val_loss_every: usize,
    #[arg(long, env = "TRAIN_LOG_EVERY", default_value_t = 200)]
    train_log_every: usize,
    /// Score only the first N val tokens during and after training (default: the whole split).
    #[arg(long, env = "VAL_MAX_TOKENS")]
    val_max_tokens: Option<usize>,
    /// Windows per forward pass in validation.
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    val_batch: usize,
    #[arg(long, env = "VOCAB_SIZE", default_value_t = 1024)]
    vocab_size: usize,
    #[arg(long, env = "NUM_LAYERS", default_value_t = 9)]
    num_layers: usize,
    #[arg(long, env = "MODEL_DIM", default_value_t = 512)]
    model_dim: usize,
    #[arg(long, env = "NUM_HEADS", default_value_t = 8)]
    num_heads: usize,
    #[arg(long, env = "NUM_KV_HEADS", default_value_t = 4)]
    num_kv_heads: usize,
    #[arg(long, env = "MLP_MULT", default_value_t = 2.0, value_parser = finite_f32)]
    mlp_mult: f32,
    /// 1: the head shares the token embedding.
    #[arg(long, env = "TIE_EMBEDDINGS", default_value_t = 1, value_parser = switch)]
    tie_embeddings: u8,
    #[arg(long, env = "ROPE_BASE", default_value_t = 10000.0, value_parser = finite_f32)]
    rope_base: f32,
    #[arg(long, env = "LOGIT_SOFTCAP", default_value_t = 30.0, value_parser = finite_f32)]
    logit_softcap: f32,
    #[arg(long, env = "QK_GAIN_INIT", default_value_t = 1.5, value_parser = finite_f32)]
    qk_gain_init: f32,
    /// MLP activation: relu2 or leaky_relu2.
    #[arg(long, env = "ACTIVATION", default_value = "relu2")]
    activation: String,
    /// BigramHash buckets (0: none; 11-layer records: 2048).
    #[arg(long, env = "BIGRAM_VOCAB_SIZE", default_value_t = 0)]
    bigram_vocab_size: usize,
    /// BigramHash table width (projected to MODEL_DIM when different).
    #[arg(long, env = "BIGRAM_DIM", default_value_t = 128)]
    bigram_dim: usize,
    /// 1: SmearGate on the embedding stream.
    #[arg(long, env = "SMEAR_GATE", default_value_t = 0, value_parser = switch)]
    smear_gate: u8,
    /// Value embeddings on the last N layers (0: none; LeakyReLU record: 2).
    #[arg(long, env = "VE_LAYERS", default_value_t = 0)]
    ve_layers: usize,
    #[arg(long, env = "VE_DIM", default_value_t = 128)]
    ve_dim: usize,
    /// Width of the shared sparse sidecar's gate and value paths (0: none; #581: 48).
    #[arg(long, env = "SPARSE_HIDDEN_DIM", default_value_t = 0)]
    sparse_hidden_dim: usize,
    /// First layer the sidecar follows (#581: 8).
    #[arg(long, env = "SPARSE_START_LAYER", default_value_t = 8)]
    sparse_start_layer: usize,
    /// Last layer the sidecar follows (-1: the last layer).
    #[arg(long, env = "SPARSE_END_LAYER", default_value_t = -1, allow_negative_numbers = true)]
    sparse_end_layer: i64,
    /// The sidecar follows every N-th layer from SPARSE_START_LAYER.
    #[arg(long, env = "SPARSE_EVERY", default_value_t = 1, value_parser = at_least_one)]
    sparse_every: usize,
    /// At most this many sidecar sites (0: no limit).
    #[arg(long, env = "SPARSE_MAX_SITES", default_value_t = 0)]
    sparse_max_sites: usize,
    /// Rotated dims per head (partial RoPE; default the whole head; 11-layer records: 16).
    #[arg(long, env = "ROPE_DIMS")]
    rope_dims: Option<usize>,
    /// Exclusive self-attention on the last N layers.
    #[arg(long, env = "XSA_LAST_N", default_value_t = 0)]
    xsa_last_n: usize,
    /// The NTK RoPE rule for windows longer than this (the 11-layer records' `Rotary` hard-codes
    /// 1024, so their TRAIN_SEQ_LEN=2048 trains with base 10000·2^(rd/(rd-2))); default: off.
    #[arg(long, env = "NTK_TRAIN_LEN")]
    ntk_train_len: Option<usize>,
    /// 1: scale block norms by 1/sqrt(layer+1).
    #[arg(long, env = "LN_SCALE", default_value_t = 0, value_parser = switch)]
    ln_scale: u8,
    #[arg(long, env = "TIED_EMBED_INIT_STD", default_value_t = 0.005, value_parser = finite_f32)]
    tied_embed_init_std: f32,
    /// 1: orthogonal init of the block matrices (11-layer lineage, spec 4.4).
    #[arg(long, env = "ORTHO_INIT", default_value_t = 0, value_parser = switch)]
    ortho_init: u8,
    /// Optimizer of the BigramHash projection: `adam` (scalar group, LeakyReLU record) or
    /// `muon` (1.1271 record).
    #[arg(long, env = "BIGRAM_PROJ_OPTIMIZER", value_parser = ["adam", "muon"], default_value = "adam")]
    bigram_proj_optimizer: String,
    /// Optimizer of the BigramHash table: `adam` (with `tok_emb`) or `muon` (#489).
    #[arg(long, env = "BIGRAM_EMBED_OPTIMIZER", value_parser = ["adam", "muon"], default_value = "adam")]
    bigram_embed_optimizer: String,
    /// Optimizer of the value embeddings' projection: `adam` (scalar group) or `muon` (#687).
    #[arg(long, env = "VE_PROJ_OPTIMIZER", value_parser = ["adam", "muon"], default_value = "adam")]
    ve_proj_optimizer: String,
    #[arg(long, env = "EMBED_LR", default_value_t = 0.6, value_parser = finite_f32)]
    embed_lr: f32,
    #[arg(long, env = "HEAD_LR", default_value_t = 0.008, value_parser = finite_f32)]
    head_lr: f32,
    #[arg(long, env = "TIED_EMBED_LR", default_value_t = 0.05, value_parser = finite_f32)]
    tied_embed_lr: f32,
    #[arg(long, env = "MATRIX_LR", default_value_t = 0.04, value_parser = finite_f32)]
    matrix_lr: f32,
    #[arg(long, env = "SCALAR_LR", default_value_t = 0.04, value_parser = finite_f32)]
    scalar_lr: f32,
    #[arg(long, env = "MUON_MOMENTUM", default_value_t = 0.95, value_parser = finite_f32)]
    muon_momentum: f32,
    #[arg(long, env = "MUON_BACKEND_STEPS", default_value_t = 5)]
    muon_backend_steps: usize,
    #[arg(long, env = "MUON_MOMENTUM_WARMUP_START", default_value_t = 0.85, value_parser = finite_f32)]
    muon_momentum_warmup_start: f32,
    #[arg(long, env = "MUON_MOMENTUM_WARMUP_STEPS", default_value_t = 500)]
    muon_momentum_warmup_steps: usize,
    /// Decoupled weight decay of Muon (11-layer lineage: 0.04).
    #[arg(long, env = "MUON_WD", default_value_t = 0.0, value_parser = finite_f32)]
    muon_wd: f32,
    /// 1: Newton-Schulz in bf16 as the challenge runs it (emulated: each op's output rounded
    /// to bf16); 0: float32.
    #[arg(long, env = "MUON_BF16", default_value_t = 0, value_parser = switch)]
    muon_bf16: u8,
    /// Decoupled weight decay of the Adam groups (AdamW when > 0).
    #[arg(long, env = "ADAM_WD", default_value_t = 0.0, value_parser = finite_f32)]
    adam_wd: f32,
    #[arg(long, env = "BETA1", default_value_t = 0.9, value_parser = finite_f32)]
    beta1: f32,
    #[arg(long, env = "BETA2", default_value_t = 0.95, value_parser = finite_f32)]
    beta2: f32,
    #[arg(long, env = "ADAM_EPS", default_value_t = 1e-8, value_parser = finite_f32)]
    adam_eps: f32,
    #[arg(long, env = "GRAD_CLIP_NORM", default_value_t = 0.0, value_parser = finite_f32)]
    grad_clip_norm: f32,
    /// EMA decay of the weights exported at the end (0: no EMA; 11-layer lineage: 0.997).
    #[arg(long, env = "EMA_DECAY", default_value_t = 0.0, value_parser = finite_f32)]
    ema_decay: f32,
    /// Int6 fake quantization: off, on, or late:T (on once the LR multiplier is below T).
    #[arg(long, env = "QAT", default_value = "off")]
    qat: String,
    /// Data-parallel ranks (replicas in this process; gradients all-reduced each step).
    #[arg(long, env = "WORLD_SIZE", default_value_t = 1)]
    world_size: usize,
    /// Micro-steps per optimizer step on each rank (default: 8 / WORLD_SIZE, as train_gpt.py).
    #[arg(long, env = "GRAD_ACCUM_STEPS")]
    grad_accum_steps: Option<usize>,
    /// Artifact format: int8 (int8 + zlib) or int6 (int6 + zstd-22).
    #[arg(long, default_value = "int8")]
    export: String,
    /// Where to write the artifact (default: final_model.int8.ptz / final_model.int6.ptz here).
    #[arg(long)]
    out: Option<PathBuf>,
    /// After each logged step, print its time by phase (gradients, all-reduce, optimizers,
    /// EMA) on a `profile step:N ...` line.
    #[arg(long, env = "PGOLF_PROFILE")]
    profile: bool,
    /// Also print one JSON object per logged step (`{"step": N, "train_loss": ..., "step_ms":
    /// ..., "tokens_per_s": ..., phases in ms}`) and, as the last line of stdout, one for the
    /// run (`{"final": true, "train_loss": last step's, "val_bpb": of the round-tripped
    /// artifact, "step_ms_median": ..., ...}`).
    #[arg(long)]
    json: bool,
    /// Write a checkpoint here every --checkpoint-every steps and at the end.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    /// Continue from --checkpoint if it exists (same settings required).
    #[arg(long)]
    resume: bool,
    /// Also append the log lines to this file.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Compute backend: auto (CUDA when a device opens, else the CPU), cpu or cuda.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// Precision of the matrix products: f32 (the parity path), tf32 or bf16 (CUDA: TF32 or
    /// bf16 operands on tensor cores, fp32 accumulation, master weights and optimizer state);
    /// the CPU trains in f32 only. Default: $PGOLF_PRECISION, else f32.
    #[arg(long)]
    precision: Option<Precision>,
}

fn parse_qat(s: &str) -> Result<QatMode> {
    Ok(match s {
        "off" | "0" => QatMode::Off,
        "on" | "1" => QatMode::On,
        _ => match s.strip_prefix("late:") {
            Some(t) => QatMode::Late(t.parse().context("--qat late:T needs a number")?),
            None => bail!("--qat {s:?}: expected off, on or late:T"),
        },
    })
}

impl TrainArgs {
    fn overrides(&self) -> Result<ConfigOverrides> {
        Ok(ConfigOverrides {
            rope_base: Some(self.rope_base),
            rope_dims: self.rope_dims,
            logit_softcap: Some(self.logit_softcap),
            activation: Some(self.activation.parse::<Activation>()?),
            ln_scale: Some(self.ln_scale != 0),
            xsa_last: Some(self.xsa_last_n),
            rope_ntk_train_len: Some(self.ntk_train_len),
            ..ConfigOverrides::default()
        })
    }

    fn config(&self) -> Result<TrainConfig> {
        let accum = match self.grad_accum_steps {
            Some(a) => a,
            None if self.world_size > 0 && 8 % self.world_size == 0 => 8 / self.world_size,
            None => bail!("WORLD_SIZE must divide 8, or give --grad-accum-steps"),
        };
        let cap = (self.max_wallclock_seconds > 0.0).then_some(self.max_wallclock_seconds * 1e3);
        let cfg = TrainConfig {
            iterations: self.iterations,
            train_batch_tokens: self.train_batch_tokens,
            train_seq_len: self.train_seq_len,
            world_size: self.world_size,
            grad_accum_steps: accum,
            warmup_steps: self.warmup_steps,
            schedule: Schedule {
                iterations: self.iterations,
                warmdown_iters: self.warmdown_iters,
                max_wallclock_ms: cap,
                muon_momentum: self.muon_momentum,
                muon_momentum_warmup_start: self.muon_momentum_warmup_start,
                muon_momentum_warmup_steps: self.muon_momentum_warmup_steps,
            },
            optim: OptimizerConfig {
                lrs: LearningRates {
                    embed: self.embed_lr,
                    tied_embed: self.tied_embed_lr,
                    head: self.head_lr,
                    matrix: self.matrix_lr,
                    scalar: self.scalar_lr,
                },
                beta1: self.beta1,
                beta2: self.beta2,
                adam_eps: self.adam_eps,
                adam_weight_decay: self.adam_wd,
                muon_route: MuonRoute {
                    bigram_proj: self.bigram_proj_optimizer == "muon",
                    bigram_embed: self.bigram_embed_optimizer == "muon",
                    ve_proj: self.ve_proj_optimizer == "muon",
                },
                muon: MuonConfig {
                    lr: self.matrix_lr,
                    momentum: self.muon_momentum,
                    ns_steps: self.muon_backend_steps,
                    nesterov: true,
                    weight_decay: self.muon_wd,
                    bf16: self.muon_bf16 != 0,
                },
                grad_clip_norm: self.grad_clip_norm,
            },
            ema_decay: (self.ema_decay > 0.0).then_some(self.ema_decay),
            qat: parse_qat(&self.qat)?,
            val_loss_every: self.val_loss_every,
            train_log_every: self.train_log_every,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Prints a line to stdout (above the progress bar) and to the log file.
struct Logger {
    file: Option<std::fs::File>,
    bar: indicatif::ProgressBar,
}

impl Logger {
    fn line(&mut self, s: &str) {
        self.bar.suspend(|| println!("{s}"));
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{s}");
        }
    }
}

fn validate<B: TrainBackend + Clone>(
    be: &B,
    weights: &ModelWeights,
    val: &[u32],
    lut: &ByteLut,
    seq: usize,
    batch: usize,
) -> Result<EvalResult> {
    let model = DeviceModel::new(be.clone(), weights)?;
    validate_on(&model, val, lut, seq, batch)
}

/// Standard eval of `val` on a model already on its backend (the trainer's own).
fn validate_on<B: TrainBackend>(
    model: &DeviceModel<B>,
    val: &[u32],
    lut: &ByteLut,
    seq: usize,
    batch: usize,
) -> Result<EvalResult> {
    Ok(eval_standard(
        model,
        val,
        lut,
        EvalOptions {
            seq_len: seq,
            batch,
            progress: None,
        },
    )?)
}

fn shard_glob(dir: &Path, split: &str) -> Result<String> {
    let p = dir.join(format!("fineweb_{split}_*.bin"));
    p.to_str()
        .map(str::to_string)
        .with_context(|| format!("{}: path is not valid UTF-8", dir.display()))
}

pub fn run(a: TrainArgs) -> Result<()> {
    if a.resume && a.checkpoint.is_none() {
        bail!("--resume needs --checkpoint PATH (the file to continue from)");
    }
    let cfg = a.config()?;
    let export: ExportKind = a.export.parse()?;
    check_forward(a.train_seq_len, a.val_batch, "TRAIN_SEQ_LEN x --val-batch")?;
    // Every file the run writes is checked now, not after the last step.
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(export.file_name()));
    pgolf_rt::artifact::check_writable(&out).context("--out")?;
    if let Some(p) = &a.checkpoint {
        pgolf_rt::artifact::check_writable(p).context("--checkpoint")?;
    }
    if let Some(p) = &a.log {
        pgolf_rt::artifact::check_writable(p).context("--log")?;
    }
    let arch = Architecture {
        vocab_size: a.vocab_size,
        num_layers: a.num_layers,
        model_dim: a.model_dim,
        num_heads: a.num_heads,
        num_kv_heads: a.num_kv_heads,
        mlp_mult: a.mlp_mult,
        tie_embeddings: a.tie_embeddings != 0,
        bigram: (a.bigram_vocab_size > 0).then_some((a.bigram_vocab_size, a.bigram_dim)),
        smear_gate: a.smear_gate != 0,
        value_embed: (a.ve_layers > 0).then_some((a.ve_dim, a.ve_layers)),
        sidecar: (a.sparse_hidden_dim > 0).then_some(SidecarArch {
            hidden: a.sparse_hidden_dim,
            start_layer: a.sparse_start_layer,
            end_layer: usize::try_from(a.sparse_end_layer).ok(),
            every: a.sparse_every,
            max_sites: a.sparse_max_sites,
        }),
    };
    let overrides = a.overrides()?;
    let model_cfg = arch.config(&overrides)?;
    let tokenizer = Tokenizer::load(&a.tokenizer_path)?;
    let lut = tokenizer
        .byte_lut_for_model(a.vocab_size)
        .with_context(|| {
            format!(
                "VOCAB_SIZE {} and TOKENIZER_PATH {}",
                a.vocab_size,
                a.tokenizer_path.display()
            )
        })?;
    if !a.data_path.is_dir() {
        bail!(
            "DATA_PATH {} is not a folder (it should hold fineweb_train_*.bin and fineweb_val_*.bin)",
            a.data_path.display()
        );
    }
    let train_spec = shard_glob(&a.data_path, "train")?;
    let mut val = load_tokens(&shard_glob(&a.data_path, "val")?)?;
    if let Some(n) = a.val_max_tokens {
        val.truncate(n);
    }
    if let Some(&bad) = val.iter().find(|&&t| t as usize >= a.vocab_size) {
        bail!(
            "val token id {bad} is outside the vocabulary of {}",
            a.vocab_size
        );
    }
    let stream = TokenStream::open(&train_spec)?;
    let weights = init_weights(
        &model_cfg,
        &InitConfig {
            seed: a.seed,
            tied_embed_init_std: a.tied_embed_init_std,
            qk_gain_init: a.qk_gain_init,
            orthogonal: a.ortho_init != 0,
        },
    );
    let run = Run {
        a: &a,
        cfg: &cfg,
        arch: &arch,
        model_cfg: &model_cfg,
        overrides: &overrides,
        lut: &lut,
        val: &val,
        train_spec: &train_spec,
        export,
        out: &out,
    };
    with_train_backend!(a.backend, precision(a.precision)?, "train", |be| {
        run.train_on(be, weights, stream)
    })
}

/// Everything a training run needs besides the backend, the weights and the data stream.
struct Run<'a> {
    a: &'a TrainArgs,
    cfg: &'a TrainConfig,
    arch: &'a Architecture,
    model_cfg: &'a ModelConfig,
    overrides: &'a ConfigOverrides,
    lut: &'a ByteLut,
    val: &'a [u32],
    train_spec: &'a str,
    export: ExportKind,
    out: &'a Path,
}

impl Run<'_> {
    /// Trains on `be`, exports, and evaluates the round-tripped artifact.
    fn train_on<B: TrainBackend + Clone>(
        &self,
        be: B,
        weights: ModelWeights,
        stream: TokenStream,
    ) -> Result<()> {
        let Run {
            a,
            cfg,
            arch,
            model_cfg,
            overrides,
            lut,
            val,
            train_spec,
            export,
            out,
        } = *self;
        let backend_name = be.name();
        let mut t = Trainer::new(cfg.clone(), be.clone(), weights, stream)?;

        let bar = progress::bar(cfg.iterations as u64, "steps");
        let file = match &a.log {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("{}: cannot open log", p.display()))?,
            ),
            None => None,
        };
        let mut log = Logger { file, bar };
        log.line(&format!(
            "val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={}",
            a.tokenizer_path.display()
        ));
        log.line(&format!("train_loader:pattern={train_spec}"));
        log.line(&format!("val_loader:tokens:{}", val.len()));
        log.line(&format!("model_params:{}", model_cfg.param_count()));
        log.line(&format!(
            "world_size:{} grad_accum_steps:{} backend:{} threads:{}",
            cfg.world_size,
            cfg.grad_accum_steps,
            backend_name,
            rayon::current_num_threads()
        ));
        log.line(&format!(
            "tie_embeddings:{} embed_lr:{} head_lr:{} matrix_lr:{} scalar_lr:{}",
            arch.tie_embeddings,
            if arch.tie_embeddings {
                a.tied_embed_lr
            } else {
                a.embed_lr
            },
            if arch.tie_embeddings { 0.0 } else { a.head_lr },
            a.matrix_lr,
            a.scalar_lr
        ));
        log.line(&format!(
        "train_batch_tokens:{} train_seq_len:{} iterations:{} warmup_steps:{} max_wallclock_seconds:{:.3}",
        a.train_batch_tokens, a.train_seq_len, a.iterations, a.warmup_steps, a.max_wallclock_seconds
    ));
        log.line(&format!("seed:{}", a.seed));

        let resumed = match &a.checkpoint {
            Some(p) if a.resume && p.exists() => {
                load_checkpoint(&mut t, p)?;
                log.line(&format!("resumed:{} step:{}", p.display(), t.step));
                true
            }
            _ => false,
        };
        if !resumed {
            t.warm_up(&mut |s| log.line(s))?;
        }
        log.bar.set_position(t.step as u64);
        let val_seq = cfg.train_seq_len;
        let mut steps: Vec<(usize, f64, f64)> = Vec::new(); // (step, loss, step ms)
        let mut last_ms = t.elapsed_ms;
        if !resumed && t.should_validate() {
            let r = validate_on(t.model(), val, lut, val_seq, a.val_batch)?;
            log.line(&t.val_line(r.val_loss, r.val_bpb));
        }
        while !t.finished() {
            let r = t.train_step()?;
            if !r.train_loss.is_finite() {
                bail!(
                    "training diverged: train_loss {} at step {} (lower the learning rates)",
                    r.train_loss,
                    r.step
                );
            }
            log.bar.set_position(r.step as u64);
            let step_ms = r.train_time_ms - last_ms;
            last_ms = r.train_time_ms;
            steps.push((r.step, r.train_loss, step_ms));
            if t.should_log(r.step) {
                log.line(&t.step_line(&r));
                if a.profile {
                    log.line(&t.profile_line(&r));
                }
                if a.json {
                    let p = r.phases;
                    let mut j = serde_json::json!({
                            "step": r.step,
                            "train_loss": r.train_loss,
                            "grad_norm": r.grad_norm,
                            "lr_mul": r.lr_mul,
                            "step_ms": step_ms,
                            "train_time_ms": r.train_time_ms,
                            "tokens_per_s": cfg.train_batch_tokens as f64 / (step_ms / 1e3),
                            "grads_ms": p.grads_ms,
                            "reduce_ms": p.reduce_ms,
                            "optim_ms": p.optim_ms,
                            "ema_ms": p.ema_ms,
                    });
                    if let Some(t) = r.traffic {
                        j["h2d_bytes"] = t.h2d_bytes.into();
                        j["d2h_bytes"] = t.d2h_bytes.into();
                        j["syncs"] = t.syncs.into();
                        j["launches"] = t.launches.into();
                    }
                    if let Some(l) = p.launches {
                        j["launches_per_micro_step"] = l.per_micro_step().into();
                        j["optim_launches"] = l.optim.into();
                        j["ema_launches"] = l.ema.into();
                    }
                    log.line(&j.to_string());
                }
            }
            if t.should_validate() {
                let v = validate_on(t.model(), val, lut, val_seq, a.val_batch)?;
                log.line(&t.val_line(v.val_loss, v.val_bpb));
            }
            if let Some(p) = &a.checkpoint {
                if a.checkpoint_every > 0 && t.step % a.checkpoint_every == 0 || t.finished() {
                    save_checkpoint(&t, p)?;
                }
            }
        }
        log.bar.finish_and_clear();
        if t.step < cfg.iterations {
            log.line(&format!(
                "stopping_early: wallclock_cap train_time:{:.0}ms step:{}/{}",
                t.elapsed_ms, t.step, cfg.iterations
            ));
        }

        if cfg.ema_decay.is_some() {
            // The EMA replaces the weights before export (spec 4.9); say what it scores.
            let v = validate_on(&t.final_model()?, val, lut, val_seq, a.val_batch)?;
            log.line(&format!(
                "ema:applied val_loss:{:.4} val_bpb:{:.4}",
                v.val_loss, v.val_bpb
            ));
        }
        let start = Instant::now();
        let bytes = export_weights(&t.final_weights()?, export)?;
        pgolf_rt::artifact::write_atomic(out, &bytes)?;
        log.line(&format!(
            "Serialized model {}: {} bytes to {} ({} the {} byte cap, {:.1}s)",
            export.label().replace('_', "+"),
            bytes.len(),
            out.display(),
            if bytes.len() <= SIZE_CAP_BYTES {
                "within"
            } else {
                "OVER"
            },
            SIZE_CAP_BYTES,
            start.elapsed().as_secs_f64()
        ));
        let art = Artifact::from_bytes(&bytes)?;
        let back = ModelWeights::from_artifact(&art, overrides)?;
        let r = validate(&be, &back, val, lut, val_seq, a.val_batch)?;
        log.line(&format!(
            "final_{}_roundtrip val_loss:{:.4} val_bpb:{:.4} eval_time:{:.0}ms",
            export.label(),
            r.val_loss,
            r.val_bpb,
            r.seconds * 1e3
        ));
        log.line(&format!(
            "final_{}_roundtrip_exact val_loss:{:.8} val_bpb:{:.8}",
            export.label(),
            r.val_loss,
            r.val_bpb
        ));
        if a.json {
            let mut ms: Vec<f64> = steps.iter().map(|s| s.2).collect();
            // The median of the steps after the first (which pays for compilation and warm-up).
            let timed = if ms.len() > 1 {
                &mut ms[1..]
            } else {
                &mut ms[..]
            };
            timed.sort_by(f64::total_cmp);
            let median = timed.get(timed.len() / 2).copied().unwrap_or(f64::NAN);
            log.line(
                &serde_json::json!({
                    "final": true,
                    "steps": t.step,
                    "train_loss": steps.last().map(|s| s.1),
                    "train_losses": steps.iter().map(|s| s.1).collect::<Vec<_>>(),
                    "step_ms": steps.iter().map(|s| s.2).collect::<Vec<_>>(),
                    "step_ms_median": median,
                    "tokens_per_step": cfg.train_batch_tokens,
                    "tokens_per_s": cfg.train_batch_tokens as f64 / (median / 1e3),
                    "train_time_ms": t.elapsed_ms,
                    "val_loss": r.val_loss,
                    "val_bpb": r.val_bpb,
                    "artifact_bytes": bytes.len(),
                    "backend": backend_name,
                })
                .to_string(),
            );
        }
        Ok(())
    }
}
