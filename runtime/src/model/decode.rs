//! Incremental decoding with a KV cache: [`Decoder`] runs the forward of
//! [`DeviceModel::forward_with`] over new tokens only, keeping each layer's keys and values
//! (after q/k-norm, RoPE and the value embedding: what attention reads), so a generated token
//! costs one position's forward instead of the whole context's.
//!
//! Per new position the work is the full forward's for that row; what crosses positions is kept:
//!
//! ```text
//! BigramHash  : the previous token id              (bigram_indices over [prev, new ids])
//! SmearGate   : the previous position's rms(x_emb) (smear over [prev, new rows])
//! attention   : K, V of every earlier position     (attention_cached over the cache)
//! RoPE        : row i of a call sits at len + i    (qk_norm_rope_at)
//! sidecar     : its last k-1 value rows, per site  (causal_conv over [prev, new rows])
//! ```
//!
//! Row-wise ops (embeddings, linears, norms, residuals, U-Net skips, MLP, head) see only the new
//! rows. The oracle is the full forward: `tests/kv_cache.rs` checks the log-probabilities at every
//! position against [`DeviceModel::log_probs`] over the whole prefix.
//!
//! The NTK RoPE rule (`rope_ntk_train_len`) makes the base depend on the window length: once a
//! window passes the training length, every longer window rotates every key differently, so no
//! cache survives a step. The decoder then recomputes its whole cache at the new base (the same
//! cost as the full recompute, and the same numbers).

use super::forward::{bg_buckets, bigram_indices, ln_scale, DeviceModel};
use crate::backend::cpu::{CpuBackend, CpuTensor, Heads, RopeTable};
use crate::backend::{AttnGeometry, Backend};
use crate::limits::SEQ_LEN;
use crate::{Error, Result};

/// Keys and values of one layer for every position decoded so far, `[len, kv_dim]` each.
struct LayerCache {
    k: CpuTensor,
    v: CpuTensor,
}

/// A KV-cache decoder over a model on the CPU backend.
///
/// [`Decoder::prefill`] runs a prompt and [`Decoder::step`] one more token, each returning the
/// log-probabilities `[vocab]` of the token after the last one; within one window they equal
/// (to float rounding, about 1e-6) what [`DeviceModel::log_probs`] gives at that position of a
/// forward over the whole prefix. Positions count from the first token of the prefill, which is
/// position 0 of that window (as BOS is in a scored text).
///
/// ```no_run
/// # fn demo(model: &pgolf_rt::model::DeviceModel<pgolf_rt::backend::cpu::CpuBackend>) -> pgolf_rt::Result<()> {
/// use pgolf_rt::model::Decoder;
/// let mut dec = Decoder::new(model);
/// let lp = dec.prefill(&[1, 72, 9])?; // next-token log-probs after three tokens
/// let next = (0..lp.len()).max_by(|&a, &b| lp[a].total_cmp(&lp[b])).unwrap() as u32;
/// let lp = dec.step(next)?; // one position's forward
/// assert_eq!((dec.len(), lp.len()), (4, model.config.vocab_size));
/// # Ok(()) }
/// ```
pub struct Decoder<'m> {
    model: &'m DeviceModel<CpuBackend>,
    /// The tokens in the cache, in order.
    ids: Vec<u32>,
    layers: Vec<LayerCache>,
    /// SmearGate's input (the normalised embedding) at the last position, `[1, d]`.
    smear_prev: Option<CpuTensor>,
    /// Per sidecar site, the convolution's input at the last `kernel - 1` positions.
    conv_prev: Vec<CpuTensor>,
    /// Base the cached keys were rotated with, and the table of its angles.
    rope_base: f32,
    rope: RopeTable,
    /// Positions `rope` covers.
    rope_len: usize,
}

