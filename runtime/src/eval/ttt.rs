//! Per-document LoRA test-time training, score-then-adapt (spec 7.3, 7.5).
//!
//! For each document (BOS-delimited, spans inclusive of the next BOS, spec 1.3) with `P = len−1`
//! targets, chunk `i` covers targets `[iK, min((i+1)K, P))`; its forward window is the document's
//! tokens `[max(0, end − T_ctx), end)` (never before the document's BOS). For each chunk in order:
//! 1. forward with the current adapters;
//! 2. **score**: add the NLL and bytes of the chunk's targets to the totals;
//! 3. if this is not the document's last chunk: loss = mean NLL over the chunk, backward into
//!    the adapters only, one optimiser step (`epochs` steps, each on this already-scored chunk).
//!
//! Adapters (`A ~ U(±1/sqrt(in))`, `B = 0`) and the optimiser state are fresh for every
//! document, so a token's score only ever depends on the artifact and on earlier tokens of its
//! own document, each used for training only after it was scored.

use super::metric::{BpbAccumulator, EvalResult};
use super::mixer::{MixedEval, MixerConfig};
use super::stream::StreamScorer;
use crate::backend::train::TrainBackend;
use crate::backend::Backend;
use crate::data::{find_documents, Document};
use crate::model::DeviceModel;
use crate::tokenizer::ByteLut;
use crate::train::{AdamConfig, DeviceAdam, DeviceLora, Lora, LoraTargets, Tape, TrainModel};
use crate::{Error, Result};

/// LoRA TTT settings; the defaults are the published recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct TttConfig {
    pub rank: usize,
    pub targets: LoraTargets,
    pub optimizer: AdamConfig,
    /// Targets per chunk (`K`).
    pub chunk: usize,
    /// Forward window in tokens (`T_ctx`).
    pub window: usize,
    /// Optimiser steps per scored chunk (passes over the training set below).
    pub epochs: usize,
    /// Train each pass on every chunk scored so far (`0..=i`, one step per chunk) instead of
    /// only the chunk just scored. Legal either way: only already-scored chunks are used.
    pub replay_scored: bool,
    /// Documents with fewer tokens are scored with the same chunks but never adapted.
    pub min_doc_len: usize,
    /// Seed of the `A` initialisation (mixed with the document index).
    pub seed: u64,
    /// Evaluate only the first N documents.
    pub max_docs: Option<usize>,
    /// Documents advancing chunk by chunk together in one batched forward/backward
    /// ([`super::ttt_batch`]); each keeps its own adapters and optimiser. 1: one at a time.
    pub batch_docs: usize,
    /// A deliberately illegal variant, only to prove that the legality audit catches it
    /// ([`Fault::None`] everywhere else).
    pub fault: Fault,
}

/// Deliberately illegal TTT variants, injected only to prove the audit catches them
/// (`tests/audit_ttt.rs`; the CLI takes `PGOLF_AUDIT_FAULT` and only together with `--audit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// The legal order: score a chunk, then adapt on it.
    #[default]
    None,
    /// Adapt on a chunk (one optimiser step on its own targets) before scoring it: each score
    /// then depends on later tokens of its chunk.
    AdaptBeforeScore,
}

impl std::str::FromStr for Fault {
    type Err = Error;
    fn from_str(s: &str) -> Result<Fault> {
        match s {
            "none" | "" => Ok(Fault::None),
            "adapt-before-score" => Ok(Fault::AdaptBeforeScore),
            other => Err(Error::Usage(format!(
                "unknown audit fault {other:?} (none, adapt-before-score)"
            ))),
        }
    }
}

impl Default for TttConfig {
    fn default() -> Self {
        TttConfig {
            rank: 8,
            targets: LoraTargets::default(),
            optimizer: AdamConfig::default(),
            chunk: 256,
            window: 1024,
            epochs: 1,
            replay_scored: false,
            min_doc_len: 0,
            seed: 1337,
            max_docs: None,
            batch_docs: 1,
            fault: Fault::None,
        }
    }
}

