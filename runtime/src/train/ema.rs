//! Exponential moving average of the weights (spec 4.9): after every optimizer step
//! `ema ← d·ema + (1−d)·param`, in f32; at the end the EMA replaces the weights before export.

use crate::backend::cpu::optim::ema_update;
use crate::model::ModelWeights;

/// EMA shadow of every parameter.
#[derive(Debug, Clone)]
pub struct Ema {
    pub decay: f32,
    pub(crate) shadow: ModelWeights,
}

impl Ema {
    /// Starts the shadow at the current weights.
    pub fn new(decay: f32, weights: &ModelWeights) -> Self {
        Ema {
            decay,
            shadow: weights.clone(),
        }
    }

    /// An EMA whose shadow is `shadow` (a checkpoint's, or a device run's downloaded).
    pub fn from_shadow(decay: f32, shadow: ModelWeights) -> Self {
        Ema { decay, shadow }
    }

    /// Folds the current weights into the average.
    pub fn update(&mut self, weights: &mut ModelWeights) {
        let d = self.decay;
        for (s, p) in self
            .shadow
            .params_mut()
            .into_iter()
            .zip(weights.params_mut())
        {
            ema_update(s.values, p.values, d);
        }
    }

    /// The averaged weights.
    pub fn weights(&self) -> &ModelWeights {
        &self.shadow
    }
}
