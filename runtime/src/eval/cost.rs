//! What an [`EvalPlan`] costs: the tokens its forward passes and training steps run, their
//! FLOPs, and an estimate of its wall time on H100s, so a user sees whether a TTT + mixer
//! recipe fits the challenge's 600-second eval budget before renting the GPUs.
//!
//! The estimate is arithmetic, not a measurement: the FLOPs of the plan over the reference rates
//! PyTorch reached with the baseline 9-layer model on one H100 (`../shared/reference/README.md`:
//! sliding-window eval 1.05 M targets in 11.95 s, i.e. 16.8 M forward tokens/s counted as
//! window tokens; training 1.49 M tokens/s), each converted to FLOP/s through the baseline's
//! FLOPs per token, and divided by the number of GPUs (perfect scaling assumed). The online
//! mixer's arithmetic (a few operations per vocabulary entry per target) is left out.

use super::plan::{Adaptation, EvalPlan};
use super::ttt::doc_chunks;
use super::{sliding_windows, standard_windows, truncate_for_eval};
use crate::data::find_documents;
use crate::model::ModelConfig;
use crate::Result;

/// Forward tokens per second of PyTorch's sliding-window eval of the baseline on one H100
/// (1.05 M targets at stride 64 in 11.95 s: 16 window tokens per target).
const H100_FORWARD_TOKENS_PER_S: f64 = 1_048_576.0 * 16.0 / 11.95;
/// Training tokens per second of PyTorch's baseline training step on one H100 (352.8 ms for
/// 524,288 tokens).
const H100_TRAIN_TOKENS_PER_S: f64 = 524_288.0 / 0.3528;
/// The baseline the rates were measured with: 9 layers, d 512, 8 heads / 4 KV, MLP 1024,
/// vocab 1024, tied, windows of 1,024.
fn baseline() -> ModelConfig {
    crate::train::Architecture::baseline()
        .config(&crate::model::ConfigOverrides::default())
        .expect("the baseline architecture is valid")
}

/// The work of a plan over a stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalCost {
    /// Targets scored.
    pub targets: usize,
    /// Tokens through forward passes that score (every window's length).
    pub forward_tokens: u64,
    /// Tokens through training steps (forward and backward).
    pub train_tokens: u64,
    /// FLOPs of the scoring forwards.
    pub forward_flops: f64,
    /// FLOPs of the training steps (3x a forward: forward, and backward to inputs and weights).
    pub train_flops: f64,
}

/// Targets of the challenge's canonical sp1024 val stream (spec 1.2).
pub const CHALLENGE_VAL_TARGETS: usize = 62_021_632;

impl EvalCost {
    /// The same plan's cost over `targets` targets, scaled linearly (windows, documents and
    /// chunks all grow with the stream).
    pub fn scaled_to(&self, targets: usize) -> EvalCost {
        let f = targets as f64 / self.targets.max(1) as f64;
        EvalCost {
            targets,
            forward_tokens: (self.forward_tokens as f64 * f).round() as u64,
            train_tokens: (self.train_tokens as f64 * f).round() as u64,
            forward_flops: self.forward_flops * f,
            train_flops: self.train_flops * f,
        }
    }

    /// Estimated seconds on `gpus` H100s at PyTorch's reference rates (see the module docs).
    pub fn h100_seconds(&self, gpus: usize) -> f64 {
        let b = baseline();
        let fwd_rate = H100_FORWARD_TOKENS_PER_S * forward_flops_per_token(&b, 1024);
        let train_rate = H100_TRAIN_TOKENS_PER_S * 3.0 * forward_flops_per_token(&b, 1024);
        (self.forward_flops / fwd_rate + self.train_flops / train_rate) / gpus.max(1) as f64
    }
}

/// FLOPs of one token's forward in a window of `seq` tokens: 2 per weight of every product
/// (q, k, v, out, MLP, BigramHash and value-embedding projections, the sidecar's products and
/// taps at each site, the head) and the causal
/// attention products (`QKᵀ` and `PV` over `seq/2` keys on average, per layer).
pub fn forward_flops_per_token(c: &ModelConfig, seq: usize) -> f64 {
    let d = c.model_dim as f64;
    let q = (c.num_heads * c.head_dim) as f64;
    let kv = c.kv_dim() as f64;
    let h = c.mlp_hidden as f64;
    let per_layer = d * q + 2.0 * d * kv + q * d + 2.0 * d * h;
    let mut weights = c.num_layers as f64 * per_layer + d * c.vocab_size as f64;
    if let Some(b) = &c.bigram {
        if b.dim != c.model_dim {
            weights += (b.dim * c.model_dim) as f64;
        }
    }
    if let Some(v) = &c.value_embed {
        weights += (v.dim * c.kv_dim()) as f64;
    }
    if let Some(s) = &c.sidecar {
        // gate, value and proj at every site; the convolution's taps are per channel.
        weights += (s.layers.len() * s.hidden * (3 * c.model_dim + s.kernel)) as f64;
    }
    let attention = c.num_layers as f64 * 2.0 * 2.0 * (seq as f64 / 2.0) * q;
    2.0 * weights + attention
}

