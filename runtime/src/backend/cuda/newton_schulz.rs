//! Muon's Newton-Schulz orthogonalisation on the device ([`TrainBackend::newton_schulz`]):
//! three cuBLAS products per iteration and the `ns_axpby` kernel of `cuda/newton_schulz.cu`
//! for the elementwise steps. Reference: `train/muon.rs` (`newton_schulz`,
//! `newton_schulz_bf16`), computed in the same order with the same roundings.
//!
//! The oracle transposes a tall matrix to work on its wide orientation `X = Yᵀ`; here the
//! transposes are folded into the GEMMs instead: `A = X·Xᵀ = Yᵀ·Y`, and the new
//! `Xᵀ = a·Y + (B·X)ᵀ = a·Y + Y·Bᵀ`.
//!
//! [`TrainBackend::newton_schulz`]: crate::backend::train::TrainBackend::newton_schulz

use super::gpu::{Gpu, KArg, RowGemm};
use super::ops::grid_1d;
use super::{CudaBackend, CudaTensor};
use crate::backend::train::TrainBackend;
use crate::train::muon::NS_COEFFS;
use crate::Result;

fn gemm(m: usize, n: usize, k: usize, a_t: bool, b_t: bool) -> RowGemm {
    RowGemm {
        m,
        n,
        k,
        a_t,
        b_t,
        accumulate: false,
    }
}

impl<G: Gpu> CudaBackend<G> {
    /// `R(R(alpha·x) + beta·y)` into a fresh buffer of `n` values (`R`: bf16 rounding when
    /// `round`, else none; no `y` term when `y` is `None`).
    fn ns_axpby(
        &self,
        x: &G::F32,
        alpha: f32,
        y: Option<(&G::F32, f32)>,
        n: usize,
        round: bool,
    ) -> Result<G::F32> {
        let mut out = self.alloc(n)?;
        let (y, beta) = match y {
            Some((y, beta)) => (KArg::F32(y), beta),
            None => (KArg::Null, 0.0),
        };
        // SAFETY: matches `ns_axpby` in cuda/newton_schulz.cu; `x`, `y` (when given) and `out`
        // hold `n` values (callers pass buffers of one matrix's size).
        unsafe {
            self.run(
                &self.kernels.ns_axpby,
                "ns_axpby",
                grid_1d(n)?,
                &mut [
                    KArg::F32Mut(&mut out),
                    KArg::F32(x),
                    KArg::Float(alpha),
                    y,
                    KArg::Float(beta),
                    KArg::I64(n as i64),
                    KArg::I32(round as i32),
                ],
            )?;
        }
        Ok(out)
    }

    /// A fresh `c_i = op(a_i)·op(b_i)` of `g`'s shape for each of `count` matrices stacked in
    /// `a` and `b` (each `a_i` `g.m·g.k` values after the previous, each `b_i` `g.k·g.n`):
    /// one (strided-batched) call; bf16-rounded when `round`.
    fn ns_product(
        &self,
        g: &RowGemm,
        a: &G::F32,
        b: &G::F32,
        round: bool,
        count: usize,
    ) -> Result<G::F32> {
        let n = g.m * g.n;
        let mut c = self.alloc(count * n)?;
        let strides = [g.m * g.k, g.k * g.n, n];
        self.row_gemm_batched(g, count, strides, a, 0, b, 0, &mut c, 0)?;
        if round {
            c = self.ns_axpby(&c, 1.0, None, count * n, true)?;
        }
        Ok(c)
    }

