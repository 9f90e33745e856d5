//! Per-document LoRA TTT with several documents advancing together (`--ttt-batch-docs N`,
//! spec 7.5: the reference runs 64 documents in lock-step).
//!
//! At chunk step `i`, every document that still has an `i`-th chunk contributes its window as
//! one row of a single batched forward; each row is adapted only by its own document's adapters
//! ([`TrainModel::stack_lora`]), so documents never share adapter weights, gradients or
//! optimiser state. Each document's adapters and their Adam state live on the device for the
//! whole document ([`DeviceAdam`], as one-document TTT keeps them): a forward stacks them
//! there, and the backward's gradients are sliced per document there; per step only the
//! windows' ids, the scored rows and targets go up and the scores come back. The chunk's targets are scored first; then each document that trains on
//! this chunk takes its own optimiser step on its own chunk loss (one backward of the sum of the
//! per-document losses: a document's adapter gradients only depend on its own rows).
//!
//! Windows shorter than the batch's longest are padded *after* their real tokens; under causal
//! attention padding cannot change a real position, and padded positions are never scored or
//! trained on. Windows whose RoPE base would differ at the padded length (NTK scaling) go into
//! separate forwards. The per-document sequence of scores and steps is exactly the one of
//! [`ttt_document_scored`], so the results match `--ttt-batch-docs 1` up to rounding.
//!
//! [`ttt_document_scored`]: super::ttt::ttt_document_scored

use super::ttt::{check_config, doc_chunks, doc_seed, DocChunk, ScoredChunk, TttConfig};
use crate::backend::train::TrainBackend;
use crate::train::{DeviceAdam, DeviceLora, Lora, TrainModel};
use crate::{Error, Result};

/// The state of one document of a batch: its adapters and their optimizer state on the device.
struct DocState<'a, T> {
    tokens: &'a [u32],
    chunks: Vec<DocChunk>,
    adapt: bool,
    lora: DeviceLora<T>,
    opt: DeviceAdam<T>,
}

