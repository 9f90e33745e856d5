//! The backward of each CPU kernel ([`TrainBackend`] for [`CpuBackend`]), one op per file with
//! its reference semantics in the module doc. Gradient checks against finite differences live
//! in `runtime/tests/grad_ops.rs`.

mod activation;
mod attention;
mod embedding;
mod head;
mod linear;
mod norm;
mod reduce;
mod resid;
mod rope;
mod smear;

use super::optim;
use super::{same_shape, vector_len, CpuBackend, CpuTensor, RopeTable};
use crate::backend::train::TrainBackend;
use crate::backend::{AttnGeometry, Backend, RopeSpec};
use crate::model::Activation;
use crate::{Error, Result};

fn t(rows: usize, cols: usize, data: Vec<f32>) -> CpuTensor {
    CpuTensor::new(rows, cols, data)
}

fn head_checks(
    h: &CpuTensor,
    head: &CpuTensor,
    delta: Option<&CpuTensor>,
    targets: Option<&[u32]>,
) -> Result<()> {
    crate::backend::check_head_delta(
        (h.rows, h.cols),
        (head.rows, head.cols),
        delta.map(|d| (d.rows, d.cols)),
        targets,
    )
}

impl TrainBackend for CpuBackend {
    fn zeros(&self, rows: usize, cols: usize) -> Result<CpuTensor> {
        Ok(t(rows, cols, vec![0.0; rows * cols]))
    }

    fn linear_backward_input(&self, dy: &CpuTensor, w: &CpuTensor) -> Result<CpuTensor> {
        if dy.cols != w.rows {
            return Err(Error::Backend("linear backward: dy/w shapes differ".into()));
        }
        Ok(t(
            dy.rows,
            w.cols,
            linear::linear_dx(&dy.data, dy.rows, &w.data, w.rows, w.cols),
        ))
    }

    fn linear_backward_weight(&self, dy: &CpuTensor, x: &CpuTensor) -> Result<CpuTensor> {
        if dy.rows != x.rows {
            return Err(Error::Backend("linear backward: dy/x rows differ".into()));
        }
        Ok(t(
            dy.cols,
            x.cols,
            linear::linear_dw(&dy.data, &x.data, dy.rows, dy.cols, x.cols),
        ))
    }

    fn linear_segments_backward_input(
        &self,
        dy: &CpuTensor,
        w: &CpuTensor,
        segs: &[(usize, usize)],
    ) -> Result<CpuTensor> {
        let out = crate::backend::check_segments_input_grad(dy.rows, dy.cols, w.rows, segs)?;
        Ok(t(
            dy.rows,
            w.cols,
            super::segments::backward_input(&dy.data, dy.rows, out, &w.data, w.cols, segs),
        ))
    }

    fn linear_segments_backward_weight(
        &self,
        dy: &CpuTensor,
        x: &CpuTensor,
        segs: &[(usize, usize)],
    ) -> Result<CpuTensor> {
        crate::backend::check_segments_weight_grad(dy.rows, x.rows, segs)?;
        Ok(t(
            segs.len() * dy.cols,
            x.cols,
            super::segments::backward_weight(&dy.data, dy.cols, &x.data, x.cols, segs),
        ))
    }

    fn embedding_backward(&self, dy: &CpuTensor, ids: &[u32], vocab: usize) -> Result<CpuTensor> {
        let idx: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
        self.gather_rows_backward(dy, &idx, vocab)
    }

    fn gather_rows_backward(
        &self,
        dy: &CpuTensor,
        rows: &[usize],
        total_rows: usize,
    ) -> Result<CpuTensor> {
        if rows.len() != dy.rows || rows.iter().any(|&r| r >= total_rows) {
            return Err(Error::Backend("scatter: rows do not match".into()));
        }
        Ok(t(
            total_rows,
            dy.cols,
            embedding::scatter_add_rows(&dy.data, dy.cols, rows, total_rows),
        ))
    }

    fn rms_norm_backward(
        &self,
        x: &CpuTensor,
        dy: &CpuTensor,
        eps: f32,
        scale: f32,
    ) -> Result<CpuTensor> {
        same_shape(x, dy, "rms_norm backward")?;
        let mut dx = dy.clone();
        let cols = x.cols;
        super::par::for_each_row(&mut dx.data, cols, |i, r| {
            let xs = &x.data[i * cols..(i + 1) * cols];
            let g = &dy.data[i * cols..(i + 1) * cols];
            norm::rms_norm_backward_row(xs, g, r, eps, scale);
        });
        Ok(dx)
    }

