//! [`TrainBackend`] for the CUDA backend: the backward of every op, on the device.
//!
//! Each op mirrors the CPU oracle's backward (`backend/cpu/backward/`, the file named in each
//! kernel's header): matrix products go through [`Gpu::gemm`] (cuBLAS), the rest through the
//! kernels of `cuda/*.cu`. Nothing here synchronises with the host except [`TrainBackend::dot`]
//! and the head's NLL values, which are returned to the host by definition. Reductions that
//! give parameter gradients (column sums, the gain's sum over rows) are deterministic: fixed
//! order, fp64 accumulation, no atomics, so a training run repeats bit for bit on one GPU.

use super::gpu::{Gpu, KArg, RowGemm};
use super::ops::{
    by_head_dim, config, grid_1d, grid_rows, int, qk_norm_rope_config, tc_blocks, tiles_config,
    THREADS,
};
use super::{same_shape, vector_len, CudaBackend, CudaTensor, HEAD_ROWS_PER_CHUNK};
use crate::backend::train::TrainBackend;
use crate::backend::{AttnGeometry, Backend, RopeSpec};
use crate::model::Activation;
use crate::{Error, Result};

/// Destination rows of a row scatter with the sources of each, as the deterministic
/// `scatter_rows_sum` kernel takes them: `dest` in increasing order, `src[starts[b]..
/// starts[b+1]]` the source rows of `dest[b]` in increasing order.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Scatter {
    pub dest: Vec<u32>,
    pub starts: Vec<u32>,
    pub src: Vec<u32>,
}

/// Groups the sources `i` of `rows[i]` by destination (a counting sort, stable).
pub(super) fn scatter_plan(rows: &[usize], total_rows: usize) -> Result<Scatter> {
    if rows.len() > u32::MAX as usize || total_rows > u32::MAX as usize {
        return Err(Error::Backend("scatter: too many rows".into()));
    }
    let mut count = vec![0u32; total_rows];
    for &r in rows {
        count[r] += 1;
    }
    let mut dest = Vec::new();
    let mut starts = vec![0u32];
    let mut first = vec![0u32; total_rows];
    for (r, &c) in count.iter().enumerate() {
        if c > 0 {
            first[r] = *starts.last().unwrap();
            dest.push(r as u32);
            starts.push(first[r] + c);
        }
    }
    let mut src = vec![0u32; rows.len()];
    for (i, &r) in rows.iter().enumerate() {
        src[first[r] as usize] = i as u32;
        first[r] += 1;
    }
    Ok(Scatter { dest, starts, src })
}

/// The terms of a column reduction (`mode` of cuda/col_reduce.cu).
#[derive(Debug, Clone, Copy)]
enum ColReduce {
    /// `a`.
    Sum,
    /// `a · b`, the product rounded to f32.
    Dot,
    /// `a · b` in fp64.
    WideDot,
    /// SmearGate's gate: `dy · (x_prev − x)` per window of `seq` rows.
    Smear { seq: usize },
}

/// Rows per chunk of a column reduction, and the chunks: 1,024 rows (a block's 8 lanes take
/// 128 each), more when the chunks would exceed the grid's 65,535 in y.
fn col_chunks(rows: usize) -> (usize, usize) {
    let chunk_rows = 1024usize.max(rows.div_ceil(65_535));
    (chunk_rows, rows.div_ceil(chunk_rows).max(1))
}

impl<G: Gpu> CudaBackend<G> {
    /// `out[c] = Σ_rows a[r, c] (· b[r, c])` in fp64, rounded to f32; with `lo` (for `dot`),
    /// products in fp64 and the rounding error of the sum too (modes 0-2 of
    /// cuda/col_reduce.cu).
    pub(super) fn col_dot_into(
        &self,
        a: &G::F32,
        b: Option<&G::F32>,
        out: KArg<'_, G>,
        lo: Option<&mut G::F32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let mode = match (b.is_some(), lo.is_some()) {
            (false, _) => ColReduce::Sum,
            (true, false) => ColReduce::Dot,
            (true, true) => ColReduce::WideDot,
        };
        self.col_reduce(a, b, mode, None, out, lo, rows, cols)
    }

