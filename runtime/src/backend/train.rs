//! The training extension of [`Backend`]: the backward of every forward op that training and
//! test-time training need. Inference builds never call it.
//!
//! Conventions: `d*` arguments are gradients of a scalar loss with respect to an op's output;
//! each method returns the gradients with respect to the op's inputs (and parameters), with the
//! same shapes as those inputs. Ops that the forward runs in place (`add_scaled`,
//! `qk_norm_rope`) take the values *before* the op where the backward needs them.

use super::cpu::{optim, sidecar};
use super::{AttnGeometry, Backend, RopeSpec};
use crate::model::Activation;
use crate::Result;

/// Backward ops (reference semantics: the derivative of the forward op of the same name in
/// [`Backend`]).
pub trait TrainBackend: Backend {
    /// A `[rows, cols]` zero matrix.
    fn zeros(&self, rows: usize, cols: usize) -> Result<Self::Tensor>;

    /// `linear` backward, input side: `dx = dy · w` (`dy [rows, out]`, `w [out, in]`).
    fn linear_backward_input(&self, dy: &Self::Tensor, w: &Self::Tensor) -> Result<Self::Tensor>;
    /// `linear` backward, weight side: `dw = dyᵀ · x` (`[out, in]`).
    fn linear_backward_weight(&self, dy: &Self::Tensor, x: &Self::Tensor) -> Result<Self::Tensor>;
    /// [`Backend::linear_segments`] backward, input side: rows of segment `k` of
    /// `dx [rows, in]` are `dy_k · w_k`; zero outside every segment.
    fn linear_segments_backward_input(
        &self,
        dy: &Self::Tensor,
        w: &Self::Tensor,
        segs: &[(usize, usize)],
    ) -> Result<Self::Tensor>;
    /// [`Backend::linear_segments`] backward, weight side: the stacked `[segs.len()·out, in]`
    /// whose block `k` is `dy_kᵀ · x_k` (zero for an empty segment).
    fn linear_segments_backward_weight(
        &self,
        dy: &Self::Tensor,
        x: &Self::Tensor,
        segs: &[(usize, usize)],
    ) -> Result<Self::Tensor>;
    /// `embedding` backward: `dtable[ids[i]] += dy[i]`, a `[vocab, cols]` matrix.
    fn embedding_backward(
        &self,
        dy: &Self::Tensor,
        ids: &[u32],
        vocab: usize,
    ) -> Result<Self::Tensor>;
    /// `gather_rows` backward: `dx[rows[i]] += dy[i]`, a `[total_rows, cols]` matrix.
    fn gather_rows_backward(
        &self,
        dy: &Self::Tensor,
        rows: &[usize],
        total_rows: usize,
    ) -> Result<Self::Tensor>;
    /// `rms_norm` backward given the op's input `x`.
    fn rms_norm_backward(
        &self,
        x: &Self::Tensor,
        dy: &Self::Tensor,
        eps: f32,
        scale: f32,
    ) -> Result<Self::Tensor>;
    /// `resid_mix` backward: `(dx, dx0, dmix [2, cols])`.
    fn resid_mix_backward(
        &self,
        x: &Self::Tensor,
        x0: &Self::Tensor,
        mix: &Self::Tensor,
        dout: &Self::Tensor,
    ) -> Result<(Self::Tensor, Self::Tensor, Self::Tensor)>;
    /// `add_scaled` (`x += scale ⊙ y`) backward: `dx = dout` (the caller keeps it);
    /// returns `(dy = scale ⊙ dout, dscale [1, cols] = Σ_rows dout ⊙ y)`.
    fn add_scaled_backward(
        &self,
        y: &Self::Tensor,
        scale: &Self::Tensor,
        dout: &Self::Tensor,
    ) -> Result<(Self::Tensor, Self::Tensor)>;
    /// `smear` backward given the op's input `x` (windows of `seq` rows):
    /// `(dx, dgate [1, cols])`, with `dx_t = (1 − g) ⊙ dy_t + g ⊙ dy_{t+1}` inside a window and
    /// `dgate = g (1 − g) ⊙ Σ_t dy_t ⊙ (x_{t−1} − x_t)` (`g = sigmoid(gate)`, `x_{−1} = 0`).
    fn smear_backward(
        &self,
        x: &Self::Tensor,
        gate: &Self::Tensor,
        dy: &Self::Tensor,
        seq: usize,
    ) -> Result<(Self::Tensor, Self::Tensor)>;
    /// [`Backend::causal_conv`] backward given its input `x`: `(dx, dw [cols, k])`
    /// ([`sidecar::causal_conv_backward`], the oracle, which the default runs on the host).
    fn causal_conv_backward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        seq: usize,
    ) -> Result<(Self::Tensor, Self::Tensor)> {
        let ((rows, cols), (wr, k)) = (self.shape(x), self.shape(w));
        let (dx, dw) = sidecar::causal_conv_backward(
            &self.download(x)?,
            rows,
            cols,
            &self.download(w)?,
            k,
            &self.download(dy)?,
            seq,
        )?;
        Ok((self.upload(&dx, rows, cols)?, self.upload(&dw, wr, k)?))
    }
    /// [`Backend::silu_gate`] backward: `(dpre, dbias [1, cols], dv)`
    /// ([`sidecar::silu_gate_backward`], the oracle, which the default runs on the host).
    fn silu_gate_backward(
        &self,
        pre: &Self::Tensor,
        bias: &Self::Tensor,
        v: &Self::Tensor,
        dy: &Self::Tensor,
    ) -> Result<(Self::Tensor, Self::Tensor, Self::Tensor)> {
        let (rows, cols) = self.shape(pre);
        let (dpre, dbias, dv) = sidecar::silu_gate_backward(
            &self.download(pre)?,
            &self.download(bias)?,
            &self.download(v)?,
            &self.download(dy)?,
        )?;
        Ok((
            self.upload(&dpre, rows, cols)?,
            self.upload(&dbias, 1, dbias.len())?,
            self.upload(&dv, rows, cols)?,
        ))
    }
    /// `Σ a ⊙ b` over all elements, accumulated in f64: the gradient of a scalar `s` in
    /// `x += s · y` ([`Backend::add_scalar_scaled`]) is `dot(dout, y)`.
    fn dot(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<f64>;
    /// `s · x` as a new tensor (the `dy` of [`Backend::add_scalar_scaled`]).
    fn scaled(&self, x: &Self::Tensor, s: f32) -> Result<Self::Tensor> {
        let (rows, cols) = self.shape(x);
        let mut out = self.zeros(rows, cols)?;
        self.add_scalar_scaled(&mut out, x, s)?;
        Ok(out)
    }
    /// `qk_norm_rope` backward given `q`, `k` *before* the op: `(dq, dk, dq_gain [1, heads])`.
    #[allow(clippy::too_many_arguments)]
    fn qk_norm_rope_backward(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        dq: &Self::Tensor,
        dk: &Self::Tensor,
        geom: &AttnGeometry,
        rope: &RopeSpec,
        q_gain: &Self::Tensor,
        eps: f32,
    ) -> Result<(Self::Tensor, Self::Tensor, Self::Tensor)>;
    /// `attention` backward (the attention probabilities are recomputed): `(dq, dk, dv)`.
    fn attention_backward(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        dy: &Self::Tensor,
        geom: &AttnGeometry,
        xsa: bool,
    ) -> Result<(Self::Tensor, Self::Tensor, Self::Tensor)>;
    /// `activation` backward given the op's input `h`.
    fn activation_backward(
        &self,
        h: &Self::Tensor,
        dy: &Self::Tensor,
        act: Activation,
    ) -> Result<Self::Tensor>;

    /// Head + soft-cap + CE with an additive logit term (the head's LoRA delta):
    /// `-log softmax(c·tanh((h·headᵀ + delta)/c))[target]` per row. With `delta = None` this is
    /// exactly [`Backend::nll`]; with an all-zero delta it gives the same values bit for bit.
    fn nll_delta(
        &self,
        h: &Self::Tensor,
        head: &Self::Tensor,
        delta: Option<&Self::Tensor>,
        targets: &[u32],
        softcap: f32,
    ) -> Result<Vec<f32>>;
    /// Head + soft-cap + log-softmax with the same additive logit term as
    /// [`TrainBackend::nll_delta`]: full `[rows, vocab]` log-probabilities on the host. With
    /// `delta = None` this is exactly [`Backend::log_probs`]; `-out[r][target]` equals
    /// `nll_delta` bit for bit.
    fn log_probs_delta(
        &self,
        h: &Self::Tensor,
        head: &Self::Tensor,
        delta: Option<&Self::Tensor>,
        softcap: f32,
    ) -> Result<Vec<f32>>;
    /// Backward of [`TrainBackend::nll_delta`] to the pre-cap logits
    /// `z = h·headᵀ + delta`: `dz [rows, vocab] = dnll_r · (1 − tanh²(z/c)) ⊙ (softmax − onehot)`.
    fn nll_backward_logits(
        &self,
        h: &Self::Tensor,
        head: &Self::Tensor,
        delta: Option<&Self::Tensor>,
        targets: &[u32],
        softcap: f32,
        dnll: &[f32],
    ) -> Result<Self::Tensor>;

    /// Fused head + soft-cap + CE backward: `(dh, dhead)` for per-row loss weights `dnll`.
    fn nll_backward(
        &self,
        h: &Self::Tensor,
        head: &Self::Tensor,
        targets: &[u32],
        softcap: f32,
        dnll: &[f32],
    ) -> Result<(Self::Tensor, Self::Tensor)> {
        let dz = self.nll_backward_logits(h, head, None, targets, softcap, dnll)?;
        Ok((
            self.linear_backward_input(&dz, head)?,
            self.linear_backward_weight(&dz, h)?,
        ))
    }

    /// Muon's Newton-Schulz orthogonalisation of `u` `[rows, cols]`: `steps` quintic
    /// iterations in float32, or with every intermediate rounded to bf16 as the challenge's
    /// bf16 run does when `bf16` ([`optim::newton_schulz`] and [`optim::newton_schulz_bf16`],
    /// the oracles). The default runs the oracle on the host (the CPU backend keeps it).
    fn newton_schulz(&self, u: &Self::Tensor, steps: usize, bf16: bool) -> Result<Self::Tensor> {
        let (rows, cols) = self.shape(u);
        let x = self.download(u)?;
        let o = if bf16 {
            optim::newton_schulz_bf16(&x, rows, cols, steps)
        } else {
            optim::newton_schulz(&x, rows, cols, steps)
        };
        self.upload(&o, rows, cols)
    }

    /// [`TrainBackend::newton_schulz`] of each of `us`, in order, with the same results: what
    /// Muon's step runs over all its matrices. The default calls `newton_schulz` once per
    /// matrix; a device backend may run the matrices of one shape together (CUDA: one
    /// strided-batched product for all of them).
    fn newton_schulz_many(
        &self,
        us: &[&Self::Tensor],
        steps: usize,
        bf16: bool,
    ) -> Result<Vec<Self::Tensor>> {
        us.iter()
            .map(|u| self.newton_schulz(u, steps, bf16))
            .collect()
    }

    // ---- Optimizer ops. Each default downloads, runs the float32 oracle of
    // `backend::cpu::optim` and uploads: a new backend works from day one, and the device
    // backends replace them with kernels.

    /// Muon's momentum in place and the update's input ([`optim::muon_momentum`]).
    fn muon_momentum(
        &self,
        buf: &mut Self::Tensor,
        g: &Self::Tensor,
        mu: f32,
        nesterov: bool,
    ) -> Result<Self::Tensor> {
        let (r, c) = self.shape(buf);
        let mut b = self.download(buf)?;
        let u = optim::muon_momentum(&mut b, &self.download(g)?, mu, nesterov);
        *buf = self.upload(&b, r, c)?;
        self.upload(&u, r, c)
    }

    /// Muon's update of `w` by the orthogonalised `o` ([`optim::muon_apply`]).
    fn muon_apply(
        &self,
        w: &mut Self::Tensor,
        o: &Self::Tensor,
        decay: f32,
        lr: f32,
        shape_scale: f32,
        bf16: bool,
    ) -> Result<()> {
        let (r, c) = self.shape(w);
        let mut x = self.download(w)?;
        optim::muon_apply(&mut x, &self.download(o)?, decay, lr, shape_scale, bf16);
        *w = self.upload(&x, r, c)?;
        Ok(())
    }

    /// One Adam/AdamW update of `w` and its moments ([`optim::adam_update`]).
    fn adam_update(
        &self,
        w: &mut Self::Tensor,
        g: &Self::Tensor,
        m: &mut Self::Tensor,
        v: &mut Self::Tensor,
        s: &optim::AdamStep,
    ) -> Result<()> {
        let (r, c) = self.shape(w);
        let (mut x, mut mm, mut vv) = (self.download(w)?, self.download(m)?, self.download(v)?);
        optim::adam_update(&mut x, &self.download(g)?, &mut mm, &mut vv, s);
        *w = self.upload(&x, r, c)?;
        *m = self.upload(&mm, r, c)?;
        *v = self.upload(&vv, r, c)?;
        Ok(())
    }

    /// One SGD update of `w` and its momentum buffer `b` ([`optim::sgd_update`]).
    fn sgd_update(
        &self,
        w: &mut Self::Tensor,
        g: &Self::Tensor,
        b: &mut Self::Tensor,
        s: &optim::SgdStep,
    ) -> Result<()> {
        let (r, c) = self.shape(w);
        let (mut x, mut bb) = (self.download(w)?, self.download(b)?);
        optim::sgd_update(&mut x, &self.download(g)?, &mut bb, s);
        *w = self.upload(&x, r, c)?;
        *b = self.upload(&bb, r, c)?;
        Ok(())
    }

    /// The EMA of `w` in `e` ([`optim::ema_update`]).
    fn ema_update(&self, e: &mut Self::Tensor, w: &Self::Tensor, decay: f32) -> Result<()> {
        let (r, c) = self.shape(e);
        let mut x = self.download(e)?;
        optim::ema_update(&mut x, &self.download(w)?, decay);
        *e = self.upload(&x, r, c)?;
        Ok(())
    }

    /// `Σ_t Σ_i t[i]²` over the tensors, in f64 ([`optim::sum_squares`]): the squared global
    /// gradient norm, with one wait for the device at most.
    fn sum_squares(&self, ts: &[&Self::Tensor]) -> Result<f64> {
        let host = ts
            .iter()
            .map(|t| self.download(t))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&[f32]> = host.iter().map(Vec::as_slice).collect();
        Ok(optim::sum_squares(&refs))
    }

    /// QAT's fake quantization of every row of `w` ([`optim::fake_quant_row`]), into a new
    /// tensor.
    fn fake_quant_rows(&self, w: &Self::Tensor) -> Result<Self::Tensor> {
        let (r, c) = self.shape(w);
        let mut x = self.download(w)?;
        if c > 0 {
            x.chunks_mut(c).for_each(optim::fake_quant_row);
        }
        self.upload(&x, r, c)
    }

    /// `[1, cols]` tensors stacked into one `[n, cols]` (`None` rows are zeros).
    fn stack_rows(&self, rows: &[Option<&Self::Tensor>], cols: usize) -> Result<Self::Tensor> {
        let mut out = vec![0.0f32; rows.len() * cols];
        for (j, r) in rows.iter().enumerate() {
            if let Some(r) = r {
                let v = self.download(r)?;
                if v.len() != cols {
                    return Err(crate::Error::Backend(format!(
                        "stack_rows: row {j} has {} values, expected {cols}",
                        v.len()
                    )));
                }
                out[j * cols..(j + 1) * cols].copy_from_slice(&v);
            }
        }
        self.upload(&out, rows.len(), cols)
    }

    /// Row `r` of `t` as a `[1, cols]` tensor.
    fn row(&self, t: &Self::Tensor, r: usize) -> Result<Self::Tensor> {
        let (rows, cols) = self.shape(t);
        if r >= rows {
            return Err(crate::Error::Backend(format!(
                "row {r} of a {rows}x{cols} tensor"
            )));
        }
        let v = self.download(t)?;
        self.upload(&v[r * cols..(r + 1) * cols], 1, cols)
    }

    /// Row blocks stacked in order: `parts` (each `[r_k, cols]`, one `cols`) as one
    /// `[Σ r_k, cols]` tensor. What batched LoRA TTT builds a batch's adapters from, each
    /// document's own adapters staying where they are. The default copies through the host.
    fn concat_rows(&self, parts: &[&Self::Tensor]) -> Result<Self::Tensor> {
        let cols = check_concat(self, parts)?;
        let mut out = Vec::new();
        for p in parts {
            out.extend(self.download(p)?);
        }
        let rows = out.len() / cols.max(1);
        self.upload(&out, rows, cols)
    }

    /// Rows `[start, end)` of `t` as a new `[end - start, cols]` tensor (a document's share of
    /// a batch's gradients). The default copies through the host.
    fn slice_rows(&self, t: &Self::Tensor, start: usize, end: usize) -> Result<Self::Tensor> {
        let (rows, cols) = self.shape(t);
        check_slice(rows, cols, start, end)?;
        let v = self.download(t)?;
        self.upload(&v[start * cols..end * cols], end - start, cols)
    }

    /// `Σ_i a[i]·b[i]` as a `[1, 1]` tensor (where [`TrainBackend::dot`] returns it to the host).
    fn dot_tensor(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor> {
        let d = self.dot(a, b)?;
        self.upload(&[d as f32], 1, 1)
    }

    /// `Σ_r nll(h[r], targets[r])` (no adapters) as a `[1, 1]` tensor left on the backend: the
    /// training loss without a wait per micro-step. The sum is taken in f64 and rounded once.
    fn nll_sum(
        &self,
        h: &Self::Tensor,
        head: &Self::Tensor,
        targets: &[u32],
        softcap: f32,
    ) -> Result<Self::Tensor> {
        let nll = self.nll_delta(h, head, None, targets, softcap)?;
        let s: f64 = nll.iter().map(|&v| v as f64).sum();
        self.upload(&[s as f32], 1, 1)
    }

    /// [`TrainBackend::nll_backward_logits`] with the same weight `weight` for every row and no
    /// logit delta, and the summed NLL of those rows as a `[1, 1]` tensor from the same pass:
    /// the training step's head, which then uploads no weights and reads back no loss.
    fn nll_backward_logits_uniform(
        &self,
        h: &Self::Tensor,
        head: &Self::Tensor,
        targets: &[u32],
        softcap: f32,
        weight: f32,
    ) -> Result<(Self::Tensor, Self::Tensor)> {
        let loss = self.nll_sum(h, head, targets, softcap)?;
        let dnll = vec![weight; targets.len()];
        let dz = self.nll_backward_logits(h, head, None, targets, softcap, &dnll)?;
        Ok((dz, loss))
    }

    /// The first value of each tensor, read back together (one wait for the device).
    fn read_values(&self, ts: &[&Self::Tensor]) -> Result<Vec<f32>> {
        ts.iter()
            .map(|t| {
                self.download(t)?
                    .first()
                    .copied()
                    .ok_or_else(|| crate::Error::Backend("read_values: empty tensor".into()))
            })
            .collect()
    }
}

/// Checks the parts of [`TrainBackend::concat_rows`]: at least one, all of one width; the width.
pub fn check_concat<B: Backend + ?Sized>(be: &B, parts: &[&B::Tensor]) -> Result<usize> {
    let first = parts
        .first()
        .ok_or_else(|| crate::Error::Backend("concat_rows: no parts".into()))?;
    let cols = be.shape(first).1;
    if let Some((k, p)) = parts
        .iter()
        .enumerate()
        .find(|(_, p)| be.shape(p).1 != cols)
    {
        return Err(crate::Error::Backend(format!(
            "concat_rows: part {k} has {} columns, part 0 has {cols}",
            be.shape(p).1
        )));
    }
    Ok(cols)
}

/// Checks rows `[start, end)` of a `[rows, cols]` tensor for [`TrainBackend::slice_rows`].
pub fn check_slice(rows: usize, cols: usize, start: usize, end: usize) -> Result<()> {
    if start > end || end > rows {
        return Err(crate::Error::Backend(format!(
            "slice_rows: rows {start}..{end} of a {rows}x{cols} tensor"
        )));
    }
    Ok(())
}
