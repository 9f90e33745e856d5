//! `pgolf-rt eval`: standard or sliding-window evaluation of an artifact on challenge shards.

use super::model_args::{
    load_weights, precision, with_model, with_train_backend, ArchArgs, BackendChoice, Precision,
};
use super::parse::{self, at_least_one, audit_count, check_forward, finite_f32, finite_f64};
use super::progress;
use anyhow::{Context, Result};
use clap::Args;
use pgolf_rt::data::load_tokens;
use pgolf_rt::eval::audit::{AuditConfig, AuditReport};
use pgolf_rt::eval::mixer::{Expert, HedgeLoss, MixedEval, MixerConfig, NUM_EXPERTS};
use pgolf_rt::eval::plan::{Adaptation, AuditPlan, EvalPlan, Progress};
use pgolf_rt::eval::EvalResult;
use pgolf_rt::tokenizer::Tokenizer;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Compressed artifact (.ptz: torch.save + zlib/zstd/xz).
    #[arg(long)]
    artifact: PathBuf,
    /// Shard file, directory, or glob (e.g. 'data/fineweb_val_*.bin').
    #[arg(long, required_unless_present = "text", conflicts_with = "text")]
    data: Option<String>,
    /// Evaluate a UTF-8 text file instead of shards (`-`: standard input), as one document:
    /// BOS, then its tokens (at most PGOLF_MAX_TEXT_BYTES).
    #[arg(long, value_name = "FILE")]
    text: Option<String>,
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
    /// fp32 accumulation) or bf16 (CUDA, with or without --ttt; CPU with AMX-BF16 /
    /// AVX512-BF16, without --ttt).
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
    /// Only print what the evaluation would cost (tokens, FLOPs, the estimated time on 8 H100s
    /// against the 600 s eval budget) and exit, without running it.
    #[arg(long)]
    estimate: bool,
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
/// score-first chunked TTT, or one of the published recipes with `--ttt-recipe`; all
/// score-then-adapt, and all combine with `--mix hedge`).
#[derive(Args, Debug)]
pub struct TttArgs {
    /// Test-time training: `lora` (per-document LoRA, spec 7.5) or `full` (full-model
    /// score-first chunked TTT, spec 7.4).
    #[arg(long, value_parser = ["lora", "full"])]
    ttt: Option<String>,
    /// A published full-model recipe, made score-first (implies --ttt full; the --ttt-* flags
    /// below override its values): pr461 (SGD, the default), pr489 (AdamW, 5 epochs per
    /// chunk), pr581 (AdamW, 20 epochs, cosine with warm-up, decay 0.01), pr687 (AdamW, last
    /// 2 blocks + scales + head, LR ramp, Polyak-averaged scoring).
    #[arg(long)]
    ttt_recipe: Option<pgolf_rt::eval::TttRecipe>,
    /// LoRA rank.
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    ttt_rank: usize,
    /// Learning rate (default: lora 0.01 with Adam betas 0.9/0.95, eps 1e-10; full: the
    /// recipe's, 0.002 SGD peak of the cosine schedule by default).
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
    /// Optimizer: lora adam (default), adamw or sgd; full sgd (default, with momentum) or
    /// adamw (torch's betas 0.9/0.999, eps 1e-8).
    #[arg(long)]
    ttt_optimizer: Option<String>,
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
    /// Floor of the cosine learning-rate schedule over chunks (full; default 0).
    #[arg(long, value_parser = finite_f32)]
    ttt_lr_min: Option<f32>,
    /// Linear learning-rate warm-up over the first N optimizer steps (full; default 0, none).
    #[arg(long)]
    ttt_warmup_steps: Option<usize>,
    /// Learning-rate multiplier ramping from 1 up to this over the first chunks (full; PR
    /// #687's adaptive LR: 3).
    #[arg(long, value_parser = finite_f32)]
    ttt_lr_ramp: Option<f32>,
    /// Fraction of the chunks the --ttt-lr-ramp spans (full; default 0.3).
    #[arg(long, value_parser = finite_f32)]
    ttt_lr_ramp_over: Option<f32>,
    /// SGD momentum (full; default 0.9).
    #[arg(long, value_parser = finite_f32)]
    ttt_momentum: Option<f32>,
    /// Weight decay (full; coupled with SGD, decoupled with AdamW; default 0).
    #[arg(long, value_parser = finite_f32)]
    ttt_weight_decay: Option<f32>,
    /// Global gradient-norm clip (full; 0 = none; default 1).
    #[arg(long, value_parser = finite_f32)]
    ttt_grad_clip: Option<f32>,
    /// The parameters that train, as comma-separated state-dict name patterns with `*`
    /// (full; e.g. 'blocks.9.*,blocks.10.*,*scale*,lm_head.weight'; default all).
    #[arg(long)]
    ttt_params: Option<pgolf_rt::train::ParamSelect>,
    /// Freeze the first N blocks (full; embeddings, head and later blocks train; default 0).
    #[arg(long)]
    ttt_freeze_blocks: Option<usize>,
    /// Score each chunk with the Polyak average of the trained weights, this decay per step
    /// (full; PR #687: 0.998).
    #[arg(long, value_parser = finite_f32)]
    ttt_polyak: Option<f32>,
    /// Training sequence length (full; default --seq-len).
    #[arg(long, value_parser = at_least_one)]
    ttt_train_seq: Option<usize>,
    /// Training sequences per optimizer step (full; default 32).
    #[arg(long, value_parser = at_least_one)]
    ttt_train_batch: Option<usize>,
}

