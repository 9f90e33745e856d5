//! The forward pass (spec 3.3 and the variants of section 4), written once for every backend
//! and for both inference and training: [`DeviceModel::forward_with`] optionally adds LoRA
//! adapters to the block linears and records a [`Tape`] for the backward (`crate::train`).
//!
//! ```text
//! x = E[ids] (+ bigram)      ; x = rms(x) ; x = smear(x)? ; x0 = x
//! Block v (VE layers)        : v += ve_layer_scales[k] · ve_shared.scale · proj(ve_embed[ids])
//! encoder blocks i < L/2     : x = Block_i(x, x0), push x
//! decoder blocks             : x += skip_w[j] ⊙ pop() ; x = Block(x, x0)
//! h = rms(x)                 ; logits = c·tanh(h·Eᵀ / c)
//! Block: x = mix0⊙x + mix1⊙x0 ; x += attn_scale ⊙ Attn(rms(x)·s) ; x += mlp_scale ⊙ MLP(rms(x)·s)
//! Sidecar after block i (site k): n = rms(x) ; x += scale[k] ⊙ proj(silu(gate·n + site_gate[k]) ⊙ conv(value·n))
//! ```
//!
//! The sidecar's output is what an encoder layer pushes as its skip value (#581's order).

use super::adapters::{lora_linear, DeviceLora};
use super::config::ModelConfig;
use super::params::{is_product_weight, Params};
use super::weights::{Matrix, ModelWeights};
use crate::backend::{AttnGeometry, Backend, RopeSpec};
use crate::train::Proj;
use crate::{Error, Result};

/// What the BigramHash backward needs.
pub(crate) struct BigramTape<T> {
    /// Bucket per position.
    pub idx: Vec<u32>,
    /// `embed[idx]` (the projection's input).
    pub e: T,
    /// `proj(e)`, the term scaled by `scale`; `None` without a projection (the term is `e`).
    pub p: Option<T>,
}

/// What the value-embedding backward of one layer needs.
pub(crate) struct VeTape<T> {
    /// Index into `ve_layer_scales`.
    pub slot: usize,
    /// `ve_shared.embed[ids]` (the projection's input).
    pub e: T,
    /// `proj(e)`, the term added to `v` times `ve_layer_scales[slot] · ve_shared.scale`.
    pub p: T,
}

/// What the sidecar's backward needs at one site.
pub(crate) struct SidecarTape<T> {
    pub site: usize,
    /// The block's output, the sidecar's input.
    pub x_in: T,
    pub n: T,
    /// `gate · n` (before the site's bias).
    pub gp: T,
    /// `value · n` (the convolution's input).
    pub vv: T,
    /// The convolution's output.
    pub c: T,
    /// `silu(gp + site_gate[site]) ⊙ c` (the projection's input).
    pub z: T,
    /// `proj · z`, the term added times the site's scale.
    pub o: T,
}

/// Saved activations of one block (what [`crate::train::TrainModel::backward`] reads).
pub(crate) struct BlockTape<T> {
    pub x_in: T,
    /// After `resid_mix` (input of the attention residual).
    pub xm: T,
    pub n1: T,
    /// `q`, `k` before `qk_norm_rope` (which runs in place).
    pub q_pre: T,
    pub k_pre: T,
    pub q: T,
    pub k: T,
    pub v: T,
    pub y: T,
    pub o: T,
    /// After the attention residual (input of the MLP residual).
    pub x1: T,
    pub n2: T,
    pub h: T,
    pub a: T,
    pub m: T,
    /// `x · Aᵀ` of each adapted linear.
    pub u: [Option<T>; 6],
    /// The value-embedding term, in the layers that add one.
    pub ve: Option<VeTape<T>>,
    /// The sidecar after this block, at its sites.
    pub sidecar: Option<SidecarTape<T>>,
}

