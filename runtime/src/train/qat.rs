//! Quantization-aware training by straight-through fake quantization (spec 5.3): the forward
//! sees `q(w)`, the gradient flows to `w` unchanged (`w + stopgrad(q(w) − w)`).
//!
//! The scheme is the one of the 11-layer MLP3x record (the second reference artifact):
//! per-row scale `amax/127`, round, round again to a multiple of 4, clamp to `[−128, 124]`;
//! the result is "int6 stored in int8", which is what its exporter writes. Only the block
//! matrices (the Muon group) are fake-quantized, as `CastedLinear` does.

use super::groups::{group_of, Group};
use crate::model::ModelWeights;

/// When fake quantization is on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QatMode {
    Off,
    /// From the first step.
    On,
    /// Once the LR multiplier drops below this threshold ("late QAT", e.g. 0.15).
    Late(f32),
}

impl QatMode {
    /// Whether QAT applies at LR multiplier `lr_mul`.
    pub fn active(self, lr_mul: f32) -> bool {
        match self {
            QatMode::Off => false,
            QatMode::On => true,
            QatMode::Late(t) => lr_mul < t,
        }
    }
}

pub use crate::backend::cpu::optim::fake_quant_row;

/// A copy of `weights` whose block matrices are fake-quantized (what the forward sees).
pub fn fake_quantized(weights: &ModelWeights) -> ModelWeights {
    let mut w = weights.clone();
    for p in w.params_mut() {
        if group_of(&p.name, &p.shape) == Group::Matrix {
            let cols = p.shape[1];
            p.values.chunks_mut(cols).for_each(fake_quant_row);
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_land_on_a_multiple_of_four_grid_within_three_steps() {
        let mut row: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 97.0)
            .collect();
        let orig = row.clone();
        fake_quant_row(&mut row);
        let scale = orig.iter().fold(0.0f32, |m, &v| m.max(v.abs())) / 127.0;
        for (q, o) in row.iter().zip(&orig) {
            let k = q / scale;
            assert!(
                (k / 4.0 - (k / 4.0).round()).abs() < 1e-3,
                "{k} not a multiple of 4"
            );
            assert!((-128.5..=124.5).contains(&k));
            // Two roundings (≤ 2.5 steps), or the clamp of 127 to 124 (3 steps).
            assert!((q - o).abs() <= 3.0 * scale + 1e-6, "{q} vs {o}");
        }
        let mut zeros = vec![0.0f32; 4];
        fake_quant_row(&mut zeros);
        assert_eq!(zeros, vec![0.0; 4]);
    }

    #[test]
    fn late_mode_switches_on_below_threshold() {
        assert!(!QatMode::Late(0.15).active(0.5));
        assert!(QatMode::Late(0.15).active(0.1));
        assert!(QatMode::On.active(1.0));
        assert!(!QatMode::Off.active(0.0));
    }
}
