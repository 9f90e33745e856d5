//! The challenge metric (spec 2.3): `val_loss` in nats per token, `val_bpb` in bits per byte.

/// Running sums, in f64 as the reference accumulates them.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct BpbAccumulator {
    pub nll_sum: f64,
    pub tokens: u64,
    pub bytes: u64,
}

/// A finished evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalResult {
    /// Mean NLL per scored target, in nats.
    pub val_loss: f64,
    /// Total NLL in bits over total bytes.
    pub val_bpb: f64,
    pub tokens: u64,
    pub bytes: u64,
    pub seconds: f64,
}

impl EvalResult {
    /// `Ok(self)` when `val_loss` and `val_bpb` are finite numbers. A NaN or infinite loss
    /// (non-finite weights, a broken flag or backend) or a metric over zero bytes is an error:
    /// it must never be printed as a score.
    pub fn finite(self) -> crate::Result<Self> {
        if self.tokens == 0 || self.bytes == 0 {
            return Err(crate::Error::Numeric(format!(
                "nothing was scored ({} targets, {} bytes)",
                self.tokens, self.bytes
            )));
        }
        if !self.val_loss.is_finite() || !self.val_bpb.is_finite() {
            return Err(crate::Error::Numeric(format!(
                "val_loss {} and val_bpb {} over {} targets: the model's losses are not finite \
                 (NaN or infinite weights, or a broken setting such as the soft-cap)",
                self.val_loss, self.val_bpb, self.tokens
            )));
        }
        Ok(self)
    }
}

impl BpbAccumulator {
    /// Adds one scored target.
    pub fn add(&mut self, nll: f32, bytes: u32) {
        self.nll_sum += nll as f64;
        self.tokens += 1;
        self.bytes += bytes as u64;
    }

    /// Adds another accumulator (e.g. from another worker).
    pub fn merge(&mut self, o: &BpbAccumulator) {
        self.nll_sum += o.nll_sum;
        self.tokens += o.tokens;
        self.bytes += o.bytes;
    }

    /// Final numbers; zero tokens or bytes give NaN rather than a division panic.
    pub fn result(&self, seconds: f64) -> EvalResult {
        let val_loss = self.nll_sum / self.tokens as f64;
        let val_bpb = self.nll_sum / std::f64::consts::LN_2 / self.bytes as f64;
        EvalResult {
            val_loss,
            val_bpb,
            tokens: self.tokens,
            bytes: self.bytes,
            seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpb_is_bits_over_bytes() {
        let mut a = BpbAccumulator::default();
        a.add(std::f32::consts::LN_2, 1); // one bit for one byte
        a.add(std::f32::consts::LN_2 * 3.0, 2);
        let r = a.result(0.0);
        assert!((r.val_bpb - 4.0 / 3.0).abs() < 1e-6);
        assert!(r.finite().is_ok());
        a.add(f32::NAN, 1);
        assert!(a.result(0.0).finite().is_err());
        assert!(BpbAccumulator::default().result(0.0).finite().is_err());
        assert!((r.val_loss - 2.0 * std::f64::consts::LN_2).abs() < 1e-6);
    }
}
