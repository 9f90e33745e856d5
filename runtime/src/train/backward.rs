//! The model backward: from per-row loss weights on scored positions to gradients of all base
//! weights (on the backend as [`BaseGrads`], or downloaded into a [`ModelWeights`] holding
//! gradients) and/or of the LoRA adapters only.
//! Base weight gradients (`dW = dyᵀx` of every linear, scales, gains, embeddings) are skipped
//! when not requested, so LoRA-only backward costs two `dx` products per linear. BigramHash,
//! SmearGate and value embeddings only feed base gradients (the adapters sit after them or
//! beside them), so their backward runs only with base gradients; the sidecar sits between
//! blocks, so its input gradient flows always and its weight gradients only with base ones.

use super::base_grads::BaseGrads;
use super::lora::{LoraGrads, Proj};
use super::tape::TrainModel;
use crate::backend::train::TrainBackend;
use crate::model::adapters::LoraSlot;
use crate::model::{
    ln_scale, BigramParams, BlockParams, BlockTape, DeviceLora, ModelWeights, Params,
    SidecarParams, SidecarTape, Tape, ValueEmbedParams,
};
use crate::{Error, Result};

/// The head's loss weights: one per row, or one for every row (the mean of a training loss).
#[derive(Clone, Copy)]
enum Loss<'a> {
    PerRow(&'a [f32]),
    Uniform(f32),
}

/// What a backward produced.
#[derive(Debug, Clone)]
pub struct Gradients {
    /// Gradients of every base weight (same layout as the weights), when requested.
    pub base: Option<ModelWeights>,
    /// Gradients of the adapters, when adapters were used.
    pub lora: Option<LoraGrads>,
}

/// One block's base-weight gradients, and its value-embedding term's (summed over layers later).
struct BlockGrads<T> {
    weights: BlockParams<T>,
    ve: Option<VeGrads<T>>,
}

/// Gradients from one layer's value-embedding term `c · p` (`p = proj(e)`,
/// `c = ve_layer_scales[slot] · ve_shared.scale`).
struct VeGrads<T> {
    slot: usize,
    /// This layer's part of `d ve_shared.proj`.
    proj: T,
    /// Gradient of the gathered rows `e = ve_shared.embed[ids]`.
    de: T,
    /// `dc = Σ dv ⊙ p` (`[1, 1]`).
    dc: T,
}

/// Gradients of the sidecar's parameters from one site.
struct SiteGrads<T> {
    site: usize,
    gate: T,
    value: T,
    local: T,
    proj: T,
    /// `[1, hidden]`: this site's row of `site_gate`.
    site_gate: T,
    /// `[1, d]`: this site's row of `shared_sparse_scale`.
    scale: T,
}

/// `d x_in` of the sidecar at one site and, with base gradients, its parameters'.
type SiteOut<T> = (T, Option<SiteGrads<T>>);

/// Adapter gradients `(dA, dB)` by member, then by index in [`super::Lora::adapters`].
type Slots<T> = Vec<Option<(T, T)>>;
/// An adapter site's `(A, B)` per member on the device and its index in
/// [`super::Lora::adapters`].
type AdapterRef<'a, T> = Option<(LoraSlot<'a, T>, usize)>;

impl<B: TrainBackend> TrainModel<B> {
    fn add(&self, acc: &mut B::Tensor, y: &B::Tensor) -> Result<()> {
        self.backend().add_scalar_scaled(acc, y, 1.0)
    }

