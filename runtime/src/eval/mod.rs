//! Scoring exactly as the challenge does (spec section 7): per-target negative log-likelihood
//! accumulated in f64, bytes from the tokenizer's byte table, `val_bpb = nll / ln 2 / bytes`.
//!
//! Every scheme is expressed as a list of forward windows, each naming the targets it scores
//! (`windows.rs`); [`run_windows`] executes them in batches on any backend. Each target of the
//! stream is scored exactly once.

pub mod audit;
pub mod audit_ttt;
pub mod cost;
mod metric;
pub mod mixer;
pub mod plan;
mod score;
pub mod stream;
pub mod ttt;
pub mod ttt_batch;
pub mod ttt_full;
pub mod ttt_recipe;
pub(crate) mod windows;

pub use metric::{BpbAccumulator, EvalResult};
pub use plan::{Adaptation, AuditPlan, EvalPlan, EvalReport};
pub(crate) use score::{check_finite, text_score};
pub use score::{score_tokens, score_window, TextScore, TokenScore};
pub use stream::{AuditLog, StreamScorer};
pub use ttt::{eval_lora_ttt, eval_lora_ttt_mixed, eval_per_document, TttConfig};
pub use ttt_full::{eval_full_ttt, FullTttConfig, LrRamp, TttOptimizer};
pub use ttt_recipe::TttRecipe;
pub use windows::{run_windows, sliding_windows, standard_windows, truncate_for_eval, Window};

use crate::backend::Backend;
use crate::model::DeviceModel;
use crate::tokenizer::ByteLut;
use crate::Result;

/// Settings shared by the eval schemes.
pub struct EvalOptions<'a> {
    /// Forward window length (tokens of context including the scored ones).
    pub seq_len: usize,
    /// Windows per forward pass.
    pub batch: usize,
    /// Called with `(targets_done, targets_total)` after each batch.
    pub progress: Option<&'a mut dyn FnMut(usize, usize)>,
}

/// Standard eval (spec 7.1): non-overlapping windows of `seq_len` over the truncated stream.
pub fn eval_standard<B: Backend>(
    model: &DeviceModel<B>,
    tokens: &[u32],
    lut: &ByteLut,
    opts: EvalOptions,
) -> Result<EvalResult> {
    let stream = truncate_for_eval(tokens, opts.seq_len)?;
    let windows = standard_windows(stream.len(), opts.seq_len);
    accumulate(model, stream, lut, &windows, opts)
}

/// Sliding-window eval (spec 7.2): windows every `stride` tokens; the first window scores all of
/// its targets, later ones only those no earlier window scored (at most `stride`), so every
/// target is scored once with at least `seq_len - stride` tokens of context.
pub fn eval_sliding<B: Backend>(
    model: &DeviceModel<B>,
    tokens: &[u32],
    lut: &ByteLut,
    stride: usize,
    opts: EvalOptions,
) -> Result<EvalResult> {
    let stream = truncate_for_eval(tokens, opts.seq_len)?;
    let windows = sliding_windows(stream.len(), opts.seq_len, stride)?;
    accumulate(model, stream, lut, &windows, opts)
}

fn accumulate<B: Backend>(
    model: &DeviceModel<B>,
    stream: &[u32],
    lut: &ByteLut,
    windows: &[Window],
    opts: EvalOptions,
) -> Result<EvalResult> {
    let start = web_time::Instant::now();
    let mut acc = BpbAccumulator::default();
    run_windows(model, stream, windows, opts, |target, nll| {
        acc.add(nll, lut.bytes_for(stream[target], stream[target + 1]));
    })?;
    acc.result(start.elapsed().as_secs_f64()).finite()
}
