//! `pgolf-rt eval`: standard or sliding-window evaluation of an artifact on challenge shards.

use super::model_args::{
    load_weights, precision, with_model, with_train_backend, ArchArgs, BackendChoice, Precision,
};
use super::parse::{at_least_one, audit_count, check_forward, finite_f32, finite_f64};
use super::progress;
use anyhow::{Context, Result};
use clap::Args;
use pgolf_rt::backend::train::TrainBackend;
use pgolf_rt::backend::Backend;
use pgolf_rt::data::load_tokens;
use pgolf_rt::eval::audit::{audit_eval, AuditConfig, AuditReport};
use pgolf_rt::eval::mixer::{eval_mixed, Expert, HedgeLoss, MixedEval, MixerConfig, NUM_EXPERTS};
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
    /// Window length (at most PGOLF_MAX_SEQ_LEN).
    #[arg(long, default_value_t = 1024, value_parser = at_least_one)]
    seq_len: usize,
    /// Sliding-window eval with this stride (omit for standard eval; 1..=--seq-len).
    #[arg(long, value_parser = at_least_one)]
    stride: Option<usize>,
    /// Sliding-window eval with the default stride of 64.
    #[arg(long)]
    sliding: bool,
    /// Windows per forward pass (windows x --seq-len at most PGOLF_MAX_FORWARD_TOKENS).
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    batch: usize,
    /// Evaluate only the first N tokens of the stream.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Precision of the matrix products: f32 (the parity path), tf32 (CUDA: TF32 tensor cores,
    /// fp32 accumulation) or bf16 (CPU with AMX-BF16 / AVX512-BF16, without --ttt).
    /// Default: $PGOLF_PRECISION, else f32.
    #[arg(long)]
    precision: Option<Precision>,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Online mixture on top of the model: `hedge` (neural, unigram, bigram, hashed trigram and
    /// entropy-tempered neural experts, Hedge weights; a normalised distribution at every position).
    #[arg(long, value_parser = ["none", "hedge"], default_value = "none")]
    mix: String,
    /// Hedge learning rate per scored target (default 0.1).
    #[arg(long, value_parser = finite_f64)]
    mix_eta: Option<f64>,
    /// Fixed Share gamma: after each update w <- (1-gamma)w + gamma/K (default 0.003; 0 = plain Hedge).
    #[arg(long, value_parser = finite_f64)]
    mix_share: Option<f64>,
    /// Prior log-weights of neural,unigram,bigram,trigram,tempered (default 2,0,0,0,0).
    #[arg(long, value_delimiter = ',', num_args = 5, value_parser = finite_f64)]
    mix_prior: Option<Vec<f64>>,
    /// Add-alpha smoothing of the unigram and bigram experts (default 0.1).
    #[arg(long, value_parser = finite_f64)]
    mix_alpha: Option<f64>,
    /// Add-alpha smoothing of the hashed-trigram expert (default 0.01).
    #[arg(long, value_parser = finite_f64)]
    mix_trigram_alpha: Option<f64>,
    /// Experts in the mixture, comma-separated (default all five).
    #[arg(long, value_delimiter = ',')]
    mix_experts: Option<Vec<String>>,
    /// Hedge loss: `nll` (each expert's log-loss) or `gradient` (exponentiated gradient).
    #[arg(long)]
    mix_loss: Option<String>,
    /// Ablation in the same pass: also run the mixture without each enabled expert, on the
    /// same targets and neural distributions, and report each (cheap next to the model).
    #[arg(long)]
    mix_ablation: bool,
    /// Run the legality audit (causality, normalisation, score-before-update) on the first
    /// windows of the data first; exits non-zero if any check fails.
    #[arg(long)]
    audit: bool,
    /// Windows the audit covers.
    #[arg(long, default_value_t = 2, value_parser = audit_count)]
    audit_windows: usize,
    /// Perturbed positions the audit samples (each costs two re-runs of the sample; one with
    /// --ttt).
    #[arg(long, default_value_t = 3, value_parser = audit_count)]
    audit_positions: usize,
    /// Documents the audit covers with --ttt lora (the first N of the stream).
    #[arg(long, default_value_t = 3, value_parser = audit_count)]
    audit_docs: usize,
    #[command(flatten)]
    arch: ArchArgs,
    #[command(flatten)]
    ttt: TttArgs,
}