    /// Backward of `y = x·wᵀ + (x·Aᵀ)·Bᵀ`: returns `dx` and (if `want_w`) `dw`; adapter
    /// gradients go to `slots[idx]`.
    #[allow(clippy::too_many_arguments)]
    fn lin_back(
        &self,
        dy: &B::Tensor,
        x: &B::Tensor,
        w: &B::Tensor,
        ad: AdapterRef<'_, B::Tensor>,
        u: Option<&B::Tensor>,
        want_w: bool,
        slots: &mut Slots<B::Tensor>,
    ) -> Result<(B::Tensor, Option<B::Tensor>)> {
        let be = self.backend();
        let mut dx = be.linear_backward_input(dy, w)?;
        let dw = if want_w {
            Some(be.linear_backward_weight(dy, x)?)
        } else {
            None
        };
        let (Some((slot, idx)), Some(u)) = (ad, u) else {
            return Ok((dx, dw));
        };
        let (a, b) = slot.ab;
        // Stacked over the members (one block per member: see `DeviceLora`).
        let (da, db) = match &slot.segs {
            None => {
                let db = be.linear_backward_weight(dy, u)?;
                let du = be.linear_backward_input(dy, b)?;
                let da = be.linear_backward_weight(&du, x)?;
                self.add(&mut dx, &be.linear_backward_input(&du, a)?)?;
                (da, db)
            }
            Some(segs) => {
                let db = be.linear_segments_backward_weight(dy, u, segs)?;
                let du = be.linear_segments_backward_input(dy, b, segs)?;
                let da = be.linear_segments_backward_weight(&du, x, segs)?;
                self.add(&mut dx, &be.linear_segments_backward_input(&du, a, segs)?)?;
                (da, db)
            }
        };
        slots[idx] = Some((da, db));
        Ok((dx, dw))
    }

    /// Gradients of `Σ_i dnll[i] · nll(rows[i], targets[i])` for a taped forward. With
    /// batched adapters ([`TrainModel::upload_lora_batched`]) `lora` holds the first member's
    /// gradients; see [`TrainModel::backward_lora_batched`].
    pub fn backward(
        &self,
        tape: &Tape<B::Tensor>,
        rows: &[usize],
        targets: &[u32],
        dnll: &[f32],
        lora: Option<&DeviceLora<B::Tensor>>,
        want_base: bool,
    ) -> Result<Gradients> {
        let (base, mut members) = self.backward_all(tape, rows, targets, dnll, lora, want_base)?;
        Ok(Gradients {
            base: base.map(|b| b.download(self.backend())).transpose()?,
            lora: lora.map(|_| members.swap_remove(0)),
        })
    }

    /// Adapter gradients of every member of batched adapters (one [`LoraGrads`] per member, in
    /// member order), of `Σ_i dnll[i] · nll(rows[i], targets[i])`. A member's gradients only
    /// depend on its own rows.
    pub fn backward_lora_batched(
        &self,
        tape: &Tape<B::Tensor>,
        rows: &[usize],
        targets: &[u32],
        dnll: &[f32],
        lora: &DeviceLora<B::Tensor>,
    ) -> Result<Vec<LoraGrads>> {
        Ok(self
            .backward_all(tape, rows, targets, dnll, Some(lora), false)?
            .1)
    }

    #[allow(clippy::type_complexity)]
    fn backward_all(
        &self,
        tape: &Tape<B::Tensor>,
        rows: &[usize],
        targets: &[u32],
        dnll: &[f32],
        lora: Option<&DeviceLora<B::Tensor>>,
        want_base: bool,
    ) -> Result<(Option<BaseGrads<B::Tensor>>, Vec<LoraGrads>)> {
        let (base, slots, _) =
            self.backward_with(tape, rows, targets, Loss::PerRow(dnll), lora, want_base)?;
        let members = lora.map_or(0, |l| l.members);
        Ok((base, split_members(self.backend(), slots, members)?))
    }

    /// The adapters' gradients of `Σ_i dnll[i] · nll(rows[i], targets[i])`, left on the
    /// device: `(dA, dB)` per adapter in [`super::Lora::adapters`] order, for one member
    /// (what [`super::DeviceAdam`] steps). Nothing is downloaded.
    pub fn backward_lora_on_device(
        &self,
        tape: &Tape<B::Tensor>,
        rows: &[usize],
        targets: &[u32],
        dnll: &[f32],
        lora: &DeviceLora<B::Tensor>,
    ) -> Result<Vec<(B::Tensor, B::Tensor)>> {
        if lora.members != 1 {
            return Err(Error::Usage(format!(
                "backward_lora_on_device: one adapter set, not {}",
                lora.members
            )));
        }
        self.adapter_grads(tape, rows, targets, dnll, lora)
    }