/// Everything the backward needs from one forward.
pub struct Tape<T> {
    pub(crate) ids: Vec<u32>,
    pub(crate) geom: AttnGeometry,
    pub(crate) rope: RopeSpec,
    /// Token embedding plus the bigram term (input of the first RMSNorm).
    pub(crate) x_emb: T,
    /// The BigramHash term's inputs, with BigramHash.
    pub(crate) bigram: Option<BigramTape<T>>,
    /// Output of the first RMSNorm (the SmearGate's input), with SmearGate.
    pub(crate) x_smear_in: Option<T>,
    pub(crate) x0: T,
    pub(crate) blocks: Vec<BlockTape<T>>,
    /// For decoder block `j`: the encoder layer whose output was added to its input.
    pub(crate) skip_src: Vec<Option<usize>>,
    /// Output of each encoder block (the U-Net skip values).
    pub(crate) skip_vals: Vec<T>,
    pub(crate) x_final: T,
    /// Final normalised hidden states `[batch*seq, d]`.
    pub h: T,
}

/// What [`DeviceModel::forward_with`] produced.
pub(crate) enum Forward<T> {
    /// Final normalised hidden states `[batch*seq, d]` only.
    Hidden(T),
    /// The same (`Tape::h`) with the recorded activations.
    Taped(Tape<T>),
}

impl<T> Forward<T> {
    fn into_hidden(self) -> T {
        match self {
            Forward::Hidden(h) => h,
            Forward::Taped(t) => t.h,
        }
    }
}

/// A block's output and, when recording, its tape.
type BlockOut<T> = (T, Option<BlockTape<T>>);
/// The sidecar's output at one site and, when recording, its tape.
type SidecarOut<T> = (T, Option<SidecarTape<T>>);

/// The forward's state between two layers.
struct Stack<T> {
    x: T,
    x0: T,
    /// The next layer to run (layers `0..next` ran).
    next: usize,
    /// Output of each encoder layer (the U-Net skip values), and those not yet consumed.
    skip_vals: Vec<T>,
    pending: Vec<usize>,
    /// For decoder block `j`: the encoder layer whose output was added to its input.
    skip_src: Vec<Option<usize>>,
    blocks: Vec<BlockTape<T>>,
    emb: Embedded<T>,
}

/// What the embedding stage records for the backward (all `None` without recording).
struct Embedded<T> {
    x_emb: Option<T>,
    bigram: Option<BigramTape<T>>,
    x_smear_in: Option<T>,
}

/// A forward pass run one layer at a time, from [`DeviceModel::layer_steps`]: the same ops in
/// the same order as [`DeviceModel::nll`], so the same values bit for bit, with a point between
/// layers where the caller may do something else (a page answering its Stop button while one
/// window of a large model runs). Inference only: no adapters, no tape.
pub struct LayerSteps<'m, B: Backend> {
    model: &'m DeviceModel<B>,
    ids: Vec<u32>,
    batch: usize,
    seq: usize,
    /// `None` after a step failed.
    stack: Option<Stack<B::Tensor>>,
}

impl<B: Backend> LayerSteps<'_, B> {
    /// Layers run so far.
    pub fn layers_done(&self) -> usize {
        self.stack.as_ref().map_or(0, |s| s.next)
    }

    /// Layers of the model.
    pub fn layers_total(&self) -> usize {
        self.model.config.num_layers
    }

    /// Whether every layer ran (what is left is the final norm and the head).
    pub fn is_done(&self) -> bool {
        self.layers_done() == self.layers_total()
    }

    /// Runs the next layer (nothing once every layer ran).
    pub fn step(&mut self) -> Result<()> {
        let st = self
            .stack
            .take()
            .ok_or_else(|| Error::Backend("this forward failed at an earlier layer".into()))?;
        if st.next == self.layers_total() {
            self.stack = Some(st);
            return Ok(());
        }
        let pass = self
            .model
            .pass(&self.ids, self.batch, self.seq, None, false)?;
        self.stack = Some(self.model.layer(st, &pass)?);
        Ok(())
    }

    /// Runs the layers left, the final norm and the head: [`DeviceModel::nll`] of these ids
    /// for `targets` (and `rows`), bit for bit.
    pub fn nll(self, targets: &[u32], rows: Option<&[usize]>) -> Result<Vec<f32>> {
        let m = self.model;
        let h = self.final_hidden(targets)?;
        m.nll_of_hidden(&h, targets, rows)
    }

    /// [`LayerSteps::nll`] with the values left on the device (`[rows, 1]`,
    /// [`Backend::nll_tensor`]), for a caller that downloads them when it can (a browser).
    pub fn nll_tensor(self, targets: &[u32], rows: Option<&[usize]>) -> Result<B::Tensor> {
        let m = self.model;
        let h = self.final_hidden(targets)?;
        m.head_of_hidden(&h, targets, rows, |be, h, t| {
            be.nll_tensor(h, m.head(), t, m.config.logit_softcap)
        })
    }

    /// The layers left and the final norm.
    fn final_hidden(mut self, targets: &[u32]) -> Result<B::Tensor> {
        if targets.len() != self.ids.len() {
            return Err(Error::Usage("nll: targets and ids differ in length".into()));
        }
        while !self.is_done() {
            self.step()?;
        }
        let st = self
            .stack
            .take()
            .ok_or_else(|| Error::Backend("this forward failed at an earlier layer".into()))?;
        let m = self.model;
        m.backend.rms_norm(&st.x, m.config.norm_eps, 1.0)
    }
}