    /// A column reduction of `cuda/col_reduce.cu` (`mode`; `seq` for SmearGate's windows):
    /// partial sums of row chunks in parallel, then each column's chunks in order, times
    /// `g (1 - g)` of `gate` when given, into `out` (and its low bits into `lo`).
    #[allow(clippy::too_many_arguments)]
    fn col_reduce(
        &self,
        a: &G::F32,
        b: Option<&G::F32>,
        mode: ColReduce,
        gate: Option<&G::F32>,
        out: KArg<'_, G>,
        lo: Option<&mut G::F32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        if cols == 0 {
            return Ok(());
        }
        let (chunk_rows, chunks) = col_chunks(rows);
        let mut partial = self.alloc(chunks * cols * 2)?;
        let (mode, seq) = match mode {
            ColReduce::Sum => (0, 1),
            ColReduce::Dot => (1, 1),
            ColReduce::WideDot => (2, 1),
            ColReduce::Smear { seq } => (3, seq),
        };
        let col_blocks = u32::try_from(cols.div_ceil(32))
            .map_err(|_| Error::Backend(format!("{cols} columns exceed one launch")))?;
        // SAFETY: match `col_reduce_partial` / `col_reduce_finish` in cuda/col_reduce.cu: a (and
        // b) hold rows * cols values, partial chunks * cols pairs, out (and lo, gate) cols from
        // their offsets; the grid is (ceil(cols / 32), chunks) blocks of 256.
        unsafe {
            self.run(
                &self.kernels.col_reduce_partial,
                "col_reduce_partial",
                config((col_blocks, chunks as u32, 1), THREADS),
                &mut [
                    KArg::F32(a),
                    b.map_or(KArg::Null, KArg::F32),
                    KArg::F32Mut(&mut partial),
                    KArg::I32(int(rows, "rows")?),
                    KArg::I32(int(cols, "cols")?),
                    KArg::I32(int(seq.max(1), "seq")?),
                    KArg::I32(mode),
                    KArg::I32(int(chunk_rows, "chunk rows")?),
                ],
            )?;
            self.run(
                &self.kernels.col_reduce_finish,
                "col_reduce_finish",
                grid_1d(cols)?,
                &mut [
                    KArg::F32(&partial),
                    KArg::I32(int(chunks, "chunks")?),
                    KArg::I32(int(cols, "cols")?),
                    gate.map_or(KArg::Null, KArg::F32),
                    out,
                    lo.map_or(KArg::Null, KArg::F32Mut),
                ],
            )
        }
    }

    /// `out = s[s_off..s_off + cols] ⊙ dy` per column.
    fn mul_cols(&self, dy: &CudaTensor<G>, s: &G::F32, s_off: usize) -> Result<CudaTensor<G>> {
        let n = dy.len();
        let mut out = self.alloc(n)?;
        if n > 0 {
            // SAFETY: matches `mul_cols` in cuda/elementwise.cu; dy and out hold n, s holds
            // cols values from s_off (checked by the callers' vector_len).
            unsafe {
                self.run(
                    &self.kernels.mul_cols,
                    "mul_cols",
                    grid_1d(n)?,
                    &mut [
                        KArg::F32(&dy.buf),
                        KArg::F32At(s, s_off),
                        KArg::F32Mut(&mut out),
                        KArg::I64(n as i64),
                        KArg::I32(int(dy.cols, "cols")?),
                    ],
                )?;
            }
        }
        Ok(self.tensor(out, dy.rows, dy.cols))
    }

    /// Logits `h[r0..r1] · headᵀ (+ delta[r0..r1])` into a fresh `[r1-r0, vocab]` buffer.
    fn logits_with_delta(
        &self,
        h: &CudaTensor<G>,
        head: &CudaTensor<G>,
        delta: Option<&CudaTensor<G>>,
        r0: usize,
        r1: usize,
    ) -> Result<G::F32> {
        let mut logits = self.head_logits(h, head, r0, r1)?;
        if let Some(d) = delta {
            let (vocab, n) = (head.rows, (r1 - r0) * head.rows);
            if n > 0 {
                // SAFETY: matches `axpy` in cuda/elementwise.cu; logits hold n values, delta
                // [rows, vocab] holds n from row r0 (checked by head_checks).
                unsafe {
                    self.run(
                        &self.kernels.axpy,
                        "axpy",
                        grid_1d(n)?,
                        &mut [
                            KArg::F32Mut(&mut logits),
                            KArg::F32At(&d.buf, r0 * vocab),
                            KArg::Float(1.0),
                            KArg::I64(n as i64),
                        ],
                    )?;
                }
            }
        }
        Ok(logits)
    }
}

fn head_checks<G: Gpu>(
    h: &CudaTensor<G>,
    head: &CudaTensor<G>,
    delta: Option<&CudaTensor<G>>,
    targets: Option<&[u32]>,
) -> Result<()> {
    crate::backend::check_head_delta(
        (h.rows, h.cols),
        (head.rows, head.cols),
        delta.map(|d| (d.rows, d.cols)),
        targets,
    )
}

impl<G: Gpu> TrainBackend for CudaBackend<G> {
    fn zeros(&self, rows: usize, cols: usize) -> Result<CudaTensor<G>> {
        Ok(self.tensor(self.gpu.zeros(rows * cols)?, rows, cols))
    }

    fn linear_backward_input(
        &self,
        dy: &CudaTensor<G>,
        w: &CudaTensor<G>,
    ) -> Result<CudaTensor<G>> {
        // dx [rows, in] = dy [rows, out] · w [out, in]
        self.product(dy, false, w, false, "linear backward (input)")
    }

    fn linear_backward_weight(
        &self,
        dy: &CudaTensor<G>,
        x: &CudaTensor<G>,
    ) -> Result<CudaTensor<G>> {
        // dw [out, in] = dyᵀ · x, with dy stored [rows, out] and x [rows, in].
        self.product(dy, true, x, false, "linear backward (weight)")
    }

