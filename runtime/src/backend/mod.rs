//! The compute interface every backend implements, fused at the granularity this model needs.
//!
//! A backend owns 2-D float tensors (`[rows, cols]`, row-major semantics; the storage type and
//! precision are the backend's business). The forward pass in [`crate::model`] is written once
//! against [`Backend`]; the CPU backend is the float32 oracle every other backend is tested
//! against. Training (issue: training engine) adds a `TrainBackend` extension with the backward
//! of each op below; inference builds never pay for it.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod precision;
mod traffic;
pub mod train;
#[cfg(feature = "wgpu")]
pub mod wgpu;

pub use precision::Precision;
pub use traffic::{Traffic, TrafficCounters};

use crate::model::Activation;
use crate::Result;

/// Shape of one attention call: `batch` independent windows of `seq` tokens each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnGeometry {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttnGeometry {
    /// Rows of every activation in this call (`batch * seq`).
    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }

    /// Checks `q` is `[rows, heads*hd]` and `k` is `[rows, kv_heads*hd]` (shapes as `(rows, cols)`).
    pub fn check_qk(&self, q: (usize, usize), k: (usize, usize), op: &str) -> Result<()> {
        let hd = self.head_dim;
        if q != (self.rows(), self.heads * hd) || k != (self.rows(), self.kv_heads * hd) {
            return Err(crate::Error::Backend(format!(
                "{op}: q/k shapes do not match the geometry"
            )));
        }
        Ok(())
    }

    /// Like [`AttnGeometry::check_qk`], plus `v` shaped like `k` and whole query groups per KV head.
    pub fn check_qkv(
        &self,
        q: (usize, usize),
        k: (usize, usize),
        v: (usize, usize),
        op: &str,
    ) -> Result<()> {
        self.check_qk(q, k, op)?;
        if self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) || v != k {
            return Err(crate::Error::Backend(format!(
                "{op}: q/k/v shapes do not match the geometry"
            )));
        }
        Ok(())
    }
}

/// Checks the inputs of the fused head ops (`nll`, `log_probs`): `h [rows, d]` against
/// `head [vocab, d]` (shapes as `(rows, cols)`), and with `targets`, one id per row, each < vocab.
pub fn check_head(
    h: (usize, usize),
    head: (usize, usize),
    targets: Option<&[u32]>,
    op: &str,
) -> Result<()> {
    if h.1 != head.1 || targets.is_some_and(|t| t.len() != h.0) {
        return Err(crate::Error::Backend(format!("{op}: shapes do not match")));
    }
    if let Some(&t) = targets.and_then(|t| t.iter().find(|&&t| t as usize >= head.0)) {
        return Err(crate::Error::Backend(format!(
            "target id {t} out of range for vocab {}",
            head.0
        )));
    }
    Ok(())
}

/// Checks the segments of [`Backend::linear_segments`] and its backward: each `(start, end)`
/// within `rows`, in order and disjoint; the stacked weight's `stacked_rows` a multiple of the
/// segment count; `widths = (x's, w's)` equal. Returns the per-segment output width.
pub fn check_segments(
    rows: usize,
    widths: (usize, usize),
    stacked_rows: usize,
    segs: &[(usize, usize)],
    op: &str,
) -> Result<usize> {
    let bad = |why: String| Err(crate::Error::Backend(format!("{op}: {why}")));
    if segs.is_empty() || !stacked_rows.is_multiple_of(segs.len()) {
        return bad(format!(
            "{stacked_rows} stacked weight rows for {} segments",
            segs.len()
        ));
    }
    if widths.0 != widths.1 {
        return bad(format!(
            "input width {} but weight width {}",
            widths.0, widths.1
        ));
    }
    let mut prev = 0;
    for &(s, e) in segs {
        if s < prev || e < s || e > rows {
            return bad(format!(
                "segment ({s}, {e}) out of order or beyond {rows} rows"
            ));
        }
        prev = e;
    }
    Ok(stacked_rows / segs.len())
}

/// Checks the operands of [`train::TrainBackend::linear_segments_backward_input`]: `dy`
/// `[rows, out]` against a stacked weight of `stacked_rows` (`out` rows per segment). Returns
/// `out`.
pub fn check_segments_input_grad(
    rows: usize,
    out: usize,
    stacked_rows: usize,
    segs: &[(usize, usize)],
) -> Result<usize> {
    let per = stacked_rows / segs.len().max(1);
    check_segments(
        rows,
        (out, per),
        stacked_rows,
        segs,
        "linear_segments backward",
    )
}

