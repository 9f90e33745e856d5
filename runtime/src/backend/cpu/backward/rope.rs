//! `qk_norm_rope` backward. Forward per row `i` and head `h` of width `hd`:
//! `a = rms(x)` (no scale), `b = rope(a, i % seq)`, `c = g[h] · b` (`g = q_gain` for q, 1 for k).
//!
//! Reference: `db = g · dc`, `dg[h] = Σ dc ⊙ b`, `da = rotᵀ(db)` (for each rotated pair
//! `(d1, d2) = (db_j, db_{j+half})`: `[d1·cos − d2·sin, d1·sin + d2·cos]`; unrotated dims pass),
//! `dx = rms_backward(x, da)`.

use super::super::norm::rms_norm_in_place;
use super::super::par::map_range;
use super::super::rope::RopeTable;
use super::norm::rms_norm_backward_row;

/// Rotates `d` by the transpose of the RoPE rotation at `pos`.
fn rope_transpose(t: &RopeTable, d: &mut [f32], pos: usize) {
    let h = t.half;
    let (c, s) = (
        &t.cos[pos * h..(pos + 1) * h],
        &t.sin[pos * h..(pos + 1) * h],
    );
    for i in 0..h {
        let (d1, d2) = (d[i], d[i + h]);
        d[i] = d1 * c[i] - d2 * s[i];
        d[i + h] = d1 * s[i] + d2 * c[i];
    }
}

/// Backward of one of q or k: `x`, `dc` are `[rows, heads*hd]`; returns `(dx, dgain [heads])`.
#[allow(clippy::too_many_arguments)]
pub fn norm_rope_backward(
    x: &[f32],
    dc: &[f32],
    heads: usize,
    hd: usize,
    seq: usize,
    table: &RopeTable,
    gain: Option<&[f32]>,
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let cols = heads * hd;
    let rows = x.len() / cols.max(1);
    let per_row: Vec<(Vec<f32>, Vec<f32>)> = map_range(rows, |i| {
        let mut dx = vec![0.0f32; cols];
        let mut dg = vec![0.0f32; heads];
        let mut b = vec![0.0f32; hd];
        let mut db = vec![0.0f32; hd];
        for h in 0..heads {
            let xs = &x[i * cols + h * hd..][..hd];
            let dcs = &dc[i * cols + h * hd..][..hd];
            let g = gain.map_or(1.0, |g| g[h]);
            if gain.is_some() {
                b.copy_from_slice(xs);
                rms_norm_in_place(&mut b, eps, 1.0);
                table.apply(&mut b, i % seq);
                dg[h] = b.iter().zip(dcs).map(|(a, c)| a * c).sum();
            }
            db.iter_mut().zip(dcs).for_each(|(d, c)| *d = g * c);
            rope_transpose(table, &mut db, i % seq);
            rms_norm_backward_row(xs, &db, &mut dx[h * hd..(h + 1) * hd], eps, 1.0);
        }
        (dx, dg)
    });
    let mut dx = Vec::with_capacity(x.len());
    let mut dg = vec![0.0f32; heads];
    for (r, g) in per_row {
        dx.extend_from_slice(&r);
        dg.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
    }
    (dx, dg)
}
