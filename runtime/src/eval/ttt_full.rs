//! Full-model score-first test-time training over the stream (spec 7.3, 7.4; PR #461 recipe,
//! and the seed submissions' recipes made legal, [`super::ttt_recipe`]).
//!
//! The `N'` targets are split into chunks of `C` targets. Every eval window (standard, spec
//! 7.1, or sliding, spec 7.2) belongs to the chunk holding its first scored target. For chunk
//! `c = 0, 1, …`:
//! 1. **score** all its windows with the current weights (each target once, in stream order,
//!    through a [`StreamScorer`], optionally an online mixer), or with their Polyak average
//!    when [`FullTttConfig::polyak`] is set;
//! 2. if `c` is not the last chunk, **train** on its targets only (already scored): they are cut
//!    into `floor(len / train_seq)` sequences, and `epochs` passes run over them in batches of
//!    `train_batch` sequences, each step on the mean NLL, with global-norm clipping and SGD with
//!    momentum or AdamW ([`TttOptimizer`]); only the parameters [`FullTttConfig::params`]
//!    selects, outside blocks `0..freeze_blocks`, train. The learning rate is cosine over chunks
//!    with a floor, `lr_c = lr_min + (lr − lr_min)·½(1 + cos(π c/(n−1)))`, times an optional
//!    ramp over the first chunks ([`LrRamp`]) and an optional linear warm-up over the first
//!    optimiser steps. With Polyak averaging, `avg ← d·avg + (1−d)·w` after every step.
//!
//! A target of chunk `c` is thus scored by weights built from the artifact and chunks `< c`
//! only, and each token trains the model only after it was scored: legal by construction.
//!
//! The weights, the optimiser state and the average live on the backend for the whole pass:
//! uploaded once, scored and trained in place (the step is backend ops: `sum_squares` for the
//! clip factor, `sgd_update` / `adam_update` and `ema_update` per trainable tensor; the
//! average is swapped in for scoring, not copied). Per training step the host reads the
//! squared gradient norm and the model's few scalar factors; nothing is re-uploaded.

use super::mixer::{for_each_target, MixedEval, MixerConfig};
use super::stream::StreamScorer;
use super::{
    run_windows, sliding_windows, standard_windows, truncate_for_eval, EvalOptions, EvalResult,
    Window,
};
use crate::backend::cpu::optim::{AdamStep, SgdStep};
use crate::backend::train::TrainBackend;
use crate::model::{ModelWeights, Scalars};
use crate::tokenizer::ByteLut;
use crate::train::params::frozen;
use crate::train::sgd::clip_coef;
use crate::train::{ParamSelect, TrainModel};
use crate::{Error, Result};

/// Full-model TTT settings; the defaults are the PR #461 recipe (spec 7.4) except that the
/// training sequence length follows the eval window.
#[derive(Debug, Clone, PartialEq)]
pub struct FullTttConfig {
    /// Targets per chunk (`C`).
    pub chunk: usize,
    /// Eval window length (`T`).
    pub seq_len: usize,
    /// Sliding-window stride (`None`: standard non-overlapping windows).
    pub stride: Option<usize>,
    /// Eval windows per forward.
    pub batch: usize,
    /// Training sequence length (`None`: `seq_len`).
    pub train_seq: Option<usize>,
    /// Training sequences per optimiser step.
    pub train_batch: usize,
    /// Passes over each scored chunk.
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Floor of the cosine schedule.
    pub lr_min: f32,
    /// Linear warm-up over the first optimiser steps (0: none).
    pub warmup_steps: usize,
    /// A learning-rate multiplier ramping up over the first chunks (PR #687's "adaptive LR").
    pub lr_ramp: Option<LrRamp>,
    pub optimizer: TttOptimizer,
    /// Weight decay: coupled (added to the gradient) with SGD, decoupled with AdamW, as torch.
    pub weight_decay: f32,
    /// Global gradient-norm clip (0: none).
    pub grad_clip: f32,
    /// The parameters that train, by state-dict name ([`ParamSelect::all`]: every one).
    pub params: ParamSelect,
    /// Blocks `0..freeze_blocks` are not trained (whatever `params` selects).
    pub freeze_blocks: usize,
    /// Score with the Polyak average of the trained weights, `avg ← d·avg + (1−d)·w` after each
    /// optimiser step, starting at the artifact's weights (PR #687 uses `d = 0.998`); training
    /// continues from the live weights. `None`: score with the live weights.
    pub polyak: Option<f32>,
}

