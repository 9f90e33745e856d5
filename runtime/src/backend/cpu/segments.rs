//! Per-segment linear products (batched LoRA: each document of a batch has its own adapter),
//! forward and backward.
//!
//! Reference, for segments `(s_k, e_k)` of rows and a stacked weight whose block `k` is
//! `w_k [out, in]`: forward `y[s_k..e_k] = x[s_k..e_k] · w_kᵀ` (other rows 0); backward
//! `dx[s_k..e_k] = dy[s_k..e_k] · w_k` (other rows 0) and `dw_k = dy[s_k..e_k]ᵀ · x[s_k..e_k]`.
//! Segments are checked by [`crate::backend::check_segments`] before these run.

use super::matmul::{gemm_into, View};
use super::par::gemm_parallelism;

fn view(data: &[f32], offset: usize, rs: usize, cs: usize) -> View<'_> {
    View {
        data,
        offset,
        rs,
        cs,
    }
}

/// `y [rows, out]` of `x [rows, inp]` and the stacked `w [segs·out, inp]`.
pub fn forward(
    x: &[f32],
    rows: usize,
    inp: usize,
    w: &[f32],
    out: usize,
    segs: &[(usize, usize)],
) -> Vec<f32> {
    let mut y = vec![0.0; rows * out];
    for (k, &(s, e)) in segs.iter().enumerate() {
        if e > s && inp > 0 {
            // w_kᵀ: element (l, j) is w[(k·out + j)·inp + l].
            let (a, b) = (view(x, s * inp, inp, 1), view(w, k * out * inp, 1, inp));
            gemm_into(
                e - s,
                out,
                inp,
                a,
                b,
                &mut y,
                s * out,
                out,
                false,
                gemm_parallelism(),
            );
        }
    }
    y
}

/// `dx [rows, inp]` of `dy [rows, out]` and the stacked `w [segs·out, inp]`.
pub fn backward_input(
    dy: &[f32],
    rows: usize,
    out: usize,
    w: &[f32],
    inp: usize,
    segs: &[(usize, usize)],
) -> Vec<f32> {
    let mut dx = vec![0.0; rows * inp];
    for (k, &(s, e)) in segs.iter().enumerate() {
        if e > s && out > 0 {
            let (a, b) = (view(dy, s * out, out, 1), view(w, k * out * inp, inp, 1));
            gemm_into(
                e - s,
                inp,
                out,
                a,
                b,
                &mut dx,
                s * inp,
                inp,
                false,
                gemm_parallelism(),
            );
        }
    }
    dx
}

/// The stacked `dw [segs·out, inp]` of `dy [rows, out]` and `x [rows, inp]`.
pub fn backward_weight(
    dy: &[f32],
    out: usize,
    x: &[f32],
    inp: usize,
    segs: &[(usize, usize)],
) -> Vec<f32> {
    let mut dw = vec![0.0; segs.len() * out * inp];
    for (k, &(s, e)) in segs.iter().enumerate() {
        if e > s {
            // dy_kᵀ: element (j, i) is dy[(s + i)·out + j].
            let (a, b) = (view(dy, s * out, 1, out), view(x, s * inp, inp, 1));
            gemm_into(
                out,
                inp,
                e - s,
                a,
                b,
                &mut dw,
                k * out * inp,
                inp,
                false,
                gemm_parallelism(),
            );
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + 1.0) * seed).sin()).collect()
    }

    #[test]
    fn match_the_naive_definitions() {
        let (rows, inp, out) = (9, 5, 3);
        let segs = [(0, 2), (2, 2), (3, 7)]; // an empty segment and an uncovered row 2, 7, 8
        let (x, w, dy) = (
            data(rows * inp, 0.37),
            data(segs.len() * out * inp, 0.91),
            data(rows * out, 0.53),
        );
        let seg_of = |r: usize| segs.iter().position(|&(s, e)| (s..e).contains(&r));
        let y = forward(&x, rows, inp, &w, out, &segs);
        let dx = backward_input(&dy, rows, out, &w, inp, &segs);
        let dw = backward_weight(&dy, out, &x, inp, &segs);
        for r in 0..rows {
            for j in 0..out {
                let want = seg_of(r).map_or(0.0, |k| {
                    (0..inp)
                        .map(|l| x[r * inp + l] * w[(k * out + j) * inp + l])
                        .sum()
                });
                assert!((y[r * out + j] - want).abs() < 1e-5, "y[{r},{j}]");
            }
            for l in 0..inp {
                let want = seg_of(r).map_or(0.0, |k| {
                    (0..out)
                        .map(|j| dy[r * out + j] * w[(k * out + j) * inp + l])
                        .sum()
                });
                assert!((dx[r * inp + l] - want).abs() < 1e-5, "dx[{r},{l}]");
            }
        }
        for (k, &(s, e)) in segs.iter().enumerate() {
            for j in 0..out {
                for l in 0..inp {
                    let want: f32 = (s..e).map(|r| dy[r * out + j] * x[r * inp + l]).sum();
                    let got = dw[(k * out + j) * inp + l];
                    assert!((got - want).abs() < 1e-5, "dw[{k}][{j},{l}]");
                }
            }
        }
    }
}
