//! Forward windows and the targets each one scores.

use super::EvalOptions;
use crate::backend::Backend;
use crate::model::DeviceModel;
use crate::{Error, Result};

/// One forward window over the stream: inputs `stream[start..start+len]`, targets shifted by
/// one; it scores window positions `score_from..len` (targets `start+score_from..start+len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: usize,
    pub len: usize,
    pub score_from: usize,
}

/// The stream the reference evaluates: the first `floor((N-1)/T)*T + 1` tokens, so that the
/// number of targets is a multiple of `seq_len` (spec 1.2).
pub fn truncate_for_eval(tokens: &[u32], seq_len: usize) -> Result<&[u32]> {
    if seq_len == 0 {
        return Err(Error::Usage("seq len must be positive".into()));
    }
    let targets = tokens.len().saturating_sub(1) / seq_len * seq_len;
    if targets == 0 {
        return Err(Error::Usage(format!(
            "{} tokens are fewer than one window of {seq_len} targets",
            tokens.len()
        )));
    }
    Ok(&tokens[..targets + 1])
}

/// Non-overlapping windows of `seq` covering the `stream_len - 1` targets.
pub fn standard_windows(stream_len: usize, seq: usize) -> Vec<Window> {
    let n = stream_len.saturating_sub(1);
    (0..n)
        .step_by(seq.max(1))
        .map(|s| Window {
            start: s,
            len: seq.min(n - s),
            score_from: 0,
        })
        .collect()
}

/// Sliding windows (spec 7.2, canonical form, each target scored once).
pub fn sliding_windows(stream_len: usize, seq: usize, stride: usize) -> Result<Vec<Window>> {
    if stride == 0 || stride > seq {
        return Err(Error::Usage(format!(
            "stride {stride} must be in 1..={seq} (the window length)"
        )));
    }
    let n = stream_len.saturating_sub(1);
    let mut out = Vec::new();
    let mut scored_to = 0; // targets [0, scored_to) are already scored
    for ws in (0..n).step_by(stride) {
        let end = (ws + seq).min(n);
        if end <= scored_to {
            continue;
        }
        let first = if ws == 0 {
            0
        } else {
            scored_to.max(end - stride.min(end - ws))
        };
        out.push(Window {
            start: ws,
            len: end - ws,
            score_from: first - ws,
        });
        scored_to = end;
    }
    Ok(out)
}

/// Runs `windows` in batches of `opts.batch` (padded to `opts.seq_len`) and calls
/// `on_score(target_index, nll)` for every scored target, in window order.
pub fn run_windows<B: Backend>(
    model: &DeviceModel<B>,
    stream: &[u32],
    windows: &[Window],
    mut opts: EvalOptions,
    mut on_score: impl FnMut(usize, f32),
) -> Result<()> {
    let seq = opts.seq_len;
    let batch = opts.batch.max(1);
    // Sizes come from user flags: checked before anything is allocated.
    crate::limits::SEQ_LEN.check(
        seq as u64,
        format!("a window of {seq} tokens"),
        Error::Usage,
    )?;
    let widest = batch.min(windows.len()).max(1);
    let tokens = widest
        .checked_mul(seq)
        .ok_or_else(|| Error::Usage(format!("{widest} windows of {seq} tokens overflow")))?;
    crate::limits::FORWARD_TOKENS.check(
        tokens as u64,
        format!("a forward pass of {widest} windows x {seq} tokens ({tokens} tokens)"),
        Error::Usage,
    )?;
    let total: usize = windows.iter().map(|w| w.len - w.score_from).sum();
    let mut done = 0;
    for group in windows.chunks(batch) {
        let Packed {
            ids,
            tgt,
            rows,
            targets,
        } = pack(stream, group, seq)?;
        let b = group.len();
        let nll = model.nll(&ids, &tgt, b, seq, Some(&rows))?;
        for (t, v) in targets.iter().zip(nll) {
            on_score(*t, v);
        }
        done += rows.len();
        if let Some(p) = opts.progress.as_mut() {
            p(done, total);
        }
    }
    Ok(())
}

/// One forward pass's inputs for a group of windows, each padded to `seq`.
pub(crate) struct Packed {
    /// `[windows, seq]` input ids and targets (zero past a window's length).
    pub ids: Vec<u32>,
    pub tgt: Vec<u32>,
    /// The flat positions scored, and the stream target each one is.
    pub rows: Vec<usize>,
    pub targets: Vec<usize>,
}

/// Packs `group` (each window at most `seq` long) of `stream` into one forward pass's inputs.
pub(crate) fn pack(stream: &[u32], group: &[Window], seq: usize) -> Result<Packed> {
    let b = group.len();
    let mut ids = vec![0u32; b * seq];
    let mut tgt = vec![0u32; b * seq];
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (i, w) in group.iter().enumerate() {
        if w.len > seq || w.start + w.len + 1 > stream.len() || w.score_from > w.len {
            return Err(Error::Usage(format!(
                "window {w:?} does not fit the stream"
            )));
        }
        ids[i * seq..i * seq + w.len].copy_from_slice(&stream[w.start..w.start + w.len]);
        tgt[i * seq..i * seq + w.len].copy_from_slice(&stream[w.start + 1..w.start + w.len + 1]);
        for p in w.score_from..w.len {
            rows.push(i * seq + p);
            targets.push(w.start + p);
        }
    }
    Ok(Packed {
        ids,
        tgt,
        rows,
        targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coverage(ws: &[Window], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for w in ws {
            for p in w.score_from..w.len {
                c[w.start + p] += 1;
            }
        }
        c
    }

    #[test]
    fn standard_covers_each_target_once() {
        let ws = standard_windows(1 + 4 * 16, 16);
        assert_eq!(ws.len(), 4);
        assert!(coverage(&ws, 64).iter().all(|&c| c == 1));
    }

    #[test]
    fn sliding_covers_each_target_once_with_full_context() {
        for (n, seq, stride) in [
            (1000, 64, 8),
            (1025, 128, 64),
            (100, 16, 16),
            (7, 16, 4),
            (130, 32, 5),
        ] {
            let ws = sliding_windows(n + 1, seq, stride).unwrap();
            assert!(
                coverage(&ws, n).iter().all(|&c| c == 1),
                "{n} {seq} {stride}"
            );
            for w in &ws[1..] {
                // every scored position after the first window sees >= seq - stride context
                assert!(w.score_from >= seq - stride || w.start + w.len == n);
                assert!(w.len - w.score_from <= stride);
            }
        }
    }

    #[test]
    fn sliding_with_stride_equal_to_seq_is_standard() {
        assert_eq!(
            sliding_windows(1 + 96, 32, 32).unwrap(),
            standard_windows(1 + 96, 32)
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(sliding_windows(100, 16, 0).is_err());
        assert!(sliding_windows(100, 16, 17).is_err());
        assert!(truncate_for_eval(&[1, 2], 4).is_err());
        assert!(truncate_for_eval(&[1; 10], 0).is_err());
        assert_eq!(truncate_for_eval(&[1; 10], 4).unwrap().len(), 9);
    }
}