    /// `steps` Newton-Schulz iterations on each of `us` (one shape `[rows, cols]`), in
    /// float32, or with every intermediate rounded to bf16 as `train_gpt.py` runs them when
    /// `round`. Each matrix is normalised on its own, then all of them are stacked and every
    /// product of an iteration is one strided-batched call over the stack (each entry the same
    /// call a single matrix makes, so the results are the one-at-a-time results), and the
    /// element-wise steps one launch over the stack: ~25 launches for the group where there
    /// were ~25 per matrix.
    pub(super) fn newton_schulz_batched(
        &self,
        us: &[&CudaTensor<G>],
        steps: usize,
        round: bool,
    ) -> Result<Vec<CudaTensor<G>>> {
        let Some(first) = us.first() else {
            return Ok(Vec::new());
        };
        let (rows, cols) = (first.rows, first.cols);
        if us.iter().any(|u| (u.rows, u.cols) != (rows, cols)) {
            return Err(crate::Error::Backend(
                "newton_schulz_batched: matrices of different shapes".into(),
            ));
        }
        let count = us.len();
        let n = rows * cols;
        let starts = us
            .iter()
            .map(|u| Ok(self.tensor(self.ns_start(u, round)?, rows, cols)))
            .collect::<Result<Vec<_>>>()?;
        let mut x = if count == 1 {
            starts.into_iter().next().expect("one matrix").buf
        } else {
            let parts: Vec<&CudaTensor<G>> = starts.iter().collect();
            self.concat_rows(&parts)?.buf
        };
        let (a, b, c) = NS_COEFFS;
        // The wide orientation is r × k with r ≤ k; `tall` keeps X as its transpose Y.
        let tall = rows > cols;
        let (r, k) = if tall { (cols, rows) } else { (rows, cols) };
        let rr = r * r;
        for _ in 0..steps {
            let am = if tall {
                self.ns_product(&gemm(r, r, k, true, false), &x, &x, round, count)?
            } else {
                self.ns_product(&gemm(r, r, k, false, true), &x, &x, round, count)?
            };
            // B = b·A + (c·A)·A
            let ca = self.ns_axpby(&am, c, None, count * rr, round)?;
            let ca_a = self.ns_product(&gemm(r, r, r, false, false), &ca, &am, round, count)?;
            let bm = self.ns_axpby(&am, b, Some((&ca_a, 1.0)), count * rr, round)?;
            // X = a·X + B·X   (tall: Y = a·Y + Y·Bᵀ)
            let bx = if tall {
                self.ns_product(&gemm(k, r, r, false, true), &x, &bm, round, count)?
            } else {
                self.ns_product(&gemm(r, k, r, false, false), &bm, &x, round, count)?
            };
            x = self.ns_axpby(&x, a, Some((&bx, 1.0)), count * n, round)?;
        }
        let x = self.tensor(x, count * rows, cols);
        if count == 1 {
            return Ok(vec![x]);
        }
        (0..count)
            .map(|i| self.slice_rows(&x, i * rows, (i + 1) * rows))
            .collect()
    }

    /// `X = G / (‖G‖ + eps)` of `u` (after rounding it to bf16 when `round`), the start of
    /// the iterations, computed on the device.
    fn ns_start(&self, u: &CudaTensor<G>, round: bool) -> Result<G::F32> {
        let (rows, cols) = (u.rows, u.cols);
        let n = rows * cols;
        // X = G / (‖G‖ + eps), after rounding G to bf16 in the bf16 run.
        let rounded;
        let g = if round {
            rounded = self.tensor(self.ns_axpby(&u.buf, 1.0, None, n, true)?, rows, cols);
            &rounded
        } else {
            u
        };
        // ‖G‖² summed on the device (f64, fixed order) and X = G·inv there too: nothing is
        // read back to the host.
        let mut pairs = self.gpu.zeros(2)?;
        let mut partial = self.alloc(2 * super::optim::SS_BLOCKS)?;
        self.sum_into_pair(&g.buf, n, true, &mut partial, &mut pairs, 0)?;
        let mut x = self.alloc(n)?;
        // SAFETY: matches `ns_normalize` in cuda/newton_schulz.cu; `x` and `g` hold n values,
        // `pairs` one (hi, lo) pair.
        unsafe {
            self.run(
                &self.kernels.ns_normalize,
                "ns_normalize",
                grid_1d(n)?,
                &mut [
                    KArg::F32Mut(&mut x),
                    KArg::F32(&g.buf),
                    KArg::F32(&pairs),
                    KArg::I64(n as i64),
                    KArg::I32(round as i32),
                ],
            )?;
        }
        Ok(x)
    }
}