    fn resid_mix_backward(
        &self,
        x: &CpuTensor,
        x0: &CpuTensor,
        mix: &CpuTensor,
        dout: &CpuTensor,
    ) -> Result<(CpuTensor, CpuTensor, CpuTensor)> {
        same_shape(x, x0, "resid_mix backward")?;
        same_shape(x, dout, "resid_mix backward")?;
        vector_len(mix, 2 * x.cols, "resid_mix backward")?;
        let c = x.cols;
        let (a, b) = mix.data.split_at(c);
        let dx = resid::scale_cols(&dout.data, a);
        let dx0 = resid::scale_cols(&dout.data, b);
        let mut dmix = resid::col_dot(&dout.data, &x.data, c);
        dmix.extend(resid::col_dot(&dout.data, &x0.data, c));
        Ok((t(x.rows, c, dx), t(x.rows, c, dx0), t(2, c, dmix)))
    }

    fn add_scaled_backward(
        &self,
        y: &CpuTensor,
        scale: &CpuTensor,
        dout: &CpuTensor,
    ) -> Result<(CpuTensor, CpuTensor)> {
        same_shape(y, dout, "add_scaled backward")?;
        vector_len(scale, y.cols, "add_scaled backward")?;
        Ok((
            t(y.rows, y.cols, resid::scale_cols(&dout.data, &scale.data)),
            t(1, y.cols, resid::col_dot(&dout.data, &y.data, y.cols)),
        ))
    }

    fn smear_backward(
        &self,
        x: &CpuTensor,
        gate: &CpuTensor,
        dy: &CpuTensor,
        seq: usize,
    ) -> Result<(CpuTensor, CpuTensor)> {
        same_shape(x, dy, "smear backward")?;
        vector_len(gate, x.cols, "smear backward")?;
        if seq == 0 || !x.rows.is_multiple_of(seq) {
            return Err(Error::Backend(format!(
                "smear backward: {} rows is not a multiple of seq {seq}",
                x.rows
            )));
        }
        let (dx, dg) = smear::smear_backward(&x.data, &gate.data, &dy.data, seq);
        Ok((t(x.rows, x.cols, dx), t(1, x.cols, dg)))
    }

    fn dot(&self, a: &CpuTensor, b: &CpuTensor) -> Result<f64> {
        same_shape(a, b, "dot")?;
        Ok(reduce::dot(&a.data, &b.data))
    }

    fn qk_norm_rope_backward(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        dq: &CpuTensor,
        dk: &CpuTensor,
        geom: &AttnGeometry,
        rope: &RopeSpec,
        q_gain: &CpuTensor,
        eps: f32,
    ) -> Result<(CpuTensor, CpuTensor, CpuTensor)> {
        let hd = geom.head_dim;
        let rows = geom.batch * geom.seq;
        if (q.rows, q.cols) != (rows, geom.heads * hd)
            || (k.rows, k.cols) != (rows, geom.kv_heads * hd)
        {
            return Err(Error::Backend(
                "qk_norm_rope backward: shapes do not match the geometry".into(),
            ));
        }
        same_shape(q, dq, "qk_norm_rope backward")?;
        same_shape(k, dk, "qk_norm_rope backward")?;
        vector_len(q_gain, geom.heads, "qk_norm_rope backward")?;
        let table = RopeTable::shared(geom.seq, rope.dims, rope.base);
        let (dqx, dg) = rope::norm_rope_backward(
            &q.data,
            &dq.data,
            geom.heads,
            hd,
            geom.seq,
            &table,
            Some(&q_gain.data),
            eps,
        );
        let (dkx, _) = rope::norm_rope_backward(
            &k.data,
            &dk.data,
            geom.kv_heads,
            hd,
            geom.seq,
            &table,
            None,
            eps,
        );
        Ok((
            t(q.rows, q.cols, dqx),
            t(k.rows, k.cols, dkx),
            t(1, geom.heads, dg),
        ))
    }

    fn attention_backward(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        dy: &CpuTensor,
        geom: &AttnGeometry,
        xsa: bool,
    ) -> Result<(CpuTensor, CpuTensor, CpuTensor)> {
        let rows = geom.batch * geom.seq;
        let ok = geom.kv_heads > 0
            && geom.heads.is_multiple_of(geom.kv_heads)
            && (q.rows, q.cols) == (rows, geom.heads * geom.head_dim)
            && (k.rows, k.cols) == (rows, geom.kv_heads * geom.head_dim)
            && (v.rows, v.cols) == (k.rows, k.cols)
            && (dy.rows, dy.cols) == (q.rows, q.cols);
        if !ok {
            return Err(Error::Backend(
                "attention backward: shapes do not match the geometry".into(),
            ));
        }
        let (dq, dk, dv) =
            attention::attention_backward(&q.data, &k.data, &v.data, &dy.data, geom, xsa);
        Ok((
            t(q.rows, q.cols, dq),
            t(k.rows, k.cols, dk),
            t(v.rows, v.cols, dv),
        ))
    }

    fn activation_backward(
        &self,
        h: &CpuTensor,
        dy: &CpuTensor,
        act: Activation,
    ) -> Result<CpuTensor> {
        same_shape(h, dy, "activation backward")?;
        Ok(t(
            h.rows,
            h.cols,
            activation::activation_backward(&h.data, &dy.data, act),
        ))
    }