    fn linear_segments_backward_input(
        &self,
        dy: &CudaTensor<G>,
        w: &CudaTensor<G>,
        segs: &[(usize, usize)],
    ) -> Result<CudaTensor<G>> {
        let out = crate::backend::check_segments_input_grad(dy.rows, dy.cols, w.rows, segs)?;
        let inp = w.cols;
        let mut dx = self.gpu.zeros(dy.rows * inp)?;
        // dx_k [m, in] = dy_k [m, out] · w_k [out, in]
        self.segment_gemms(segs, &dy.buf, &w.buf, &mut dx, |k, s, m| {
            let g = RowGemm {
                m,
                n: inp,
                k: out,
                a_t: false,
                b_t: false,
                accumulate: false,
            };
            (g, [s * out, k * out * inp, s * inp])
        })?;
        Ok(self.tensor(dx, dy.rows, inp))
    }

    fn linear_segments_backward_weight(
        &self,
        dy: &CudaTensor<G>,
        x: &CudaTensor<G>,
        segs: &[(usize, usize)],
    ) -> Result<CudaTensor<G>> {
        crate::backend::check_segments_weight_grad(dy.rows, x.rows, segs)?;
        let (out, inp) = (dy.cols, x.cols);
        let mut dw = self.gpu.zeros(segs.len() * out * inp)?;
        // dw_k [out, in] = dy_kᵀ · x_k, with dy_k stored [m, out] and x_k [m, in].
        self.segment_gemms(segs, &dy.buf, &x.buf, &mut dw, |k, s, m| {
            let g = RowGemm {
                m: out,
                n: inp,
                k: m,
                a_t: true,
                b_t: false,
                accumulate: false,
            };
            (g, [s * out, s * inp, k * out * inp])
        })?;
        Ok(self.tensor(dw, segs.len() * out, inp))
    }

    fn embedding_backward(
        &self,
        dy: &CudaTensor<G>,
        ids: &[u32],
        vocab: usize,
    ) -> Result<CudaTensor<G>> {
        let idx: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
        self.gather_rows_backward(dy, &idx, vocab)
    }

    fn gather_rows_backward(
        &self,
        dy: &CudaTensor<G>,
        rows: &[usize],
        total_rows: usize,
    ) -> Result<CudaTensor<G>> {
        if rows.len() != dy.rows || rows.iter().any(|&r| r >= total_rows) {
            return Err(Error::Backend("scatter: rows do not match".into()));
        }
        let cols = dy.cols;
        let mut out = self.gpu.zeros(total_rows * cols)?;
        let plan = scatter_plan(rows, total_rows)?;
        if !plan.dest.is_empty() && cols > 0 {
            let (src, starts, dest) = (
                self.h2d_u32(&plan.src)?,
                self.h2d_u32(&plan.starts)?,
                self.h2d_u32(&plan.dest)?,
            );
            // SAFETY: matches `scatter_rows_sum` in cuda/embedding.cu; src < dy rows, dest <
            // total_rows, starts has n_dest + 1 entries ending at src's length.
            unsafe {
                self.run(
                    &self.kernels.scatter_rows_sum,
                    "scatter_rows_sum",
                    grid_rows(plan.dest.len())?,
                    &mut [
                        KArg::F32(&dy.buf),
                        KArg::U32(&src),
                        KArg::U32(&starts),
                        KArg::U32(&dest),
                        KArg::F32Mut(&mut out),
                        KArg::I32(int(plan.dest.len(), "rows")?),
                        KArg::I32(int(cols, "cols")?),
                    ],
                )?;
            }
        }
        Ok(self.tensor(out, total_rows, cols))
    }

    fn rms_norm_backward(
        &self,
        x: &CudaTensor<G>,
        dy: &CudaTensor<G>,
        eps: f32,
        scale: f32,
    ) -> Result<CudaTensor<G>> {
        same_shape(x, dy, "rms_norm backward")?;
        let mut dx = self.alloc(x.len())?;
        if x.rows > 0 {
            // SAFETY: matches `rms_norm_backward` in cuda/rms_norm.cu; all hold rows * cols.
            unsafe {
                self.run(
                    &self.kernels.rms_norm_backward,
                    "rms_norm_backward",
                    grid_rows(x.rows)?,
                    &mut [
                        KArg::F32(&x.buf),
                        KArg::F32(&dy.buf),
                        KArg::F32Mut(&mut dx),
                        KArg::I32(int(x.rows, "rows")?),
                        KArg::I32(int(x.cols, "cols")?),
                        KArg::Float(eps),
                        KArg::Float(scale),
                    ],
                )?;
            }
        }
        Ok(self.tensor(dx, x.rows, x.cols))
    }

