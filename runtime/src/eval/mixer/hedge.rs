//! Hedge (exponential weights) over the experts: `log w_k -= η·loss_k` after each scored target.

/// What the Hedge step charges each expert after a target is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HedgeLoss {
    /// The expert's own log-loss `-ln p_k(y)` (classic Hedge; with η = 1 it is the Bayes
    /// posterior over experts, so weight concentrates on the best single expert).
    Nll,
    /// The gradient of the mixture's log-loss with respect to `w_k`, `-p_k(y) / p_mix(y)`
    /// (exponentiated gradient: competes with the best *fixed mixture*, not just the best expert).
    Gradient,
}

impl std::str::FromStr for HedgeLoss {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nll" => Ok(HedgeLoss::Nll),
            "gradient" | "grad" | "eg" => Ok(HedgeLoss::Gradient),
            _ => Err(format!("unknown hedge loss `{s}` (nll, gradient)")),
        }
    }
}

/// Log-weights of `K` experts; inactive experts have weight exactly 0.
#[derive(Clone, Debug)]
pub struct Hedge {
    log_w: Vec<f64>,
    active: Vec<bool>,
    eta: f64,
    share: f64,
}

impl Hedge {
    /// Starts from the prior log-weights; at least one expert must be active. `share` (γ in
    /// [0, 1)) is Fixed Share (Herbster & Warmuth): after each update the weights become
    /// `(1 − γ)·w + γ/K`, so no active expert's weight falls below `γ/K` and an expert that
    /// starts badly (an empty n-gram table) can regain weight once it becomes good.
    pub fn new(prior: &[f64], active: &[bool], eta: f64, share: f64) -> Self {
        let mut h = Hedge {
            log_w: prior.to_vec(),
            active: active.to_vec(),
            eta,
            share,
        };
        h.recentre();
        h
    }

    /// Normalised weights (sum 1 over active experts, 0 elsewhere).
    pub fn weights(&self) -> Vec<f64> {
        let m = self.max_active();
        let e: Vec<f64> = self
            .log_w
            .iter()
            .zip(&self.active)
            .map(|(&l, &a)| if a { (l - m).exp() } else { 0.0 })
            .collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|x| x / s).collect()
    }

    /// Current log-weights (unnormalised, recentred so the largest active one is 0).
    pub fn log_weights(&self) -> &[f64] {
        &self.log_w
    }

    /// `log w_k -= η·loss_k` for the active experts. Non-finite losses (an expert assigning
    /// probability 0) are clamped so a single event cannot produce NaN weights.
    pub fn update(&mut self, losses: &[f64]) {
        for ((l, &a), &x) in self.log_w.iter_mut().zip(&self.active).zip(losses) {
            if a {
                let x = if x.is_finite() { x } else { 1e6 };
                *l -= self.eta * x;
            }
        }
        self.recentre();
        if self.share > 0.0 {
            let k = self.active.iter().filter(|&&a| a).count() as f64;
            let w = self.weights();
            for ((l, &a), wk) in self.log_w.iter_mut().zip(&self.active).zip(w) {
                if a {
                    *l = ((1.0 - self.share) * wk + self.share / k).ln();
                }
            }
            self.recentre();
        }
    }

    fn max_active(&self) -> f64 {
        self.log_w
            .iter()
            .zip(&self.active)
            .filter(|(_, &a)| a)
            .map(|(&l, _)| l)
            .fold(f64::NEG_INFINITY, f64::max)
    }

    fn recentre(&mut self) {
        let m = self.max_active();
        if m.is_finite() {
            self.log_w.iter_mut().for_each(|l| *l -= m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_normalise_and_follow_losses() {
        let mut h = Hedge::new(&[2.0, 0.0, 0.0], &[true, true, false], 0.5, 0.0);
        let w = h.weights();
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(w[2], 0.0);
        assert!(w[0] > w[1]);
        for _ in 0..20 {
            h.update(&[3.0, 0.1, 0.0]);
        }
        let w = h.weights();
        assert!(w[1] > 0.99, "{w:?}");
        h.update(&[f64::INFINITY, 0.0, 0.0]);
        assert!(h.weights().iter().all(|x| x.is_finite()));
    }

    #[test]
    fn fixed_share_keeps_a_floor() {
        let mut h = Hedge::new(&[0.0, 0.0], &[true, true], 1.0, 0.1);
        for _ in 0..100 {
            h.update(&[0.0, 50.0]);
        }
        let w = h.weights();
        assert!(w[1] >= 0.05 - 1e-12 && w[1] < 0.06, "{w:?}");
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