/// Test-time training options (`--ttt lora`: per-document LoRA TTT; `--ttt full`: full-model
/// score-first chunked TTT; both score-then-adapt, CPU, and both combine with `--mix hedge`).
#[derive(Args, Debug)]
pub struct TttArgs {
    /// Test-time training: `lora` (per-document LoRA, spec 7.5) or `full` (full-model
    /// score-first chunked TTT, spec 7.4).
    #[arg(long, value_parser = ["lora", "full"])]
    ttt: Option<String>,
    /// LoRA rank.
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    ttt_rank: usize,
    /// Learning rate (default: lora 0.01 with Adam betas 0.9/0.95, eps 1e-10; full 0.002 SGD
    /// peak of the cosine schedule).
    #[arg(long, value_parser = finite_f32)]
    ttt_lr: Option<f32>,
    /// Targets per chunk (default: lora 256; full 32768).
    #[arg(long, value_parser = at_least_one)]
    ttt_chunk: Option<usize>,
    /// Forward window (tokens of context) per chunk (lora).
    #[arg(long, default_value_t = 1024, value_parser = at_least_one)]
    ttt_window: usize,
    /// Adapted linears: comma-separated q,k,v,o,mlp,head (lora).
    #[arg(long, default_value = "q,v,head")]
    ttt_targets: String,
    /// Optimizer: adam, adamw, sgd (lora; full always uses SGD with momentum).
    #[arg(long, default_value = "adam")]
    ttt_optimizer: String,
    /// lora: optimizer steps per scored chunk (default 1); full: passes over each scored chunk
    /// (default 3).
    #[arg(long)]
    ttt_epochs: Option<usize>,
    /// Each step pass trains on every chunk scored so far, not only the latest one (lora).
    #[arg(long)]
    ttt_replay: bool,
    /// Documents shorter than this are scored without adaptation (lora).
    #[arg(long, default_value_t = 0)]
    ttt_min_doc_len: usize,
    /// Evaluate only the first N documents (lora).
    #[arg(long)]
    ttt_max_docs: Option<usize>,
    /// Documents advancing chunk by chunk together in one batched forward/backward, each with
    /// its own adapters and optimizer (lora; 1 = one document at a time).
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    ttt_batch_docs: usize,
    /// Floor of the cosine learning-rate schedule over chunks (full).
    #[arg(long, default_value_t = 0.0, value_parser = finite_f32)]
    ttt_lr_min: f32,
    /// Linear learning-rate warm-up over the first N optimizer steps (full; 0 = none).
    #[arg(long, default_value_t = 0)]
    ttt_warmup_steps: usize,
    /// SGD momentum (full).
    #[arg(long, default_value_t = 0.9, value_parser = finite_f32)]
    ttt_momentum: f32,
    /// SGD weight decay (full).
    #[arg(long, default_value_t = 0.0, value_parser = finite_f32)]
    ttt_weight_decay: f32,
    /// Global gradient-norm clip (full; 0 = none).
    #[arg(long, default_value_t = 1.0, value_parser = finite_f32)]
    ttt_grad_clip: f32,
    /// Freeze the first N blocks (full; embeddings, head and later blocks train).
    #[arg(long, default_value_t = 0)]
    ttt_freeze_blocks: usize,
    /// Training sequence length (full; default --seq-len).
    #[arg(long, value_parser = at_least_one)]
    ttt_train_seq: Option<usize>,
    /// Training sequences per optimizer step (full).
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    ttt_train_batch: usize,
}

