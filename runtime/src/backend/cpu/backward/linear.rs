//! `linear` backward (`y = x · wᵀ`, `w [out, in]`).
//!
//! Reference: `dx[r][i] = Σ_o dy[r][o] · w[o][i]`; `dw[o][i] = Σ_r dy[r][o] · x[r][i]`.

use super::super::matmul::{gemm_into, View};
use super::super::par::gemm_parallelism;

/// `dy [rows, out] · w [out, in]` -> `[rows, in]`.
pub fn linear_dx(dy: &[f32], rows: usize, w: &[f32], out: usize, inp: usize) -> Vec<f32> {
    let mut dx = vec![0.0; rows * inp];
    gemm_into(
        rows,
        inp,
        out,
        View {
            data: dy,
            offset: 0,
            rs: out,
            cs: 1,
        },
        View {
            data: w,
            offset: 0,
            rs: inp,
            cs: 1,
        },
        &mut dx,
        0,
        inp,
        false,
        gemm_parallelism(),
    );
    dx
}

/// `dyᵀ [out, rows] · x [rows, in]` -> `[out, in]`.
pub fn linear_dw(dy: &[f32], x: &[f32], rows: usize, out: usize, inp: usize) -> Vec<f32> {
    let mut dw = vec![0.0; out * inp];
    if rows == 0 {
        return dw;
    }
    gemm_into(
        out,
        inp,
        rows,
        View {
            data: dy,
            offset: 0,
            rs: 1,
            cs: out,
        },
        View {
            data: x,
            offset: 0,
            rs: inp,
            cs: 1,
        },
        &mut dw,
        0,
        inp,
        false,
        gemm_parallelism(),
    );
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive() {
        let (rows, out, inp) = (5, 3, 4);
        let dy: Vec<f32> = (0..rows * out).map(|i| (i as f32 * 0.3).sin()).collect();
        let w: Vec<f32> = (0..out * inp).map(|i| (i as f32 * 0.7).cos()).collect();
        let x: Vec<f32> = (0..rows * inp).map(|i| (i as f32 * 0.9).sin()).collect();
        let dx = linear_dx(&dy, rows, &w, out, inp);
        let dw = linear_dw(&dy, &x, rows, out, inp);
        for r in 0..rows {
            for i in 0..inp {
                let want: f32 = (0..out).map(|o| dy[r * out + o] * w[o * inp + i]).sum();
                assert!((dx[r * inp + i] - want).abs() < 1e-5);
            }
        }
        for o in 0..out {
            for i in 0..inp {
                let want: f32 = (0..rows).map(|r| dy[r * out + o] * x[r * inp + i]).sum();
                assert!((dw[o * inp + i] - want).abs() < 1e-5);
            }
        }
    }
}