impl TttArgs {
    /// `lora`, `full` or none; a recipe means `full`.
    fn mode(&self) -> Option<&str> {
        self.ttt.as_deref().or(self.ttt_recipe.map(|_| "full"))
    }
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
        if t.ttt_recipe.is_some() && t.ttt.as_deref() == Some("lora") {
            anyhow::bail!("--ttt-recipe names a full-model recipe: it does not go with --ttt lora");
        }
        match t.mode() {
            Some("lora") => check_forward(
                t.ttt_window,
                t.ttt_batch_docs,
                "--ttt-window x --ttt-batch-docs",
            ),
            Some(_) => check_forward(
                t.ttt_train_seq.unwrap_or(self.seq_len),
                t.ttt_train_batch.unwrap_or(32),
                "--ttt-train-seq x --ttt-train-batch",
            ),
            None => Ok(()),
        }
    }
}

/// The plan the flags describe (its audit is run separately, to print its report).
fn eval_plan(a: &EvalArgs, model: &pgolf_rt::model::ModelConfig) -> Result<EvalPlan> {
    let adapt = match a.ttt.mode() {
        None => Adaptation::None,
        Some("lora") => Adaptation::Lora(lora_config(a)?),
        Some(_) => Adaptation::Full(full_config(a, model)?),
    };
    Ok(EvalPlan {
        seq_len: a.seq_len,
        stride: a.stride.or(if a.sliding { Some(64) } else { None }),
        batch: a.batch,
        adapt,
        mix: mixer_config(a)?,
        audit: None,
    })
}

/// The size of the audit the flags ask for.
fn audit_plan(a: &EvalArgs) -> AuditPlan {
    AuditPlan {
        windows: a.audit_windows,
        docs: a.audit_docs,
        check: AuditConfig {
            positions: a.audit_positions,
            ..AuditConfig::default()
        },
    }
}

/// Prints the audit's report; an error when it failed.
fn report_audit(rep: AuditReport) -> Result<AuditReport> {
    print!("{rep}");
    if !rep.passed() {
        anyhow::bail!("legality audit FAILED");
    }
    println!("legality audit PASSED");
    anyhow::ensure!(
        audit_fault()? == pgolf_rt::eval::ttt::Fault::None,
        "PGOLF_AUDIT_FAULT is set but the audit passed: it did not catch the injected fault"
    );
    Ok(rep)
}