/// One chunk of a document: window `[win_start, end)` (document positions), scoring targets
/// `[chunk_start, end)` (target `j` is document token `j+1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocChunk {
    pub win_start: usize,
    pub chunk_start: usize,
    pub end: usize,
}

/// The chunks of a document of `len` tokens (spec 7.5 geometry).
pub fn doc_chunks(len: usize, chunk: usize, window: usize) -> Vec<DocChunk> {
    let p = len.saturating_sub(1);
    (0..p.div_ceil(chunk.max(1)))
        .map(|i| {
            let cs = i * chunk;
            let end = ((i + 1) * chunk).min(p);
            DocChunk {
                win_start: end.saturating_sub(window.max(1)).min(cs),
                chunk_start: cs,
                end,
            }
        })
        .collect()
}

pub(crate) fn check_config(cfg: &TttConfig) -> Result<()> {
    if cfg.chunk == 0 || cfg.window < cfg.chunk {
        return Err(Error::Usage(format!(
            "TTT chunk {} must be positive and at most the window {}",
            cfg.chunk, cfg.window
        )));
    }
    if cfg.batch_docs == 0 {
        return Err(Error::Usage(
            "TTT batch of documents must be at least 1".into(),
        ));
    }
    if cfg.rank == 0 {
        return Err(Error::Usage("TTT LoRA rank must be at least 1".into()));
    }
    let o = &cfg.optimizer;
    if !(o.lr.is_finite() && o.lr >= 0.0 && o.eps.is_finite() && o.eps > 0.0) {
        return Err(Error::Usage(format!(
            "TTT learning rate {} must be a finite number >= 0 (and eps {} > 0)",
            o.lr, o.eps
        )));
    }
    if !((0.0..1.0).contains(&o.beta1) && (0.0..1.0).contains(&o.beta2)) {
        return Err(Error::Usage(format!(
            "TTT Adam betas {} and {} must be in [0, 1)",
            o.beta1, o.beta2
        )));
    }
    Ok(())
}

pub(crate) fn doc_seed(seed: u64, doc: usize) -> u64 {
    seed ^ (doc as u64).wrapping_mul(0xA076_1D64_78BD_642F)
}

/// Scores one document (`doc` = its tokens, BOS first) with LoRA TTT; returns the NLL of each of
/// its `len − 1` targets in order.
pub fn ttt_document<B: TrainBackend>(
    model: &TrainModel<B>,
    doc: &[u32],
    cfg: &TttConfig,
    doc_index: usize,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(doc.len().saturating_sub(1));
    ttt_document_scored(model, doc, cfg, doc_index, false, |s| {
        out.extend_from_slice(s.nll);
        Ok(())
    })?;
    Ok(out)
}

/// What [`ttt_document_scored`] hands out for each chunk, computed with the adapters as they
/// were before any update that uses this chunk.
#[derive(Debug, Clone, Copy)]
pub struct ScoredChunk<'a> {
    pub chunk: DocChunk,
    /// NLL of the chunk's targets `[chunk_start, end)`, in order.
    pub nll: &'a [f32],
    /// Their full log-probabilities `[end − chunk_start, vocab]`, when requested.
    pub log_probs: Option<&'a [f32]>,
}