/// Checks the operands of [`train::TrainBackend::linear_segments_backward_weight`]: `dy` and `x`
/// with the same rows, and `segs` valid segments of them.
pub fn check_segments_weight_grad(
    dy_rows: usize,
    x_rows: usize,
    segs: &[(usize, usize)],
) -> Result<()> {
    if dy_rows != x_rows {
        return Err(crate::Error::Backend(format!(
            "linear_segments backward: dy has {dy_rows} rows but x has {x_rows}"
        )));
    }
    check_segments(x_rows, (0, 0), segs.len(), segs, "linear_segments backward").map(|_| ())
}

/// [`check_head`] for the training head ops, whose optional additive logit term `delta`
/// (`Some((rows, cols))`) must be `[rows of h, vocab]`.
pub fn check_head_delta(
    h: (usize, usize),
    head: (usize, usize),
    delta: Option<(usize, usize)>,
    targets: Option<&[u32]>,
) -> Result<()> {
    check_head(h, head, targets, "nll")?;
    if delta.is_some_and(|d| d != (h.0, head.0)) {
        return Err(crate::Error::Backend(
            "nll: delta is not [rows, vocab]".into(),
        ));
    }
    Ok(())
}

/// Rotary embedding parameters for one forward window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeSpec {
    /// Base after any NTK adjustment for this window length.
    pub base: f32,
    /// Rotated dims per head (the first `dims` of each head; pairs `(i, i + dims/2)`).
    pub dims: usize,
}

/// A compute backend. All ops act on whole activations of `batch * seq` rows.
pub trait Backend: Send + Sync {
    /// Device tensor holding a `[rows, cols]` matrix.
    type Tensor: Send + Sync;