/// The optimiser of full-model TTT.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TttOptimizer {
    /// `torch.optim.SGD` with momentum (the PR #461 recipe).
    Sgd { momentum: f32 },
    /// `torch.optim.AdamW` (the seed submissions' recipes).
    AdamW { beta1: f32, beta2: f32, eps: f32 },
}

impl TttOptimizer {
    /// SGD with the published momentum 0.9.
    pub const SGD: TttOptimizer = TttOptimizer::Sgd { momentum: 0.9 };
    /// AdamW with torch's default betas and eps.
    pub const ADAMW: TttOptimizer = TttOptimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };

    /// The name the command line takes (`sgd`, `adamw`).
    pub fn name(&self) -> &'static str {
        match self {
            TttOptimizer::Sgd { .. } => "sgd",
            TttOptimizer::AdamW { .. } => "adamw",
        }
    }
}

/// `lr_mult(c) = 1 + (max_mult − 1)·min(c / max(over·n, 1), 1)` for chunk `c` of `n`: the
/// learning rate grows while the model has seen little of the stream (PR #687: 3.0 over the
/// first 30% of the chunks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrRamp {
    pub max_mult: f32,
    /// Fraction of the chunks the ramp spans.
    pub over: f32,
}

impl LrRamp {
    /// The multiplier of chunk `c` of `n`.
    pub fn mult(&self, c: usize, n: usize) -> f64 {
        let span = (self.over as f64 * n as f64).max(1.0);
        1.0 + (self.max_mult as f64 - 1.0) * (c as f64 / span).min(1.0)
    }
}

impl Default for FullTttConfig {
    fn default() -> Self {
        FullTttConfig {
            chunk: 32_768,
            seq_len: 1024,
            stride: None,
            batch: 8,
            train_seq: None,
            train_batch: 32,
            epochs: 3,
            lr: 0.002,
            lr_min: 0.0,
            warmup_steps: 0,
            lr_ramp: None,
            optimizer: TttOptimizer::SGD,
            weight_decay: 0.0,
            grad_clip: 1.0,
            params: ParamSelect::all(),
            freeze_blocks: 0,
            polyak: None,
        }
    }
}

impl FullTttConfig {
    /// The training sequence length (the eval window unless set).
    pub fn train_seq(&self) -> usize {
        self.train_seq.unwrap_or(self.seq_len)
    }

    /// Checks the settings against a model of `layers` blocks.
    pub fn validate(&self, layers: usize) -> Result<()> {
        let bad = |m: String| Err(Error::Usage(format!("--ttt full: {m}")));
        if self.chunk == 0 || self.seq_len == 0 || self.batch == 0 {
            return bad("chunk, seq len and batch must be positive".into());
        }
        if self.train_seq() == 0 || self.train_batch == 0 {
            return bad("training sequence length and batch must be positive".into());
        }
        if !(self.lr.is_finite()
            && self.lr >= 0.0
            && self.lr_min.is_finite()
            && self.lr_min >= 0.0
            && self.lr_min <= self.lr)
        {
            return bad(format!(
                "need 0 <= lr_min {} <= lr {}",
                self.lr_min, self.lr
            ));
        }
        match self.optimizer {
            TttOptimizer::Sgd { momentum } if !(0.0..1.0).contains(&momentum) => {
                return bad(format!("SGD momentum {momentum} must be in [0, 1)"));
            }
            TttOptimizer::AdamW { beta1, beta2, eps }
                if !((0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && eps.is_finite()
                    && eps > 0.0) =>
            {
                return bad(format!(
                    "AdamW betas ({beta1}, {beta2}) must be in [0, 1) and eps {eps} > 0"
                ));
            }
            _ => {}
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight decay {} must be >= 0", self.weight_decay));
        }
        if let Some(d) = self.polyak {
            if !(0.0..=1.0).contains(&d) {
                return bad(format!("Polyak decay {d} must be in [0, 1]"));
            }
        }
        if let Some(r) = self.lr_ramp {
            let ok =
                r.max_mult.is_finite() && r.max_mult > 0.0 && r.over.is_finite() && r.over >= 0.0;
            if !ok {
                return bad(format!(
                    "learning-rate ramp to {}x over {} of the chunks: need a positive \
                     multiplier and a fraction >= 0",
                    r.max_mult, r.over
                ));
            }
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return bad("gradient clip must be >= 0".into());
        }
        if self.freeze_blocks > layers {
            return bad(format!(
                "cannot freeze {} of {layers} blocks",
                self.freeze_blocks
            ));
        }
        Ok(())
    }

    /// Learning rate of chunk `c` of `n` at optimiser step `step` (0-based, over the run).
    pub fn lr_at(&self, c: usize, n: usize, step: usize) -> f32 {
        let frac = if n > 1 {
            c as f64 / (n - 1) as f64
        } else {
            0.0
        };
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * frac).cos());
        let mut lr = self.lr_min as f64 + (self.lr - self.lr_min) as f64 * cos;
        if let Some(r) = self.lr_ramp {
            lr *= r.mult(c, n);
        }
        let warm = if self.warmup_steps > 0 {
            ((step + 1) as f64 / self.warmup_steps as f64).min(1.0)
        } else {
            1.0
        };
        (lr * warm) as f32
    }
}