    /// Every adapter's `(dA, dB)` in [`super::Lora::adapters`] order, stacked over the members
    /// as `lora` stacks the adapters, on the device.
    fn adapter_grads(
        &self,
        tape: &Tape<B::Tensor>,
        rows: &[usize],
        targets: &[u32],
        dnll: &[f32],
        lora: &DeviceLora<B::Tensor>,
    ) -> Result<Vec<(B::Tensor, B::Tensor)>> {
        let (_, slots, _) =
            self.backward_with(tape, rows, targets, Loss::PerRow(dnll), Some(lora), false)?;
        slots
            .into_iter()
            .map(|s| s.ok_or_else(|| Error::Backend("backward: adapter without gradient".into())))
            .collect()
    }

    /// [`TrainModel::backward_lora_on_device`] for a batch's stacked adapters
    /// ([`TrainModel::stack_lora`]): per member (document), its `(dA, dB)` per adapter,
    /// sliced from the batch's gradients on the device
    /// ([`crate::backend::train::TrainBackend::slice_rows`]). Nothing is downloaded.
    #[allow(clippy::type_complexity)]
    pub fn backward_lora_batched_on_device(
        &self,
        tape: &Tape<B::Tensor>,
        rows: &[usize],
        targets: &[u32],
        dnll: &[f32],
        lora: &DeviceLora<B::Tensor>,
    ) -> Result<Vec<Vec<(B::Tensor, B::Tensor)>>> {
        let be = self.backend();
        let m = lora.members.max(1);
        let mut out: Vec<Vec<(B::Tensor, B::Tensor)>> = (0..m).map(|_| Vec::new()).collect();
        for (a, b) in self.adapter_grads(tape, rows, targets, dnll, lora)? {
            let (ra, rb) = (be.shape(&a).0 / m, be.shape(&b).0 / m);
            for (k, g) in out.iter_mut().enumerate() {
                g.push((
                    be.slice_rows(&a, k * ra, (k + 1) * ra)?,
                    be.slice_rows(&b, k * rb, (k + 1) * rb)?,
                ));
            }
        }
        Ok(out)
    }

