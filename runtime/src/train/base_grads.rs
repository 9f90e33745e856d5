//! Base-weight gradients where the backward leaves them: the tree of the model's parameters
//! ([`Params`]) over backend tensors, every gradient included (the skip weights' rows are
//! stacked and the BigramHash and value-embedding scalars reduced on the device). The trainer
//! sums its micro-steps here and hands the sum to the optimizer ops without a download; only
//! export, checkpoints and tests bring gradients to the host ([`BaseGrads::download`]).
use crate::backend::train::TrainBackend;
use crate::backend::Backend;
use crate::model::{Matrix, ModelConfig, ModelWeights, Params};
use crate::{Error, Result};

/// Gradients of every base weight of a model, as backend tensors in the tree of its
/// parameters. [`BaseGrads::download`] gives the host [`ModelWeights`] the optimizers take.
pub struct BaseGrads<T> {
    pub(crate) config: ModelConfig,
    pub(crate) params: Params<T>,
}

/// A backend matrix downloaded into a host [`Matrix`] of the same shape.
pub(crate) fn download_matrix<B: Backend>(be: &B, t: &B::Tensor) -> Result<Matrix> {
    let (r, c) = be.shape(t);
    Matrix::new(r, c, be.download(t)?)
}

impl<T> BaseGrads<T> {
    /// `self ← s · self`, as the host's `0 + s·g` rounds it.
    pub fn scale<B: TrainBackend<Tensor = T>>(&mut self, be: &B, s: f32) -> Result<()> {
        if s == 1.0 {
            return Ok(());
        }
        for t in self.params.values_mut() {
            *t = be.scaled(t, s)?;
        }
        Ok(())
    }

    /// `self += s · other` (the same model's gradients from another micro-batch).
    pub fn add_scaled<B: TrainBackend<Tensor = T>>(
        &mut self,
        be: &B,
        other: BaseGrads<T>,
        s: f32,
    ) -> Result<()> {
        self.params.zip_mut(&other.params, |name, a, b| {
            if be.shape(a) != be.shape(b) {
                return Err(Error::Backend(format!(
                    "gradient accumulation: {name} has shapes {:?} and {:?}",
                    be.shape(a),
                    be.shape(b)
                )));
            }
            be.add_scalar_scaled(a, b, s)
        })
    }

    /// The gradients on the host, laid out as the weights.
    pub fn download<B: TrainBackend<Tensor = T>>(self, be: &B) -> Result<ModelWeights> {
        Ok(ModelWeights {
            params: self.params.try_map(|_, _, t| download_matrix(be, t))?,
            config: self.config,
        })
    }
}