/// [`ttt_document`] with a callback: `on_chunk` receives each chunk's scores (and, with
/// `log_probs`, the full distributions) right after they are computed, before the adapters take
/// the step that uses the chunk; chunks come in document order.
pub fn ttt_document_scored<B: TrainBackend>(
    model: &TrainModel<B>,
    doc: &[u32],
    cfg: &TttConfig,
    doc_index: usize,
    log_probs: bool,
    mut on_chunk: impl FnMut(ScoredChunk) -> Result<()>,
) -> Result<()> {
    check_config(cfg)?;
    let vocab = model.config().vocab_size;
    let chunks = doc_chunks(doc.len(), cfg.chunk, cfg.window);
    let adapt = doc.len() >= cfg.min_doc_len && cfg.epochs > 0;
    let lora = Lora::new(
        model.config(),
        cfg.targets,
        cfg.rank,
        doc_seed(cfg.seed, doc_index),
    )?;
    // The adapters go to the device once and are stepped there, with their optimizer state:
    // per step only the window's ids cross (and the scores come back).
    let mut dev = model.upload_lora(&lora)?;
    let mut opt = DeviceAdam::new(cfg.optimizer);
    let mut step = |tape: &Tape<B::Tensor>,
                    rows: &[usize],
                    targets: &[u32],
                    dev: &mut DeviceLora<B::Tensor>|
     -> Result<()> {
        let dnll = vec![1.0 / rows.len() as f32; rows.len()];
        let g = model.backward_lora_on_device(tape, rows, targets, &dnll, dev)?;
        let grads: Vec<&B::Tensor> = g.iter().flat_map(|(a, b)| [a, b]).collect();
        opt.step(model.backend(), &mut dev.tensors_mut(), &grads)
    };
    for (i, c) in chunks.iter().enumerate() {
        let ids = &doc[c.win_start..c.end];
        let targets_all = &doc[c.win_start + 1..c.end + 1];
        let rows: Vec<usize> = (c.chunk_start - c.win_start..c.end - c.win_start).collect();
        let targets: Vec<u32> = rows.iter().map(|&r| targets_all[r]).collect();
        let mut tape = model.forward(ids, 1, ids.len(), Some(&dev))?;
        if cfg.fault == Fault::AdaptBeforeScore && adapt {
            // Illegal on purpose (audit tests only): a step on this chunk's own targets first.
            step(&tape, &rows, &targets, &mut dev)?;
            tape = model.forward(ids, 1, ids.len(), Some(&dev))?;
        }
        // Scored before any update that uses this chunk (but for the fault above).
        if log_probs {
            let lp = model.log_probs(&tape, &rows, Some(&dev))?;
            if lp.len() != rows.len() * vocab {
                return Err(Error::Backend(format!(
                    "TTT: log_probs returned {} values for {} rows",
                    lp.len(),
                    rows.len()
                )));
            }
            let nll: Vec<f32> = targets
                .iter()
                .enumerate()
                .map(|(r, &y)| -lp[r * vocab + y as usize])
                .collect();
            on_chunk(ScoredChunk {
                chunk: *c,
                nll: &nll,
                log_probs: Some(&lp),
            })?;
        } else {
            let nll = model.nll(&tape, &rows, &targets, Some(&dev))?;
            on_chunk(ScoredChunk {
                chunk: *c,
                nll: &nll,
                log_probs: None,
            })?;
        }
        if !adapt || i + 1 == chunks.len() {
            continue;
        }
        let mut tape = Some(tape);
        for _ in 0..cfg.epochs {
            let first = if cfg.replay_scored { 0 } else { i };
            for (j, cj) in chunks.iter().enumerate().take(i + 1).skip(first) {
                let ids = &doc[cj.win_start..cj.end];
                let rows: Vec<usize> =
                    (cj.chunk_start - cj.win_start..cj.end - cj.win_start).collect();
                let targets: Vec<u32> = rows.iter().map(|&r| doc[cj.win_start + 1 + r]).collect();
                // The scoring forward doubles as the first training forward of this chunk.
                let t = match tape.take().filter(|_| j == i) {
                    Some(t) => t,
                    None => model.forward(ids, 1, ids.len(), Some(&dev))?,
                };
                step(&t, &rows, &targets, &mut dev)?;
            }
        }
    }
    Ok(())
}

/// Per-document LoRA TTT over a token stream: calls `on_doc(k, document, nll_of_its_targets)`
/// for every document in order (each target of each document scored once).
pub fn ttt_stream<B: TrainBackend>(
    model: &TrainModel<B>,
    tokens: &[u32],
    cfg: &TttConfig,
    mut on_doc: impl FnMut(usize, &Document, &[f32]) -> Result<()>,
) -> Result<()> {
    check_config(cfg)?;
    for (k, d) in select_docs(tokens, cfg.max_docs).iter().enumerate() {
        let nll = ttt_document(model, &tokens[d.start..d.start + d.len], cfg, k)?;
        on_doc(k, d, &nll)?;
    }
    Ok(())
}

