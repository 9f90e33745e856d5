//! Full output distributions of a taped forward, with the LoRA head delta: what test-time
//! training hands to the online mixer (the same values as [`TrainModel::nll`], as log-probs
//! over the whole vocabulary).

use super::tape::TrainModel;
use crate::backend::train::TrainBackend;
use crate::model::{DeviceLora, Tape};
use crate::Result;

impl<B: TrainBackend> TrainModel<B> {
    /// Log-probabilities `[rows.len(), vocab]` at flat positions `rows` of a taped forward
    /// (head LoRA delta included when `lora` adapts the head). `-out[i][targets[i]]` equals
    /// [`TrainModel::nll`] bit for bit.
    pub fn log_probs(
        &self,
        tape: &Tape<B::Tensor>,
        rows: &[usize],
        lora: Option<&DeviceLora<B::Tensor>>,
    ) -> Result<Vec<f32>> {
        let (hs, _, delta) = self.head_inputs(tape, rows, lora)?;
        self.backend().log_probs_delta(
            &hs,
            self.model.head(),
            delta.as_ref(),
            self.config().logit_softcap,
        )
    }
}
