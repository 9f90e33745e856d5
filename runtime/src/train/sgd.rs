//! SGD with momentum and (coupled) weight decay, as `torch.optim.SGD`:
//! `g ← g + wd·p`, `buf ← μ·buf + g` (`buf = g` at the first step), `p ← p − lr·buf`; plus
//! global gradient-norm clipping, as `torch.nn.utils.clip_grad_norm_`.

use crate::backend::cpu::optim::{sgd_update, SgdStep};
use crate::{Error, Result};

/// Optimiser state over a fixed list of parameter slices.
#[derive(Debug, Clone, Default)]
pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
    buf: Vec<Vec<f32>>,
}

impl Sgd {
    pub fn new(momentum: f32, weight_decay: f32) -> Self {
        Sgd {
            momentum,
            weight_decay,
            buf: Vec::new(),
        }
    }

    /// One update with learning rate `lr`; gradients are scaled by `grad_scale` first (the
    /// clipping factor of [`clip_factor`], 1 for none).
    pub fn step(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        lr: f32,
        grad_scale: f32,
    ) -> Result<()> {
        if params.len() != grads.len() || params.iter().zip(grads).any(|(p, g)| p.len() != g.len())
        {
            return Err(Error::Usage("SGD: parameters and gradients differ".into()));
        }
        let first = self.buf.is_empty();
        if first {
            self.buf = grads.iter().map(|g| vec![0.0; g.len()]).collect();
        }
        let s = SgdStep {
            lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            grad_scale,
            first,
        };
        for ((p, g), b) in params.iter_mut().zip(grads).zip(&mut self.buf) {
            sgd_update(p, g, b, &s);
        }
        Ok(())
    }
}

/// Global L2 norm of all gradient slices, summed in f64.
pub fn global_norm(grads: &[&[f32]]) -> f64 {
    crate::backend::cpu::optim::sum_squares(grads).sqrt()
}

/// `torch.nn.utils.clip_grad_norm_`'s factor for a gradient of global norm `norm`:
/// `min(1, max_norm / (norm + 1e-6))`; 1 when `max_norm <= 0` (no clipping).
pub fn clip_coef(norm: f64, max_norm: f32) -> f32 {
    if max_norm <= 0.0 {
        return 1.0;
    }
    (max_norm as f64 / (norm + 1e-6)).min(1.0) as f32
}

/// The factor that clips the global gradient norm of `grads` to `max_norm`.
pub fn clip_factor(grads: &[&[f32]], max_norm: f32) -> f32 {
    clip_coef(global_norm(grads), max_norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn momentum_matches_torch_rule() {
        let mut p = vec![1.0f32, -2.0];
        let mut s = Sgd::new(0.9, 0.0);
        s.step(&mut [&mut p], &[&[1.0, 1.0]], 0.1, 1.0).unwrap();
        assert_eq!(p, vec![0.9, -2.1]);
        s.step(&mut [&mut p], &[&[1.0, 1.0]], 0.1, 1.0).unwrap();
        // buf = 0.9 * 1 + 1 = 1.9
        assert!((p[0] - (0.9 - 0.19)).abs() < 1e-6);
        assert!((clip_factor(&[&[3.0, 4.0]], 1.0) - 0.2).abs() < 1e-6);
        assert_eq!(clip_factor(&[&[0.3, 0.4]], 1.0), 1.0);
    }
}