/// Progress callback: `(docs_done, docs_total, running totals)`.
pub type TttProgress<'a> = dyn FnMut(usize, usize, &BpbAccumulator) + 'a;

/// Per-document LoRA TTT eval of a token stream. `progress(docs_done, docs_total, totals)` is
/// called after each document.
pub fn eval_lora_ttt<B: TrainBackend>(
    model: &TrainModel<B>,
    tokens: &[u32],
    lut: &ByteLut,
    cfg: &TttConfig,
    progress: Option<&mut TttProgress>,
) -> Result<EvalResult> {
    Ok(eval_lora_ttt_mixed(model, tokens, lut, cfg, None, progress)?.0)
}

/// [`eval_lora_ttt`] with an optional online mixer on top: every scored target's neural
/// distribution (computed with the document's adapters *before* the step that uses its chunk)
/// goes through one [`crate::eval::mixer::Mixer`] in stream order, so the mixer's counts and
/// weights, like the adapters, only ever hold targets already scored.
pub fn eval_lora_ttt_mixed<B: TrainBackend>(
    model: &TrainModel<B>,
    tokens: &[u32],
    lut: &ByteLut,
    cfg: &TttConfig,
    mix: Option<&MixerConfig>,
    progress: Option<&mut TttProgress>,
) -> Result<(EvalResult, Option<MixedEval>)> {
    let mut sink = StreamScorer::new(tokens, lut, model.config().vocab_size, mix)?;
    lora_ttt_into(model, tokens, cfg, &mut sink, progress)?;
    Ok(sink.finish())
}

/// The LoRA TTT pass of [`eval_lora_ttt_mixed`] into a caller's [`StreamScorer`] over `tokens`
/// (e.g. one that records every target's score).
pub fn lora_ttt_into<B: TrainBackend>(
    model: &TrainModel<B>,
    tokens: &[u32],
    cfg: &TttConfig,
    sink: &mut StreamScorer,
    mut progress: Option<&mut TttProgress>,
) -> Result<()> {
    check_config(cfg)?;
    let docs = select_docs(tokens, cfg.max_docs);
    let vocab = model.config().vocab_size;
    let want_lp = sink.wants_log_probs();
    // An injected fault runs one document at a time (it lives in `ttt_document_scored`).
    if cfg.batch_docs > 1 && cfg.fault == Fault::None {
        return lora_ttt_batched_into(model, tokens, cfg, &docs, sink, progress);
    }
    for (k, d) in docs.iter().enumerate() {
        let doc = &tokens[d.start..d.start + d.len];
        ttt_document_scored(model, doc, cfg, k, want_lp, |s| {
            for (r, &nll) in s.nll.iter().enumerate() {
                let lp = s.log_probs.map(|l| &l[r * vocab..(r + 1) * vocab]);
                sink.score(d.start + s.chunk.chunk_start + r, nll, lp)?;
            }
            Ok(())
        })?;
        if let Some(p) = progress.as_mut() {
            p(k + 1, docs.len(), sink.totals());
        }
    }
    Ok(())
}

/// One target's score held back until its document's turn in the stream.
type Held = (f32, Option<Vec<f32>>);