    fn resid_mix_backward(
        &self,
        x: &CudaTensor<G>,
        x0: &CudaTensor<G>,
        mix: &CudaTensor<G>,
        dout: &CudaTensor<G>,
    ) -> Result<(CudaTensor<G>, CudaTensor<G>, CudaTensor<G>)> {
        same_shape(x, x0, "resid_mix backward")?;
        same_shape(x, dout, "resid_mix backward")?;
        vector_len(mix, 2 * x.cols, "resid_mix backward")?;
        let c = x.cols;
        let dx = self.mul_cols(dout, &mix.buf, 0)?;
        let dx0 = self.mul_cols(dout, &mix.buf, c)?;
        let mut dmix = self.alloc(2 * c)?;
        self.col_dot_into(
            &dout.buf,
            Some(&x.buf),
            KArg::F32MutAt(&mut dmix, 0),
            None,
            x.rows,
            c,
        )?;
        self.col_dot_into(
            &dout.buf,
            Some(&x0.buf),
            KArg::F32MutAt(&mut dmix, c),
            None,
            x.rows,
            c,
        )?;
        Ok((dx, dx0, self.tensor(dmix, 2, c)))
    }

    fn add_scaled_backward(
        &self,
        y: &CudaTensor<G>,
        scale: &CudaTensor<G>,
        dout: &CudaTensor<G>,
    ) -> Result<(CudaTensor<G>, CudaTensor<G>)> {
        same_shape(y, dout, "add_scaled backward")?;
        vector_len(scale, y.cols, "add_scaled backward")?;
        let dy = self.mul_cols(dout, &scale.buf, 0)?;
        let mut ds = self.alloc(y.cols)?;
        self.col_dot_into(
            &dout.buf,
            Some(&y.buf),
            KArg::F32Mut(&mut ds),
            None,
            y.rows,
            y.cols,
        )?;
        Ok((dy, self.tensor(ds, 1, y.cols)))
    }

    fn smear_backward(
        &self,
        x: &CudaTensor<G>,
        gate: &CudaTensor<G>,
        dy: &CudaTensor<G>,
        seq: usize,
    ) -> Result<(CudaTensor<G>, CudaTensor<G>)> {
        same_shape(x, dy, "smear backward")?;
        vector_len(gate, x.cols, "smear backward")?;
        if seq == 0 || !x.rows.is_multiple_of(seq) {
            return Err(Error::Backend(format!(
                "smear backward: {} rows is not a multiple of seq {seq}",
                x.rows
            )));
        }
        let (n, cols) = (x.len(), x.cols);
        let mut dx = self.alloc(n)?;
        let mut dg = self.alloc(cols)?;
        if n > 0 {
            let (ci, si) = (int(cols, "cols")?, int(seq, "seq")?);
            // SAFETY: matches `smear_backward_dx` in cuda/smear.cu; dy and dx hold
            // rows * cols, gate cols; seq > 0 divides rows.
            unsafe {
                self.run(
                    &self.kernels.smear_backward_dx,
                    "smear_backward_dx",
                    grid_1d(n)?,
                    &mut [
                        KArg::F32(&dy.buf),
                        KArg::F32(&gate.buf),
                        KArg::F32Mut(&mut dx),
                        KArg::I64(n as i64),
                        KArg::I32(ci),
                        KArg::I32(si),
                    ],
                )?;
            }
            self.col_reduce(
                &dy.buf,
                Some(&x.buf),
                ColReduce::Smear { seq },
                Some(&gate.buf),
                KArg::F32Mut(&mut dg),
                None,
                x.rows,
                cols,
            )?;
        }
        Ok((self.tensor(dx, x.rows, cols), self.tensor(dg, 1, cols)))
    }

    fn dot(&self, a: &CudaTensor<G>, b: &CudaTensor<G>) -> Result<f64> {
        same_shape(a, b, "dot")?;
        if a.len() == 0 {
            return Ok(0.0);
        }
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
        let (hi, lo) = (self.d2h(&hi, 0..cols)?, self.d2h(&lo, 0..cols)?);
        Ok(hi.iter().zip(&lo).map(|(&h, &l)| h as f64 + l as f64).sum())
    }