    fn log_probs_delta(
        &self,
        h: &CpuTensor,
        head: &CpuTensor,
        delta: Option<&CpuTensor>,
        softcap: f32,
    ) -> Result<Vec<f32>> {
        match delta {
            None => self.log_probs(h, head, softcap),
            Some(d) => {
                head_checks(h, head, delta, None)?;
                Ok(super::head::log_probs(
                    &h.data,
                    h.rows,
                    h.cols,
                    &head.data,
                    head.rows,
                    Some(&d.data),
                    softcap,
                    None,
                ))
            }
        }
    }

    fn nll_delta(
        &self,
        h: &CpuTensor,
        head: &CpuTensor,
        delta: Option<&CpuTensor>,
        targets: &[u32],
        softcap: f32,
    ) -> Result<Vec<f32>> {
        match delta {
            None => self.nll(h, head, targets, softcap),
            Some(d) => {
                head_checks(h, head, delta, Some(targets))?;
                Ok(super::head::nll(
                    &h.data,
                    h.cols,
                    &head.data,
                    head.rows,
                    Some(&d.data),
                    targets,
                    softcap,
                    None,
                ))
            }
        }
    }

    fn nll_backward_logits(
        &self,
        h: &CpuTensor,
        head: &CpuTensor,
        delta: Option<&CpuTensor>,
        targets: &[u32],
        softcap: f32,
        dnll: &[f32],
    ) -> Result<CpuTensor> {
        head_checks(h, head, delta, Some(targets))?;
        if dnll.len() != targets.len() {
            return Err(Error::Backend("nll backward: dnll length".into()));
        }
        Ok(t(
            h.rows,
            head.rows,
            head::nll_backward_logits(
                &h.data,
                h.cols,
                &head.data,
                head.rows,
                delta.map(|d| d.data.as_slice()),
                targets,
                softcap,
                dnll,
            ),
        ))
    }

    // The optimizer ops on host memory: the oracles in place, without the default's copies.

    fn muon_momentum(
        &self,
        buf: &mut CpuTensor,
        g: &CpuTensor,
        mu: f32,
        nesterov: bool,
    ) -> Result<CpuTensor> {
        same_shape(buf, g, "muon_momentum")?;
        let u = optim::muon_momentum(&mut buf.data, &g.data, mu, nesterov);
        Ok(t(buf.rows, buf.cols, u))
    }

    fn muon_apply(
        &self,
        w: &mut CpuTensor,
        o: &CpuTensor,
        decay: f32,
        lr: f32,
        shape_scale: f32,
        bf16: bool,
    ) -> Result<()> {
        same_shape(w, o, "muon_apply")?;
        optim::muon_apply(w.data_mut(), &o.data, decay, lr, shape_scale, bf16);
        Ok(())
    }

    fn adam_update(
        &self,
        w: &mut CpuTensor,
        g: &CpuTensor,
        m: &mut CpuTensor,
        v: &mut CpuTensor,
        s: &optim::AdamStep,
    ) -> Result<()> {
        same_shape(w, g, "adam_update")?;
        same_shape(w, m, "adam_update")?;
        same_shape(w, v, "adam_update")?;
        optim::adam_update(w.data_mut(), &g.data, &mut m.data, &mut v.data, s);
        Ok(())
    }

    fn ema_update(&self, e: &mut CpuTensor, w: &CpuTensor, decay: f32) -> Result<()> {
        same_shape(e, w, "ema_update")?;
        optim::ema_update(e.data_mut(), &w.data, decay);
        Ok(())
    }

    fn sum_squares(&self, ts: &[&CpuTensor]) -> Result<f64> {
        let refs: Vec<&[f32]> = ts.iter().map(|t| t.data.as_slice()).collect();
        Ok(optim::sum_squares(&refs))
    }

    fn fake_quant_rows(&self, w: &CpuTensor) -> Result<CpuTensor> {
        let mut out = w.clone();
        if w.cols > 0 {
            out.data.chunks_mut(w.cols).for_each(optim::fake_quant_row);
        }
        Ok(out)
    }

    fn row(&self, x: &CpuTensor, r: usize) -> Result<CpuTensor> {
        if r >= x.rows {
            return Err(Error::Backend(format!(
                "row {r} of a {}x{} tensor",
                x.rows, x.cols
            )));
        }
        Ok(t(1, x.cols, x.data[r * x.cols..(r + 1) * x.cols].to_vec()))
    }

    fn read_values(&self, ts: &[&CpuTensor]) -> Result<Vec<f32>> {
        ts.iter()
            .map(|x| {
                x.data
                    .first()
                    .copied()
                    .ok_or_else(|| Error::Backend("read_values: empty tensor".into()))
            })
            .collect()
    }
}