/// Progress callback: `(chunks_done, chunks_total, running totals)`.
pub type FullTttProgress<'a> = dyn FnMut(usize, usize, &super::BpbAccumulator) + 'a;

/// The eval windows of each chunk: chunk `c` gets the windows whose first scored target lies in
/// `[c·C, (c+1)·C)`.
pub fn chunk_windows(windows: &[Window], chunk: usize, n_chunks: usize) -> Vec<Vec<Window>> {
    let mut out = vec![Vec::new(); n_chunks];
    for w in windows.iter().filter(|w| w.score_from < w.len) {
        let c = ((w.start + w.score_from) / chunk).min(n_chunks - 1);
        out[c].push(*w);
    }
    out
}

/// Full-model score-first TTT eval of `tokens` (truncated to whole windows as in spec 1.2),
/// optionally through an online mixer, on `backend`.
pub fn eval_full_ttt<B: TrainBackend + Clone>(
    backend: B,
    weights: &ModelWeights,
    tokens: &[u32],
    lut: &ByteLut,
    cfg: &FullTttConfig,
    mix: Option<&MixerConfig>,
    progress: Option<&mut FullTttProgress>,
) -> Result<(EvalResult, Option<MixedEval>)> {
    let stream = truncate_for_eval(tokens, cfg.seq_len)?;
    let mut sink = StreamScorer::new(stream, lut, weights.config.vocab_size, mix)?;
    full_ttt_into(backend, weights, cfg, &mut sink, progress)?;
    Ok(sink.finish())
}

/// The pass of [`eval_full_ttt`] into a caller's [`StreamScorer`]; its stream is used as is
/// (its length minus one must be a multiple of `cfg.seq_len`).
pub fn full_ttt_into<B: TrainBackend + Clone>(
    backend: B,
    weights: &ModelWeights,
    cfg: &FullTttConfig,
    sink: &mut StreamScorer,
    mut progress: Option<&mut FullTttProgress>,
) -> Result<()> {
    let layers = weights.config.num_layers;
    cfg.validate(layers)?;
    let stream = sink.stream();
    if truncate_for_eval(stream, cfg.seq_len)?.len() != stream.len() {
        return Err(Error::Usage(format!(
            "full TTT: {} targets are not a multiple of the window {}",
            stream.len() - 1,
            cfg.seq_len
        )));
    }
    let n_targets = stream.len() - 1;
    let windows = match cfg.stride {
        Some(s) => sliding_windows(stream.len(), cfg.seq_len, s)?,
        None => standard_windows(stream.len(), cfg.seq_len),
    };
    let n_chunks = n_targets.div_ceil(cfg.chunk);
    let per_chunk = chunk_windows(&windows, cfg.chunk, n_chunks);
    // The weights go up once; the optimiser state starts as zeros (SGD's first step replaces
    // its buffer, as torch's does) and the Polyak average as a copy of the weights.
    let mut model = TrainModel::new(backend, weights)?;
    let be = model.backend().clone();
    let leaves = model.params().leaves();
    cfg.params
        .check(leaves.iter().map(|(n, _, _)| n.as_str()))?;
    let trainable: Vec<bool> = leaves
        .iter()
        .map(|(name, _, _)| cfg.params.matches(name) && !frozen(name, cfg.freeze_blocks))
        .collect();
    if !trainable.contains(&true) {
        return Err(Error::Usage(format!(
            "full TTT: nothing to train (parameters {}, first {} blocks frozen)",
            cfg.params, cfg.freeze_blocks
        )));
    }
    let mut state = OptState::new(&be, &leaves, &trainable, cfg)?;
    drop(leaves);
    let mut step = 0usize;
    for (c, cw) in per_chunk.iter().enumerate() {
        // 1. Score the chunk with the weights trained on chunks < c only (or their average).
        if let Some(avg) = state.avg.as_mut() {
            swap_trainable(&mut model, &trainable, avg)?;
        }
        let scored = score_chunk(model.model(), stream, cw, cfg, sink);
        if let Some(avg) = state.avg.as_mut() {
            swap_trainable(&mut model, &trainable, avg)?;
        }
        scored?;
        if let Some(p) = progress.as_mut() {
            p(c + 1, n_chunks, sink.totals());
        }
        // 2. Train on the chunk just scored (never on the last one).
        if c + 1 == n_chunks || cfg.epochs == 0 {
            continue;
        }
        let cs = c * cfg.chunk;
        let ce = ((c + 1) * cfg.chunk).min(n_targets);
        let ts = cfg.train_seq();
        let seqs: Vec<usize> = (0..(ce - cs) / ts).map(|i| cs + i * ts).collect();
        for _ in 0..cfg.epochs {
            for group in seqs.chunks(cfg.train_batch) {
                let mut ids = Vec::with_capacity(group.len() * ts);
                let mut targets = Vec::with_capacity(group.len() * ts);
                for &s in group {
                    ids.extend_from_slice(&stream[s..s + ts]);
                    targets.extend_from_slice(&stream[s + 1..s + ts + 1]);
                }
                let rows: Vec<usize> = (0..ids.len()).collect();
                let (_, g) =
                    model.loss_sum_and_base_grads(&ids, group.len(), ts, &rows, &targets)?;
                let g = g.params;
                let grads: Vec<&B::Tensor> = g
                    .leaves()
                    .into_iter()
                    .zip(&trainable)
                    .filter(|(_, &t)| t)
                    .map(|((_, _, g), _)| g)
                    .collect();
                let norm = be.sum_squares(&grads)?.sqrt();
                let grad_scale = clip_coef(norm, cfg.grad_clip);
                let lr = cfg.lr_at(c, n_chunks, step);
                let weights: Vec<&mut B::Tensor> = model
                    .params_mut()
                    .leaves_mut()
                    .into_iter()
                    .zip(&trainable)
                    .filter(|(_, &t)| t)
                    .map(|((_, _, w), _)| w)
                    .collect();
                state.step(&be, weights, &grads, lr, grad_scale, step)?;
                refresh_scalars(&mut model)?;
                step += 1;
            }
        }
    }
    Ok(())
}

