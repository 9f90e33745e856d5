//! One evaluation as a value: the windows, the adaptation (none, per-document LoRA TTT or
//! full-model TTT, any recipe), the online mixer and the legality audit, combined freely.
//! `pgolf-rt eval` only fills an [`EvalPlan`] from its flags; the embedding API and the
//! bindings run the same plans.
//!
//! ```no_run
//! use pgolf_rt::backend::cpu::CpuBackend;
//! use pgolf_rt::eval::plan::{Adaptation, AuditPlan, EvalPlan};
//! use pgolf_rt::eval::{FullTttConfig, TttRecipe};
//! # fn f(weights: &pgolf_rt::model::ModelWeights, tokens: &[u32], lut: &pgolf_rt::tokenizer::ByteLut) -> pgolf_rt::Result<()> {
//! let ttt = TttRecipe::Pr687.config(&weights.config, &FullTttConfig::default());
//! let plan = EvalPlan {
//!     stride: Some(64),
//!     adapt: Adaptation::Full(ttt),
//!     audit: Some(AuditPlan::default()),
//!     ..EvalPlan::default()
//! };
//! let report = plan.run(CpuBackend::new(), weights, tokens, lut, None)?;
//! println!("{} bits per byte, audit passed", report.result.val_bpb);
//! # Ok(()) }
//! ```

use super::audit::{audit_eval, AuditConfig, AuditReport};
use super::audit_ttt::audit_ttt;
use super::mixer::{eval_mixed, MixedEval, MixerConfig};
use super::ttt::{eval_lora_ttt_mixed, lora_ttt_into, TttConfig};
use super::ttt_full::{eval_full_ttt, full_ttt_into, FullTttConfig};
use super::EvalResult;
use super::{eval_sliding, eval_standard, truncate_for_eval, BpbAccumulator, EvalOptions};
use crate::backend::train::TrainBackend;
use crate::backend::Backend;
use crate::data::find_documents;
use crate::model::{DeviceModel, ModelWeights};
use crate::tokenizer::ByteLut;
use crate::train::TrainModel;
use crate::{Error, Result};

/// What adapts the model while it is scored; every variant scores each target before any
/// update that could use it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Adaptation {
    /// The artifact's weights, unchanged.
    #[default]
    None,
    /// Per-document LoRA TTT (spec 7.5); its own window and chunks, the plan's `seq_len` only
    /// truncates the stream as the reference does.
    Lora(TttConfig),
    /// Full-model score-first chunked TTT (spec 7.4, [`super::TttRecipe`]); its `seq_len`,
    /// `stride` and `batch` are replaced by the plan's.
    Full(FullTttConfig),
}

impl Adaptation {
    /// `none`, `lora` or `full`.
    pub fn name(&self) -> &'static str {
        match self {
            Adaptation::None => "none",
            Adaptation::Lora(_) => "lora",
            Adaptation::Full(_) => "full",
        }
    }
}

/// How much of the data the legality audit re-runs.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPlan {
    /// Windows of the stream the audit covers (without TTT, and with full TTT).
    pub windows: usize,
    /// Documents it covers with LoRA TTT.
    pub docs: usize,
    pub check: AuditConfig,
}

impl Default for AuditPlan {
    fn default() -> Self {
        AuditPlan {
            windows: 2,
            docs: 3,
            check: AuditConfig::default(),
        }
    }
}

/// An evaluation: windows x adaptation x mixer x audit.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPlan {
    /// Window length (tokens of context, scored ones included).
    pub seq_len: usize,
    /// Sliding-window stride; `None`: standard non-overlapping windows.
    pub stride: Option<usize>,
    /// Windows per forward pass.
    pub batch: usize,
    pub adapt: Adaptation,
    /// An online mixture over the model's distributions ([`super::mixer`]).
    pub mix: Option<MixerConfig>,
    /// Audit the pass on a sample of the data before the evaluation ([`EvalPlan::run`] stops
    /// with an error when it fails).
    pub audit: Option<AuditPlan>,
}

impl Default for EvalPlan {
    /// Standard windows of 1,024 tokens, 8 per forward, no adaptation, mixer or audit.
    fn default() -> Self {
        EvalPlan {
            seq_len: 1024,
            stride: None,
            batch: 8,
            adapt: Adaptation::None,
            mix: None,
            audit: None,
        }
    }
}

/// Where an evaluation is, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    /// What `done` and `total` count: `targets`, `docs` (LoRA TTT) or `chunks` (full TTT).
    pub unit: &'static str,
    /// The totals scored so far (TTT passes).
    pub totals: Option<&'a BpbAccumulator>,
}