/// The per-call state every block sees.
struct Pass<'a, T> {
    ids: &'a [u32],
    geom: AttnGeometry,
    rope: RopeSpec,
    adapters: Option<&'a DeviceLora<T>>,
    record: bool,
}

/// The scalar parameters the forward multiplies by, on the host (the backend's ops take them as
/// plain factors); refreshed whenever the parameters change.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scalars {
    pub(crate) bigram_scale: f32,
    pub(crate) ve_scale: f32,
    pub(crate) ve_layer_scales: Vec<f32>,
}

impl Scalars {
    /// The scalar parameters of `p` (which go to the forward as plain factors), in the order
    /// [`Scalars::from_values`] takes them back.
    pub(crate) fn tensors<T>(p: &Params<T>) -> Vec<&T> {
        let mut out = Vec::new();
        if let Some(b) = &p.bigram {
            out.push(&b.scale);
        }
        if let Some(v) = &p.value_embed {
            out.push(&v.scale);
            out.extend(v.layer_scales.iter());
        }
        out
    }

    /// [`Scalars`] from the values of [`Scalars::tensors`], in that order.
    pub(crate) fn from_values<T>(p: &Params<T>, vals: &[f32]) -> Scalars {
        let mut it = vals.iter().copied();
        let mut s = Scalars::default();
        if p.bigram.is_some() {
            s.bigram_scale = it.next().unwrap_or(0.0);
        }
        if let Some(v) = &p.value_embed {
            s.ve_scale = it.next().unwrap_or(0.0);
            s.ve_layer_scales = (0..v.layer_scales.len())
                .map(|_| it.next().unwrap_or(0.0))
                .collect();
        }
        s
    }

    fn of(p: &Params<Matrix>) -> Scalars {
        Scalars {
            bigram_scale: p.bigram.as_ref().map_or(0.0, |b| b.scale.value()),
            ve_scale: p.value_embed.as_ref().map_or(0.0, |v| v.scale.value()),
            ve_layer_scales: p.value_embed.as_ref().map_or(Vec::new(), |v| {
                v.layer_scales.iter().map(Matrix::value).collect()
            }),
        }
    }
}

/// Rows of parameter matrices that ops take one at a time, as `[1, cols]` tensors of their
/// own, copied from the parameters (and again whenever they change).
pub(crate) struct RowViews<T> {
    /// Row `j` of `skip_weights` (what `add_scaled` takes).
    pub(crate) skip: Vec<T>,
    /// Row `k` of the sidecar's `site_gate` (the gate's bias at site `k`).
    pub(crate) site_gate: Vec<T>,
    /// Row `k` of `shared_sparse_scale`.
    pub(crate) site_scale: Vec<T>,
}

impl<T> RowViews<T> {
    /// The rows of `p`'s matrices, `row(matrix, r)` copying one and `rows(matrix)` counting them.
    pub(crate) fn of<U>(
        p: &Params<U>,
        rows: impl Fn(&U) -> usize,
        mut row: impl FnMut(&U, usize) -> Result<T>,
    ) -> Result<Self> {
        let mut all = |m: Option<&U>| -> Result<Vec<T>> {
            match m {
                Some(m) => (0..rows(m)).map(|r| row(m, r)).collect(),
                None => Ok(Vec::new()),
            }
        };
        Ok(RowViews {
            skip: all(p.skip_weights.as_ref())?,
            site_gate: all(p.sidecar.as_ref().map(|s| &s.site_gate))?,
            site_scale: all(p.sidecar.as_ref().map(|s| &s.scale))?,
        })
    }
}

