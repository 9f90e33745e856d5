//! Scoring arbitrary token sequences (the `score` command and the embedding API): per-token
//! log-probabilities with sliding-window context and bits per byte.

use super::windows::{run_windows, sliding_windows};
use super::EvalOptions;
use crate::backend::Backend;
use crate::model::DeviceModel;
use crate::tokenizer::ByteLut;
use crate::Result;

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
    /// `total_bits / total_bytes` (NaN when there are no bytes).
    pub bits_per_byte: f64,
}

/// Scores `ids` (which should start with BOS): every token after the first is predicted from at
/// most `seq_len` tokens of context, windows advancing by `stride`.
pub fn score_tokens<B: Backend>(
    model: &DeviceModel<B>,
    ids: &[u32],
    lut: &ByteLut,
    seq_len: usize,
    stride: usize,
) -> Result<TextScore> {
    let mut nll = vec![0.0f32; ids.len().saturating_sub(1)];
    if !nll.is_empty() {
        let windows = sliding_windows(ids.len(), seq_len, stride.min(seq_len))?;
        let opts = EvalOptions {
            seq_len,
            batch: 4,
            progress: None,
        };
        run_windows(model, ids, &windows, opts, |t, v| nll[t] = v)?;
    }
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
    Ok(TextScore {
        tokens,
        total_bits,
        total_bytes,
        bits_per_byte: total_bits / total_bytes as f64,
    })
}