    /// Human-readable name, e.g. `cpu (2 threads)`.
    fn name(&self) -> String;
    /// Host-device traffic so far (bytes each way, synchronisations, launches), where the
    /// backend counts it; `None` for backends whose tensors are host memory.
    fn traffic(&self) -> Option<Traffic> {
        None
    }
    /// Copies a host matrix to the device.
    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<Self::Tensor>;
    /// Copies a weight matrix to the device: one that ops only read, as the `w` of
    /// [`Backend::linear`], the table of [`Backend::embedding`] or the `head` of
    /// [`Backend::nll`]/[`Backend::log_probs`]. A backend may store it in reduced precision
    /// (wgpu: f16 where the adapter supports it); the default is [`Backend::upload`].
    fn upload_weight(&self, data: &[f32], rows: usize, cols: usize) -> Result<Self::Tensor> {
        self.upload(data, rows, cols)
    }
    /// Copies a device matrix to the host (row-major).
    fn download(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    /// A copy of a tensor.
    fn copy(&self, t: &Self::Tensor) -> Result<Self::Tensor>;
    /// `(rows, cols)` of a tensor.
    fn shape(&self, t: &Self::Tensor) -> (usize, usize);

    /// Row gather: `out[i] = table[ids[i]]`. Ids are checked against the table.
    fn embedding(&self, table: &Self::Tensor, ids: &[u32]) -> Result<Self::Tensor>;
    /// Selects rows of `x` (used to run the head only on scored positions).
    fn gather_rows(&self, x: &Self::Tensor, rows: &[usize]) -> Result<Self::Tensor>;
    /// `x · wᵀ` with `w` in `nn.Linear` layout `[out, in]`.
    fn linear(&self, x: &Self::Tensor, w: &Self::Tensor) -> Result<Self::Tensor>;
    /// Per-segment `nn.Linear` (batched LoRA: one adapter per document of a batch): rows
    /// `segs[k] = (start, end)` of `x [rows, in]` times `w_kᵀ`, `w_k` being rows
    /// `[k·out, (k+1)·out)` of the stacked `w [segs.len()·out, in]`; rows outside every
    /// segment are zero. Returns `[rows, out]`. Segments are in order and disjoint
    /// ([`check_segments`]).
    ///
    /// The default computes on the host (download, plain loops, upload); backends that run
    /// adapted forwards (the CPU and CUDA ones) override it.
    fn linear_segments(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        segs: &[(usize, usize)],
    ) -> Result<Self::Tensor> {
        let ((rows, inn), (wr, wc)) = (self.shape(x), self.shape(w));
        let out = check_segments(rows, (inn, wc), wr, segs, "linear_segments")?;
        let (xv, wv) = (self.download(x)?, self.download(w)?);
        let mut y = vec![0.0f32; rows * out];
        for (k, &(s, e)) in segs.iter().enumerate() {
            for r in s..e {
                for j in 0..out {
                    let wrow = &wv[(k * out + j) * inn..][..inn];
                    y[r * out + j] = xv[r * inn..][..inn]
                        .iter()
                        .zip(wrow)
                        .map(|(a, b)| a * b)
                        .sum();
                }
            }
        }
        self.upload(&y, rows, out)
    }
    /// Parameter-free RMSNorm over each row, times `scale`.
    fn rms_norm(&self, x: &Self::Tensor, eps: f32, scale: f32) -> Result<Self::Tensor>;
    /// `mix[0] ⊙ x + mix[1] ⊙ x0` (`mix` is `[2, cols]`).
    fn resid_mix(
        &self,
        x: &Self::Tensor,
        x0: &Self::Tensor,
        mix: &Self::Tensor,
    ) -> Result<Self::Tensor>;
    /// `x += scale ⊙ y` with a per-column `scale` (`[1, cols]`).
    fn add_scaled(
        &self,
        x: &mut Self::Tensor,
        y: &Self::Tensor,
        scale: &Self::Tensor,
    ) -> Result<()>;
    /// `x += s · y` with a scalar `s`.
    fn add_scalar_scaled(&self, x: &mut Self::Tensor, y: &Self::Tensor, s: f32) -> Result<()>;
    /// SmearGate: `x_t ← (1-g) ⊙ x_t + g ⊙ x_{t-1}` per window, `g = sigmoid(gate)`, `x_{-1} = 0`.
    fn smear(&self, x: &Self::Tensor, gate: &Self::Tensor, seq: usize) -> Result<Self::Tensor>;
    /// Depthwise causal convolution along each window of `seq` rows (the sidecar's local value
    /// path): `y[t, c] = Σ_j w[c, j] · x[t − (k−1) + j, c]`, `w` being `[cols, k]`, nothing
    /// read from before a window's first row ([`cpu::sidecar::causal_conv`], the oracle, which
    /// the default runs on the host).
    fn causal_conv(&self, x: &Self::Tensor, w: &Self::Tensor, seq: usize) -> Result<Self::Tensor> {
        let ((rows, cols), (_, k)) = (self.shape(x), self.shape(w));
        let y =
            cpu::sidecar::causal_conv(&self.download(x)?, rows, cols, &self.download(w)?, k, seq)?;
        self.upload(&y, rows, cols)
    }
    /// `silu(pre + bias) ⊙ v` with a per-column `bias` (`[1, cols]`): the sidecar's gate
    /// ([`cpu::sidecar::silu_gate`], the oracle, which the default runs on the host).
    fn silu_gate(
        &self,
        pre: &Self::Tensor,
        bias: &Self::Tensor,
        v: &Self::Tensor,
    ) -> Result<Self::Tensor> {
        let (rows, cols) = self.shape(pre);
        let y = cpu::sidecar::silu_gate(
            &self.download(pre)?,
            &self.download(bias)?,
            &self.download(v)?,
        )?;
        self.upload(&y, rows, cols)
    }
    /// In place on `q` `[rows, heads*hd]` and `k` `[rows, kv_heads*hd]`: per-head RMS norm,
    /// RoPE at position `row % seq`, then `q *= q_gain[head]`.
    fn qk_norm_rope(
        &self,
        q: &mut Self::Tensor,
        k: &mut Self::Tensor,
        geom: &AttnGeometry,
        rope: &RopeSpec,
        q_gain: &Self::Tensor,
        eps: f32,
    ) -> Result<()>;
    /// Causal grouped-query attention per window, softmax scale `1/sqrt(head_dim)`.
    /// With `xsa`, each output head has its component along the token's own (normalised)
    /// value vector removed (spec 4.7).
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        geom: &AttnGeometry,
        xsa: bool,
    ) -> Result<Self::Tensor>;
    /// MLP activation, element-wise.
    fn activation(&self, h: &Self::Tensor, act: Activation) -> Result<Self::Tensor>;
    /// Fused head + soft-cap + cross-entropy: for each row of `h`, `-log softmax(c·tanh(h·headᵀ/c))[target]`.
    fn nll(
        &self,
        h: &Self::Tensor,
        head: &Self::Tensor,
        targets: &[u32],
        softcap: f32,
    ) -> Result<Vec<f32>>;
    /// [`Backend::nll`] with the values left on the device as a `[rows, 1]` tensor, for a
    /// caller that downloads them when it can: a browser, whose event loop must not wait for the
    /// GPU, reads them back asynchronously ([`crate::api::TextScorer::start_pass`]). The
    /// default runs [`Backend::nll`] and uploads the values; the wgpu backend overrides it.
    fn nll_tensor(
        &self,
        h: &Self::Tensor,
        head: &Self::Tensor,
        targets: &[u32],
        softcap: f32,
    ) -> Result<Self::Tensor> {
        let rows = targets.len();
        let v = self.nll(h, head, targets, softcap)?;
        self.upload(&v, rows, 1)
    }
    /// Fused head + soft-cap + log-softmax: full `[rows, vocab]` log-probabilities on the host.
    fn log_probs(&self, h: &Self::Tensor, head: &Self::Tensor, softcap: f32) -> Result<Vec<f32>>;
}