/// A model whose weights live on a backend, ready to run forward passes.
pub struct DeviceModel<B: Backend> {
    pub config: ModelConfig,
    backend: B,
    /// Every parameter on the backend.
    pub(crate) params: Params<B::Tensor>,
    /// Rows of the skip weights and of the sidecar's per-site parameters.
    pub(crate) rows: RowViews<B::Tensor>,
    pub(crate) scalars: Scalars,
}

impl<B: Backend> DeviceModel<B> {
    /// Uploads `weights` to `backend`: matrices only read by linear/embedding/head ops through
    /// [`Backend::upload_weight`] (which may store them in reduced precision), everything else
    /// (control tensors) through [`Backend::upload`].
    pub fn new(backend: B, weights: &ModelWeights) -> Result<Self> {
        let params = weights.params.try_map(|name, dims, m| {
            if is_product_weight(name, dims) {
                backend.upload_weight(&m.data, m.rows, m.cols)
            } else {
                backend.upload(&m.data, m.rows, m.cols)
            }
        })?;
        let rows = RowViews::of(
            &weights.params,
            |m| m.rows,
            |m, r| backend.upload(m.row(r), 1, m.cols),
        )?;
        Ok(DeviceModel {
            config: weights.config.clone(),
            scalars: Scalars::of(&weights.params),
            params,
            rows,
            backend,
        })
    }

    /// A model from parameters already on `backend`, with their rows and the host copies of
    /// the scalar parameters they imply (what [`DeviceModel::new`] derives itself).
    pub(crate) fn assemble(
        backend: B,
        config: ModelConfig,
        params: Params<B::Tensor>,
        rows: RowViews<B::Tensor>,
        scalars: Scalars,
    ) -> Self {
        DeviceModel {
            config,
            backend,
            params,
            rows,
            scalars,
        }
    }

    /// The backend the weights live on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend's name.
    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    /// The output head (the token embedding when tied).
    pub(crate) fn head(&self) -> &B::Tensor {
        self.params.head()
    }

    /// Final normalised hidden states `[batch*seq, d]` for `batch` windows of `seq` tokens
    /// (`ids` is row-major `[batch, seq]`; each window starts at position 0).
    pub fn hidden(&self, ids: &[u32], batch: usize, seq: usize) -> Result<B::Tensor> {
        Ok(self
            .forward_with(ids, batch, seq, None, false)?
            .into_hidden())
    }

    /// The forward pass, the one implementation behind inference ([`Self::hidden`]) and training
    /// ([`crate::train::TrainModel::forward`]). `adapters` add their LoRA deltas to the block
    /// linears (the head's adapter is the caller's, on the rows it scores). With `record`, the
    /// activations the backward needs are kept in a [`Tape`]; only then are copies made of the
    /// values that in-place ops overwrite.
    pub(crate) fn forward_with(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        adapters: Option<&DeviceLora<B::Tensor>>,
        record: bool,
    ) -> Result<Forward<B::Tensor>> {
        let pass = self.pass(ids, batch, seq, adapters, record)?;
        let mut st = self.embed(&pass)?;
        while st.next < self.config.num_layers {
            st = self.layer(st, &pass)?;
        }
        let h = self.backend.rms_norm(&st.x, self.config.norm_eps, 1.0)?;
        Ok(match st.emb.x_emb {
            None => Forward::Hidden(h),
            Some(x_emb) => Forward::Taped(Tape {
                ids: ids.to_vec(),
                geom: pass.geom,
                rope: pass.rope,
                x_emb,
                bigram: st.emb.bigram,
                x_smear_in: st.emb.x_smear_in,
                x0: st.x0,
                blocks: st.blocks,
                skip_src: st.skip_src,
                skip_vals: st.skip_vals,
                x_final: st.x,
                h,
            }),
        })
    }