    fn qk_norm_rope_backward(
        &self,
        q: &CudaTensor<G>,
        k: &CudaTensor<G>,
        dq: &CudaTensor<G>,
        dk: &CudaTensor<G>,
        geom: &AttnGeometry,
        rope: &RopeSpec,
        q_gain: &CudaTensor<G>,
        eps: f32,
    ) -> Result<(CudaTensor<G>, CudaTensor<G>, CudaTensor<G>)> {
        let hd = geom.head_dim;
        let rows = geom.rows();
        geom.check_qk((q.rows, q.cols), (k.rows, k.cols), "qk_norm_rope backward")?;
        same_shape(q, dq, "qk_norm_rope backward")?;
        same_shape(k, dk, "qk_norm_rope backward")?;
        vector_len(q_gain, geom.heads, "qk_norm_rope backward")?;
        if rope.dims > hd {
            return Err(Error::Backend(format!(
                "qk_norm_rope backward: rope dims {} exceed head_dim {hd}",
                rope.dims
            )));
        }
        let tables = self.rope_tables(geom.seq, rope.dims, rope.base)?;
        let (cos, sin) = (&tables.0, &tables.1);
        let mut dqx = self.alloc(q.len())?;
        let mut dkx = self.alloc(k.len())?;
        let mut dg_rows = self.alloc(rows * geom.heads)?;
        let mut dg = self.alloc(geom.heads)?;
        let side = |x: &G::F32,
                    dc: &G::F32,
                    dx: &mut G::F32,
                    heads: usize,
                    gain: Option<(&G::F32, &mut G::F32)>|
         -> Result<()> {
            if rows == 0 || heads == 0 {
                return Ok(());
            }
            let (gain, dgr) = match gain {
                Some((g, d)) => (KArg::F32(g), KArg::F32Mut(d)),
                None => (KArg::Null, KArg::Null),
            };
            // SAFETY: matches `qk_norm_rope_backward` in cuda/qk_norm_rope.cu: x, dc, dx hold
            // rows * heads * hd, cos/sin seq * half, gain heads, dgain_rows rows * heads.
            unsafe {
                self.run(
                    &self.kernels.qk_norm_rope_backward,
                    "qk_norm_rope_backward",
                    qk_norm_rope_config(rows, heads)?,
                    &mut [
                        KArg::F32(x),
                        KArg::F32(dc),
                        KArg::F32(cos),
                        KArg::F32(sin),
                        gain,
                        KArg::F32Mut(dx),
                        dgr,
                        KArg::I32(int(rows, "rows")?),
                        KArg::I32(int(heads, "heads")?),
                        KArg::I32(int(hd, "head_dim")?),
                        KArg::I32(int(geom.seq, "seq")?),
                        KArg::I32(int(rope.dims / 2, "rope half")?),
                        KArg::Float(eps),
                    ],
                )
            }
        };
        side(
            &q.buf,
            &dq.buf,
            &mut dqx,
            geom.heads,
            Some((&q_gain.buf, &mut dg_rows)),
        )?;
        side(&k.buf, &dk.buf, &mut dkx, geom.kv_heads, None)?;
        if rows == 0 {
            dg = self.gpu.zeros(geom.heads)?;
        } else {
            self.col_dot_into(
                &dg_rows,
                None,
                KArg::F32Mut(&mut dg),
                None,
                rows,
                geom.heads,
            )?;
        }
        Ok((
            self.tensor(dqx, q.rows, q.cols),
            self.tensor(dkx, k.rows, k.cols),
            self.tensor(dg, 1, geom.heads),
        ))
    }