    /// The backward with the head's loss weights given per row, or one weight for every row
    /// (then the summed NLL of the rows comes back too, as a `[1, 1]` tensor from the same
    /// head pass). When `rows` is every position in order and there are no adapters, the head
    /// reads the tape's hidden states directly (no gather, no scatter back).
    #[allow(clippy::type_complexity)]
    fn backward_with(
        &self,
        tape: &Tape<B::Tensor>,
        rows: &[usize],
        targets: &[u32],
        loss: Loss<'_>,
        lora: Option<&DeviceLora<B::Tensor>>,
        want_base: bool,
    ) -> Result<(
        Option<BaseGrads<B::Tensor>>,
        Slots<B::Tensor>,
        Option<B::Tensor>,
    )> {
        let (be, cfg) = (self.backend(), self.config());
        let per_row = match loss {
            Loss::PerRow(d) => d.len(),
            Loss::Uniform(_) => rows.len(),
        };
        if rows.len() != targets.len() || rows.len() != per_row {
            return Err(Error::Usage(
                "backward: rows/targets/dnll lengths differ".into(),
            ));
        }
        let total = tape.ids.len();
        let eps = cfg.norm_eps;
        let mut slots: Slots<B::Tensor> = lora
            .map(|l| (0..l.count).map(|_| None).collect())
            .unwrap_or_default();

        // Head.
        let identity =
            lora.is_none() && rows.len() == total && rows.iter().enumerate().all(|(i, &r)| i == r);
        let (hs, u, delta) = if identity {
            (be.copy(&tape.h)?, None, None)
        } else {
            self.head_inputs(tape, rows, lora)?
        };
        let (dz, loss_sum) = match loss {
            Loss::Uniform(w) if delta.is_none() => {
                let (dz, l) = be.nll_backward_logits_uniform(
                    &hs,
                    self.model.head(),
                    targets,
                    cfg.logit_softcap,
                    w,
                )?;
                (dz, Some(l))
            }
            _ => {
                let uniform;
                let dnll = match loss {
                    Loss::Uniform(w) => {
                        uniform = vec![w; rows.len()];
                        &uniform
                    }
                    Loss::PerRow(d) => d,
                };
                let dz = be.nll_backward_logits(
                    &hs,
                    self.model.head(),
                    delta.as_ref(),
                    targets,
                    cfg.logit_softcap,
                    dnll,
                )?;
                (dz, None)
            }
        };
        let head_ad = match lora {
            Some(l) => l.head_slot(rows)?.zip(l.index_head),
            None => None,
        };
        let (dhs, d_head) = self.lin_back(
            &dz,
            &hs,
            self.model.head(),
            head_ad,
            u.as_ref(),
            want_base,
            &mut slots,
        )?;
        let dh = if identity {
            dhs
        } else {
            be.gather_rows_backward(&dhs, rows, total)?
        };
        let mut dx = be.rms_norm_backward(&tape.x_final, &dh, eps, 1.0)?;

        // Blocks, last to first.
        let (d, enc, layers) = (cfg.model_dim, cfg.num_encoder_layers, cfg.num_layers);
        let mut dx0 = be.zeros(total, d)?;
        let mut dskip: Vec<Option<B::Tensor>> = (0..enc).map(|_| None).collect();
        let mut dskip_w: Vec<Option<B::Tensor>> =
            (0..self.model.rows.skip.len()).map(|_| None).collect();
        let mut bgrads: Vec<Option<BlockGrads<B::Tensor>>> = (0..layers).map(|_| None).collect();
        let mut site_grads = Vec::new();
        for i in (0..layers).rev() {
            if i < enc {
                if let Some(ds) = dskip[i].take() {
                    self.add(&mut dx, &ds)?;
                }
            }
            if let Some(st) = &tape.blocks[i].sidecar {
                let (d, g) = self.sidecar_backward(st, dx, tape.geom.seq, want_base)?;
                dx = d;
                site_grads.extend(g);
            }
            let (dx_in, dx0_part, bg) =
                self.block_backward(i, &tape.blocks[i], dx, tape, lora, want_base, &mut slots)?;
            self.add(&mut dx0, &dx0_part)?;
            bgrads[i] = bg;
            dx = dx_in;
            if i >= enc {
                let j = i - enc;
                if let Some(src) = tape.skip_src.get(j).copied().flatten() {
                    let (ds, dsw) = be.add_scaled_backward(
                        &tape.skip_vals[src],
                        &self.model.rows.skip[j],
                        &dx,
                    )?;
                    dskip[src] = Some(ds);
                    dskip_w[j] = Some(dsw);
                }
            }
        }

        if !want_base {
            return Ok((None, slots, loss_sum));
        }

        // Embedding: block 0's input is x0 itself.
        self.add(&mut dx0, &dx)?;
        let (dx_rms, smear_gate) = match (&self.model.params.smear_gate, &tape.x_smear_in) {
            (Some(g), Some(x)) => {
                let (dx, dg) = be.smear_backward(x, g, &dx0, tape.geom.seq)?;
                (dx, Some(dg))
            }
            (None, None) => (dx0, None),
            _ => return Err(Error::Backend("backward: SmearGate tape mismatch".into())),
        };
        let dx_emb = be.rms_norm_backward(&tape.x_emb, &dx_rms, eps, 1.0)?;
        let bigram = self.bigram_backward(tape, &dx_emb)?;
        let mut d_tok = be.embedding_backward(&dx_emb, &tape.ids, cfg.vocab_size)?;
        let d_head = d_head.ok_or_else(|| Error::Backend("missing head gradient".into()))?;
        let lm_head = if cfg.tied_embeddings {
            self.add(&mut d_tok, &d_head)?;
            None
        } else {
            Some(d_head)
        };
        // The skip weights' rows, stacked into the `[num_skips, d]` parameter's gradient.
        let skip_weights = if dskip_w.is_empty() {
            None
        } else {
            let rows: Vec<Option<&B::Tensor>> = dskip_w.iter().map(Option::as_ref).collect();
            Some(be.stack_rows(&rows, d)?)
        };
        let mut blocks = Vec::with_capacity(layers);
        let n_ve = self.model.scalars.ve_layer_scales.len();
        // Value embeddings: (Σ d proj, Σ de) over layers and `dc` per slot.
        let mut ve_sum: Option<(B::Tensor, B::Tensor)> = None;
        let mut ve_dc: Vec<Option<B::Tensor>> = (0..n_ve).map(|_| None).collect();
        for bg in bgrads {
            let bg = bg.ok_or_else(|| Error::Backend("missing block gradient".into()))?;
            if let Some(v) = bg.ve {
                let slot = ve_dc
                    .get_mut(v.slot)
                    .ok_or_else(|| Error::Backend("backward: bad VE slot".into()))?;
                match slot {
                    Some(acc) => be.add_scalar_scaled(acc, &v.dc, 1.0)?,
                    None => *slot = Some(v.dc),
                }
                match &mut ve_sum {
                    None => ve_sum = Some((v.proj, v.de)),
                    Some((p, de)) => {
                        self.add(p, &v.proj)?;
                        self.add(de, &v.de)?;
                    }
                }
            }
            blocks.push(bg.weights);
        }
        let sidecar = self.sidecar_grads(site_grads)?;
        let value_embed = match &self.model.params.value_embed {
            None => None,
            Some(ve) => {
                let (embed, proj) = match ve_sum {
                    Some((p, de)) => {
                        let rows = be.shape(&ve.embed).0;
                        (be.embedding_backward(&de, &tape.ids, rows)?, p)
                    }
                    None => {
                        let ((er, ec), (pr, pc)) = (be.shape(&ve.embed), be.shape(&ve.proj));
                        (be.zeros(er, ec)?, be.zeros(pr, pc)?)
                    }
                };
                // c_k = ls_k · s: d ls_k = dc_k · s, d s = Σ_k dc_k · ls_k (on the backend).
                let sc = &self.model.scalars;
                let mut scale = be.zeros(1, 1)?;
                let mut layer_scales = Vec::with_capacity(n_ve);
                for (dc, &l) in ve_dc.iter().zip(&sc.ve_layer_scales) {
                    match dc {
                        Some(dc) => {
                            be.add_scalar_scaled(&mut scale, dc, l)?;
                            layer_scales.push(be.scaled(dc, sc.ve_scale)?);
                        }
                        None => layer_scales.push(be.zeros(1, 1)?),
                    }
                }
                Some(ValueEmbedParams {
                    embed,
                    proj,
                    scale,
                    layer_scales,
                })
            }
        };
        Ok((
            Some(BaseGrads {
                config: cfg.clone(),
                params: Params {
                    tok_emb: d_tok,
                    bigram,
                    smear_gate,
                    skip_weights,
                    blocks,
                    sidecar,
                    value_embed,
                    lm_head,
                },
            }),
            slots,
            loss_sum,
        ))
    }

