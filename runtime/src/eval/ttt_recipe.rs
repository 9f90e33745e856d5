//! The published full-model TTT recipes as settings of the score-first pass
//! ([`super::ttt_full`]), so each runs legally: every chunk is scored before the model trains on
//! it. Three of them adapted on the whole validation set before scoring it (PRs #489, #581),
//! which the challenge's rules forbid; here they keep their optimiser, learning rates, epochs
//! and parameter choice, applied chunk by chunk after scoring.
//!
//! | recipe | original | here |
//! |---|---|---|
//! | `pr461` | SGD lr 0.002, momentum 0.9, 3 epochs per 32,768-token chunk, cosine over chunks, clip 1 | the same (already score-first) |
//! | `pr489` | AdamW lr 5e-4, no decay, 5 epochs over the whole val set, 4 sequences per step, no clip, before scoring | 5 epochs per scored chunk |
//! | `pr581` | AdamW lr 5e-4, decay 0.01, 20 epochs over the whole val set, 32 sequences, clip 1, cosine to 2e-5 with a warm-up epoch, before scoring | 20 epochs per scored chunk, cosine over chunks to 2e-5, warm-up over the first chunk's steps |
//! | `pr687` | AdamW lr 5e-4, 3 epochs per chunk, last 2 blocks + scales + head, LR ramp to 3x over 30% of chunks, Polyak 0.998 for scoring, clip 1 (score-first) | the same; its byte-weighted loss and post-TTT temperature are not applied |

use super::ttt_full::{FullTttConfig, LrRamp, TttOptimizer};
use crate::model::ModelConfig;
use crate::train::ParamSelect;
use crate::{Error, Result};

/// A named full-model TTT recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TttRecipe {
    Pr461,
    Pr489,
    Pr581,
    Pr687,
}

impl TttRecipe {
    pub const ALL: [TttRecipe; 4] = [
        TttRecipe::Pr461,
        TttRecipe::Pr489,
        TttRecipe::Pr581,
        TttRecipe::Pr687,
    ];

    /// The name the command line takes.
    pub fn name(self) -> &'static str {
        match self {
            TttRecipe::Pr461 => "pr461",
            TttRecipe::Pr489 => "pr489",
            TttRecipe::Pr581 => "pr581",
            TttRecipe::Pr687 => "pr687",
        }
    }

    /// The recipe's settings for a model of architecture `model`, keeping the eval geometry
    /// (`seq_len`, `stride`, `batch`, `chunk`) and the training sequence length of `base`: the
    /// settings that depend on them (#581's warm-up, one chunk's steps) follow them.
    pub fn config(self, model: &ModelConfig, base: &FullTttConfig) -> FullTttConfig {
        let geometry = FullTttConfig {
            seq_len: base.seq_len,
            stride: base.stride,
            batch: base.batch,
            train_seq: base.train_seq,
            chunk: base.chunk,
            ..FullTttConfig::default()
        };
        let adamw = FullTttConfig {
            optimizer: TttOptimizer::ADAMW,
            lr: 5e-4,
            ..geometry.clone()
        };
        match self {
            TttRecipe::Pr461 => geometry,
            TttRecipe::Pr489 => FullTttConfig {
                epochs: 5,
                train_batch: 4,
                lr_min: 5e-4,
                grad_clip: 0.0,
                ..adamw
            },
            TttRecipe::Pr581 => {
                // #581 warms up over its first epoch of 20: here the first chunk's 20 passes.
                let steps_per_epoch = (adamw.chunk / adamw.train_seq()).div_ceil(32).max(1);
                FullTttConfig {
                    epochs: 20,
                    lr_min: 2e-5,
                    weight_decay: 0.01,
                    warmup_steps: 20 * steps_per_epoch,
                    ..adamw
                }
            }
            TttRecipe::Pr687 => FullTttConfig {
                lr_ramp: Some(LrRamp {
                    max_mult: 3.0,
                    over: 0.3,
                }),
                polyak: Some(0.998),
                params: last_blocks_scales_head(model, 2),
                ..adamw
            },
        }
    }
}

/// The last `n` blocks, every scale, and the output head when it is not tied to the
/// embedding: what PR #687 adapts.
fn last_blocks_scales_head(model: &ModelConfig, n: usize) -> ParamSelect {
    let layers = model.num_layers;
    let mut p: Vec<String> = (layers.saturating_sub(n)..layers)
        .map(|i| format!("blocks.{i}.*"))
        .collect();
    p.push("*scale*".into());
    if !model.tied_embeddings {
        p.push("lm_head.weight".into());
    }
    p.join(",")
        .parse()
        .expect("the recipe's patterns are well-formed")
}

impl std::str::FromStr for TttRecipe {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TttRecipe::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = TttRecipe::ALL.iter().map(|r| r.name()).collect();
                Error::Usage(format!("unknown TTT recipe {s:?} ({})", names.join(", ")))
            })
    }
}

impl std::fmt::Display for TttRecipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Architecture;

    /// #581's warm-up spans the first chunk's optimiser steps at whatever chunk the caller
    /// sets (it was once computed from the default chunk alone).
    #[test]
    fn pr581_warmup_follows_the_chunk() {
        let model = Architecture::baseline()
            .config(&crate::model::ConfigOverrides::default())
            .unwrap();
        for (chunk, seq) in [(32_768usize, 1024usize), (2048, 256), (4096, 64)] {
            let base = FullTttConfig {
                chunk,
                seq_len: seq,
                ..FullTttConfig::default()
            };
            let c = TttRecipe::Pr581.config(&model, &base);
            assert_eq!(c.chunk, chunk);
            let steps = (chunk / seq).div_ceil(c.train_batch.max(1)).max(1);
            assert_eq!(c.warmup_steps, 20 * (chunk / seq).div_ceil(32).max(1));
            assert!(c.warmup_steps >= steps, "{chunk}/{seq}");
        }
    }
}