fn mixer_config(a: &EvalArgs) -> Result<Option<MixerConfig>> {
    if a.mix == "none" {
        anyhow::ensure!(!a.mix_ablation, "--mix-ablation needs --mix hedge");
        return Ok(None);
    }
    let mut c = MixerConfig::default();
    if let Some(e) = a.mix_eta {
        c.eta = e;
    }
    if let Some(x) = a.mix_share {
        c.share = x;
    }
    if let Some(p) = &a.mix_prior {
        anyhow::ensure!(
            p.len() == NUM_EXPERTS,
            "--mix-prior takes {NUM_EXPERTS} values"
        );
        c.prior.copy_from_slice(p);
    }
    if let Some(x) = a.mix_alpha {
        c.alpha = x;
    }
    if let Some(x) = a.mix_trigram_alpha {
        c.trigram_alpha = x;
    }
    if let Some(list) = &a.mix_experts {
        c.enabled = [false; NUM_EXPERTS];
        for name in list {
            let e: Expert = name.parse().map_err(anyhow::Error::msg)?;
            c.enabled[e as usize] = true;
        }
    }
    if let Some(l) = &a.mix_loss {
        c.loss = l.parse::<HedgeLoss>().map_err(anyhow::Error::msg)?;
    }
    c.ablate = a.mix_ablation;
    c.validate()?;
    Ok(Some(c))
}

impl EvalArgs {
    /// Checks the flags against each other before anything is read.
    fn validate(&self) -> Result<()> {
        if let Some(s) = self.stride {
            anyhow::ensure!(
                s <= self.seq_len,
                "--stride {s} must be at most --seq-len {} (the window length)",
                self.seq_len
            );
        }
        check_forward(self.seq_len, self.batch, "--seq-len x --batch")?;
        let t = &self.ttt;
        match t.ttt.as_deref() {
            Some("lora") => check_forward(
                t.ttt_window,
                t.ttt_batch_docs,
                "--ttt-window x --ttt-batch-docs",
            ),
            Some(_) => check_forward(
                t.ttt_train_seq.unwrap_or(self.seq_len),
                t.ttt_train_batch,
                "--ttt-train-seq x --ttt-train-batch",
            ),
            None => Ok(()),
        }
    }
}