/// Scores the documents `docs` (`(tokens with BOS first, document index)`) together with LoRA
/// TTT. `on_chunk(d, chunk)` receives the scores of each chunk of `docs[d]` right after they are
/// computed and before that document's adapters take the step that uses the chunk; for each
/// document its chunks come in order, but chunks of different documents interleave (step by
/// step), so a caller feeding a stream-ordered consumer buffers them.
pub fn ttt_documents_batched<B: TrainBackend>(
    model: &TrainModel<B>,
    docs: &[(&[u32], usize)],
    cfg: &TttConfig,
    log_probs: bool,
    mut on_chunk: impl FnMut(usize, ScoredChunk) -> Result<()>,
) -> Result<()> {
    check_config(cfg)?;
    let mut st = docs
        .iter()
        .map(|&(tokens, k)| {
            let lora = Lora::new(model.config(), cfg.targets, cfg.rank, doc_seed(cfg.seed, k))?;
            Ok(DocState {
                tokens,
                chunks: doc_chunks(tokens.len(), cfg.chunk, cfg.window),
                adapt: tokens.len() >= cfg.min_doc_len && cfg.epochs > 0,
                lora: model.upload_lora(&lora)?,
                opt: DeviceAdam::new(cfg.optimizer),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let steps = st.iter().map(|d| d.chunks.len()).max().unwrap_or(0);
    for i in 0..steps {
        let active: Vec<usize> = (0..st.len()).filter(|&d| i < st[d].chunks.len()).collect();
        for group in rope_groups(model, &st, &active, i) {
            let items: Vec<(usize, usize)> = group.iter().map(|&d| (d, i)).collect();
            let (tape, dev, seq) = batch_forward(model, &st, &items)?;
            score(
                model,
                &st,
                &items,
                &tape,
                &dev,
                seq,
                log_probs,
                &mut on_chunk,
            )?;
            let train: Vec<usize> = group
                .iter()
                .copied()
                .filter(|&d| st[d].adapt && i + 1 < st[d].chunks.len())
                .collect();
            if train.is_empty() {
                continue;
            }
            let first = if cfg.replay_scored { 0 } else { i };
            let mut reuse = Some((tape, dev, seq));
            for _ in 0..cfg.epochs {
                for j in first..=i {
                    // The scoring forward doubles as the first training forward of chunk i
                    // (the adapters have not moved since); rows not training get no loss.
                    match reuse.take().filter(|_| j == i) {
                        Some((tape, dev, seq)) => {
                            let items: Vec<(usize, usize)> =
                                group.iter().map(|&d| (d, i)).collect();
                            step(model, &mut st, &items, &train, &tape, &dev, seq)?;
                        }
                        None => {
                            for sub in rope_groups(model, &st, &train, j) {
                                let items: Vec<(usize, usize)> =
                                    sub.iter().map(|&d| (d, j)).collect();
                                let (tape, dev, seq) = batch_forward(model, &st, &items)?;
                                step(model, &mut st, &items, &sub, &tape, &dev, seq)?;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// `docs` split so that each group's windows (chunk `i`) share the RoPE base of the group's
/// longest window, in document order.
fn rope_groups<B: TrainBackend>(
    model: &TrainModel<B>,
    st: &[DocState<B::Tensor>],
    docs: &[usize],
    i: usize,
) -> Vec<Vec<usize>> {
    let cfg = model.config();
    let mut groups: Vec<(u32, Vec<usize>)> = Vec::new();
    for &d in docs {
        let c = st[d].chunks[i];
        let key = cfg.rope_base_for(c.end - c.win_start).to_bits();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(d),
            None => groups.push((key, vec![d])),
        }
    }
    groups
        .into_iter()
        .flat_map(|(key, g)| {
            // Padding must not move a window into another NTK regime.
            let seq = g
                .iter()
                .map(|&d| width(&st[d].chunks[i]))
                .max()
                .unwrap_or(1);
            if cfg.rope_base_for(seq).to_bits() == key {
                vec![g]
            } else {
                g.into_iter().map(|d| vec![d]).collect()
            }
        })
        .collect()
}

fn width(c: &DocChunk) -> usize {
    c.end - c.win_start
}

type Batch<B> = (
    crate::train::Tape<<B as crate::backend::Backend>::Tensor>,
    crate::train::DeviceLora<<B as crate::backend::Backend>::Tensor>,
    usize,
);

/// One forward of the windows of `items` (`(doc, chunk)`), padded after their real tokens to
/// the longest, each row with its document's adapters.
fn batch_forward<B: TrainBackend>(
    model: &TrainModel<B>,
    st: &[DocState<B::Tensor>],
    items: &[(usize, usize)],
) -> Result<Batch<B>> {
    let seq = items
        .iter()
        .map(|&(d, c)| width(&st[d].chunks[c]))
        .max()
        .ok_or_else(|| Error::Usage("batched TTT: empty batch".into()))?;
    let mut ids = Vec::with_capacity(items.len() * seq);
    for &(d, c) in items {
        let ch = st[d].chunks[c];
        let w = &st[d].tokens[ch.win_start..ch.end];
        ids.extend_from_slice(w);
        ids.extend(std::iter::repeat_n(0u32, seq - w.len()));
    }
    let loras: Vec<&DeviceLora<B::Tensor>> = items.iter().map(|&(d, _)| &st[d].lora).collect();
    let dev = model.stack_lora(&loras, seq)?;
    let tape = model.forward(&ids, items.len(), seq, Some(&dev))?;
    Ok((tape, dev, seq))
}

/// Flat rows and targets of the scored targets of `items[b]` in a batch of windows of `seq`.
fn rows_of<T>(
    st: &[DocState<T>],
    b: usize,
    (d, c): (usize, usize),
    seq: usize,
) -> (Vec<usize>, Vec<u32>) {
    let ch = st[d].chunks[c];
    let local = ch.chunk_start - ch.win_start..ch.end - ch.win_start;
    let rows = local.clone().map(|r| b * seq + r).collect();
    let targets = local.map(|r| st[d].tokens[ch.win_start + 1 + r]).collect();
    (rows, targets)
}

#[allow(clippy::too_many_arguments)]
fn score<B: TrainBackend>(
    model: &TrainModel<B>,
    st: &[DocState<B::Tensor>],
    items: &[(usize, usize)],
    tape: &crate::train::Tape<B::Tensor>,
    dev: &crate::train::DeviceLora<B::Tensor>,
    seq: usize,
    log_probs: bool,
    on_chunk: &mut impl FnMut(usize, ScoredChunk) -> Result<()>,
) -> Result<()> {
    let vocab = model.config().vocab_size;
    let (mut rows, mut targets, mut spans) = (Vec::new(), Vec::new(), Vec::new());
    for (b, &it) in items.iter().enumerate() {
        let (r, t) = rows_of(st, b, it, seq);
        spans.push(rows.len()..rows.len() + r.len());
        rows.extend(r);
        targets.extend(t);
    }
    let (nll, lp) = if log_probs {
        let lp = model.log_probs(tape, &rows, Some(dev))?;
        if lp.len() != rows.len() * vocab {
            return Err(Error::Backend(format!(
                "TTT: log_probs returned {} values for {} rows",
                lp.len(),
                rows.len()
            )));
        }
        let nll = targets
            .iter()
            .enumerate()
            .map(|(r, &y)| -lp[r * vocab + y as usize])
            .collect();
        (nll, Some(lp))
    } else {
        (model.nll(tape, &rows, &targets, Some(dev))?, None)
    };
    for (&(d, c), span) in items.iter().zip(spans) {
        on_chunk(
            d,
            ScoredChunk {
                chunk: st[d].chunks[c],
                nll: &nll[span.clone()],
                log_probs: lp
                    .as_ref()
                    .map(|l| &l[span.start * vocab..span.end * vocab]),
            },
        )?;
    }
    Ok(())
}

/// One optimiser step for each document of `train` (a subset of `items`' documents) on the
/// mean NLL of its chunk in the batched forward `tape`.
#[allow(clippy::too_many_arguments)]
fn step<B: TrainBackend>(
    model: &TrainModel<B>,
    st: &mut [DocState<B::Tensor>],
    items: &[(usize, usize)],
    train: &[usize],
    tape: &crate::train::Tape<B::Tensor>,
    dev: &crate::train::DeviceLora<B::Tensor>,
    seq: usize,
) -> Result<()> {
    let (mut rows, mut targets, mut dnll) = (Vec::new(), Vec::new(), Vec::new());
    for (b, &it) in items.iter().enumerate() {
        if !train.contains(&it.0) {
            continue;
        }
        let (r, t) = rows_of(st, b, it, seq);
        dnll.extend(std::iter::repeat_n(1.0 / r.len() as f32, r.len()));
        rows.extend(r);
        targets.extend(t);
    }
    let grads = model.backward_lora_batched_on_device(tape, &rows, &targets, &dnll, dev)?;
    for (&(d, _), g) in items.iter().zip(&grads) {
        if train.contains(&d) {
            let s = &mut st[d];
            let g: Vec<&B::Tensor> = g.iter().flat_map(|(a, b)| [a, b]).collect();
            s.opt.step(model.backend(), &mut s.lora.tensors_mut(), &g)?;
        }
    }
    Ok(())
}