/// A progress callback.
pub type OnProgress<'a> = dyn FnMut(&Progress) + 'a;

/// What an [`EvalPlan`] produced.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// The score (the mixture's, with a mixer).
    pub result: EvalResult,
    /// The mixer's per-expert results.
    pub mixed: Option<MixedEval>,
    /// The audit's checks, when the plan has one (it passed: a failed audit is an error).
    pub audit: Option<AuditReport>,
}

impl EvalPlan {
    /// The full-TTT settings with the plan's geometry.
    fn full(&self, c: &FullTttConfig) -> FullTttConfig {
        FullTttConfig {
            seq_len: self.seq_len,
            stride: self.stride,
            batch: self.batch,
            ..c.clone()
        }
    }

    /// Checks the plan's own settings (each pass checks the rest against the model).
    pub fn validate(&self) -> Result<()> {
        if self.seq_len == 0 || self.batch == 0 {
            return Err(Error::Usage(
                "eval: window length and batch must be at least 1".into(),
            ));
        }
        if let Some(s) = self.stride {
            if s == 0 || s > self.seq_len {
                return Err(Error::Usage(format!(
                    "eval: stride {s} must be in 1..={} (the window length)",
                    self.seq_len
                )));
            }
        }
        if let Some(m) = &self.mix {
            m.validate()?;
        }
        Ok(())
    }

    /// The audit, then the evaluation, of `tokens` with the artifact's `weights` on `backend`
    /// (any adaptation). A failed audit is an error that carries its report.
    pub fn run<B: TrainBackend + Clone>(
        &self,
        backend: B,
        weights: &ModelWeights,
        tokens: &[u32],
        lut: &ByteLut,
        mut progress: Option<&mut OnProgress>,
    ) -> Result<EvalReport> {
        check_tokens(tokens, weights.config.vocab_size)?;
        let audit = match &self.audit {
            Some(a) => Some(passed(self.audit_with(
                backend.clone(),
                weights,
                tokens,
                lut,
                a,
            )?)?),
            None => None,
        };
        let unit = match self.adapt {
            Adaptation::Lora(_) => "docs",
            _ => "chunks",
        };
        let mut on_ttt = |done: usize, total: usize, acc: &BpbAccumulator| {
            if let Some(p) = progress.as_mut() {
                p(&Progress {
                    done,
                    total,
                    unit,
                    totals: Some(acc),
                })
            }
        };
        let mix = self.mix.as_ref();
        let (result, mixed) = match &self.adapt {
            Adaptation::None => {
                let model = DeviceModel::new(backend, weights)?;
                self.score(&model, tokens, lut, progress)?
            }
            Adaptation::Lora(c) => {
                self.validate()?;
                let stream = truncate_for_eval(tokens, self.seq_len)?;
                let model = TrainModel::new(backend, weights)?;
                eval_lora_ttt_mixed(&model, stream, lut, c, mix, Some(&mut on_ttt))?
            }
            Adaptation::Full(c) => {
                self.validate()?;
                let cfg = self.full(c);
                eval_full_ttt(backend, weights, tokens, lut, &cfg, mix, Some(&mut on_ttt))?
            }
        };
        Ok(EvalReport {
            result: result.finite()?,
            mixed,
            audit,
        })
    }

    /// [`EvalPlan::run`] for a plan without adaptation, on a model already on any backend
    /// (inference-only backends included).
    pub fn run_inference<B: Backend>(
        &self,
        model: &DeviceModel<B>,
        tokens: &[u32],
        lut: &ByteLut,
        progress: Option<&mut OnProgress>,
    ) -> Result<EvalReport> {
        check_tokens(tokens, model.config.vocab_size)?;
        let audit = match &self.audit {
            Some(a) => Some(passed(self.audit_inference(model, tokens, a)?)?),
            None => None,
        };
        let (result, mixed) = self.score(model, tokens, lut, progress)?;
        Ok(EvalReport {
            result: result.finite()?,
            mixed,
            audit,
        })
    }

    /// The legality audit of the plan on a sample of `tokens` (`plan.audit`'s size, or the
    /// default), whatever its outcome.
    pub fn audit<B: TrainBackend + Clone>(
        &self,
        backend: B,
        weights: &ModelWeights,
        tokens: &[u32],
        lut: &ByteLut,
    ) -> Result<AuditReport> {
        let a = self.audit.clone().unwrap_or_default();
        self.audit_with(backend, weights, tokens, lut, &a)
    }