/// Scores the windows `cw` of one chunk into `sink`.
fn score_chunk<B: TrainBackend>(
    scorer: &crate::model::DeviceModel<B>,
    stream: &[u32],
    cw: &[Window],
    cfg: &FullTttConfig,
    sink: &mut StreamScorer,
) -> Result<()> {
    let opts = EvalOptions {
        seq_len: cfg.seq_len,
        batch: cfg.batch,
        progress: None,
    };
    if sink.wants_log_probs() {
        for_each_target(scorer, stream, cw, opts, |t| {
            let nll = -t.neural[t.y as usize];
            sink.score(t.index, nll, Some(t.neural))
        })
    } else {
        let mut err = None;
        run_windows(scorer, stream, cw, opts, |t, nll| {
            if err.is_none() {
                err = sink.score(t, nll, None).err();
            }
        })?;
        err.map_or(Ok(()), Err)
    }
}

/// The scalar factors the forward multiplies by, read again after the weights changed.
fn refresh_scalars<B: TrainBackend>(model: &mut TrainModel<B>) -> Result<()> {
    let held = Scalars::tensors(model.params());
    let vals = if held.is_empty() {
        Vec::new()
    } else {
        model.backend().read_values(&held)?
    };
    let scalars = Scalars::from_values(model.params(), &vals);
    model.refresh(scalars)
}

/// Exchanges the trainable weights of `model` with `other` (no copy: the tensors trade
/// places), then refreshes the scalar factors.
fn swap_trainable<B: TrainBackend>(
    model: &mut TrainModel<B>,
    trainable: &[bool],
    other: &mut [B::Tensor],
) -> Result<()> {
    let weights = model
        .params_mut()
        .leaves_mut()
        .into_iter()
        .zip(trainable)
        .filter(|(_, &t)| t)
        .map(|((_, _, w), _)| w);
    for (w, o) in weights.zip(other.iter_mut()) {
        std::mem::swap(w, o);
    }
    refresh_scalars(model)
}

/// The optimiser state of the trainable tensors, on the backend: SGD's momentum buffers or
/// AdamW's two moments, and the Polyak average.
struct OptState<T> {
    optimizer: TttOptimizer,
    weight_decay: f32,
    polyak: Option<f32>,
    /// SGD: the momentum buffer; AdamW: the first moment.
    m: Vec<T>,
    /// AdamW's second moment (empty for SGD).
    v: Vec<T>,
    avg: Option<Vec<T>>,
}