/// [`lora_ttt_into`] with `cfg.batch_docs` consecutive documents advancing together. Their
/// scores are buffered and fed to `sink` document by document, in stream order, once the
/// batch is done: the sink (and its mixer) only ever sees a target after it was scored, and
/// each document's adapters only see that document's already-scored tokens.
fn lora_ttt_batched_into<B: TrainBackend>(
    model: &TrainModel<B>,
    tokens: &[u32],
    cfg: &TttConfig,
    docs: &[Document],
    sink: &mut StreamScorer,
    mut progress: Option<&mut TttProgress>,
) -> Result<()> {
    let vocab = model.config().vocab_size;
    let want_lp = sink.wants_log_probs();
    for (g, group) in docs.chunks(cfg.batch_docs).enumerate() {
        let base = g * cfg.batch_docs;
        let inputs: Vec<(&[u32], usize)> = group
            .iter()
            .enumerate()
            .map(|(b, d)| (&tokens[d.start..d.start + d.len], base + b))
            .collect();
        let mut held: Vec<Vec<Option<Held>>> = group
            .iter()
            .map(|d| vec![None; d.len.saturating_sub(1)])
            .collect();
        super::ttt_batch::ttt_documents_batched(model, &inputs, cfg, want_lp, |b, s| {
            for (r, &nll) in s.nll.iter().enumerate() {
                let lp = s.log_probs.map(|l| l[r * vocab..(r + 1) * vocab].to_vec());
                held[b][s.chunk.chunk_start + r] = Some((nll, lp));
            }
            Ok(())
        })?;
        for (b, (d, h)) in group.iter().zip(held).enumerate() {
            for (j, v) in h.into_iter().enumerate() {
                let (nll, lp) =
                    v.ok_or_else(|| Error::Backend(format!("batched TTT: target {j} unscored")))?;
                sink.score(d.start + j, nll, lp.as_deref())?;
            }
            if let Some(p) = progress.as_mut() {
                p(base + b + 1, docs.len(), sink.totals());
            }
        }
    }
    Ok(())
}

fn select_docs(tokens: &[u32], max_docs: Option<usize>) -> Vec<Document> {
    let mut docs: Vec<Document> = find_documents(tokens)
        .into_iter()
        .filter(|d| d.len >= 2)
        .collect();
    if let Some(n) = max_docs {
        docs.truncate(n);
    }
    docs
}

/// Plain per-document scoring with the same chunks and windows and no adaptation, through the
/// inference forward ([`DeviceModel`]): the baseline that TTT is compared against.
pub fn eval_per_document<B: Backend>(
    model: &DeviceModel<B>,
    tokens: &[u32],
    lut: &ByteLut,
    chunk: usize,
    window: usize,
    max_docs: Option<usize>,
) -> Result<EvalResult> {
    let start = web_time::Instant::now();
    let mut acc = BpbAccumulator::default();
    for d in select_docs(tokens, max_docs) {
        let dt = &tokens[d.start..d.start + d.len];
        for (j, v) in score_document_plain(model, dt, chunk, window)?
            .into_iter()
            .enumerate()
        {
            acc.add(v, lut.bytes_for(dt[j], dt[j + 1]));
        }
    }
    Ok(acc.result(start.elapsed().as_secs_f64()))
}

/// Per-target NLL of one document, chunked as [`ttt_document`] but without adapters.
pub fn score_document_plain<B: Backend>(
    model: &DeviceModel<B>,
    doc: &[u32],
    chunk: usize,
    window: usize,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(doc.len().saturating_sub(1));
    for c in doc_chunks(doc.len(), chunk, window) {
        let ids = &doc[c.win_start..c.end];
        let tgt = &doc[c.win_start + 1..c.end + 1];
        let rows: Vec<usize> = (c.chunk_start - c.win_start..c.end - c.win_start).collect();
        out.extend(model.nll(ids, tgt, 1, ids.len(), Some(&rows))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_targets_once_within_the_window() {
        for (len, k, t) in [
            (2, 4, 8),
            (10, 4, 8),
            (1000, 256, 1024),
            (1300, 256, 1024),
            (9, 3, 3),
        ] {
            let cs = doc_chunks(len, k, t);
            let mut next = 0;
            for c in &cs {
                assert_eq!(c.chunk_start, next);
                assert!(c.end > c.chunk_start && c.end - c.win_start <= t);
                assert!(c.win_start <= c.chunk_start);
                next = c.end;
            }
            assert_eq!(next, len - 1);
        }
        let cs = doc_chunks(1300, 256, 1024);
        assert_eq!(cs[4].win_start, 1024 + 256 - 1024);
        assert_eq!(cs.last().unwrap().end, 1299);
    }
}