    /// The per-call state of a forward over `batch` windows of `seq` tokens.
    fn pass<'a>(
        &self,
        ids: &'a [u32],
        batch: usize,
        seq: usize,
        adapters: Option<&'a DeviceLora<B::Tensor>>,
        record: bool,
    ) -> Result<Pass<'a, B::Tensor>> {
        let cfg = &self.config;
        if ids.len() != batch * seq || seq == 0 {
            return Err(Error::Usage(format!(
                "forward: {} ids for {batch} windows of {seq}",
                ids.len()
            )));
        }
        Ok(Pass {
            ids,
            geom: AttnGeometry {
                batch,
                seq,
                heads: cfg.num_heads,
                kv_heads: cfg.num_kv_heads,
                head_dim: cfg.head_dim,
            },
            rope: RopeSpec {
                base: cfg.rope_base_for(seq),
                dims: cfg.rope_dims,
            },
            adapters,
            record,
        })
    }

    /// The forward up to the first block: embeddings, BigramHash, the first norm, SmearGate.
    fn embed(&self, pass: &Pass<'_, B::Tensor>) -> Result<Stack<B::Tensor>> {
        let cfg = &self.config;
        let be = &self.backend;
        let (ids, seq, record) = (pass.ids, pass.geom.seq, pass.record);
        let mut x_emb = be.embedding(&self.params.tok_emb, ids)?;
        let mut bigram = None;
        if let Some(bg) = &self.params.bigram {
            let idx = bigram_indices(ids, seq, bg_buckets(cfg));
            let e = be.embedding(&bg.embed, &idx)?;
            let p = bg.proj.as_ref().map(|w| be.linear(&e, w)).transpose()?;
            be.add_scalar_scaled(
                &mut x_emb,
                p.as_ref().unwrap_or(&e),
                self.scalars.bigram_scale,
            )?;
            if record {
                bigram = Some(BigramTape { idx, e, p });
            }
        }
        let mut x = be.rms_norm(&x_emb, cfg.norm_eps, 1.0)?;
        let x_emb = record.then_some(x_emb);
        let mut x_smear_in = None;
        if let Some(g) = &self.params.smear_gate {
            let y = be.smear(&x, g, seq)?;
            let pre = std::mem::replace(&mut x, y);
            if record {
                x_smear_in = Some(pre);
            }
        }
        let x0 = be.copy(&x)?;
        let (layers, enc) = (cfg.num_layers, cfg.num_encoder_layers);
        let stack = Stack {
            x,
            x0,
            next: 0,
            skip_vals: Vec::with_capacity(enc),
            pending: Vec::with_capacity(enc),
            skip_src: vec![None; layers.saturating_sub(enc)],
            blocks: Vec::with_capacity(if record { layers } else { 0 }),
            emb: Embedded {
                x_emb,
                bigram,
                x_smear_in,
            },
        };
        Ok(stack)
    }

    /// Layer `st.next` (its U-Net skip, its block, the sidecar after it at its sites), then
    /// `st.next + 1`.
    fn layer(
        &self,
        mut st: Stack<B::Tensor>,
        pass: &Pass<'_, B::Tensor>,
    ) -> Result<Stack<B::Tensor>> {
        let cfg = &self.config;
        let be = &self.backend;
        let (i, enc) = (st.next, cfg.num_encoder_layers);
        let mut x = st.x;
        if i >= enc {
            let j = i - enc;
            if j < self.rows.skip.len() {
                if let Some(src) = st.pending.pop() {
                    be.add_scaled(&mut x, &st.skip_vals[src], &self.rows.skip[j])?;
                    st.skip_src[j] = Some(src);
                }
            }
        }
        let (out, mut tape) = self.block(i, x, &st.x0, pass)?;
        x = out;
        if let Some(site) = cfg.sidecar.as_ref().and_then(|s| s.site_of(i)) {
            let (out, sc) = self.sidecar(site, x, pass)?;
            x = out;
            if let Some(t) = tape.as_mut() {
                t.sidecar = sc;
            }
        }
        st.blocks.extend(tape);
        if i < enc {
            st.pending.push(st.skip_vals.len());
            st.skip_vals.push(be.copy(&x)?);
        }
        st.x = x;
        st.next += 1;
        Ok(st)
    }

    /// Starts a forward of `batch` windows of `seq` tokens run one layer at a time
    /// ([`LayerSteps`]); runs the embeddings (and BigramHash, SmearGate) now.
    pub fn layer_steps(
        &self,
        ids: Vec<u32>,
        batch: usize,
        seq: usize,
    ) -> Result<LayerSteps<'_, B>> {
        let stack = {
            let pass = self.pass(&ids, batch, seq, None, false)?;
            self.embed(&pass)?
        };
        Ok(LayerSteps {
            model: self,
            ids,
            batch,
            seq,
            stack: Some(stack),
        })
    }

    /// Block `i`: `x_in` → its output, and the block's tape when recording.
    fn block(
        &self,
        i: usize,
        x_in: B::Tensor,
        x0: &B::Tensor,
        pass: &Pass<'_, B::Tensor>,
    ) -> Result<BlockOut<B::Tensor>> {
        let (cfg, be, w) = (&self.config, &self.backend, &self.params.blocks[i]);
        let (eps, s) = (cfg.norm_eps, ln_scale(cfg, i));
        let ad = |p: Proj| pass.adapters.and_then(|l| l.block_slot(i, p.index()));
        // A copy of a value an in-place op is about to overwrite, when recording.
        let keep = |t: &B::Tensor| pass.record.then(|| be.copy(t)).transpose();
        let mut x = be.resid_mix(&x_in, x0, &w.resid_mix)?;
        let xm = keep(&x)?;
        let n1 = be.rms_norm(&x, eps, s)?;
        let (mut q, uq) = lora_linear(be, &n1, &w.c_q, ad(Proj::Q))?;
        let (mut k, uk) = lora_linear(be, &n1, &w.c_k, ad(Proj::K))?;
        let (mut v, uv) = lora_linear(be, &n1, &w.c_v, ad(Proj::V))?;
        let mut ve_tape = None;
        if let (Some(ve), Some(cv)) = (&self.params.value_embed, &cfg.value_embed) {
            if let Some(slot) = cv.layers.iter().position(|&l| l == i) {
                let e = be.embedding(&ve.embed, pass.ids)?;
                let p = be.linear(&e, &ve.proj)?;
                let c = self.scalars.ve_layer_scales[slot] * self.scalars.ve_scale;
                be.add_scalar_scaled(&mut v, &p, c)?;
                if pass.record {
                    ve_tape = Some(VeTape { slot, e, p });
                }
            }
        }
        let (q_pre, k_pre) = (keep(&q)?, keep(&k)?);
        be.qk_norm_rope(&mut q, &mut k, &pass.geom, &pass.rope, &w.q_gain, eps)?;
        let y = be.attention(&q, &k, &v, &pass.geom, cfg.xsa_layers.contains(&i))?;
        let (o, uo) = lora_linear(be, &y, &w.attn_proj, ad(Proj::O))?;
        be.add_scaled(&mut x, &o, &w.attn_scale)?;
        let x1 = keep(&x)?;
        let n2 = be.rms_norm(&x, eps, s)?;
        let (h, ufc) = lora_linear(be, &n2, &w.mlp_fc, ad(Proj::MlpFc))?;
        let a = be.activation(&h, cfg.activation)?;
        let (m, uproj) = lora_linear(be, &a, &w.mlp_proj, ad(Proj::MlpProj))?;
        be.add_scaled(&mut x, &m, &w.mlp_scale)?;
        let tape = match (xm, q_pre, k_pre, x1) {
            (Some(xm), Some(q_pre), Some(k_pre), Some(x1)) => Some(BlockTape {
                x_in,
                xm,
                n1,
                q_pre,
                k_pre,
                q,
                k,
                v,
                y,
                o,
                x1,
                n2,
                h,
                a,
                m,
                u: [uq, uk, uv, uo, ufc, uproj],
                ve: ve_tape,
                sidecar: None,
            }),
            _ => None,
        };
        Ok((x, tape))
    }

    /// The sidecar at site `site` on the output `x_in` of its block, and its tape when
    /// recording.
    fn sidecar(
        &self,
        site: usize,
        x_in: B::Tensor,
        pass: &Pass<'_, B::Tensor>,
    ) -> Result<SidecarOut<B::Tensor>> {
        let (cfg, be) = (&self.config, &self.backend);
        let sc =
            self.params.sidecar.as_ref().ok_or_else(|| {
                Error::Config("the config has a sidecar, the parameters none".into())
            })?;
        let n = be.rms_norm(&x_in, cfg.norm_eps, 1.0)?;
        let gp = be.linear(&n, &sc.gate)?;
        let vv = be.linear(&n, &sc.value)?;
        let c = be.causal_conv(&vv, &sc.local, pass.geom.seq)?;
        let z = be.silu_gate(&gp, &self.rows.site_gate[site], &c)?;
        let o = be.linear(&z, &sc.proj)?;
        // The input is kept only for the backward.
        let (mut x, kept) = if pass.record {
            (be.copy(&x_in)?, Some(x_in))
        } else {
            (x_in, None)
        };
        be.add_scaled(&mut x, &o, &self.rows.site_scale[site])?;
        let tape = kept.map(|x_in| SidecarTape {
            site,
            x_in,
            n,
            gp,
            vv,
            c,
            z,
            o,
        });
        Ok((x, tape))
    }

    /// Per-position NLL of `targets` (same layout as `ids`). With `rows`, only those flat
    /// positions are scored (the head runs on them alone) and the result follows their order.
    pub fn nll(
        &self,
        ids: &[u32],
        targets: &[u32],
        batch: usize,
        seq: usize,
        rows: Option<&[usize]>,
    ) -> Result<Vec<f32>> {
        if targets.len() != ids.len() {
            return Err(Error::Usage("nll: targets and ids differ in length".into()));
        }
        let h = self.hidden(ids, batch, seq)?;
        self.nll_of_hidden(&h, targets, rows)
    }

    /// [`DeviceModel::nll`] from the final hidden states `h` of the forward.
    fn nll_of_hidden(
        &self,
        h: &B::Tensor,
        targets: &[u32],
        rows: Option<&[usize]>,
    ) -> Result<Vec<f32>> {
        self.head_of_hidden(h, targets, rows, |be, h, t| {
            be.nll(h, self.head(), t, self.config.logit_softcap)
        })
    }

    /// `head(hidden rows, their targets)` on the scored rows of `h` (all when `rows` is
    /// `None`): the head op of [`DeviceModel::nll`] and [`LayerSteps::nll_tensor`].
    fn head_of_hidden<R>(
        &self,
        h: &B::Tensor,
        targets: &[u32],
        rows: Option<&[usize]>,
        head: impl FnOnce(&B, &B::Tensor, &[u32]) -> Result<R>,
    ) -> Result<R> {
        let be = &self.backend;
        match rows {
            Some(rows) => {
                if let Some(&r) = rows.iter().find(|&&r| r >= targets.len()) {
                    return Err(Error::Usage(format!("nll: row {r} out of range")));
                }
                let hs = be.gather_rows(h, rows)?;
                let t: Vec<u32> = rows.iter().map(|&r| targets[r]).collect();
                head(be, &hs, &t)
            }
            None => head(be, h, targets),
        }
    }

    /// Log-probabilities `[rows, vocab]` for the given flat positions (all when `None`).
    pub fn log_probs(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        rows: Option<&[usize]>,
    ) -> Result<Vec<f32>> {
        let h = self.hidden(ids, batch, seq)?;
        let be = &self.backend;
        let h = match rows {
            Some(rows) => be.gather_rows(&h, rows)?,
            None => h,
        };
        be.log_probs(&h, self.head(), self.config.logit_softcap)
    }
}

/// RMSNorm scale of block `i`'s two norms: `1/sqrt(i+1)` with LN-scale, else 1.
pub(crate) fn ln_scale(cfg: &ModelConfig, i: usize) -> f32 {
    if cfg.ln_scale {
        1.0 / ((i + 1) as f32).sqrt()
    } else {
        1.0
    }
}

pub(super) fn bg_buckets(cfg: &ModelConfig) -> usize {
    cfg.bigram.map_or(1, |b| b.buckets)
}

/// BigramHash bucket per position (spec 4.2 variant B, int32 arithmetic): position 0 of a window
/// gets the reserved bucket `B-1`; later positions `((36313·cur) XOR (27191·prev)) mod (B-1)`.
pub fn bigram_indices(ids: &[u32], seq: usize, buckets: usize) -> Vec<u32> {
    let m = (buckets.max(2) - 1) as i32;
    ids.iter()
        .enumerate()
        .map(|(i, &cur)| {
            if i % seq == 0 {
                m as u32
            } else {
                let prev = ids[i - 1] as i32;
                let h = (36313i32.wrapping_mul(cur as i32)) ^ (27191i32.wrapping_mul(prev));
                h.rem_euclid(m) as u32
            }
        })
        .collect()
}
