//! Data-parallel gradient reduction. Each rank computes gradients on its own slice of the
//! global batch; an all-reduce leaves every rank with the mean, so all replicas take the same
//! optimizer step. On GPUs the reduction is NCCL's; [`HostCollective`] is the stand-in that runs
//! the same arithmetic on the host, so CI can prove that N workers give the update of one
//! worker with the same global batch.

use crate::backend::train::TrainBackend;
use crate::model::{ModelWeights, Params};
use crate::{Error, Result};

/// An all-reduce of gradients that live on a training backend: every rank's tree of gradient
/// tensors is replaced by the mean over ranks. The trainer calls this; an NCCL implementation
/// (one all-reduce of each rank's tensors across GPUs) fits it unchanged.
pub trait DeviceCollective<B: TrainBackend> {
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Replaces every rank's gradients by the mean over ranks.
    fn all_reduce_mean(&self, be: &B, grads: &mut [Params<B::Tensor>]) -> Result<()>;
}

/// All ranks on one backend in this process: the mean is summed in rank order on the backend.
#[derive(Debug, Clone, Copy)]
pub struct InProcess {
    pub world: usize,
}

impl<B: TrainBackend> DeviceCollective<B> for InProcess {
    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_mean(&self, be: &B, grads: &mut [Params<B::Tensor>]) -> Result<()> {
        if grads.len() != self.world || grads.is_empty() {
            return Err(Error::Usage(format!(
                "all-reduce: {} gradient sets for {} ranks",
                grads.len(),
                self.world
            )));
        }
        let n = grads.len();
        if n == 1 {
            return Ok(());
        }
        let (first, rest) = grads.split_at_mut(1);
        for g in rest.iter() {
            first[0].zip_mut(g, |_, a, b| be.add_scalar_scaled(a, b, 1.0))?;
        }
        for t in first[0].values_mut() {
            *t = be.scaled(t, 1.0 / n as f32)?;
        }
        for g in rest.iter_mut() {
            *g = first[0].try_map(|_, _, t| be.copy(t))?;
        }
        Ok(())
    }
}

/// An all-reduce over the ranks of one data-parallel group, of gradients on the host: the
/// reference the device collective is tested against.
pub trait Collective {
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Replaces every rank's gradients by the mean over ranks.
    fn all_reduce_mean(&self, grads: &mut [ModelWeights]) -> Result<()>;
}

/// All ranks live in this process; the mean is summed in rank order in f64 on the host.
#[derive(Debug, Clone, Copy)]
pub struct HostCollective {
    pub world: usize,
}

impl Collective for HostCollective {
    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_mean(&self, grads: &mut [ModelWeights]) -> Result<()> {
        if grads.len() != self.world || grads.is_empty() {
            return Err(Error::Usage(format!(
                "all-reduce: {} gradient sets for {} ranks",
                grads.len(),
                self.world
            )));
        }
        let n = grads.len();
        let (first, rest) = grads.split_at_mut(1);
        let mut sums: Vec<Vec<f64>> = first[0]
            .params_mut()
            .iter()
            .map(|p| p.values.iter().map(|&v| v as f64).collect())
            .collect();
        for g in rest.iter_mut() {
            for (s, p) in sums.iter_mut().zip(g.params_mut()) {
                s.iter_mut()
                    .zip(p.values.iter())
                    .for_each(|(s, &v)| *s += v as f64);
            }
        }
        for g in grads.iter_mut() {
            for (s, p) in sums.iter().zip(g.params_mut()) {
                p.values
                    .iter_mut()
                    .zip(s)
                    .for_each(|(v, &s)| *v = (s / n as f64) as f32);
            }
        }
        Ok(())
    }
}