    /// BigramHash backward from the gradient of `x_emb = E[ids] + scale · proj(embed[idx])`.
    fn bigram_backward(
        &self,
        tape: &Tape<B::Tensor>,
        dx_emb: &B::Tensor,
    ) -> Result<Option<BigramParams<B::Tensor>>> {
        let be = self.backend();
        let (bg, bt) = match (&self.model.params.bigram, &tape.bigram) {
            (Some(bg), Some(bt)) => (bg, bt),
            (None, None) => return Ok(None),
            _ => return Err(Error::Backend("backward: BigramHash tape mismatch".into())),
        };
        let term = bt.p.as_ref().unwrap_or(&bt.e);
        let d_scale = be.dot_tensor(dx_emb, term)?;
        let dterm = be.scaled(dx_emb, self.model.scalars.bigram_scale)?;
        let (de, proj) = match &bg.proj {
            Some(w) => (
                be.linear_backward_input(&dterm, w)?,
                Some(be.linear_backward_weight(&dterm, &bt.e)?),
            ),
            None => (dterm, None),
        };
        let rows = be.shape(&bg.embed).0;
        let d_embed = be.embedding_backward(&de, &bt.idx, rows)?;
        Ok(Some(BigramParams {
            embed: d_embed,
            proj,
            scale: d_scale,
        }))
    }

