//! Online n-gram count tables (unigram, bigram, hashed trigram) with add-α smoothing.
//!
//! Every expert built from these tables is a proper distribution over the `V` tokens:
//! `p(y) = (c(y) + α) / (Σ_v c(v) + α·V)`, so `Σ_y p(y) = 1` exactly (up to rounding) for any
//! counts and any `α > 0`. Row totals are kept alongside the cells, so a probability costs
//! `O(1)` and a full distribution `O(V)`.

use std::collections::HashMap;

/// Trigram bucket of the context `(prev2, prev)` (spec 7.7's hash):
/// `((prev2·36313) XOR (prev·27191)) mod buckets`, with `prev2 = 0` when there is none.
pub fn trigram_bucket(prev2: Option<u32>, prev: u32, buckets: usize) -> usize {
    let p2 = u64::from(prev2.unwrap_or(0));
    let h = p2.wrapping_mul(36313) ^ u64::from(prev).wrapping_mul(27191);
    (h % buckets.max(1) as u64) as usize
}

/// Count tables of the tokens observed so far.
#[derive(Clone, Debug)]
pub struct NgramTables {
    vocab: usize,
    alpha: f64,
    tri_alpha: f64,
    buckets: usize,
    total: u64,
    uni: Vec<u32>,
    /// `prev * V + y -> count`.
    bi: HashMap<u64, u32>,
    bi_row: Vec<u32>,
    /// `bucket * V + y -> count`.
    tri: HashMap<u64, u32>,
    tri_row: Vec<u32>,
}

impl NgramTables {
    /// Empty tables over `vocab` tokens with add-`alpha` smoothing (unigram, bigram), add-`tri_alpha`
    /// smoothing (trigram) and `buckets` trigram contexts. Both α must be positive.
    pub fn new(vocab: usize, alpha: f64, tri_alpha: f64, buckets: usize) -> Self {
        NgramTables {
            vocab,
            alpha,
            tri_alpha,
            buckets: buckets.max(1),
            total: 0,
            uni: vec![0; vocab],
            bi: HashMap::new(),
            bi_row: vec![0; vocab],
            tri: HashMap::new(),
            tri_row: vec![0; buckets.max(1)],
        }
    }

    /// Tokens absorbed so far (each `observe` adds one).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Trigram buckets.
    pub fn buckets(&self) -> usize {
        self.buckets
    }

    fn smooth(&self, alpha: f64, count: u32, row: u64) -> f64 {
        (f64::from(count) + alpha) / (row as f64 + alpha * self.vocab as f64)
    }

    fn cell(map: &HashMap<u64, u32>, row: usize, vocab: usize, y: u32) -> u32 {
        map.get(&(row as u64 * vocab as u64 + u64::from(y)))
            .copied()
            .unwrap_or(0)
    }

    /// Unigram probability of `y`.
    pub fn unigram(&self, y: u32) -> f64 {
        self.smooth(
            self.alpha,
            self.uni.get(y as usize).copied().unwrap_or(0),
            self.total,
        )
    }

    /// Bigram probability of `y` after `prev`.
    pub fn bigram(&self, prev: u32, y: u32) -> f64 {
        let row = self.bi_row.get(prev as usize).copied().unwrap_or(0);
        self.smooth(
            self.alpha,
            Self::cell(&self.bi, prev as usize, self.vocab, y),
            u64::from(row),
        )
    }

    /// Hashed-trigram probability of `y` in context bucket `h` (see [`trigram_bucket`]).
    pub fn trigram(&self, h: usize, y: u32) -> f64 {
        self.smooth(
            self.tri_alpha,
            Self::cell(&self.tri, h, self.vocab, y),
            u64::from(self.tri_row[h]),
        )
    }

    /// Adds the token `y` seen after `(prev2, prev)`. Callers must only pass tokens whose score
    /// has already been accumulated (score-before-update).
    pub fn observe(&mut self, prev2: Option<u32>, prev: u32, y: u32) {
        let v = self.vocab as u64;
        if (y as usize) >= self.vocab || (prev as usize) >= self.vocab {
            return;
        }
        self.total += 1;
        self.uni[y as usize] += 1;
        *self
            .bi
            .entry(u64::from(prev) * v + u64::from(y))
            .or_insert(0) += 1;
        self.bi_row[prev as usize] += 1;
        let h = trigram_bucket(prev2, prev, self.buckets);
        *self.tri.entry(h as u64 * v + u64::from(y)).or_insert(0) += 1;
        self.tri_row[h] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothed_rows_sum_to_one() {
        let mut t = NgramTables::new(7, 0.1, 0.01, 5);
        for (i, y) in [1u32, 2, 2, 3, 6, 1, 1, 0].iter().enumerate() {
            t.observe(Some(i as u32 % 7), (i as u32 + 3) % 7, *y);
        }
        assert_eq!(t.total(), 8);
        let s: f64 = (0..7).map(|y| t.unigram(y)).sum();
        assert!((s - 1.0).abs() < 1e-12);
        for prev in 0..7 {
            let s: f64 = (0..7).map(|y| t.bigram(prev, y)).sum();
            assert!((s - 1.0).abs() < 1e-12);
        }
        for h in 0..5 {
            let s: f64 = (0..7).map(|y| t.trigram(h, y)).sum();
            assert!((s - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn counts_move_probability() {
        let mut t = NgramTables::new(4, 0.5, 0.5, 16);
        let before = t.bigram(1, 2);
        t.observe(None, 1, 2);
        assert!(t.bigram(1, 2) > before);
        assert_eq!(trigram_bucket(None, 3, 65536), (3 * 27191) % 65536);
    }
}
