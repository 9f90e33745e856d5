//! `embedding` / `gather_rows` backward: scatter-add of row gradients.
//!
//! Reference: `dtable[ids[i]] += dy[i]` for every `i` (repeated ids accumulate).

/// Scatter-adds the `cols`-wide rows of `dy` into a zero `[total, cols]` matrix at `idx`.
pub fn scatter_add_rows(dy: &[f32], cols: usize, idx: &[usize], total: usize) -> Vec<f32> {
    let mut out = vec![0.0; total * cols];
    for (i, &r) in idx.iter().enumerate() {
        let src = &dy[i * cols..(i + 1) * cols];
        out[r * cols..(r + 1) * cols]
            .iter_mut()
            .zip(src)
            .for_each(|(o, s)| *o += s);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn repeated_rows_accumulate() {
        let out = super::scatter_add_rows(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, &[1, 0, 1], 3);
        assert_eq!(out, vec![3.0, 4.0, 6.0, 8.0, 0.0, 0.0]);
    }
}
