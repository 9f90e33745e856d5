//! Data-parallel gradient reduction. Each rank computes gradients on its own slice of the
//! global batch; an all-reduce leaves every rank with the mean, so all replicas take the same
//! optimizer step. On GPUs the reduction is NCCL's; [`HostCollective`] is the stand-in that runs
//! the same arithmetic on the host, so CI can prove that N workers give the update of one
//! worker with the same global batch.

use crate::model::ModelWeights;
use crate::{Error, Result};

/// An all-reduce over the ranks of one data-parallel group.
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
