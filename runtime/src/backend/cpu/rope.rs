//! Rotary position embedding with the challenge's sign convention (spec 3.3):
//! for the first `dims` entries of a head, `x1 = x[..half]`, `x2 = x[half..dims]`,
//! `out = [x1·cos + x2·sin, −x1·sin + x2·cos]`, angle `pos · base^(−2i/dims)`.

/// cos/sin tables for positions `0..seq`, `[seq, dims/2]` each, computed in f32 like PyTorch.
pub struct RopeTable {
    pub half: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl RopeTable {
    /// Builds the table for `seq` positions.
    pub fn new(seq: usize, dims: usize, base: f32) -> Self {
        let half = dims / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / dims as f32))
            .collect();
        let mut cos = Vec::with_capacity(seq * half);
        let mut sin = Vec::with_capacity(seq * half);
        for p in 0..seq {
            for f in &inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        RopeTable { half, cos, sin }
    }

    /// Rotates the first `2*half` entries of one head vector at position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let h = self.half;
        let (c, s) = (
            &self.cos[pos * h..(pos + 1) * h],
            &self.sin[pos * h..(pos + 1) * h],
        );
        for i in 0..h {
            let (x1, x2) = (x[i], x[i + h]);
            x[i] = x1 * c[i] + x2 * s[i];
            x[i + h] = -x1 * s[i] + x2 * c[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_norm_is_kept() {
        let t = RopeTable::new(8, 4, 10_000.0);
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 5.0];
        t.apply(&mut x, 0);
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        t.apply(&mut x, 5);
        let n: f32 = x[..4].iter().map(|v| v * v).sum();
        assert!((n - 30.0).abs() < 1e-4);
        assert_eq!(x[4], 5.0, "dims past the rotated part are untouched");
    }

    #[test]
    fn scores_depend_on_relative_position_only() {
        let t = RopeTable::new(32, 8, 100.0);
        let q0: Vec<f32> = (0..8).map(|i| (i as f32 * 0.7).sin()).collect();
        let k0: Vec<f32> = (0..8).map(|i| (i as f32 * 1.3).cos()).collect();
        let dot = |m: usize, n: usize| {
            let (mut q, mut k) = (q0.clone(), k0.clone());
            t.apply(&mut q, m);
            t.apply(&mut k, n);
            q.iter().zip(&k).map(|(a, b)| a * b).sum::<f32>()
        };
        assert!((dot(10, 3) - dot(20, 13)).abs() < 1e-4);
    }
}