    fn attention_backward(
        &self,
        q: &CudaTensor<G>,
        k: &CudaTensor<G>,
        v: &CudaTensor<G>,
        dy: &CudaTensor<G>,
        geom: &AttnGeometry,
        xsa: bool,
    ) -> Result<(CudaTensor<G>, CudaTensor<G>, CudaTensor<G>)> {
        geom.check_qkv(
            (q.rows, q.cols),
            (k.rows, k.cols),
            (v.rows, v.cols),
            "attention backward",
        )?;
        same_shape(q, dy, "attention backward")?;
        let (rows, hd) = (geom.rows(), geom.head_dim);
        let (heads, kv_heads) = (geom.heads, geom.kv_heads);
        let mut dq = self.alloc(q.len())?;
        let mut dk = self.alloc(k.len())?;
        let mut dv = self.alloc(v.len())?;
        let done = |dq, dk, dv| {
            Ok((
                self.tensor(dq, q.rows, q.cols),
                self.tensor(dk, k.rows, k.cols),
                self.tensor(dv, v.rows, v.cols),
            ))
        };
        let Some(tiles_q) = tiles_config(geom, heads)? else {
            return done(dq, dk, dv);
        };
        let tiles_kv = tiles_config(geom, kv_heads)?.expect("same geometry, KV heads > 0");
        if hd > 128 {
            return Err(Error::Backend(format!(
                "attention backward: head_dim {hd} above 128"
            )));
        }
        // Tensor cores (TF32) for the whole pass, or fp32 for the whole pass: the backward's
        // scores must be the forward's, which its logsumexp normalises.
        let ks = &self.kernels;
        let (stats, bwd_dq, bwd_dkv, tiles_q, tiles_kv) = match (
            self.tc_kernel(&ks.attention_tc_stats, hd),
            self.tc_kernel(&ks.attention_tc_bwd_dq, hd),
            self.tc_kernel(&ks.attention_tc_bwd_dkv, hd),
        ) {
            (Some(s), Some(q), Some(kv)) => (s, q, kv, tc_blocks(tiles_q), tc_blocks(tiles_kv)),
            _ => (
                by_head_dim(&ks.attention_stats, hd, "attention backward")?,
                by_head_dim(&ks.attention_bwd_dq, hd, "attention backward")?,
                by_head_dim(&ks.attention_bwd_dkv, hd, "attention backward")?,
                tiles_q,
                tiles_kv,
            ),
        };
        let mut o = self.alloc(q.len())?;
        let mut lse = self.alloc(rows * heads)?;
        let mut dout = self.alloc(q.len())?;
        let mut dsum = self.alloc(rows * heads)?;
        let mut dv_x = self.alloc(k.len())?;
        let (si, hi, ki) = (
            int(geom.seq, "seq")?,
            int(heads, "heads")?,
            int(kv_heads, "kv_heads")?,
        );
        // SAFETY: each launch matches its kernel in cuda/attention.cu and
        // cuda/attention_backward.cu, or the same-signature ones of cuda/attention_tc.cu; q, dy,
        // o, dout hold rows * heads * hd, k, v, dk, dv, dv_x rows * kv_heads * hd, lse and dsum
        // rows * heads (shapes checked above).
        unsafe {
            self.run(
                stats,
                "attention_stats",
                tiles_q,
                &mut [
                    KArg::F32(&q.buf),
                    KArg::F32(&k.buf),
                    KArg::F32(&v.buf),
                    KArg::F32Mut(&mut o),
                    KArg::F32Mut(&mut lse),
                    KArg::I32(si),
                    KArg::I32(hi),
                    KArg::I32(ki),
                ],
            )?;
            self.run(
                &self.kernels.attention_bwd_prep,
                "attention_bwd_prep",
                qk_norm_rope_config(rows, kv_heads)?,
                &mut [
                    KArg::F32(&o),
                    KArg::F32(&dy.buf),
                    KArg::F32(&v.buf),
                    KArg::F32Mut(&mut dout),
                    KArg::F32Mut(&mut dsum),
                    KArg::F32Mut(&mut dv_x),
                    KArg::I32(int(rows, "rows")?),
                    KArg::I32(hi),
                    KArg::I32(ki),
                    KArg::I32(int(hd, "head_dim")?),
                    KArg::I32(xsa as i32),
                ],
            )?;
            self.run(
                bwd_dq,
                "attention_bwd_dq",
                tiles_q,
                &mut [
                    KArg::F32(&q.buf),
                    KArg::F32(&k.buf),
                    KArg::F32(&v.buf),
                    KArg::F32(&dout),
                    KArg::F32(&lse),
                    KArg::F32(&dsum),
                    KArg::F32Mut(&mut dq),
                    KArg::I32(si),
                    KArg::I32(hi),
                    KArg::I32(ki),
                ],
            )?;
            self.run(
                bwd_dkv,
                "attention_bwd_dkv",
                tiles_kv,
                &mut [
                    KArg::F32(&q.buf),
                    KArg::F32(&k.buf),
                    KArg::F32(&v.buf),
                    KArg::F32(&dout),
                    KArg::F32(&lse),
                    KArg::F32(&dsum),
                    KArg::F32(&dv_x),
                    KArg::F32Mut(&mut dk),
                    KArg::F32Mut(&mut dv),
                    KArg::I32(si),
                    KArg::I32(hi),
                    KArg::I32(ki),
                ],
            )?;
        }
        done(dq, dk, dv)
    }

    fn activation_backward(
        &self,
        h: &CudaTensor<G>,
        dy: &CudaTensor<G>,
        act: Activation,
    ) -> Result<CudaTensor<G>> {
        same_shape(h, dy, "activation backward")?;
        let n = h.len();
        let mut dh = self.alloc(n)?;
        if n > 0 {
            let cfg = grid_1d(n)?;
            // SAFETY: match `relu2_backward` / `leaky_relu2_backward` in cuda/activation.cu;
            // h, dy, dh hold n.
            unsafe {
                match act {
                    Activation::Relu2 => self.run(
                        &self.kernels.relu2_backward,
                        "relu2_backward",
                        cfg,
                        &mut [
                            KArg::F32(&h.buf),
                            KArg::F32(&dy.buf),
                            KArg::F32Mut(&mut dh),
                            KArg::I64(n as i64),
                        ],
                    )?,
                    Activation::LeakyRelu2 { slope } => self.run(
                        &self.kernels.leaky_relu2_backward,
                        "leaky_relu2_backward",
                        cfg,
                        &mut [
                            KArg::F32(&h.buf),
                            KArg::F32(&dy.buf),
                            KArg::F32Mut(&mut dh),
                            KArg::I64(n as i64),
                            KArg::Float(slope),
                        ],
                    )?,
                }
            }
        }
        Ok(self.tensor(dh, h.rows, h.cols))
    }

    fn nll_delta(
        &self,
        h: &CudaTensor<G>,
        head: &CudaTensor<G>,
        delta: Option<&CudaTensor<G>>,
        targets: &[u32],
        softcap: f32,
    ) -> Result<Vec<f32>> {
        if delta.is_none() {
            return self.nll(h, head, targets, softcap);
        }
        head_checks(h, head, delta, Some(targets))?;
        let vocab = head.rows;
        let mut out = Vec::with_capacity(h.rows);
        for r0 in (0..h.rows).step_by(HEAD_ROWS_PER_CHUNK) {
            let r1 = (r0 + HEAD_ROWS_PER_CHUNK).min(h.rows);
            let mut logits = self.logits_with_delta(h, head, delta, r0, r1)?;
            let t = self.h2d_u32(&targets[r0..r1])?;
            let mut nll = self.alloc(r1 - r0)?;
            self.launch_softcap_nll(&mut logits, &t, &mut nll, r1 - r0, vocab, softcap)?;
            out.extend(self.d2h(&nll, 0..r1 - r0)?);
        }
        Ok(out)
    }