    /// Backward of the sidecar at one site from the gradient of its output: `d x_in`, and its
    /// parameters' gradients when `want_base`.
    fn sidecar_backward(
        &self,
        st: &SidecarTape<B::Tensor>,
        dx_out: B::Tensor,
        seq: usize,
        want_base: bool,
    ) -> Result<SiteOut<B::Tensor>> {
        let (be, eps) = (self.backend(), self.config().norm_eps);
        let sc = self
            .model
            .params
            .sidecar
            .as_ref()
            .ok_or_else(|| Error::Backend("backward: sidecar tape without a sidecar".into()))?;
        let rows = &self.model.rows;
        let (d_o, d_scale) = be.add_scaled_backward(&st.o, &rows.site_scale[st.site], &dx_out)?;
        let mut dx = dx_out;
        let dz = be.linear_backward_input(&d_o, &sc.proj)?;
        let (dgp, d_site_gate, dc) =
            be.silu_gate_backward(&st.gp, &rows.site_gate[st.site], &st.c, &dz)?;
        let (dvv, d_local) = be.causal_conv_backward(&st.vv, &sc.local, &dc, seq)?;
        let mut dn = be.linear_backward_input(&dgp, &sc.gate)?;
        self.add(&mut dn, &be.linear_backward_input(&dvv, &sc.value)?)?;
        self.add(&mut dx, &be.rms_norm_backward(&st.x_in, &dn, eps, 1.0)?)?;
        if !want_base {
            return Ok((dx, None));
        }
        Ok((
            dx,
            Some(SiteGrads {
                site: st.site,
                gate: be.linear_backward_weight(&dgp, &st.n)?,
                value: be.linear_backward_weight(&dvv, &st.n)?,
                local: d_local,
                proj: be.linear_backward_weight(&d_o, &st.z)?,
                site_gate: d_site_gate,
                scale: d_scale,
            }),
        ))
    }

    /// The sidecar's parameter gradients: the shared matrices summed over sites, the per-site
    /// rows stacked (zero for a site no forward reached).
    fn sidecar_grads(
        &self,
        sites: Vec<SiteGrads<B::Tensor>>,
    ) -> Result<Option<SidecarParams<B::Tensor>>> {
        let be = self.backend();
        let Some(sc) = &self.model.params.sidecar else {
            return Ok(None);
        };
        let zeros = |t: &B::Tensor| {
            let (r, c) = be.shape(t);
            be.zeros(r, c)
        };
        let (mut gate, mut value, mut local, mut proj) = (
            zeros(&sc.gate)?,
            zeros(&sc.value)?,
            zeros(&sc.local)?,
            zeros(&sc.proj)?,
        );
        let n = be.shape(&sc.site_gate).0;
        let mut gate_rows: Vec<Option<B::Tensor>> = (0..n).map(|_| None).collect();
        let mut scale_rows: Vec<Option<B::Tensor>> = (0..n).map(|_| None).collect();
        for g in sites {
            self.add(&mut gate, &g.gate)?;
            self.add(&mut value, &g.value)?;
            self.add(&mut local, &g.local)?;
            self.add(&mut proj, &g.proj)?;
            let slot = gate_rows
                .get_mut(g.site)
                .ok_or_else(|| Error::Backend("backward: bad sidecar site".into()))?;
            *slot = Some(g.site_gate);
            scale_rows[g.site] = Some(g.scale);
        }
        let stack = |rows: &[Option<B::Tensor>], t: &B::Tensor| {
            let refs: Vec<Option<&B::Tensor>> = rows.iter().map(Option::as_ref).collect();
            be.stack_rows(&refs, be.shape(t).1)
        };
        Ok(Some(SidecarParams {
            gate,
            value,
            local,
            proj,
            site_gate: stack(&gate_rows, &sc.site_gate)?,
            scale: stack(&scale_rows, &sc.scale)?,
        }))
    }

