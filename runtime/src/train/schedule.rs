//! Learning-rate multiplier and Muon momentum warm-up (spec 5.1, 5.3), as `train_gpt.py`:
//!
//! - no wall-clock cap: 1.0, then linear to 0 over the last `warmdown_iters` of `iterations`;
//! - wall-clock cap: 1.0 until the remaining time is at most `warmdown_iters` average steps,
//!   then `remaining_ms / (warmdown_iters · elapsed_ms/step)`;
//! - Muon momentum: `(1−f)·μ0 + f·μ1` with `f = min(step / warmup_steps, 1)`.

/// Schedule knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub iterations: usize,
    pub warmdown_iters: usize,
    /// `MAX_WALLCLOCK_SECONDS` in ms; `None` (or 0 s) schedules by iterations.
    pub max_wallclock_ms: Option<f64>,
    pub muon_momentum: f32,
    pub muon_momentum_warmup_start: f32,
    pub muon_momentum_warmup_steps: usize,
}

impl Schedule {
    /// LR multiplier for `step` (0-based, before the update) after `elapsed_ms` of training.
    pub fn lr_mul(&self, step: usize, elapsed_ms: f64) -> f32 {
        if self.warmdown_iters == 0 {
            return 1.0;
        }
        match self.max_wallclock_ms {
            None => {
                let start = self.iterations.saturating_sub(self.warmdown_iters);
                if (start..self.iterations).contains(&step) {
                    ((self.iterations - step) as f32 / self.warmdown_iters.max(1) as f32).max(0.0)
                } else {
                    1.0
                }
            }
            Some(cap) => {
                let step_ms = elapsed_ms / step.max(1) as f64;
                let warmdown_ms = self.warmdown_iters as f64 * step_ms;
                let remaining = (cap - elapsed_ms).max(0.0);
                if remaining <= warmdown_ms {
                    (remaining / warmdown_ms.max(1e-9)) as f32
                } else {
                    1.0
                }
            }
        }
    }

    /// Muon momentum at `step`.
    pub fn muon_momentum(&self, step: usize) -> f32 {
        let f = if self.muon_momentum_warmup_steps > 0 {
            (step as f32 / self.muon_momentum_warmup_steps as f32).min(1.0)
        } else {
            1.0
        };
        (1.0 - f) * self.muon_momentum_warmup_start + f * self.muon_momentum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(cap: Option<f64>) -> Schedule {
        Schedule {
            iterations: 150,
            warmdown_iters: 60,
            max_wallclock_ms: cap,
            muon_momentum: 0.95,
            muon_momentum_warmup_start: 0.85,
            muon_momentum_warmup_steps: 500,
        }
    }

    #[test]
    fn iteration_warmdown_is_linear_over_the_last_steps() {
        let s = sched(None);
        assert_eq!(s.lr_mul(0, 0.0), 1.0);
        assert_eq!(s.lr_mul(89, 0.0), 1.0);
        assert_eq!(s.lr_mul(90, 0.0), 1.0); // (150-90)/60
        assert!((s.lr_mul(120, 0.0) - 0.5).abs() < 1e-6);
        assert!((s.lr_mul(149, 0.0) - 1.0 / 60.0).abs() < 1e-6);
    }

    #[test]
    fn wallclock_warmdown_uses_the_average_step_time() {
        let s = sched(Some(10_000.0));
        // 100 ms/step: warmdown spans the last 6,000 ms.
        assert_eq!(s.lr_mul(30, 3_000.0), 1.0);
        assert!((s.lr_mul(70, 7_000.0) - 0.5).abs() < 1e-6);
        assert_eq!(s.lr_mul(100, 10_000.0), 0.0);
    }

    #[test]
    fn momentum_warms_up_linearly() {
        let s = sched(None);
        assert!((s.muon_momentum(0) - 0.85).abs() < 1e-7);
        assert!((s.muon_momentum(250) - 0.90).abs() < 1e-6);
        assert!((s.muon_momentum(10_000) - 0.95).abs() < 1e-7);
    }
}