impl EvalPlan {
    /// The work this plan does over `tokens` with a model of architecture `c` (the windows,
    /// documents and chunks it would run; nothing is computed).
    pub fn cost(&self, c: &ModelConfig, tokens: &[u32]) -> Result<EvalCost> {
        self.validate()?;
        let stream = truncate_for_eval(tokens, self.seq_len)?;
        let windows = match self.stride {
            Some(s) => sliding_windows(stream.len(), self.seq_len, s)?,
            None => standard_windows(stream.len(), self.seq_len),
        };
        let targets = stream.len() - 1;
        let window_tokens: u64 = windows.iter().map(|w| w.len as u64).sum();
        let (forward_tokens, train_tokens, seq) = match &self.adapt {
            Adaptation::None => (window_tokens, 0, self.seq_len),
            Adaptation::Full(f) => {
                let ts = f.train_seq();
                let chunks = targets.div_ceil(f.chunk.max(1));
                let trained: u64 = (0..chunks.saturating_sub(1))
                    .map(|k| {
                        let len = f.chunk.min(targets - k * f.chunk);
                        (len / ts * ts) as u64
                    })
                    .sum();
                (window_tokens, trained * f.epochs as u64, ts)
            }
            Adaptation::Lora(l) => {
                let (mut fwd, mut train) = (0u64, 0u64);
                for d in find_documents(stream)
                    .iter()
                    .take(l.max_docs.unwrap_or(usize::MAX))
                {
                    let chunks = doc_chunks(d.len, l.chunk, l.window);
                    for (i, ch) in chunks.iter().enumerate() {
                        let w = (ch.end - ch.win_start) as u64;
                        fwd += w;
                        if i + 1 < chunks.len() && d.len >= l.min_doc_len {
                            train += w * l.epochs as u64;
                        }
                    }
                }
                (fwd, train, l.window)
            }
        };
        Ok(EvalCost {
            targets,
            forward_tokens,
            train_tokens,
            forward_flops: forward_tokens as f64 * forward_flops_per_token(c, self.seq_len),
            train_flops: train_tokens as f64 * 3.0 * forward_flops_per_token(c, seq),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::FullTttConfig;

    fn stream(n: usize) -> Vec<u32> {
        (0..n as u32)
            .map(|i| if i == 0 { 1 } else { 2 + i % 50 })
            .collect()
    }

    #[test]
    fn the_reference_sliding_eval_costs_its_own_time() {
        // The anchor itself: the baseline's sliding eval of 1,048,576 targets on one H100 is
        // 11.95 s by construction (windows of 1,024, stride 64: ~16 window tokens per target).
        let plan = EvalPlan {
            stride: Some(64),
            ..EvalPlan::default()
        };
        let c = plan.cost(&baseline(), &stream(1_048_577)).unwrap();
        assert_eq!(c.targets, 1_048_576);
        assert_eq!(c.train_tokens, 0);
        let s = c.h100_seconds(1);
        assert!((s - 11.95).abs() < 0.05, "{s}");
        assert!((c.h100_seconds(8) - s / 8.0).abs() < 1e-9);
        // Standard windows run each token once: 1/16 of it.
        let std = EvalPlan::default()
            .cost(&baseline(), &stream(1_048_577))
            .unwrap();
        assert_eq!(std.forward_tokens, 1_048_576);
    }

    #[test]
    fn full_ttt_trains_every_chunk_but_the_last_epochs_times() {
        let full = FullTttConfig {
            chunk: 4096,
            epochs: 3,
            ..FullTttConfig::default()
        };
        let plan = EvalPlan {
            adapt: Adaptation::Full(full),
            ..EvalPlan::default()
        };
        let c = plan.cost(&baseline(), &stream(4 * 4096 + 1)).unwrap();
        assert_eq!(c.forward_tokens, 4 * 4096);
        assert_eq!(c.train_tokens, 3 * 3 * 4096);
        // 3 chunks x 3 epochs of training at 3 forwards each, against 4 chunks scored once.
        assert!((c.train_flops / c.forward_flops - 3.0 * 9.0 / 4.0).abs() < 1e-9);
        // Each part at its own reference rate.
        let train_only = EvalCost {
            forward_flops: 0.0,
            ..c
        };
        let fwd_only = EvalCost {
            train_flops: 0.0,
            ..c
        };
        let (t, f) = (train_only.h100_seconds(1), fwd_only.h100_seconds(1));
        assert!((c.h100_seconds(1) - t - f).abs() < 1e-12 && t > 0.0 && f > 0.0);
        // A training token at the reference training rate: 1 / 1.49 M tokens/s.
        let per_token = t / c.train_tokens as f64;
        assert!((per_token * 1.486e6 - 1.0).abs() < 1e-2, "{per_token}");
    }

    #[test]
    fn flops_per_token_counts_the_products() {
        let b = baseline();
        // 9 x (512·512·2 + 2·512·256 + 2·512·1024) + 512·1024 weights, 2 FLOPs each, plus
        // attention 9 · 4 · 512 · 512.
        let weights = 9.0 * (2.0 * 512.0 * 512.0 + 2.0 * 512.0 * 256.0 + 2.0 * 512.0 * 1024.0)
            + 512.0 * 1024.0;
        let want = 2.0 * weights + 9.0 * 4.0 * 512.0 * 512.0;
        assert_eq!(forward_flops_per_token(&b, 1024), want);
    }
}