impl<'m> Decoder<'m> {
    /// An empty decoder for `model`.
    pub fn new(model: &'m DeviceModel<CpuBackend>) -> Self {
        let kv = model.config.kv_dim();
        let empty = || CpuTensor::new(0, kv, Vec::new());
        Decoder {
            model,
            ids: Vec::new(),
            layers: (0..model.config.num_layers)
                .map(|_| LayerCache {
                    k: empty(),
                    v: empty(),
                })
                .collect(),
            smear_prev: None,
            conv_prev: Self::no_conv_rows(model),
            rope_base: model.config.rope_base,
            rope: RopeTable::new(0, model.config.rope_dims, model.config.rope_base),
            rope_len: 0,
        }
    }

    /// An empty convolution history for each sidecar site.
    fn no_conv_rows(model: &DeviceModel<CpuBackend>) -> Vec<CpuTensor> {
        let sc = model.config.sidecar.as_ref();
        let (sites, hidden) = sc.map_or((0, 0), |s| (s.layers.len(), s.hidden));
        (0..sites)
            .map(|_| CpuTensor::new(0, hidden, Vec::new()))
            .collect()
    }

    /// Tokens in the cache.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The tokens in the cache, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.ids
    }

    /// Forgets every token (the next call starts a new window at position 0).
    pub fn clear(&mut self) {
        self.truncate(0);
        self.smear_prev = None;
        self.conv_prev = Self::no_conv_rows(self.model);
    }

    /// Keeps the first `len` positions of every layer's cache.
    fn truncate(&mut self, len: usize) {
        self.ids.truncate(len);
        for l in &mut self.layers {
            for t in [&mut l.k, &mut l.v] {
                t.rows = t.rows.min(len);
                t.data.truncate(t.rows * t.cols);
            }
        }
    }

    /// Starts a new window with `ids` (position 0 first) and returns the log-probabilities of
    /// the token after the last one. Errors (and leaves the decoder empty) when `ids` is empty
    /// or holds an id outside the vocabulary.
    pub fn prefill(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.clear();
        self.extend(ids)
    }

    /// Appends one token and returns the log-probabilities of the next.
    pub fn step(&mut self, id: u32) -> Result<Vec<f32>> {
        self.extend(&[id])
    }

    /// Appends `ids` to the window (one forward over them, against the cache) and returns the
    /// log-probabilities of the token after the last one. A bad id is an error that leaves the
    /// decoder as it was.
    pub fn extend(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let cfg = &self.model.config;
        if ids.is_empty() {
            return Err(Error::Usage("decoder: no tokens to append".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
            return Err(Error::Usage(format!(
                "decoder: token id {bad} is outside the vocabulary of {}",
                cfg.vocab_size
            )));
        }
        let len = self.len() + ids.len();
        SEQ_LEN.check(
            len as u64,
            format!("a decoder window of {len} tokens"),
            Error::Usage,
        )?;
        let base = cfg.rope_base_for(len);
        if !self.is_empty() && base.to_bits() != self.rope_base.to_bits() {
            // NTK: the longer window rotates every key differently; recompute them all.
            let mut all = std::mem::take(&mut self.ids);
            all.extend_from_slice(ids);
            return self.prefill(&all);
        }
        if base.to_bits() != self.rope_base.to_bits() || self.rope_len < len {
            // Angles do not depend on the table's length: grow it by doubling.
            let n = len.max(2 * self.rope_len).max(64);
            self.rope = RopeTable::new(n, cfg.rope_dims, base);
            self.rope_base = base;
            self.rope_len = n;
        }
        let (pos0, smear_prev) = (self.len(), self.smear_prev.clone());
        let conv_prev = self.conv_prev.clone();
        let h = match self.forward(ids) {
            Ok(h) => h,
            Err(e) => {
                // Leave the cache as it was (the layers before the failure had grown).
                self.truncate(pos0);
                self.smear_prev = smear_prev;
                self.conv_prev = conv_prev;
                return Err(e);
            }
        };
        let last = self.model.backend().gather_rows(&h, &[h.rows - 1])?;
        let be = self.model.backend();
        be.log_probs(&last, self.model.head(), cfg.logit_softcap)
    }

    /// The forward over the new rows `ids` (positions `len..len + ids.len()`): the final
    /// normalised hidden states `[n, d]`; the cache grows by those rows.
    fn forward(&mut self, ids: &[u32]) -> Result<CpuTensor> {
        let (m, be) = (self.model, self.model.backend());
        let (cfg, p) = (&m.config, &m.params);
        let pos0 = self.len();
        let prev = self.ids.last().copied();
        let mut x_emb = be.embedding(&p.tok_emb, ids)?;
        if let Some(bg) = &p.bigram {
            // Buckets over [prev, ids] as one window, the previous token's bucket dropped.
            let ctx: Vec<u32> = prev.into_iter().chain(ids.iter().copied()).collect();
            let mut idx = bigram_indices(&ctx, ctx.len(), bg_buckets(cfg));
            idx.drain(..ctx.len() - ids.len());
            let e = be.embedding(&bg.embed, &idx)?;
            let proj = bg.proj.as_ref().map(|w| be.linear(&e, w)).transpose()?;
            be.add_scalar_scaled(
                &mut x_emb,
                proj.as_ref().unwrap_or(&e),
                m.scalars.bigram_scale,
            )?;
        }
        let mut x = be.rms_norm(&x_emb, cfg.norm_eps, 1.0)?;
        if let Some(g) = &p.smear_gate {
            // Smear over [previous row, new rows] as one window, the previous row dropped.
            let input = match &self.smear_prev {
                Some(prev) => stack(prev, &x),
                None => x.clone(),
            };
            let y = be.smear(&input, g, input.rows)?;
            self.smear_prev = Some(tail(&x, x.rows - 1));
            x = tail(&y, y.rows - x.rows);
        }
        let x0 = x.clone();
        let (layers, enc) = (cfg.num_layers, cfg.num_encoder_layers);
        // U-Net skips, as in `forward_with`: encoder outputs, and those not yet consumed.
        let mut skip_vals: Vec<CpuTensor> = Vec::with_capacity(enc);
        let mut pending: Vec<usize> = Vec::with_capacity(enc);
        for i in 0..layers {
            if i >= enc {
                let j = i - enc;
                if j < m.rows.skip.len() {
                    if let Some(src) = pending.pop() {
                        be.add_scaled(&mut x, &skip_vals[src], &m.rows.skip[j])?;
                    }
                }
            }
            x = self.block(i, x, &x0, ids, pos0)?;
            if let Some(site) = cfg.sidecar.as_ref().and_then(|s| s.site_of(i)) {
                x = self.sidecar(site, x)?;
            }
            if i < enc {
                pending.push(skip_vals.len());
                skip_vals.push(x.clone());
            }
        }
        self.ids.extend_from_slice(ids);
        be.rms_norm(&x, cfg.norm_eps, 1.0)
    }

    /// Block `i` over the new rows (`forward.rs`'s `block` without adapters or tape), its keys
    /// and values appended to the layer's cache before attention reads them.
    fn block(
        &mut self,
        i: usize,
        x_in: CpuTensor,
        x0: &CpuTensor,
        ids: &[u32],
        pos0: usize,
    ) -> Result<CpuTensor> {
        let (m, be) = (self.model, self.model.backend());
        let (cfg, w) = (&m.config, &m.params.blocks[i]);
        let (eps, s) = (cfg.norm_eps, ln_scale(cfg, i));
        let mut x = be.resid_mix(&x_in, x0, &w.resid_mix)?;
        let n1 = be.rms_norm(&x, eps, s)?;
        let mut q = be.linear(&n1, &w.c_q)?;
        let mut k = be.linear(&n1, &w.c_k)?;
        let mut v = be.linear(&n1, &w.c_v)?;
        if let (Some(ve), Some(cv)) = (&m.params.value_embed, &cfg.value_embed) {
            if let Some(slot) = cv.layers.iter().position(|&l| l == i) {
                let e = be.embedding(&ve.embed, ids)?;
                let p = be.linear(&e, &ve.proj)?;
                let c = m.scalars.ve_layer_scales[slot] * m.scalars.ve_scale;
                be.add_scalar_scaled(&mut v, &p, c)?;
            }
        }
        let heads = Heads {
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        };
        be.qk_norm_rope_at(&mut q, &mut k, heads, pos0, &self.rope, &w.q_gain, eps)?;
        let xsa = cfg.xsa_layers.contains(&i);
        let cache = &mut self.layers[i];
        append(&mut cache.k, &k);
        append(&mut cache.v, &v);
        let y = if pos0 == 0 {
            // A fresh window: the whole-window kernel is the full forward's, and faster.
            let geom = AttnGeometry {
                batch: 1,
                seq: q.rows,
                heads: heads.heads,
                kv_heads: heads.kv_heads,
                head_dim: heads.head_dim,
            };
            be.attention(&q, &k, &v, &geom, xsa)?
        } else {
            be.attention_cached(&q, &cache.k, &cache.v, heads, pos0, xsa)?
        };
        let o = be.linear(&y, &w.attn_proj)?;
        be.add_scaled(&mut x, &o, &w.attn_scale)?;
        let n2 = be.rms_norm(&x, eps, s)?;
        let h = be.linear(&n2, &w.mlp_fc)?;
        let a = be.activation(&h, cfg.activation)?;
        let mlp = be.linear(&a, &w.mlp_proj)?;
        be.add_scaled(&mut x, &mlp, &w.mlp_scale)?;
        Ok(x)
    }
}

impl Decoder<'_> {
    /// The sidecar at `site` over the new rows (`forward.rs`'s `sidecar`), its convolution run
    /// over the kept rows and the new ones as one window.
    fn sidecar(&mut self, site: usize, mut x: CpuTensor) -> Result<CpuTensor> {
        let (m, be) = (self.model, self.model.backend());
        let (cfg, rows) = (&m.config, &m.rows);
        let sc =
            m.params.sidecar.as_ref().ok_or_else(|| {
                Error::Config("the config has a sidecar, the parameters none".into())
            })?;
        let k = cfg.sidecar.as_ref().map_or(1, |s| s.kernel);
        let n = be.rms_norm(&x, cfg.norm_eps, 1.0)?;
        let gp = be.linear(&n, &sc.gate)?;
        let vv = be.linear(&n, &sc.value)?;
        let input = stack(&self.conv_prev[site], &vv);
        let conv = be.causal_conv(&input, &sc.local, input.rows)?;
        let c = tail(&conv, input.rows - vv.rows);
        self.conv_prev[site] = tail(&input, input.rows - (k - 1).min(input.rows));
        let z = be.silu_gate(&gp, &rows.site_gate[site], &c)?;
        let o = be.linear(&z, &sc.proj)?;
        be.add_scaled(&mut x, &o, &rows.site_scale[site])?;
        Ok(x)
    }
}

/// `a` over `b` (same width).
fn stack(a: &CpuTensor, b: &CpuTensor) -> CpuTensor {
    let mut data = Vec::with_capacity(a.data.len() + b.data.len());
    data.extend_from_slice(&a.data);
    data.extend_from_slice(&b.data);
    CpuTensor::new(a.rows + b.rows, a.cols, data)
}

/// Rows `from..` of `t`.
fn tail(t: &CpuTensor, from: usize) -> CpuTensor {
    CpuTensor::new(t.rows - from, t.cols, t.data[from * t.cols..].to_vec())
}

/// Appends the rows of `new` to `cache`.
fn append(cache: &mut CpuTensor, new: &CpuTensor) {
    cache.data.extend_from_slice(&new.data);
    cache.rows += new.rows;
}