pub fn run(a: EvalArgs) -> Result<()> {
    a.validate()?;
    let (_, weights) = load_weights(&a.artifact, &a.arch)?;
    let tokenizer = Tokenizer::load(&a.tokenizer)?;
    let lut = tokenizer
        .byte_lut_for_model(weights.config.vocab_size)
        .with_context(|| format!("--tokenizer {}", a.tokenizer.display()))?;
    let (mut tokens, source) = match (&a.data, &a.text) {
        (Some(d), _) => (load_tokens(d)?, d.clone()),
        (None, Some(t)) => {
            let mut ids = vec![tokenizer.bos_id()];
            ids.extend(tokenizer.encode(&parse::text_file(t)?));
            (ids, t.clone())
        }
        (None, None) => anyhow::bail!("give --data or --text"),
    };
    if let Some(n) = a.max_tokens {
        tokens.truncate(n);
    }
    pgolf_rt::eval::plan::check_tokens(&tokens, weights.config.vocab_size)
        .with_context(|| source.clone())?;
    let plan = eval_plan(&a, &weights.config)?;
    plan.validate()?;
    if audit_fault()? != pgolf_rt::eval::ttt::Fault::None {
        anyhow::ensure!(
            a.audit && a.ttt.mode() == Some("lora"),
            "PGOLF_AUDIT_FAULT makes LoRA TTT illegal on purpose, to test the audit: it needs \
             --ttt lora --audit (and never produces a score)"
        );
    }
    if a.estimate {
        let cost = print_cost(&plan, &weights.config, &tokens)?;
        if a.json {
            println!("{}", serde_json::json!({ "cost": cost }));
        }
        return Ok(());
    }
    let audit = a.audit.then(|| audit_plan(&a));
    let start = std::time::Instant::now();
    let pb = progress::bar(0, "targets");
    let mut on_progress = |p: &Progress| {
        pb.set_length(p.total as u64);
        pb.set_position(p.done as u64);
        if let Some(acc) = p.totals {
            let bpb = acc.nll_sum / std::f64::consts::LN_2 / acc.bytes as f64;
            pb.set_message(format!("{} bpb {bpb:.5}", p.unit));
            if p.done.is_multiple_of(10) || p.done == p.total {
                eprintln!(
                    "ttt: {} {}/{}, {} targets scored, partial val_bpb {bpb:.8}, elapsed {:.0}s",
                    p.unit,
                    p.done,
                    p.total,
                    acc.tokens,
                    start.elapsed().as_secs_f64()
                );
            }
        }
    };
    let prec = precision(a.precision)?;
    let (report, backend) = if plan.adapt == Adaptation::None {
        with_model!(a.backend, prec, &weights, |model| {
            let audit = match &audit {
                Some(ap) => Some(report_audit(
                    plan.audit_inference(&model, &tokens, ap)
                        .context("audit could not run")?,
                )?),
                None => None,
            };
            let mut r = plan
                .run_inference(&model, &tokens, &lut, Some(&mut on_progress))
                .context("evaluation failed")?;
            r.audit = audit;
            (r, model.backend_name())
        })
    } else {
        with_train_backend!(a.backend, prec, "--ttt", |be| {
            run_trained(
                &plan,
                audit.as_ref(),
                be,
                &weights,
                &tokens,
                &lut,
                &mut on_progress,
            )?
        })
    };
    pb.finish_and_clear();
    let mut j = describe(&a, &plan, &backend);
    print_result(&report.result, report.mixed.as_ref());
    let cost = print_cost(&plan, &weights.config, &tokens)?;
    if a.json {
        let r = &report.result;
        j["val_loss"] = r.val_loss.into();
        j["val_bpb"] = r.val_bpb.into();
        j["tokens"] = r.tokens.into();
        j["bytes"] = r.bytes.into();
        j["seconds"] = r.seconds.into();
        j["backend"] = backend.into();
        j["artifact"] = a.artifact.display().to_string().into();
        if let (Some(m), Some(c)) = (&report.mixed, &plan.mix) {
            j["mix"] = mix_json(m, c);
        }
        j["cost"] = cost;
        if let Some(rep) = &report.audit {
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

/// Prints the plan's cost line and returns it as the `--json` line's `cost` field.
fn print_cost(
    plan: &EvalPlan,
    model: &pgolf_rt::model::ModelConfig,
    tokens: &[u32],
) -> Result<serde_json::Value> {
    let cost = plan.cost(model, tokens)?;
    let h100 = cost.h100_seconds(8);
    let full = cost.scaled_to(pgolf_rt::eval::cost::CHALLENGE_VAL_TARGETS);
    let h100_full = full.h100_seconds(8);
    println!(
        "cost: {} forward + {} training tokens, {:.2} TFLOP; estimated on 8 H100s at PyTorch's \
         reference rates: {h100:.3} s here, {h100_full:.0} s over the challenge's {} val targets \
         ({} its 600 s eval budget; from FLOPs, the mixer not counted)",
        cost.forward_tokens,
        cost.train_tokens,
        (cost.forward_flops + cost.train_flops) / 1e12,
        full.targets,
        if h100_full <= 600.0 { "within" } else { "OVER" }
    );
    Ok(serde_json::json!({
        "forward_tokens": cost.forward_tokens,
        "train_tokens": cost.train_tokens,
        "tflop": (cost.forward_flops + cost.train_flops) / 1e12,
        "h100x8_seconds_estimate": h100,
        "h100x8_seconds_estimate_challenge_val": h100_full,
    }))
}

/// An adapting plan on a training backend: its audit (printed), then its evaluation.
fn run_trained<B: pgolf_rt::backend::train::TrainBackend + Clone>(
    plan: &EvalPlan,
    audit: Option<&AuditPlan>,
    be: B,
    weights: &pgolf_rt::model::ModelWeights,
    tokens: &[u32],
    lut: &pgolf_rt::tokenizer::ByteLut,
    on_progress: &mut pgolf_rt::eval::plan::OnProgress,
) -> Result<(pgolf_rt::eval::EvalReport, String)> {
    let name = be.name();
    let audit = match audit {
        Some(ap) => Some(report_audit(
            EvalPlan {
                audit: Some(ap.clone()),
                ..plan.clone()
            }
            .audit(be.clone(), weights, tokens, lut)
            .context("audit could not run")?,
        )?),
        None => None,
    };
    let mut r = plan
        .run(be, weights, tokens, lut, Some(on_progress))
        .with_context(|| format!("{} TTT evaluation failed", plan.adapt.name()))?;
    r.audit = audit;
    Ok((r, name))
}

/// Prints the run's header line and returns the plan's part of the `--json` line.
fn describe(a: &EvalArgs, plan: &EvalPlan, backend: &str) -> serde_json::Value {
    let stride = plan.stride.map_or("-".into(), |s| s.to_string());
    let mix = &a.mix;
    match &plan.adapt {
        Adaptation::None => {
            let mode = if plan.stride.is_some() {
                "sliding"
            } else {
                "standard"
            };
            println!(
                "{mode} eval  backend:{backend}  seq_len:{}  stride:{stride}",
                plan.seq_len
            );
            serde_json::json!({"mode": mode, "seq_len": plan.seq_len, "stride": plan.stride})
        }
        Adaptation::Lora(cfg) => {
            println!(
                "lora-ttt eval  backend:{backend}  rank:{} targets:{} lr:{} chunk:{} window:{} \
                 batch-docs:{}  mix:{mix}",
                cfg.rank,
                a.ttt.ttt_targets,
                cfg.optimizer.lr,
                cfg.chunk,
                cfg.window,
                cfg.batch_docs,
            );
            serde_json::json!({
                "mode": "lora-ttt", "ttt_rank": cfg.rank, "ttt_batch_docs": cfg.batch_docs,
                "ttt_lr": cfg.optimizer.lr, "ttt_chunk": cfg.chunk, "ttt_window": cfg.window,
            })
        }
        Adaptation::Full(cfg) => {
            let recipe = a.ttt.ttt_recipe.map(|r| r.to_string());
            println!(
                "full-ttt eval  backend:{backend}  recipe:{} chunk:{} seq_len:{} stride:{stride} \
                 epochs:{} optimizer:{} lr:{} lr_min:{} ramp:{} warmup:{} wd:{} clip:{} \
                 params:{} freeze_blocks:{} polyak:{}  mix:{mix}",
                recipe.as_deref().unwrap_or("-"),
                cfg.chunk,
                plan.seq_len,
                cfg.epochs,
                cfg.optimizer.name(),
                cfg.lr,
                cfg.lr_min,
                cfg.lr_ramp
                    .map_or("-".into(), |r| format!("{}x over {}", r.max_mult, r.over)),
                cfg.warmup_steps,
                cfg.weight_decay,
                cfg.grad_clip,
                cfg.params,
                cfg.freeze_blocks,
                cfg.polyak.map_or("-".into(), |d| d.to_string()),
            );
            serde_json::json!({
                "mode": "full-ttt", "ttt_chunk": cfg.chunk, "seq_len": plan.seq_len,
                "stride": plan.stride, "ttt_epochs": cfg.epochs, "ttt_lr": cfg.lr,
                "ttt_lr_min": cfg.lr_min, "ttt_freeze_blocks": cfg.freeze_blocks,
                "ttt_recipe": recipe, "ttt_optimizer": cfg.optimizer.name(),
                "ttt_weight_decay": cfg.weight_decay, "ttt_params": cfg.params.to_string(),
                "ttt_polyak": cfg.polyak, "ttt_lr_ramp": cfg.lr_ramp.map(|r| r.max_mult),
                "ttt_warmup_steps": cfg.warmup_steps,
            })
        }
    }
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

/// The `--ttt lora` settings of the command line.
fn lora_config(a: &EvalArgs) -> Result<pgolf_rt::eval::TttConfig> {
    use pgolf_rt::eval::TttConfig;
    use pgolf_rt::train::AdamConfig;
    let t = &a.ttt;
    let mut optimizer = AdamConfig {
        kind: t.ttt_optimizer.as_deref().unwrap_or("adam").parse()?,
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

/// The `--ttt full` settings of the command line: the recipe's (PR #461's by default), with
/// every flag given overriding its value.
fn full_config(
    a: &EvalArgs,
    model: &pgolf_rt::model::ModelConfig,
) -> Result<pgolf_rt::eval::FullTttConfig> {
    use pgolf_rt::eval::{FullTttConfig, LrRamp, TttOptimizer, TttRecipe};
    let t = &a.ttt;
    let geometry = FullTttConfig {
        seq_len: a.seq_len,
        stride: a.stride.or(if a.sliding { Some(64) } else { None }),
        batch: a.batch,
        train_seq: t.ttt_train_seq,
        chunk: t.ttt_chunk.unwrap_or(FullTttConfig::default().chunk),
        ..FullTttConfig::default()
    };
    let mut c = t
        .ttt_recipe
        .unwrap_or(TttRecipe::Pr461)
        .config(model, &geometry);
    let set = |x: &mut f32, v: Option<f32>| {
        if let Some(v) = v {
            *x = v;
        }
    };
    // A recipe with a flat schedule (lr_min = lr) stays flat under another --ttt-lr.
    let flat = c.lr_min == c.lr;
    c.chunk = t.ttt_chunk.unwrap_or(c.chunk);
    c.epochs = t.ttt_epochs.unwrap_or(c.epochs);
    c.train_batch = t.ttt_train_batch.unwrap_or(c.train_batch);
    c.warmup_steps = t.ttt_warmup_steps.unwrap_or(c.warmup_steps);
    c.freeze_blocks = t.ttt_freeze_blocks.unwrap_or(c.freeze_blocks);
    set(&mut c.lr, t.ttt_lr);
    set(&mut c.lr_min, t.ttt_lr_min);
    set(&mut c.weight_decay, t.ttt_weight_decay);
    set(&mut c.grad_clip, t.ttt_grad_clip);
    if let Some(p) = &t.ttt_params {
        c.params = p.clone();
    }
    if let Some(d) = t.ttt_polyak {
        c.polyak = Some(d);
    }
    if t.ttt_lr_ramp.is_some() || t.ttt_lr_ramp_over.is_some() {
        let r = c.lr_ramp.unwrap_or(LrRamp {
            max_mult: 1.0,
            over: 0.3,
        });
        c.lr_ramp = Some(LrRamp {
            max_mult: t.ttt_lr_ramp.unwrap_or(r.max_mult),
            over: t.ttt_lr_ramp_over.unwrap_or(r.over),
        });
    }
    match t.ttt_optimizer.as_deref() {
        None => {}
        Some("sgd") => c.optimizer = TttOptimizer::SGD,
        Some("adamw") => c.optimizer = TttOptimizer::ADAMW,
        Some(o) => anyhow::bail!("--ttt full takes --ttt-optimizer sgd or adamw, not {o:?}"),
    }
    if let Some(m) = t.ttt_momentum {
        match &mut c.optimizer {
            TttOptimizer::Sgd { momentum } => *momentum = m,
            TttOptimizer::AdamW { .. } => {
                anyhow::bail!("--ttt-momentum is SGD's; this run uses AdamW")
            }
        }
    }
    if t.ttt_lr_min.is_none() && (flat || c.lr_min > c.lr) {
        c.lr_min = c.lr;
    }
    check_forward(
        c.train_seq(),
        c.train_batch,
        "--ttt-train-seq x --ttt-train-batch",
    )?;
    Ok(c)
}