pub fn run(a: EvalArgs) -> Result<()> {
    a.validate()?;
    let (_, weights) = load_weights(&a.artifact, &a.arch)?;
    let tokenizer = Tokenizer::load(&a.tokenizer)?;
    let lut = tokenizer
        .byte_lut_for_model(weights.config.vocab_size)
        .with_context(|| format!("--tokenizer {}", a.tokenizer.display()))?;
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
    if a.ttt.ttt.is_some() {
        return run_ttt(&a, &weights, &tokens, &lut);
    }
    let stride = a.stride.or(if a.sliding { Some(64) } else { None });
    let mix = mixer_config(&a)?;
    let (r, mixed, audit, backend) =
        with_model!(a.backend, precision(a.precision)?, &weights, |model| {
            let audit = if a.audit {
                let rep = run_audit(&model, &tokens, &a, stride, mix.as_ref())?;
                print!("{rep}");
                if !rep.passed() {
                    anyhow::bail!("legality audit FAILED");
                }
                println!("legality audit PASSED");
                Some(rep)
            } else {
                None
            };
            let (r, mixed) = evaluate(&model, &tokens, &lut, &a, stride, mix.as_ref())?;
            (r.finite()?, mixed, audit, model.backend_name())
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
    print_result(&r, mixed.as_ref());
    if a.json {
        let mut j = serde_json::json!({
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
        if let (Some(m), Some(c)) = (&mixed, &mix) {
            j["mix"] = mix_json(m, c);
        }
        if let Some(rep) = &audit {
            j["audit"] = serde_json::json!({
                "passed": rep.passed(),
                "checks": rep.checks.iter().map(|c| serde_json::json!({
                    "name": c.name,
                    "passed": c.passed,
                    "detail": c.detail,
                })).collect::<Vec<_>>(),
            });
        }
        println!("{j}");
    }
    Ok(())
}

/// The result line (and the mixer's per-expert table).
fn print_result(r: &EvalResult, mixed: Option<&MixedEval>) {
    println!(
        "val_loss:{:.8} val_bpb:{:.8} tokens:{} bytes:{} seconds:{:.2} tokens_per_s:{:.0}",
        r.val_loss,
        r.val_bpb,
        r.tokens,
        r.bytes,
        r.seconds,
        r.tokens as f64 / r.seconds
    );
    if let Some(m) = mixed {
        print_mix(m);
    }
}

fn print_mix(m: &MixedEval) {
    println!(
        "mix:hedge  expert  enabled  val_bpb  final_weight   (mixture {:.8} vs neural {:.8}: {:+.6})",
        m.result.val_bpb,
        m.neural().val_bpb,
        m.result.val_bpb - m.neural().val_bpb
    );
    for e in &m.experts {
        println!(
            "  {:<9} {:<5} {:.8} {:.6}",
            e.expert.name(),
            e.enabled,
            e.result.val_bpb,
            e.final_weight
        );
    }
    if !m.ablation.is_empty() {
        println!("mix:ablation  without  val_bpb  vs full mixture");
        for ab in &m.ablation {
            println!(
                "  {:<9} {:.8} {:+.6}",
                ab.removed.name(),
                ab.result.val_bpb,
                ab.result.val_bpb - m.result.val_bpb
            );
        }
    }
}

/// The mixer's part of the `--json` line.
fn mix_json(m: &MixedEval, c: &MixerConfig) -> serde_json::Value {
    serde_json::json!({
        "kind": "hedge",
        "eta": c.eta,
        "share": c.share,
        "prior": c.prior,
        "alpha": c.alpha,
        "trigram_alpha": c.trigram_alpha,
        "trigram_buckets": c.trigram_buckets,
        "loss": format!("{:?}", c.loss).to_lowercase(),
        "val_bpb": m.result.val_bpb,
        "neural_val_bpb": m.neural().val_bpb,
        "experts": m.experts.iter().map(|e| serde_json::json!({
            "name": e.expert.name(),
            "enabled": e.enabled,
            "val_bpb": e.result.val_bpb,
            "val_loss": e.result.val_loss,
            "final_weight": e.final_weight,
        })).collect::<Vec<_>>(),
        "ablation": m.ablation.iter().map(|ab| serde_json::json!({
            "without": ab.removed.name(),
            "val_bpb": ab.result.val_bpb,
            "val_loss": ab.result.val_loss,
        })).collect::<Vec<_>>(),
    })
}

fn evaluate<B: Backend>(
    model: &DeviceModel<B>,
    tokens: &[u32],
    lut: &ByteLut,
    a: &EvalArgs,
    stride: Option<usize>,
    mix: Option<&MixerConfig>,
) -> Result<(EvalResult, Option<MixedEval>)> {
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
    let r = match (mix, stride) {
        (Some(c), _) => {
            let m = eval_mixed(model, tokens, lut, stride, c, opts).context("evaluation failed")?;
            pb.finish_and_clear();
            return Ok((m.result, Some(m)));
        }
        (None, Some(s)) => eval_sliding(model, tokens, lut, s, opts),
        (None, None) => eval_standard(model, tokens, lut, opts),
    }
    .context("evaluation failed")?;
    pb.finish_and_clear();
    Ok((r, None))
}

fn run_audit<B: Backend>(
    model: &DeviceModel<B>,
    tokens: &[u32],
    a: &EvalArgs,
    stride: Option<usize>,
    mix: Option<&MixerConfig>,
) -> Result<AuditReport> {
    let cfg = AuditConfig {
        positions: a.audit_positions,
        ..AuditConfig::default()
    };
    audit_eval(
        model,
        tokens,
        a.seq_len,
        stride,
        a.batch,
        a.audit_windows,
        mix,
        &cfg,
    )
    .context("audit could not run")
}

fn run_ttt(
    a: &EvalArgs,
    weights: &pgolf_rt::model::ModelWeights,
    tokens: &[u32],
    lut: &ByteLut,
) -> Result<()> {
    with_train_backend!(
        a.backend,
        precision(a.precision)?,
        "--ttt",
        |be| run_ttt_on(&be, a, weights, tokens, lut)
    )
}

fn run_ttt_on<B: TrainBackend + Clone>(
    be: &B,
    a: &EvalArgs,
    weights: &pgolf_rt::model::ModelWeights,
    tokens: &[u32],
    lut: &ByteLut,
) -> Result<()> {
    let mix = mixer_config(a)?;
    if audit_fault()? != pgolf_rt::eval::ttt::Fault::None {
        anyhow::ensure!(
            a.audit && a.ttt.ttt.as_deref() == Some("lora"),
            "PGOLF_AUDIT_FAULT makes LoRA TTT illegal on purpose, to test the audit: it needs \
             --ttt lora --audit (and never produces a score)"
        );
    }
    if a.audit {
        let rep = run_ttt_audit(be, a, weights, tokens, lut, mix.as_ref())?;
        print!("{rep}");
        if !rep.passed() {
            anyhow::bail!("legality audit FAILED");
        }
        println!("legality audit PASSED");
        anyhow::ensure!(
            audit_fault()? == pgolf_rt::eval::ttt::Fault::None,
            "PGOLF_AUDIT_FAULT is set but the audit passed: it did not catch the injected fault"
        );
    }
    let start = std::time::Instant::now();
    let unit = if a.ttt.ttt.as_deref() == Some("full") {
        "chunks"
    } else {
        "docs"
    };
    let pb = progress::bar(0, unit);
    let mut on_progress = |done: usize, total: usize, acc: &pgolf_rt::eval::BpbAccumulator| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
        let bpb = acc.nll_sum / std::f64::consts::LN_2 / acc.bytes as f64;
        pb.set_message(format!("bpb {bpb:.5}"));
        if done.is_multiple_of(10) || done == total {
            eprintln!(
                "ttt: {unit} {done}/{total}, {} targets scored, partial val_bpb {bpb:.8}, elapsed {:.0}s",
                acc.tokens,
                start.elapsed().as_secs_f64()
            );
        }
    };
    let (r, mixed, mut j) = if a.ttt.ttt.as_deref() == Some("full") {
        run_full_ttt(be, a, weights, tokens, lut, mix.as_ref(), &mut on_progress)?
    } else {
        run_lora_ttt(be, a, weights, tokens, lut, mix.as_ref(), &mut on_progress)?
    };
    pb.finish_and_clear();
    let r = r.finite()?;
    print_result(&r, mixed.as_ref());
    if a.json {
        j["val_loss"] = r.val_loss.into();
        j["val_bpb"] = r.val_bpb.into();
        j["tokens"] = r.tokens.into();
        j["bytes"] = r.bytes.into();
        j["seconds"] = r.seconds.into();
        j["artifact"] = a.artifact.display().to_string().into();
        if let (Some(m), Some(c)) = (&mixed, &mix) {
            j["mix"] = mix_json(m, c);
        }
        println!("{j}");
    }
    Ok(())
}

/// The `--ttt lora` settings of the command line.
fn lora_config(a: &EvalArgs) -> Result<pgolf_rt::eval::TttConfig> {
    use pgolf_rt::eval::TttConfig;
    use pgolf_rt::train::AdamConfig;
    let t = &a.ttt;
    let mut optimizer = AdamConfig {
        kind: t.ttt_optimizer.parse()?,
        ..AdamConfig::default()
    };
    optimizer.lr = t.ttt_lr.unwrap_or(0.01);
    Ok(TttConfig {
        rank: t.ttt_rank,
        targets: t.ttt_targets.parse()?,
        optimizer,
        chunk: t.ttt_chunk.unwrap_or(256),
        window: t.ttt_window,
        epochs: t.ttt_epochs.unwrap_or(1),
        replay_scored: t.ttt_replay,
        min_doc_len: t.ttt_min_doc_len,
        max_docs: t.ttt_max_docs,
        batch_docs: t.ttt_batch_docs,
        fault: audit_fault()?,
        ..TttConfig::default()
    })
}

/// `PGOLF_AUDIT_FAULT`: a deliberately illegal TTT variant (`adapt-before-score`), injected only
/// to show that `--audit` catches it.
fn audit_fault() -> Result<pgolf_rt::eval::ttt::Fault> {
    Ok(match std::env::var("PGOLF_AUDIT_FAULT") {
        Ok(v) => v.parse()?,
        Err(_) => pgolf_rt::eval::ttt::Fault::None,
    })
}

/// The `--ttt full` settings of the command line.
fn full_config(a: &EvalArgs) -> pgolf_rt::eval::FullTttConfig {
    let t = &a.ttt;
    pgolf_rt::eval::FullTttConfig {
        chunk: t.ttt_chunk.unwrap_or(32_768),
        seq_len: a.seq_len,
        stride: a.stride.or(if a.sliding { Some(64) } else { None }),
        batch: a.batch,
        train_seq: t.ttt_train_seq,
        train_batch: t.ttt_train_batch,
        epochs: t.ttt_epochs.unwrap_or(3),
        lr: t.ttt_lr.unwrap_or(0.002),
        lr_min: t.ttt_lr_min,
        warmup_steps: t.ttt_warmup_steps,
        momentum: t.ttt_momentum,
        weight_decay: t.ttt_weight_decay,
        grad_clip: t.ttt_grad_clip,
        freeze_blocks: t.ttt_freeze_blocks,
    }
}

/// `--audit` with `--ttt`: the legality audit of the TTT pass (and mixer) on a short sample.
fn run_ttt_audit<B: TrainBackend + Clone>(
    be: &B,
    a: &EvalArgs,
    weights: &pgolf_rt::model::ModelWeights,
    tokens: &[u32],
    lut: &ByteLut,
    mix: Option<&MixerConfig>,
) -> Result<AuditReport> {
    use pgolf_rt::data::find_documents;
    use pgolf_rt::eval::audit_ttt::audit_ttt;
    use pgolf_rt::eval::truncate_for_eval;
    let audit = AuditConfig {
        positions: a.audit_positions,
        ..AuditConfig::default()
    };
    let vocab = weights.config.vocab_size;
    let stream = truncate_for_eval(tokens, a.seq_len)?;
    if a.ttt.ttt.as_deref() == Some("full") {
        let mut cfg = full_config(a);
        let n = (a.audit_windows.max(2).saturating_mul(cfg.seq_len) + 1).min(stream.len());
        let sample = truncate_for_eval(&stream[..n], cfg.seq_len)?;
        // Chunks no longer than a window, so the sample sees updates between chunks.
        cfg.chunk = cfg.chunk.min(cfg.seq_len);
        println!(
            "audit: full TTT on {} targets, chunk {}, {} perturbed positions",
            sample.len() - 1,
            cfg.chunk,
            audit.positions
        );
        audit_ttt(
            sample,
            lut,
            vocab,
            mix,
            &audit,
            sample.len() - 1,
            &mut |sink| {
                pgolf_rt::eval::ttt_full::full_ttt_into(be.clone(), weights, &cfg, sink, None)
            },
        )
        .context("audit could not run")
    } else {
        let mut cfg = lora_config(a)?;
        let docs: Vec<_> = find_documents(stream)
            .into_iter()
            .filter(|d| d.len >= 2)
            .take(a.audit_docs.max(1))
            .collect();
        let end = docs.last().map_or(0, |d| d.start + d.len);
        let sample = &stream[..end.min(stream.len())];
        cfg.max_docs = None;
        let expected: usize = find_documents(sample)
            .iter()
            .filter(|d| d.len >= 2)
            .map(|d| d.len - 1)
            .sum();
        println!(
            "audit: LoRA TTT on {} documents ({} targets), batch-docs {}, {} perturbed positions",
            docs.len(),
            expected,
            cfg.batch_docs,
            audit.positions
        );
        let model = pgolf_rt::train::TrainModel::new(be.clone(), weights)?;
        audit_ttt(sample, lut, vocab, mix, &audit, expected, &mut |sink| {
            pgolf_rt::eval::ttt::lora_ttt_into(&model, sink.stream(), &cfg, sink, None)
        })
        .context("audit could not run")
    }
}

type TttOutcome = (EvalResult, Option<MixedEval>, serde_json::Value);

fn run_lora_ttt<B: TrainBackend + Clone>(
    be: &B,
    a: &EvalArgs,
    weights: &pgolf_rt::model::ModelWeights,
    tokens: &[u32],
    lut: &ByteLut,
    mix: Option<&MixerConfig>,
    on_progress: &mut pgolf_rt::eval::ttt::TttProgress,
) -> Result<TttOutcome> {
    use pgolf_rt::eval::{eval_lora_ttt_mixed, truncate_for_eval};
    use pgolf_rt::train::TrainModel;
    let t = &a.ttt;
    let cfg = lora_config(a)?;
    // The stream the reference evaluates (spec 1.2), split into documents.
    let stream = truncate_for_eval(tokens, a.seq_len)?;
    let model = TrainModel::new(be.clone(), weights)?;
    let (r, mixed) = eval_lora_ttt_mixed(&model, stream, lut, &cfg, mix, Some(on_progress))
        .context("LoRA TTT evaluation failed")?;
    println!(
        "lora-ttt eval  backend:{}  rank:{} targets:{} lr:{} chunk:{} window:{} batch-docs:{}  mix:{}",
        pgolf_rt::backend::Backend::name(model.backend()),
        cfg.rank,
        t.ttt_targets,
        cfg.optimizer.lr,
        cfg.chunk,
        cfg.window,
        cfg.batch_docs,
        a.mix
    );
    let j = serde_json::json!({
        "mode": "lora-ttt", "ttt_rank": cfg.rank, "ttt_batch_docs": cfg.batch_docs, "ttt_lr": cfg.optimizer.lr,
        "ttt_chunk": cfg.chunk, "ttt_window": cfg.window,
    });
    Ok((r, mixed, j))
}

fn run_full_ttt<B: TrainBackend + Clone>(
    be: &B,
    a: &EvalArgs,
    weights: &pgolf_rt::model::ModelWeights,
    tokens: &[u32],
    lut: &ByteLut,
    mix: Option<&MixerConfig>,
    on_progress: &mut pgolf_rt::eval::ttt::TttProgress,
) -> Result<TttOutcome> {
    use pgolf_rt::eval::eval_full_ttt;
    let cfg = full_config(a);
    let (r, mixed) = eval_full_ttt(
        be.clone(),
        weights,
        tokens,
        lut,
        &cfg,
        mix,
        Some(on_progress),
    )
    .context("full TTT evaluation failed")?;
    println!(
        "full-ttt eval  backend:{}  chunk:{} seq_len:{} stride:{} epochs:{} lr:{} lr_min:{} \
         momentum:{} wd:{} clip:{} freeze_blocks:{}  mix:{}",
        be.name(),
        cfg.chunk,
        cfg.seq_len,
        cfg.stride.map_or("-".into(), |s| s.to_string()),
        cfg.epochs,
        cfg.lr,
        cfg.lr_min,
        cfg.momentum,
        cfg.weight_decay,
        cfg.grad_clip,
        cfg.freeze_blocks,
        a.mix
    );
    let j = serde_json::json!({
        "mode": "full-ttt", "ttt_chunk": cfg.chunk, "seq_len": cfg.seq_len,
        "stride": cfg.stride, "ttt_epochs": cfg.epochs, "ttt_lr": cfg.lr,
        "ttt_lr_min": cfg.lr_min, "ttt_freeze_blocks": cfg.freeze_blocks,
    });
    Ok((r, mixed, j))
}
