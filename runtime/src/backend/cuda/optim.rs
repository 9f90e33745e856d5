//! Launchers of `cuda/optim.cu`: the optimizer step and the trainer's small copies on the
//! device, so weights, gradients and optimizer state never leave it during training.
//! Reference: `backend/cpu/optim.rs` (the oracles the `TrainBackend` defaults run).

use super::gpu::{Gpu, KArg};
use super::ops::{config, grid_1d, grid_rows, int, THREADS};
use super::{same_shape, CudaBackend, CudaTensor};
use crate::backend::cpu::optim::{AdamStep, SgdStep};
use crate::{Error, Result};

/// Blocks of `sum_squares_partial` (each writes one (hi, lo) pair).
pub(super) const SS_BLOCKS: usize = 128;

impl<G: Gpu> CudaBackend<G> {
    /// `muon_momentum`: `buf` updated in place, the update's input returned.
    pub(super) fn muon_momentum_device(
        &self,
        buf: &mut CudaTensor<G>,
        g: &CudaTensor<G>,
        mu: f32,
        nesterov: bool,
    ) -> Result<CudaTensor<G>> {
        same_shape(buf, g, "muon_momentum")?;
        let n = buf.len();
        let mut u = self.alloc(n)?;
        // SAFETY: matches `muon_momentum` in cuda/optim.cu; all three hold n values.
        unsafe {
            self.run(
                &self.kernels.muon_momentum,
                "muon_momentum",
                grid_1d(n)?,
                &mut [
                    KArg::F32Mut(&mut buf.buf),
                    KArg::F32(&g.buf),
                    KArg::F32Mut(&mut u),
                    KArg::Float(mu),
                    KArg::I32(nesterov as i32),
                    KArg::I64(n as i64),
                ],
            )?;
        }
        Ok(self.tensor(u, buf.rows, buf.cols))
    }