    fn log_probs_delta(
        &self,
        h: &CudaTensor<G>,
        head: &CudaTensor<G>,
        delta: Option<&CudaTensor<G>>,
        softcap: f32,
    ) -> Result<Vec<f32>> {
        if delta.is_none() {
            return self.log_probs(h, head, softcap);
        }
        head_checks(h, head, delta, None)?;
        let vocab = head.rows;
        let mut out = Vec::with_capacity(h.rows * vocab);
        for r0 in (0..h.rows).step_by(HEAD_ROWS_PER_CHUNK) {
            let r1 = (r0 + HEAD_ROWS_PER_CHUNK).min(h.rows);
            let mut logits = self.logits_with_delta(h, head, delta, r0, r1)?;
            self.launch_log_softmax(&mut logits, r1 - r0, vocab, softcap)?;
            out.extend(self.d2h(&logits, 0..(r1 - r0) * vocab)?);
        }
        Ok(out)
    }

    fn nll_backward_logits(
        &self,
        h: &CudaTensor<G>,
        head: &CudaTensor<G>,
        delta: Option<&CudaTensor<G>>,
        targets: &[u32],
        softcap: f32,
        dnll: &[f32],
    ) -> Result<CudaTensor<G>> {
        if dnll.len() != targets.len() {
            return Err(Error::Backend("nll backward: dnll length".into()));
        }
        Ok(self
            .softcap_backward(
                h,
                head,
                delta,
                targets,
                softcap,
                Weights::PerRow(dnll),
                false,
            )?
            .0)
    }

    fn nll_backward_logits_uniform(
        &self,
        h: &CudaTensor<G>,
        head: &CudaTensor<G>,
        targets: &[u32],
        softcap: f32,
        weight: f32,
    ) -> Result<(CudaTensor<G>, CudaTensor<G>)> {
        let (dz, loss) = self.softcap_backward(
            h,
            head,
            None,
            targets,
            softcap,
            Weights::Uniform(weight),
            true,
        )?;
        let loss = loss.ok_or_else(|| Error::Backend("nll backward: no loss".into()))?;
        Ok((dz, loss))
    }

    fn newton_schulz(&self, u: &CudaTensor<G>, steps: usize, bf16: bool) -> Result<CudaTensor<G>> {
        let mut out = self.newton_schulz_batched(&[u], steps, bf16)?;
        Ok(out.remove(0))
    }