    /// Backward of block `i`: `(d x_in, d x0 contribution, weight grads)`.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn block_backward(
        &self,
        i: usize,
        t: &BlockTape<B::Tensor>,
        dx2: B::Tensor,
        tape: &Tape<B::Tensor>,
        lora: Option<&DeviceLora<B::Tensor>>,
        want_base: bool,
        slots: &mut Slots<B::Tensor>,
    ) -> Result<(B::Tensor, B::Tensor, Option<BlockGrads<B::Tensor>>)> {
        let (cfg, be, w) = (self.config(), self.backend(), &self.model.params.blocks[i]);
        let (eps, s) = (cfg.norm_eps, ln_scale(cfg, i));
        let ad = |p: Proj| {
            lora.and_then(|l| l.block_slot(i, p.index()).zip(l.index_blocks[i][p.index()]))
        };
        let u = |p: Proj| t.u[p.index()].as_ref();
        // `d out` → `(d x, d w)` of one (adapted) block linear.
        let mut lin_back = |dy: &B::Tensor, x: &B::Tensor, w: &B::Tensor, p: Proj| {
            self.lin_back(dy, x, w, ad(p), u(p), want_base, slots)
        };
        // MLP residual: x2 = x1 + mlp_scale ⊙ m.
        let (dm, d_mlp_scale) = be.add_scaled_backward(&t.m, &w.mlp_scale, &dx2)?;
        let mut dx1 = dx2;
        let (da, d_proj) = lin_back(&dm, &t.a, &w.mlp_proj, Proj::MlpProj)?;
        let dh = be.activation_backward(&t.h, &da, cfg.activation)?;
        let (dn2, d_fc) = lin_back(&dh, &t.n2, &w.mlp_fc, Proj::MlpFc)?;
        self.add(&mut dx1, &be.rms_norm_backward(&t.x1, &dn2, eps, s)?)?;
        // Attention residual: x1 = xm + attn_scale ⊙ o.
        let (d_o, d_attn_scale) = be.add_scaled_backward(&t.o, &w.attn_scale, &dx1)?;
        let mut dxm = dx1;
        let (dy, d_wo) = lin_back(&d_o, &t.y, &w.attn_proj, Proj::O)?;
        let xsa = cfg.xsa_layers.contains(&i);
        let (dq, dk, dv) = be.attention_backward(&t.q, &t.k, &t.v, &dy, &tape.geom, xsa)?;
        let ve = match (&t.ve, &self.model.params.value_embed) {
            (Some(vt), Some(ve)) if want_base => {
                let sc = &self.model.scalars;
                let c = sc.ve_layer_scales[vt.slot] * sc.ve_scale;
                let dp = be.scaled(&dv, c)?;
                Some(VeGrads {
                    slot: vt.slot,
                    proj: be.linear_backward_weight(&dp, &vt.e)?,
                    de: be.linear_backward_input(&dp, &ve.proj)?,
                    dc: be.dot_tensor(&dv, &vt.p)?,
                })
            }
            _ => None,
        };
        let (dq_pre, dk_pre, d_gain) = be.qk_norm_rope_backward(
            &t.q_pre, &t.k_pre, &dq, &dk, &tape.geom, &tape.rope, &w.q_gain, eps,
        )?;
        let (mut dn1, d_wq) = lin_back(&dq_pre, &t.n1, &w.c_q, Proj::Q)?;
        let (dn1k, d_wk) = lin_back(&dk_pre, &t.n1, &w.c_k, Proj::K)?;
        let (dn1v, d_wv) = lin_back(&dv, &t.n1, &w.c_v, Proj::V)?;
        self.add(&mut dn1, &dn1k)?;
        self.add(&mut dn1, &dn1v)?;
        self.add(&mut dxm, &be.rms_norm_backward(&t.xm, &dn1, eps, s)?)?;
        let (dx_in, dx0, d_mix) = be.resid_mix_backward(&t.x_in, &tape.x0, &w.resid_mix, &dxm)?;
        if !want_base {
            return Ok((dx_in, dx0, None));
        }
        let dw = |t: Option<B::Tensor>| {
            t.ok_or_else(|| Error::Backend("missing weight gradient".into()))
        };
        let weights = BlockParams {
            c_q: dw(d_wq)?,
            c_k: dw(d_wk)?,
            c_v: dw(d_wv)?,
            attn_proj: dw(d_wo)?,
            q_gain: d_gain,
            mlp_fc: dw(d_fc)?,
            mlp_proj: dw(d_proj)?,
            attn_scale: d_attn_scale,
            mlp_scale: d_mlp_scale,
            resid_mix: d_mix,
        };
        Ok((dx_in, dx0, Some(BlockGrads { weights, ve })))
    }

    /// Taped forward, mean NLL over `rows` and the per-row loss weights `1/n` of that mean.
    #[allow(clippy::too_many_arguments)]
    fn mean_loss(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        rows: &[usize],
        targets: &[u32],
        lora: Option<&DeviceLora<B::Tensor>>,
    ) -> Result<(Tape<B::Tensor>, f64, Vec<f32>)> {
        let tape = self.forward(ids, batch, seq, lora)?;
        let nll = self.nll(&tape, rows, targets, lora)?;
        let n = rows.len().max(1);
        let loss = nll.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        Ok((tape, loss, vec![1.0 / n as f32; rows.len()]))
    }

    /// Mean NLL over `rows` and its gradients (the training loss of one step).
    #[allow(clippy::too_many_arguments)]
    pub fn loss_and_grads(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        rows: &[usize],
        targets: &[u32],
        lora: Option<&DeviceLora<B::Tensor>>,
        want_base: bool,
    ) -> Result<(f64, Gradients)> {
        let (tape, loss, dnll) = self.mean_loss(ids, batch, seq, rows, targets, lora)?;
        let g = self.backward(&tape, rows, targets, &dnll, lora, want_base)?;
        Ok((loss, g))
    }

    /// [`TrainModel::loss_and_grads`] without adapters, the base gradients left on the backend
    /// (for summing micro-steps there; [`BaseGrads::download`] brings them to the host).
    pub fn loss_and_base_grads(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        rows: &[usize],
        targets: &[u32],
    ) -> Result<(f64, BaseGrads<B::Tensor>)> {
        let (tape, loss, dnll) = self.mean_loss(ids, batch, seq, rows, targets, None)?;
        let (base, _) = self.backward_all(&tape, rows, targets, &dnll, None, true)?;
        let base =
            base.ok_or_else(|| Error::Backend("backward returned no weight gradients".into()))?;
        Ok((loss, base))
    }
}