    /// `muon_apply` on `w` in place.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn muon_apply_device(
        &self,
        w: &mut CudaTensor<G>,
        o: &CudaTensor<G>,
        decay: f32,
        lr: f32,
        shape_scale: f32,
        bf16: bool,
    ) -> Result<()> {
        same_shape(w, o, "muon_apply")?;
        let n = w.len();
        // SAFETY: matches `muon_apply` in cuda/optim.cu; both hold n values.
        unsafe {
            self.run(
                &self.kernels.muon_apply,
                "muon_apply",
                grid_1d(n)?,
                &mut [
                    KArg::F32Mut(&mut w.buf),
                    KArg::F32(&o.buf),
                    KArg::Float(decay),
                    KArg::Float(lr),
                    KArg::Float(shape_scale),
                    KArg::I32(bf16 as i32),
                    KArg::I64(n as i64),
                ],
            )
        }
    }

    /// `adam_update` of `w`, `m`, `v` in place.
    pub(super) fn adam_update_device(
        &self,
        w: &mut CudaTensor<G>,
        g: &CudaTensor<G>,
        m: &mut CudaTensor<G>,
        v: &mut CudaTensor<G>,
        s: &AdamStep,
    ) -> Result<()> {
        same_shape(w, g, "adam_update")?;
        same_shape(w, m, "adam_update")?;
        same_shape(w, v, "adam_update")?;
        let n = w.len();
        // SAFETY: matches `adam_update` in cuda/optim.cu; all four hold n values.
        unsafe {
            self.run(
                &self.kernels.adam_update,
                "adam_update",
                grid_1d(n)?,
                &mut [
                    KArg::F32Mut(&mut w.buf),
                    KArg::F32(&g.buf),
                    KArg::F32Mut(&mut m.buf),
                    KArg::F32Mut(&mut v.buf),
                    KArg::Float(s.beta1),
                    KArg::Float(s.beta2),
                    KArg::Float(s.eps),
                    KArg::Float(s.step_size),
                    KArg::Float(s.bc2_sqrt),
                    KArg::Float(s.decay),
                    KArg::I64(n as i64),
                ],
            )
        }
    }

    /// `sgd_update` of `w` and its momentum buffer `b` in place.
    pub(super) fn sgd_update_device(
        &self,
        w: &mut CudaTensor<G>,
        g: &CudaTensor<G>,
        b: &mut CudaTensor<G>,
        s: &SgdStep,
    ) -> Result<()> {
        same_shape(w, g, "sgd_update")?;
        same_shape(w, b, "sgd_update")?;
        let n = w.len();
        let restart = s.first || s.momentum == 0.0;
        // SAFETY: matches `sgd_update` in cuda/optim.cu; all three hold n values.
        unsafe {
            self.run(
                &self.kernels.sgd_update,
                "sgd_update",
                grid_1d(n)?,
                &mut [
                    KArg::F32Mut(&mut w.buf),
                    KArg::F32(&g.buf),
                    KArg::F32Mut(&mut b.buf),
                    KArg::Float(s.lr),
                    KArg::Float(s.momentum),
                    KArg::Float(s.weight_decay),
                    KArg::Float(s.grad_scale),
                    KArg::I32(restart as i32),
                    KArg::I64(n as i64),
                ],
            )
        }
    }

    /// `ema_update` of `e` in place.
    pub(super) fn ema_update_device(
        &self,
        e: &mut CudaTensor<G>,
        w: &CudaTensor<G>,
        decay: f32,
    ) -> Result<()> {
        same_shape(e, w, "ema_update")?;
        let n = e.len();
        // SAFETY: matches `ema_update` in cuda/optim.cu; both hold n values.
        unsafe {
            self.run(
                &self.kernels.ema_update,
                "ema_update",
                grid_1d(n)?,
                &mut [
                    KArg::F32Mut(&mut e.buf),
                    KArg::F32(&w.buf),
                    KArg::Float(decay),
                    KArg::I64(n as i64),
                ],
            )
        }
    }

    /// `fake_quant_rows` into a new tensor.
    pub(super) fn fake_quant_rows_device(&self, w: &CudaTensor<G>) -> Result<CudaTensor<G>> {
        let mut out = self.alloc(w.len())?;
        if w.rows > 0 && w.cols > 0 {
            // SAFETY: matches `fake_quant_rows` in cuda/optim.cu; one block per row of `cols`.
            unsafe {
                self.run(
                    &self.kernels.fake_quant_rows,
                    "fake_quant_rows",
                    grid_rows(w.rows)?,
                    &mut [
                        KArg::F32(&w.buf),
                        KArg::F32Mut(&mut out),
                        KArg::I32(int(w.rows, "rows")?),
                        KArg::I32(int(w.cols, "cols")?),
                    ],
                )?;
            }
        }
        Ok(self.tensor(out, w.rows, w.cols))
    }

    /// The squared norms of `ts`, each a fixed-order f64 sum on the device, read back as
    /// (hi, lo) pairs in one download and summed in tensor order.
    pub(super) fn sum_squares_device(&self, ts: &[&CudaTensor<G>]) -> Result<f64> {
        if ts.is_empty() {
            return Ok(0.0);
        }
        let mut pairs = self.gpu.zeros(2 * ts.len())?;
        let mut partial = self.alloc(2 * SS_BLOCKS)?;
        for (slot, t) in ts.iter().enumerate() {
            self.sum_into_pair(&t.buf, t.len(), true, &mut partial, &mut pairs, slot)?;
        }
        let v = self.d2h(&pairs, 0..2 * ts.len())?;
        Ok(v.chunks(2).map(|p| p[0] as f64 + p[1] as f64).sum())
    }

    /// `Σ x[i]²` (or `Σ x[i]`) of the first `n` values of `x`, a fixed-order f64 sum, as the
    /// (hi, lo) pair `slot` of `pairs`; `partial` is scratch of 2·SS_BLOCKS values.
    pub(super) fn sum_into_pair(
        &self,
        x: &G::F32,
        n: usize,
        square: bool,
        partial: &mut G::F32,
        pairs: &mut G::F32,
        slot: usize,
    ) -> Result<()> {
        let blocks = n.div_ceil(THREADS as usize).clamp(1, SS_BLOCKS);
        // SAFETY: matches `sum_squares_partial` and `sum_pairs` in cuda/optim.cu: `blocks`
        // blocks each write one pair of `partial` (2 * SS_BLOCKS values); `x` holds at least n
        // values; `pairs` holds slot `slot`.
        unsafe {
            self.run(
                &self.kernels.sum_squares_partial,
                "sum_squares_partial",
                config((blocks as u32, 1, 1), THREADS),
                &mut [
                    KArg::F32(x),
                    KArg::I64(n as i64),
                    KArg::F32Mut(partial),
                    KArg::I32(square as i32),
                ],
            )?;
            self.run(
                &self.kernels.sum_pairs,
                "sum_pairs",
                config((1, 1, 1), 1),
                &mut [
                    KArg::F32(partial),
                    KArg::I32(blocks as i32),
                    KArg::F32Mut(pairs),
                    KArg::I32(int(slot, "sums")?),
                ],
            )
        }
    }

    /// `Σ x[i]` over the first `n` values of `x` (fixed-order f64) as a `[1, 1]` tensor.
    pub(super) fn sum_to_scalar(&self, x: &G::F32, n: usize) -> Result<CudaTensor<G>> {
        let mut pairs = self.gpu.zeros(2)?;
        let mut partial = self.alloc(2 * SS_BLOCKS)?;
        self.sum_into_pair(x, n, false, &mut partial, &mut pairs, 0)?;
        let mut out = self.alloc(1)?;
        // SAFETY: matches `pairs_total` in cuda/optim.cu; `pairs` holds one pair.
        unsafe {
            self.run(
                &self.kernels.pairs_total,
                "pairs_total",
                config((1, 1, 1), 1),
                &mut [KArg::F32(&pairs), KArg::I32(1), KArg::F32Mut(&mut out)],
            )?;
        }
        Ok(self.tensor(out, 1, 1))
    }

    /// `Σ_r nll(h[r], targets[r])` as a `[1, 1]` tensor that stays on the device: the head in
    /// chunks of rows, each chunk's NLLs summed in f64 on the device, the chunks' sums added in
    /// order (the training loss without a download per micro-step).
    pub(super) fn nll_sum_device(
        &self,
        h: &CudaTensor<G>,
        head: &CudaTensor<G>,
        targets: &[u32],
        softcap: f32,
    ) -> Result<CudaTensor<G>> {
        crate::backend::check_head(
            (h.rows, h.cols),
            (head.rows, head.cols),
            Some(targets),
            "nll_sum",
        )?;
        let chunks = h.rows.div_ceil(super::HEAD_ROWS_PER_CHUNK).max(1);
        let mut pairs = self.gpu.zeros(2 * chunks)?;
        let mut partial = self.alloc(2 * SS_BLOCKS)?;
        for (c, r0) in (0..h.rows).step_by(super::HEAD_ROWS_PER_CHUNK).enumerate() {
            let r1 = (r0 + super::HEAD_ROWS_PER_CHUNK).min(h.rows);
            let mut logits = self.head_logits(h, head, r0, r1)?;
            let t = self.h2d_u32(&targets[r0..r1])?;
            let mut nll = self.alloc(r1 - r0)?;
            self.launch_softcap_nll(&mut logits, &t, &mut nll, r1 - r0, head.rows, softcap)?;
            self.sum_into_pair(&nll, r1 - r0, false, &mut partial, &mut pairs, c)?;
        }
        let mut out = self.alloc(1)?;
        // SAFETY: matches `pairs_total` in cuda/optim.cu; `pairs` holds `chunks` pairs.
        unsafe {
            self.run(
                &self.kernels.pairs_total,
                "pairs_total",
                config((1, 1, 1), 1),
                &mut [
                    KArg::F32(&pairs),
                    KArg::I32(int(chunks, "chunks")?),
                    KArg::F32Mut(&mut out),
                ],
            )?;
        }
        Ok(self.tensor(out, 1, 1))
    }

    /// `n` values of `src` from element `src_off` into `dst` from element `dst_off`.
    pub(super) fn copy_range(
        &self,
        src: &G::F32,
        src_off: usize,
        dst: &mut G::F32,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        if src_off + n > G::len(src) || dst_off + n > G::len(dst) {
            return Err(Error::Backend(format!(
                "copy of {n} values from {src_off} of {} to {dst_off} of {}",
                G::len(src),
                G::len(dst)
            )));
        }
        // SAFETY: matches `copy_f32` in cuda/optim.cu; both ranges checked above.
        unsafe {
            self.run(
                &self.kernels.copy_f32,
                "copy_f32",
                grid_1d(n)?,
                &mut [
                    KArg::F32At(src, src_off),
                    KArg::F32MutAt(dst, dst_off),
                    KArg::I64(n as i64),
                ],
            )
        }
    }

    /// `[1, cols]` rows stacked into `[rows.len(), cols]` (zeros where `None`).
    pub(super) fn stack_rows_device(
        &self,
        rows: &[Option<&CudaTensor<G>>],
        cols: usize,
    ) -> Result<CudaTensor<G>> {
        let mut out = self.gpu.zeros(rows.len() * cols)?;
        for (j, r) in rows.iter().enumerate() {
            if let Some(r) = r {
                if r.len() != cols {
                    return Err(Error::Backend(format!(
                        "stack_rows: row {j} has {} values, expected {cols}",
                        r.len()
                    )));
                }
                self.copy_range(&r.buf, 0, &mut out, j * cols, cols)?;
            }
        }
        Ok(self.tensor(out, rows.len(), cols))
    }

    /// Row `r` of `t` as a `[1, cols]` tensor.
    pub(super) fn row_device(&self, t: &CudaTensor<G>, r: usize) -> Result<CudaTensor<G>> {
        if r >= t.rows {
            return Err(Error::Backend(format!(
                "row {r} of a {}x{} tensor",
                t.rows, t.cols
            )));
        }
        let mut out = self.alloc(t.cols)?;
        self.copy_range(&t.buf, r * t.cols, &mut out, 0, t.cols)?;
        Ok(self.tensor(out, 1, t.cols))
    }

    /// `parts` stacked by rows on the device (one copy per part).
    pub(super) fn concat_rows_device(&self, parts: &[&CudaTensor<G>]) -> Result<CudaTensor<G>> {
        let cols = crate::backend::train::check_concat(self, parts)?;
        let rows: usize = parts.iter().map(|p| p.rows).sum();
        let mut out = self.alloc((rows * cols).max(1))?;
        let mut at = 0;
        for p in parts {
            self.copy_range(&p.buf, 0, &mut out, at, p.len())?;
            at += p.len();
        }
        Ok(self.tensor(out, rows, cols))
    }

    /// Rows `[start, end)` of `t`, copied on the device.
    pub(super) fn slice_rows_device(
        &self,
        t: &CudaTensor<G>,
        start: usize,
        end: usize,
    ) -> Result<CudaTensor<G>> {
        crate::backend::train::check_slice(t.rows, t.cols, start, end)?;
        let n = (end - start) * t.cols;
        let mut out = self.alloc(n.max(1))?;
        self.copy_range(&t.buf, start * t.cols, &mut out, 0, n)?;
        Ok(self.tensor(out, end - start, t.cols))
    }

    /// The first value of each tensor, gathered on the device and read back in one download.
    pub(super) fn read_values_device(&self, ts: &[&CudaTensor<G>]) -> Result<Vec<f32>> {
        let mut out = self.alloc(ts.len().max(1))?;
        for (i, t) in ts.iter().enumerate() {
            self.copy_range(&t.buf, 0, &mut out, i, 1)?;
        }
        self.d2h(&out, 0..ts.len())
    }

    /// `Σ a ⊙ b` as a `[1, 1]` tensor: the column dots (`col_reduce_finish`'s (hi, lo) pairs), summed in
    /// column order by one thread.
    pub(super) fn dot_tensor_device(
        &self,
        a: &CudaTensor<G>,
        b: &CudaTensor<G>,
    ) -> Result<CudaTensor<G>> {
        same_shape(a, b, "dot")?;
        let mut out = self.gpu.zeros(1)?;
        if a.len() > 0 {
            let cols = a.cols;
            let mut hi = self.alloc(cols)?;
            let mut lo = self.alloc(cols)?;
            self.col_dot_into(
                &a.buf,
                Some(&b.buf),
                KArg::F32Mut(&mut hi),
                Some(&mut lo),
                a.rows,
                cols,
            )?;
            // SAFETY: matches `sum_columns` in cuda/optim.cu; `hi`/`lo` hold `cols` values.
            unsafe {
                self.run(
                    &self.kernels.sum_columns,
                    "sum_columns",
                    config((1, 1, 1), 1),
                    &mut [
                        KArg::F32(&hi),
                        KArg::F32(&lo),
                        KArg::I32(int(cols, "cols")?),
                        KArg::F32Mut(&mut out),
                    ],
                )?;
            }
        }
        Ok(self.tensor(out, 1, 1))
    }
}