    fn newton_schulz_many(
        &self,
        us: &[&CudaTensor<G>],
        steps: usize,
        bf16: bool,
    ) -> Result<Vec<CudaTensor<G>>> {
        // The matrices of one shape together, in one batch each; results back in order.
        let mut out: Vec<Option<CudaTensor<G>>> = (0..us.len()).map(|_| None).collect();
        let mut shapes: Vec<(usize, usize)> = us.iter().map(|u| (u.rows, u.cols)).collect();
        shapes.sort_unstable();
        shapes.dedup();
        for shape in shapes {
            let idx: Vec<usize> = (0..us.len())
                .filter(|&i| (us[i].rows, us[i].cols) == shape)
                .collect();
            let group: Vec<&CudaTensor<G>> = idx.iter().map(|&i| us[i]).collect();
            for (i, o) in idx
                .into_iter()
                .zip(self.newton_schulz_batched(&group, steps, bf16)?)
            {
                out[i] = Some(o);
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every matrix has a shape group"))
            .collect())
    }

    // The optimizer step and the trainer's copies: `cuda/optim.cu` (launchers in optim.rs).

    fn muon_momentum(
        &self,
        buf: &mut CudaTensor<G>,
        g: &CudaTensor<G>,
        mu: f32,
        nesterov: bool,
    ) -> Result<CudaTensor<G>> {
        self.muon_momentum_device(buf, g, mu, nesterov)
    }

    fn muon_apply(
        &self,
        w: &mut CudaTensor<G>,
        o: &CudaTensor<G>,
        decay: f32,
        lr: f32,
        shape_scale: f32,
        bf16: bool,
    ) -> Result<()> {
        self.muon_apply_device(w, o, decay, lr, shape_scale, bf16)
    }

    fn adam_update(
        &self,
        w: &mut CudaTensor<G>,
        g: &CudaTensor<G>,
        m: &mut CudaTensor<G>,
        v: &mut CudaTensor<G>,
        s: &crate::backend::cpu::optim::AdamStep,
    ) -> Result<()> {
        self.adam_update_device(w, g, m, v, s)
    }

    fn sgd_update(
        &self,
        w: &mut CudaTensor<G>,
        g: &CudaTensor<G>,
        b: &mut CudaTensor<G>,
        s: &crate::backend::cpu::optim::SgdStep,
    ) -> Result<()> {
        self.sgd_update_device(w, g, b, s)
    }

    fn ema_update(&self, e: &mut CudaTensor<G>, w: &CudaTensor<G>, decay: f32) -> Result<()> {
        self.ema_update_device(e, w, decay)
    }

    fn sum_squares(&self, ts: &[&CudaTensor<G>]) -> Result<f64> {
        self.sum_squares_device(ts)
    }

    fn fake_quant_rows(&self, w: &CudaTensor<G>) -> Result<CudaTensor<G>> {
        self.fake_quant_rows_device(w)
    }

    fn stack_rows(&self, rows: &[Option<&CudaTensor<G>>], cols: usize) -> Result<CudaTensor<G>> {
        self.stack_rows_device(rows, cols)
    }

    fn row(&self, t: &CudaTensor<G>, r: usize) -> Result<CudaTensor<G>> {
        self.row_device(t, r)
    }

    fn concat_rows(&self, parts: &[&CudaTensor<G>]) -> Result<CudaTensor<G>> {
        self.concat_rows_device(parts)
    }

    fn slice_rows(&self, t: &CudaTensor<G>, start: usize, end: usize) -> Result<CudaTensor<G>> {
        self.slice_rows_device(t, start, end)
    }

    fn dot_tensor(&self, a: &CudaTensor<G>, b: &CudaTensor<G>) -> Result<CudaTensor<G>> {
        self.dot_tensor_device(a, b)
    }

    fn read_values(&self, ts: &[&CudaTensor<G>]) -> Result<Vec<f32>> {
        self.read_values_device(ts)
    }

    fn nll_sum(
        &self,
        h: &CudaTensor<G>,
        head: &CudaTensor<G>,
        targets: &[u32],
        softcap: f32,
    ) -> Result<CudaTensor<G>> {
        self.nll_sum_device(h, head, targets, softcap)
    }
}

/// The loss weights of the head backward: one per row, or one for all rows.
enum Weights<'a> {
    PerRow(&'a [f32]),
    Uniform(f32),
}

impl<G: Gpu> CudaBackend<G> {
    /// `softcap_nll_backward` over every row of `h`: `dz` and, with `loss`, the summed NLL as a
    /// `[1, 1]` tensor (per-row NLLs summed on the device).
    #[allow(clippy::too_many_arguments)]
    fn softcap_backward(
        &self,
        h: &CudaTensor<G>,
        head: &CudaTensor<G>,
        delta: Option<&CudaTensor<G>>,
        targets: &[u32],
        softcap: f32,
        weights: Weights<'_>,
        loss: bool,
    ) -> Result<(CudaTensor<G>, Option<CudaTensor<G>>)> {
        head_checks(h, head, delta, Some(targets))?;
        let (rows, vocab) = (h.rows, head.rows);
        let mut dz = self.logits_with_delta(h, head, delta, 0, rows)?;
        let mut nll = if loss { Some(self.alloc(rows)?) } else { None };
        if rows > 0 {
            let t = self.h2d_u32(targets)?;
            let (g, gu) = match weights {
                Weights::PerRow(d) => (Some(self.h2d(d)?), 0.0),
                Weights::Uniform(w) => (None, w),
            };
            // SAFETY: matches `softcap_nll_backward` in cuda/head.cu; dz holds rows * vocab,
            // targets (< vocab, checked by head_checks) rows, dnll (when given) and nll_out
            // (when given) rows.
            unsafe {
                self.run(
                    &self.kernels.softcap_nll_backward,
                    "softcap_nll_backward",
                    grid_rows(rows)?,
                    &mut [
                        KArg::F32Mut(&mut dz),
                        KArg::U32(&t),
                        g.as_ref().map_or(KArg::Null, KArg::F32),
                        KArg::Float(gu),
                        nll.as_mut().map_or(KArg::Null, KArg::F32Mut),
                        KArg::I32(int(rows, "rows")?),
                        KArg::I32(int(vocab, "vocab")?),
                        KArg::Float(softcap),
                    ],
                )?;
            }
        }
        let loss = match nll {
            Some(n) => Some(self.sum_to_scalar(&n, rows)?),
            None => None,
        };
        Ok((self.tensor(dz, rows, vocab), loss))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_plan_groups_sources_by_destination_in_order() {
        let p = scatter_plan(&[3, 0, 3, 1, 3], 5).unwrap();
        assert_eq!(p.dest, vec![0, 1, 3]);
        assert_eq!(p.starts, vec![0, 1, 2, 5]);
        assert_eq!(p.src, vec![1, 3, 0, 2, 4]);
        let empty = scatter_plan(&[], 4).unwrap();
        assert!(empty.dest.is_empty() && empty.src.is_empty());
        assert_eq!(empty.starts, vec![0]);
    }
}