impl<T> OptState<T> {
    fn new<B: TrainBackend<Tensor = T>>(
        be: &B,
        leaves: &[(String, crate::model::Dims, &T)],
        trainable: &[bool],
        cfg: &FullTttConfig,
    ) -> Result<Self> {
        let live: Vec<&T> = leaves
            .iter()
            .zip(trainable)
            .filter(|(_, &t)| t)
            .map(|((_, _, w), _)| *w)
            .collect();
        let zeros = || -> Result<Vec<T>> {
            live.iter()
                .map(|w| {
                    let (r, c) = be.shape(w);
                    be.zeros(r, c)
                })
                .collect()
        };
        let v = match cfg.optimizer {
            TttOptimizer::Sgd { .. } => Vec::new(),
            TttOptimizer::AdamW { .. } => zeros()?,
        };
        let avg = match cfg.polyak {
            Some(_) => Some(live.iter().map(|w| be.copy(w)).collect::<Result<_>>()?),
            None => None,
        };
        Ok(OptState {
            optimizer: cfg.optimizer,
            weight_decay: cfg.weight_decay,
            polyak: cfg.polyak,
            m: zeros()?,
            v,
            avg,
        })
    }

    /// One optimiser step (`step` counts from 0 over the run) of the trainable `weights`.
    fn step<B: TrainBackend<Tensor = T>>(
        &mut self,
        be: &B,
        mut weights: Vec<&mut T>,
        grads: &[&T],
        lr: f32,
        grad_scale: f32,
        step: usize,
    ) -> Result<()> {
        match self.optimizer {
            TttOptimizer::Sgd { momentum } => {
                let s = SgdStep {
                    lr,
                    momentum,
                    weight_decay: self.weight_decay,
                    grad_scale,
                    first: step == 0,
                };
                for ((w, g), b) in weights.iter_mut().zip(grads).zip(&mut self.m) {
                    be.sgd_update(w, g, b, &s)?;
                }
            }
            TttOptimizer::AdamW { beta1, beta2, eps } => {
                // torch.optim.AdamW: bias corrections in f64 at step t = step + 1, the decay
                // `1 − lr·wd` first; the clipped gradient `g·grad_scale`.
                let t = (step + 1) as i32;
                let bc1 = 1.0 - (beta1 as f64).powi(t);
                let bc2 = 1.0 - (beta2 as f64).powi(t);
                let s = AdamStep {
                    beta1,
                    beta2,
                    eps,
                    step_size: (lr as f64 / bc1) as f32,
                    bc2_sqrt: bc2.sqrt() as f32,
                    decay: 1.0 - lr * self.weight_decay,
                };
                for (((w, g), m), v) in weights
                    .iter_mut()
                    .zip(grads)
                    .zip(&mut self.m)
                    .zip(&mut self.v)
                {
                    if grad_scale == 1.0 {
                        be.adam_update(w, g, m, v, &s)?;
                    } else {
                        be.adam_update(w, &be.scaled(g, grad_scale)?, m, v, &s)?;
                    }
                }
            }
        }
        if let (Some(avg), Some(d)) = (self.avg.as_mut(), self.polyak) {
            for (a, w) in avg.iter_mut().zip(&weights) {
                be.ema_update(a, w, d)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_with_floor_and_warmup() {
        let c = FullTttConfig {
            lr: 1.0,
            lr_min: 0.1,
            warmup_steps: 4,
            ..FullTttConfig::default()
        };
        assert!((c.lr_at(0, 5, 100) - 1.0).abs() < 1e-6);
        assert!((c.lr_at(4, 5, 100) - 0.1).abs() < 1e-6);
        assert!((c.lr_at(2, 5, 100) - 0.55).abs() < 1e-6);
        assert!((c.lr_at(0, 5, 0) - 0.25).abs() < 1e-6);
    }

    #[test]
    fn windows_go_to_the_chunk_of_their_first_scored_target() {
        let ws = sliding_windows(101, 16, 4).unwrap();
        let per = chunk_windows(&ws, 30, 4);
        let mut next = 0;
        for (c, cw) in per.iter().enumerate() {
            for w in cw {
                assert_eq!(w.start + w.score_from, next);
                assert_eq!((w.start + w.score_from) / 30, c);
                next = w.start + w.len;
            }
        }
        assert_eq!(next, 100);
    }
}