    fn audit_with<B: TrainBackend + Clone>(
        &self,
        backend: B,
        weights: &ModelWeights,
        tokens: &[u32],
        lut: &ByteLut,
        a: &AuditPlan,
    ) -> Result<AuditReport> {
        self.validate()?;
        let vocab = weights.config.vocab_size;
        let mix = self.mix.as_ref();
        let stream = truncate_for_eval(tokens, self.seq_len)?;
        match &self.adapt {
            Adaptation::None => {
                self.audit_inference(&DeviceModel::new(backend, weights)?, tokens, a)
            }
            Adaptation::Full(c) => {
                let mut cfg = self.full(c);
                let n = (a.windows.max(2).saturating_mul(cfg.seq_len) + 1).min(stream.len());
                let sample = truncate_for_eval(&stream[..n], cfg.seq_len)?;
                // Chunks no longer than a window, so the sample sees updates between chunks.
                cfg.chunk = cfg.chunk.min(cfg.seq_len);
                let targets = sample.len() - 1;
                audit_ttt(sample, lut, vocab, mix, &a.check, targets, &mut |sink| {
                    full_ttt_into(backend.clone(), weights, &cfg, sink, None)
                })
            }
            Adaptation::Lora(c) => {
                let docs: Vec<_> = find_documents(stream)
                    .into_iter()
                    .filter(|d| d.len >= 2)
                    .take(a.docs.max(1))
                    .collect();
                let end = docs.last().map_or(0, |d| d.start + d.len);
                let sample = &stream[..end.min(stream.len())];
                let cfg = TttConfig {
                    max_docs: None,
                    ..c.clone()
                };
                let expected: usize = find_documents(sample)
                    .iter()
                    .filter(|d| d.len >= 2)
                    .map(|d| d.len - 1)
                    .sum();
                let model = TrainModel::new(backend, weights)?;
                audit_ttt(sample, lut, vocab, mix, &a.check, expected, &mut |sink| {
                    lora_ttt_into(&model, sink.stream(), &cfg, sink, None)
                })
            }
        }
    }

    /// The audit of a plan without adaptation, on a model on any backend.
    pub fn audit_inference<B: Backend>(
        &self,
        model: &DeviceModel<B>,
        tokens: &[u32],
        a: &AuditPlan,
    ) -> Result<AuditReport> {
        self.inference_only()?;
        audit_eval(
            model,
            tokens,
            self.seq_len,
            self.stride,
            self.batch,
            a.windows,
            self.mix.as_ref(),
            &a.check,
        )
    }

    fn inference_only(&self) -> Result<()> {
        self.validate()?;
        match self.adapt {
            Adaptation::None => Ok(()),
            _ => Err(Error::Usage(format!(
                "eval: {} TTT trains the model: run the plan on a training backend \
                 (EvalPlan::run)",
                self.adapt.name()
            ))),
        }
    }

    /// The evaluation without adaptation.
    fn score<B: Backend>(
        &self,
        model: &DeviceModel<B>,
        tokens: &[u32],
        lut: &ByteLut,
        mut progress: Option<&mut OnProgress>,
    ) -> Result<(EvalResult, Option<MixedEval>)> {
        self.inference_only()?;
        let mut on_progress = |done: usize, total: usize| {
            if let Some(p) = progress.as_mut() {
                p(&Progress {
                    done,
                    total,
                    unit: "targets",
                    totals: None,
                });
            }
        };
        let opts = EvalOptions {
            seq_len: self.seq_len,
            batch: self.batch,
            progress: Some(&mut on_progress),
        };
        Ok(match (&self.mix, self.stride) {
            (Some(c), stride) => {
                let m = eval_mixed(model, tokens, lut, stride, c, opts)?;
                (m.result, Some(m))
            }
            (None, Some(s)) => (eval_sliding(model, tokens, lut, s, opts)?, None),
            (None, None) => (eval_standard(model, tokens, lut, opts)?, None),
        })
    }
}

/// Errors for the first token id outside a vocabulary of `vocab` (a stream for another model).
pub fn check_tokens(tokens: &[u32], vocab: usize) -> Result<()> {
    match tokens.iter().find(|&&t| t as usize >= vocab) {
        None => Ok(()),
        Some(bad) => Err(Error::Usage(format!(
            "token id {bad} is outside the model's vocabulary of {vocab}"
        ))),
    }
}

/// The audit's report, or an error carrying it when a check failed.
fn passed(r: AuditReport) -> Result<AuditReport> {
    if r.passed() {
        Ok(r)
    } else {
        Err(Error::Usage(format!("legality audit FAILED:\n{r}")))
    }
}
