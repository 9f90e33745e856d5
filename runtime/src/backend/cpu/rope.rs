//! Rotary position embedding with the challenge's sign convention (spec 3.3):
//! for the first `dims` entries of a head, `x1 = x[..half]`, `x2 = x[half..dims]`,
//! `out = [x1·cos + x2·sin, −x1·sin + x2·cos]`, angle `pos · base^(−2i/dims)`.

use super::simd::multiversion;

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

    /// The table for `(seq, dims, base)`, shared: the last one built is kept (a forward pass asks
    /// for the same table in every layer, and building it costs `seq·dims` sines and cosines).
    pub fn shared(seq: usize, dims: usize, base: f32) -> std::sync::Arc<RopeTable> {
        use std::sync::{Arc, Mutex};
        type Entry = ((usize, usize, u32), Arc<RopeTable>);
        static LAST: Mutex<Option<Entry>> = Mutex::new(None);
        let key = (seq, dims, base.to_bits());
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((k, t)) if *k == key => t.clone(),
            _ => {
                let t = Arc::new(RopeTable::new(seq, dims, base));
                *last = Some((key, t.clone()));
                t
            }
        }
    }

    /// Rotates the first `2*half` entries of one head vector at position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let h = self.half;
        rotate(
            x,
            h,
            &self.cos[pos * h..(pos + 1) * h],
            &self.sin[pos * h..(pos + 1) * h],
        );
    }
}

multiversion! {
    /// `x[i], x[i+h] ← x[i]·c[i] + x[i+h]·s[i], −x[i]·s[i] + x[i+h]·c[i]` for `i < h`.
    fn rotate(x: &mut [f32], h: usize, c: &[f32], s: &[f32]) {
        let (x1, rest) = x.split_at_mut(h);
        for (((a, b), &cv), &sv) in x1.iter_mut().zip(&mut rest[..h]).zip(c).zip(s) {
            let (v1, v2) = (*a, *b);
            *a = v1 * cv + v2 * sv;
            *b = -v1 * sv + v2 * cv;
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
    fn shared_tables_are_the_tables_asked_for() {
        let a = RopeTable::shared(16, 8, 100.0);
        assert_eq!(a.cos, RopeTable::new(16, 8, 100.0).cos);
        let b = RopeTable::shared(16, 8, 200.0);
        assert_eq!(b.sin, RopeTable::new(16, 8, 200.0).sin);
        assert_ne!(a.sin, b.sin);
        let c = RopeTable::shared(16, 8, 200.0);
        assert!(std::sync::Arc::ptr_eq(&b, &c) || c.sin == b.sin);
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
