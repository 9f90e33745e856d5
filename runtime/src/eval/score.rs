//! Scoring arbitrary token sequences (the `score` command and the embedding API): per-token
//! log-probabilities with sliding-window context and bits per byte.

use super::windows::{run_windows, sliding_windows};
use super::EvalOptions;
use crate::backend::Backend;
use crate::model::{DeviceModel, ModelConfig};
use crate::tokenizer::ByteLut;
use crate::{Error, Result};

/// One scored token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenScore {
    pub id: u32,
    /// Natural-log probability the model gave this token.
    pub logprob: f32,
    /// Bytes credited to this token by the challenge's byte table.
    pub bytes: u32,
}

/// The score of a token sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct TextScore {
    /// Every token after the leading BOS, in order.
    pub tokens: Vec<TokenScore>,
    /// Sum of `-logprob / ln 2`.
    pub total_bits: f64,
    pub total_bytes: u64,
    /// `total_bits / total_bytes` (always finite: a text without bytes is an error).
    pub bits_per_byte: f64,
}

/// The window length that scores `targets` targets with at most `seq_len` tokens of context:
/// the text's own length when it fits in one window (the same log-probabilities as a padded
/// window, without the padding's cost), unless that changes the RoPE base (NTK scaling depends
/// on the window length); else `seq_len`.
pub fn score_window(cfg: &ModelConfig, targets: usize, seq_len: usize) -> usize {
    if targets > 0 && targets < seq_len && cfg.rope_base_for(targets) == cfg.rope_base_for(seq_len)
    {
        targets
    } else {
        seq_len
    }
}

/// Scores `ids` (which should start with BOS): every token after the first is predicted from at
/// most `seq_len` tokens of context, windows advancing by `stride` (in `1..=seq_len`).
///
/// Errors when there is nothing to score (no token after BOS, or no byte: bits per byte would
/// be NaN or infinite) and when the model gives a token a non-finite log-probability.
pub fn score_tokens<B: Backend>(
    model: &DeviceModel<B>,
    ids: &[u32],
    lut: &ByteLut,
    seq_len: usize,
    stride: usize,
) -> Result<TextScore> {
    let mut nll = vec![0.0f32; ids.len().saturating_sub(1)];
    if nll.is_empty() {
        return Err(Error::Usage(
            "nothing to score: the text is empty (no token after BOS)".into(),
        ));
    }
    {
        let windows = sliding_windows(ids.len(), seq_len, stride)?;
        let opts = EvalOptions {
            seq_len,
            batch: 4,
            progress: None,
        };
        run_windows(model, ids, &windows, opts, |t, v| nll[t] = v)?;
    }
    text_score(ids, &nll, lut)
}

/// The [`TextScore`] of `ids` from the negative log-likelihood of every target (`nll[t]`
/// scores `ids[t + 1]`): errors for a non-finite one and for a text without bytes.
pub(crate) fn text_score(ids: &[u32], nll: &[f32], lut: &ByteLut) -> Result<TextScore> {
    check_finite(nll, ids, 0..nll.len())?;
    let tokens: Vec<TokenScore> = nll
        .iter()
        .enumerate()
        .map(|(t, &v)| TokenScore {
            id: ids[t + 1],
            logprob: -v,
            bytes: lut.bytes_for(ids[t], ids[t + 1]),
        })
        .collect();
    let total_bits = nll.iter().map(|&v| v as f64).sum::<f64>() / std::f64::consts::LN_2;
    let total_bytes = tokens.iter().map(|t| t.bytes as u64).sum::<u64>();
    if total_bytes == 0 {
        return Err(Error::Usage(format!(
            "nothing to score: the text's {} tokens hold no bytes (bits per byte undefined)",
            tokens.len()
        )));
    }
    Ok(TextScore {
        tokens,
        total_bits,
        total_bytes,
        bits_per_byte: total_bits / total_bytes as f64,
    })
}

/// Errors for the first non-finite negative log-likelihood in `range` (`nll[t]` scores
/// `ids[t + 1]`).
pub(crate) fn check_finite(nll: &[f32], ids: &[u32], range: std::ops::Range<usize>) -> Result<()> {
    match range.clone().find(|&t| !nll[t].is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::Numeric(format!(
            "the model gave token {} (id {}) a non-finite log-probability ({})",
            i + 1,
            ids[i + 1],
            -nll[i]
        ))),
    }
}