impl<B: TrainBackend> TrainModel<B> {
    /// [`TrainModel::loss_and_base_grads`] with nothing read back: the summed NLL over `rows`
    /// as a `[1, 1]` tensor and the base gradients of its mean, all on the backend.
    pub fn loss_sum_and_base_grads(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        rows: &[usize],
        targets: &[u32],
    ) -> Result<(B::Tensor, BaseGrads<B::Tensor>)> {
        let tape = self.forward(ids, batch, seq, None)?;
        let n = rows.len().max(1);
        let (base, _, loss) = self.backward_with(
            &tape,
            rows,
            targets,
            Loss::Uniform(1.0 / n as f32),
            None,
            true,
        )?;
        let base =
            base.ok_or_else(|| Error::Backend("backward returned no weight gradients".into()))?;
        let loss = loss.ok_or_else(|| Error::Backend("backward returned no loss".into()))?;
        Ok((loss, base))
    }
}

/// Per-member adapter gradients from the stacked ones (`slots[i]` = `(dA, dB)` of adapter `i`,
/// each member's block after the previous one's), downloaded once per adapter.
fn split_members<B: TrainBackend>(
    be: &B,
    slots: Slots<B::Tensor>,
    members: usize,
) -> Result<Vec<LoraGrads>> {
    let mut out: Vec<LoraGrads> = (0..members).map(|_| LoraGrads(Vec::new())).collect();
    for s in slots {
        let (a, b) =
            s.ok_or_else(|| Error::Backend("backward: adapter without gradient".into()))?;
        let (da, db) = (be.download(&a)?, be.download(&b)?);
        let (na, nb) = (da.len() / members.max(1), db.len() / members.max(1));
        for (k, g) in out.iter_mut().enumerate() {
            g.0.push((
                da[k * na..(k + 1) * na].to_vec(),
                db[k * nb..(k + 1) * nb].to_vec(),
            ));
        }
    }
    Ok(out)
}
