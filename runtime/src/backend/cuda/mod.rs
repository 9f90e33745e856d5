//! The CUDA backend: float32 activations on one NVIDIA GPU, kernels compiled at run time.
//!
//! - `libs.rs`: finds libcuda/libnvrtc/libcublas(Lt)/libnccl also outside the loader's path
//!   (the driver's folder, `/usr/local/cuda`, PyTorch's `nvidia/*` wheels) and reports which
//!   files were loaded.
//! - `device.rs`: probes the libraries *before* touching cudarc (whose lazy loader panics on a
//!   missing library), then opens a context and one stream. Without CUDA,
//!   [`CudaBackend::new`] returns a one-line `Error::Backend("CUDA unavailable: ...")`.
//! - `modules.rs`: the `cuda/*.cu` sources (embedded with `include_str!`), compiled in parallel
//!   by NVRTC to CUBIN for the device's `sm_XY`, cached on disk and per process, and loaded
//!   into each context.
//! - `gpu.rs`: the device layer the backend is written against ([`gpu::Gpu`]): buffers,
//!   launches, and matrix products as cuBLAS calls ([`gpu::BlasGemm`]). [`device::CudaGpu`] is
//!   the real GPU (`gemm.rs`: cuBLAS, fp32, TF32 or bf16 math); `emu::EmuGpu` (feature
//!   `cuda-emu`) runs the same kernels on the host, and the cuBLAS calls from their
//!   definition (`emu_blas.rs`), so CI tests this backend without a GPU.
//! - `ops.rs`, `train.rs`, `newton_schulz.rs`: kernel launchers (launch geometry and argument
//!   packing) of the forward, backward and optimizer ops.
//!
//! Precision is a property of the backend value ([`CudaBackend::with_precision`]): `f32`
//! (true fp32 products, the parity path), `tf32` (TF32 GEMM operands and tensor-core
//! attention, fp32 accumulation) or `bf16` (bf16 GEMM operands, fp32 accumulation, master
//! weights and optimizer state; attention on the TF32 tensor-core kernels). Every op of
//! [`Backend`] mirrors the CPU oracle (`backend/cpu`) with the same semantics; each `.cu`
//! file names the CPU file it mirrors.
//! All work is queued on one stream and only `download`, `nll` and `log_probs` synchronise
//! with the host. `cuda/REVIEW.md` lists what a desk review checked and what to look at first
//! on a GPU; README.md and BENCHMARKS.md say what has been measured where.

pub mod device;
#[cfg(feature = "cuda-emu")]
pub mod emu;
#[cfg(feature = "cuda-emu")]
mod emu_blas;
pub mod gemm;
pub mod gpu;
pub mod libs;
pub mod modules;
mod newton_schulz;
#[cfg(feature = "cuda-emu")]
pub mod null;
mod ops;
mod optim;
mod train;

use super::{AttnGeometry, Backend, Precision, RopeSpec, Traffic, TrafficCounters};
use crate::backend::cpu::RopeTable;
use crate::model::Activation;
use crate::{Error, Result};
pub use device::CudaGpu;
use gpu::{BlasGemm, GemmMath, Gpu, RowGemm};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A `[rows, cols]` row-major f32 matrix in device memory. The buffer may hold more values
/// than `rows * cols` (never fewer; empty tensors own one padding value).
pub struct CudaTensor<G: Gpu = CudaGpu> {
    buf: G::F32,
    rows: usize,
    cols: usize,
}

impl<G: Gpu> CudaTensor<G> {
    fn len(&self) -> usize {
        self.rows * self.cols
    }
}

/// cos/sin tables `[seq, dims/2]` for one `(seq, dims, base)`.
type RopeBuffers<G> = Arc<(<G as Gpu>::F32, <G as Gpu>::F32)>;
/// RoPE tables by `(seq, dims, base bits)`, shared by clones of a backend.
type RopeCache<G> = Arc<Mutex<HashMap<(usize, usize, u32), RopeBuffers<G>>>>;

/// Rows of the head's logits computed per cuBLAS call in `nll`/`log_probs`
/// (8192 x vocab 1024 x 4 B = 32 MiB of scratch).
const HEAD_ROWS_PER_CHUNK: usize = 8192;

/// The CUDA backend (one device, one stream), written against the device layer `G`: a real
/// GPU by default, the host emulator in tests (`emu::EmuGpu`). Clones share the device, its
/// kernels and caches (the trainer hands a clone to each step's model).
pub struct CudaBackend<G: Gpu = CudaGpu> {
    gpu: Arc<G>,
    kernels: Arc<modules::Kernels<G::Func>>,
    rope: RopeCache<G>,
    /// The run's precision: how products round their operands.
    precision: Precision,
    /// Host-device traffic of this backend and its clones.
    traffic: Arc<TrafficCounters>,
    /// Attention on TF32 tensor cores (`cuda/attention_tc.cu`) for the head dims it has.
    tc_attention: bool,
}

impl<G: Gpu> Clone for CudaBackend<G> {
    fn clone(&self) -> Self {
        CudaBackend {
            gpu: self.gpu.clone(),
            kernels: self.kernels.clone(),
            rope: self.rope.clone(),
            precision: self.precision,
            traffic: self.traffic.clone(),
            tc_attention: self.tc_attention,
        }
    }
}

impl CudaBackend<CudaGpu> {
    /// Opens device 0. Fails cleanly (never panics) when CUDA is not usable here.
    pub fn new() -> Result<Self> {
        Self::on_device(0)
    }

    /// Opens device `ordinal`, compiles (or reuses) the kernels and creates a cuBLAS handle.
    pub fn on_device(ordinal: usize) -> Result<Self> {
        Self::with_gpu(CudaGpu::open(ordinal)?)
    }
}

impl<G: Gpu> CudaBackend<G> {
    /// The backend on an opened device layer, in the precision the environment asks for
    /// ([`Precision::from_env`]; float32 by default).
    pub fn with_gpu(gpu: G) -> Result<Self> {
        let kernels = Arc::new(modules::Kernels::load(&gpu)?);
        let b = CudaBackend {
            tc_attention: false,
            gpu: Arc::new(gpu),
            kernels,
            rope: Arc::new(Mutex::new(HashMap::new())),
            precision: Precision::F32,
            traffic: Arc::new(TrafficCounters::default()),
        };
        b.with_precision(Precision::from_env()?)
    }

    /// The precisions this backend offers, the parity path first.
    pub const PRECISIONS: &'static [Precision] =
        &[Precision::F32, Precision::Tf32, Precision::Bf16];

    /// The same backend in `precision`: `f32` multiplies in true fp32 (the parity path);
    /// `tf32` rounds GEMM operands to TF32 on tensor cores and runs attention on tensor cores
    /// (`cuda/attention_tc.cu`, where the device has them), accumulating in fp32; `bf16`
    /// rounds every GEMM's operands (the linears, the head, their backward products and
    /// Muon's Newton-Schulz iterations) to bf16 with fp32 accumulation, as PyTorch's bf16
    /// autocast and the challenge's Muon do, and runs attention on the TF32 tensor-core kernels
    /// (more exact than bf16; bf16 flash attention is still to come). Element-wise ops, norms,
    /// softmax, the loss, weights and optimizer state stay fp32 in every precision.
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        if !Self::PRECISIONS.contains(&precision) {
            return Err(Error::Backend(format!(
                "the CUDA backend does not offer --precision {precision} yet (it has {})",
                Precision::list(Self::PRECISIONS)
            )));
        }
        self.precision = precision;
        self.tc_attention = precision != Precision::F32 && self.gpu.tensor_cores();
        Ok(self)
    }

    /// The run's precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// How products round their operands in this precision.
    fn math(&self) -> GemmMath {
        match self.precision {
            Precision::F32 => GemmMath::F32,
            Precision::Tf32 => GemmMath::Tf32,
            Precision::Bf16 => GemmMath::Bf16,
        }
    }

    /// The device layer (for device facts in `pgolf-rt devices`).
    pub fn gpu(&self) -> &G {
        &self.gpu
    }

    /// The same backend with attention (forward and backward) on TF32 tensor cores or not
    /// (default: on in the TF32 and bf16 precisions). Head dims `cuda/attention_tc.cu` lacks
    /// keep the fp32 kernels, and so does a device without TF32 tensor cores (before sm_80).
    pub fn with_tensor_core_attention(mut self, on: bool) -> Self {
        self.tc_attention = on && self.gpu.tensor_cores();
        self
    }

    /// The row-major product `g` with `a`, `b`, `c` at element offsets of their buffers, as
    /// one cuBLAS call in this backend's precision ([`BlasGemm::from_row`]: cuBLAS's `A` is
    /// our `b`).
    #[allow(clippy::too_many_arguments)]
    fn row_gemm(
        &self,
        g: &RowGemm,
        a: &G::F32,
        a_off: usize,
        b: &G::F32,
        b_off: usize,
        c: &mut G::F32,
        c_off: usize,
    ) -> Result<()> {
        self.row_gemm_batched(g, 1, [0; 3], a, a_off, b, b_off, c, c_off)
    }

    /// `count` row-major products `g`, entry `i` reading `a`, `b` and writing `c` at
    /// `i · strides[0]`, `i · strides[1]`, `i · strides[2]` elements past their offsets: one
    /// (strided-batched) cuBLAS call.
    #[allow(clippy::too_many_arguments)]
    fn row_gemm_batched(
        &self,
        g: &RowGemm,
        count: usize,
        strides: [usize; 3],
        a: &G::F32,
        a_off: usize,
        b: &G::F32,
        b_off: usize,
        c: &mut G::F32,
        c_off: usize,
    ) -> Result<()> {
        let [sa, sb, sc] = strides;
        // cuBLAS's A is our b, its B our a.
        let call = BlasGemm::from_row(g, self.math()).batched(count, sb, sa, sc);
        self.traffic.launch();
        self.gpu.gemm(&call, b, b_off, a, a_off, c, c_off)
    }

    /// Blocks until all queued work is done (for timing).
    pub fn synchronize(&self) -> Result<()> {
        self.traffic.sync();
        self.gpu.synchronize()
    }

    /// `v` copied to a fresh device buffer (counted).
    fn h2d(&self, v: &[f32]) -> Result<G::F32> {
        self.traffic.upload(std::mem::size_of_val(v));
        self.gpu.upload(v)
    }

    /// `v` copied to a fresh device buffer of indices (counted).
    fn h2d_u32(&self, v: &[u32]) -> Result<G::U32> {
        self.traffic.upload(std::mem::size_of_val(v));
        self.gpu.upload_u32(v)
    }

    /// Values `range` of `b`, once the device is done (counted: the bytes and one wait).
    fn d2h(&self, b: &G::F32, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
        self.traffic
            .download(range.len() * std::mem::size_of::<f32>());
        self.gpu.download(b, range)
    }

    fn rope_tables(&self, seq: usize, dims: usize, base: f32) -> Result<RopeBuffers<G>> {
        let key = (seq, dims, base.to_bits());
        let mut map = self
            .rope
            .lock()
            .map_err(|_| Error::Backend("rope cache lock poisoned".into()))?;
        if let Some(t) = map.get(&key) {
            return Ok(t.clone());
        }
        // The same f32 table the CPU oracle uses, so positions match bit for bit.
        let t = RopeTable::new(seq, dims, base);
        let cos = self.h2d(&t.cos)?;
        let sin = self.h2d(&t.sin)?;
        let bufs = Arc::new((cos, sin));
        map.insert(key, bufs.clone());
        Ok(bufs)
    }

    fn alloc(&self, n: usize) -> Result<G::F32> {
        self.gpu.alloc(n)
    }

    fn tensor(&self, buf: G::F32, rows: usize, cols: usize) -> CudaTensor<G> {
        CudaTensor { buf, rows, cols }
    }

    /// `op(a) · op(b)` into a fresh tensor, `op(x)` being `xᵀ` when its flag is set (see
    /// [`RowGemm`]); `op` names the caller in the shape error.
    fn product(
        &self,
        a: &CudaTensor<G>,
        a_t: bool,
        b: &CudaTensor<G>,
        b_t: bool,
        op: &str,
    ) -> Result<CudaTensor<G>> {
        let (m, k) = if a_t {
            (a.cols, a.rows)
        } else {
            (a.rows, a.cols)
        };
        let (kb, n) = if b_t {
            (b.cols, b.rows)
        } else {
            (b.rows, b.cols)
        };
        if k != kb {
            return Err(Error::Backend(format!(
                "{op}: {}x{}{} times {}x{}{} do not chain",
                a.rows,
                a.cols,
                if a_t { "ᵀ" } else { "" },
                b.rows,
                b.cols,
                if b_t { "ᵀ" } else { "" }
            )));
        }
        let g = RowGemm {
            m,
            n,
            k,
            a_t,
            b_t,
            accumulate: false,
        };
        let mut c = self.alloc(m * n)?;
        self.row_gemm(&g, &a.buf, 0, &b.buf, 0, &mut c, 0)?;
        Ok(self.tensor(c, m, n))
    }

    /// The products of a stacked-weight product ([`Backend::linear_segments`] and its
    /// backward), one per non-empty segment `k = (s, e)`: `plan(k, s, e - s)` gives that
    /// segment's shape and its element offsets into `a`, `b` and `c`. Empty segments are
    /// skipped (`c` is expected zeroed). Consecutive segments whose products have one shape
    /// and whose offsets advance by fixed strides (equal-length documents of a batch: the
    /// usual case in batched LoRA TTT) go out as one strided-batched call
    /// ([`segment_batches`]), so a batch of N documents costs one launch per product, not N.
    fn segment_gemms(
        &self,
        segs: &[(usize, usize)],
        a: &G::F32,
        b: &G::F32,
        c: &mut G::F32,
        plan: impl Fn(usize, usize, usize) -> (RowGemm, [usize; 3]),
    ) -> Result<()> {
        let plans: Vec<_> = segs
            .iter()
            .enumerate()
            .filter(|(_, &(s, e))| e > s)
            .map(|(k, &(s, e))| plan(k, s, e - s))
            .collect();
        for run in segment_batches(&plans) {
            let (g, [a_off, b_off, c_off]) = plans[run.first];
            self.row_gemm_batched(&g, run.count, run.strides, a, a_off, b, b_off, c, c_off)?;
        }
        Ok(())
    }

    /// Logits `h[r0..r1] · headᵀ` into a fresh `[r1-r0, vocab]` buffer.
    fn head_logits(
        &self,
        h: &CudaTensor<G>,
        head: &CudaTensor<G>,
        r0: usize,
        r1: usize,
    ) -> Result<G::F32> {
        let (m, d, vocab) = (r1 - r0, h.cols, head.rows);
        let mut logits = self.alloc(m * vocab)?;
        let g = RowGemm::linear(m, vocab, d);
        self.row_gemm(&g, &h.buf, r0 * d, &head.buf, 0, &mut logits, 0)?;
        Ok(logits)
    }
}

pub(super) fn same_shape<G: Gpu>(a: &CudaTensor<G>, b: &CudaTensor<G>, op: &str) -> Result<()> {
    if (a.rows, a.cols) != (b.rows, b.cols) {
        return Err(Error::Backend(format!(
            "{op}: shapes {}x{} and {}x{} differ",
            a.rows, a.cols, b.rows, b.cols
        )));
    }
    Ok(())
}

fn vector_len<G: Gpu>(v: &CudaTensor<G>, n: usize, op: &str) -> Result<()> {
    if v.len() != n {
        return Err(Error::Backend(format!(
            "{op}: vector has {} values, expected {n}",
            v.len()
        )));
    }
    Ok(())
}

impl<G: Gpu> Backend for CudaBackend<G> {
    type Tensor = CudaTensor<G>;

    fn traffic(&self) -> Option<Traffic> {
        Some(self.traffic.snapshot())
    }

    fn name(&self) -> String {
        let d = self.gpu.describe();
        let math = match (self.precision, self.tc_attention) {
            (Precision::F32, false) => "float32",
            (Precision::F32, true) => "float32 gemm + tensor-core attention",
            (Precision::Tf32, true) => "tf32 gemm + tensor-core attention",
            (Precision::Tf32, false) => "tf32 gemm",
            (Precision::Bf16, true) => "bf16 gemm + tensor-core attention",
            (Precision::Bf16, false) => "bf16 gemm",
        };
        match d.strip_suffix(')') {
            Some(head) => format!("{head}, {math})"),
            None => format!("{d} ({math})"),
        }
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<CudaTensor<G>> {
        if data.len() != rows * cols {
            return Err(Error::Backend(format!(
                "upload: {} values for {rows}x{cols}",
                data.len()
            )));
        }
        Ok(self.tensor(self.h2d(data)?, rows, cols))
    }

    fn download(&self, t: &CudaTensor<G>) -> Result<Vec<f32>> {
        self.d2h(&t.buf, 0..t.len())
    }

    fn copy(&self, t: &CudaTensor<G>) -> Result<CudaTensor<G>> {
        let buf = self.gpu.copy(&t.buf)?;
        Ok(self.tensor(buf, t.rows, t.cols))
    }

    fn shape(&self, t: &CudaTensor<G>) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn embedding(&self, table: &CudaTensor<G>, ids: &[u32]) -> Result<CudaTensor<G>> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= table.rows) {
            return Err(Error::Backend(format!(
                "token id {id} out of range for a {}-row table",
                table.rows
            )));
        }
        let d = table.cols;
        let idx = self.h2d_u32(ids)?;
        let mut out = self.alloc(ids.len() * d)?;
        self.launch_gather(&table.buf, &idx, &mut out, ids.len(), d)?;
        Ok(self.tensor(out, ids.len(), d))
    }

    fn gather_rows(&self, x: &CudaTensor<G>, rows: &[usize]) -> Result<CudaTensor<G>> {
        if let Some(&r) = rows.iter().find(|&&r| r >= x.rows) {
            return Err(Error::Backend(format!(
                "token id {r} out of range for a {}-row table",
                x.rows
            )));
        }
        let ids: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        self.embedding(x, &ids)
    }

    fn linear(&self, x: &CudaTensor<G>, w: &CudaTensor<G>) -> Result<CudaTensor<G>> {
        self.product(x, false, w, true, "linear")
    }

    fn linear_segments(
        &self,
        x: &CudaTensor<G>,
        w: &CudaTensor<G>,
        segs: &[(usize, usize)],
    ) -> Result<CudaTensor<G>> {
        let out = super::check_segments(x.rows, (x.cols, w.cols), w.rows, segs, "linear_segments")?;
        let inp = x.cols;
        let mut y = self.gpu.zeros(x.rows * out)?;
        // y_k [m, out] = x_k [m, in] · w_kᵀ
        self.segment_gemms(segs, &x.buf, &w.buf, &mut y, |k, s, m| {
            (
                RowGemm::linear(m, out, inp),
                [s * inp, k * out * inp, s * out],
            )
        })?;
        Ok(self.tensor(y, x.rows, out))
    }

    fn rms_norm(&self, x: &CudaTensor<G>, eps: f32, scale: f32) -> Result<CudaTensor<G>> {
        let mut y = self.alloc(x.len())?;
        self.launch_rms_norm(&x.buf, &mut y, x.rows, x.cols, eps, scale)?;
        Ok(self.tensor(y, x.rows, x.cols))
    }

    fn resid_mix(
        &self,
        x: &CudaTensor<G>,
        x0: &CudaTensor<G>,
        mix: &CudaTensor<G>,
    ) -> Result<CudaTensor<G>> {
        same_shape(x, x0, "resid_mix")?;
        vector_len(mix, 2 * x.cols, "resid_mix")?;
        let mut y = self.alloc(x.len())?;
        self.launch_resid_mix(&x.buf, &x0.buf, &mix.buf, &mut y, x.len(), x.cols)?;
        Ok(self.tensor(y, x.rows, x.cols))
    }

    fn add_scaled(
        &self,
        x: &mut CudaTensor<G>,
        y: &CudaTensor<G>,
        scale: &CudaTensor<G>,
    ) -> Result<()> {
        same_shape(x, y, "add_scaled")?;
        vector_len(scale, x.cols, "add_scaled")?;
        let (n, cols) = (x.len(), x.cols);
        self.launch_add_scaled(&mut x.buf, &y.buf, &scale.buf, n, cols)
    }

    fn add_scalar_scaled(&self, x: &mut CudaTensor<G>, y: &CudaTensor<G>, s: f32) -> Result<()> {
        same_shape(x, y, "add_scalar_scaled")?;
        let n = x.len();
        self.launch_axpy(&mut x.buf, &y.buf, s, n)
    }

    fn smear(&self, x: &CudaTensor<G>, gate: &CudaTensor<G>, seq: usize) -> Result<CudaTensor<G>> {
        vector_len(gate, x.cols, "smear")?;
        if seq == 0 || !x.rows.is_multiple_of(seq) {
            return Err(Error::Backend(format!(
                "smear: {} rows is not a multiple of seq {seq}",
                x.rows
            )));
        }
        let mut y = self.alloc(x.len())?;
        self.launch_smear(&x.buf, &gate.buf, &mut y, x.len(), x.cols, seq)?;
        Ok(self.tensor(y, x.rows, x.cols))
    }

    fn qk_norm_rope(
        &self,
        q: &mut CudaTensor<G>,
        k: &mut CudaTensor<G>,
        geom: &AttnGeometry,
        rope: &RopeSpec,
        q_gain: &CudaTensor<G>,
        eps: f32,
    ) -> Result<()> {
        let hd = geom.head_dim;
        let rows = geom.rows();
        geom.check_qk((q.rows, q.cols), (k.rows, k.cols), "qk_norm_rope")?;
        vector_len(q_gain, geom.heads, "qk_norm_rope")?;
        if rope.dims > hd {
            return Err(Error::Backend(format!(
                "qk_norm_rope: rope dims {} exceed head_dim {hd}",
                rope.dims
            )));
        }
        let tables = self.rope_tables(geom.seq, rope.dims, rope.base)?;
        let half = rope.dims / 2;
        let (cos, sin) = (&tables.0, &tables.1);
        self.launch_qk_norm_rope(
            &mut q.buf,
            cos,
            sin,
            Some(&q_gain.buf),
            rows,
            geom.heads,
            hd,
            geom.seq,
            half,
            eps,
        )?;
        self.launch_qk_norm_rope(
            &mut k.buf,
            cos,
            sin,
            None,
            rows,
            geom.kv_heads,
            hd,
            geom.seq,
            half,
            eps,
        )
    }

    fn attention(
        &self,
        q: &CudaTensor<G>,
        k: &CudaTensor<G>,
        v: &CudaTensor<G>,
        geom: &AttnGeometry,
        xsa: bool,
    ) -> Result<CudaTensor<G>> {
        let rows = geom.rows();
        geom.check_qkv(
            (q.rows, q.cols),
            (k.rows, k.cols),
            (v.rows, v.cols),
            "attention",
        )?;
        let mut out = self.alloc(rows * q.cols)?;
        self.launch_attention(&q.buf, &k.buf, &v.buf, &mut out, geom, xsa)?;
        Ok(self.tensor(out, rows, q.cols))
    }

    fn activation(&self, h: &CudaTensor<G>, act: Activation) -> Result<CudaTensor<G>> {
        let mut y = self.alloc(h.len())?;
        self.launch_activation(&h.buf, &mut y, h.len(), act)?;
        Ok(self.tensor(y, h.rows, h.cols))
    }

    fn nll(
        &self,
        h: &CudaTensor<G>,
        head: &CudaTensor<G>,
        targets: &[u32],
        softcap: f32,
    ) -> Result<Vec<f32>> {
        super::check_head(
            (h.rows, h.cols),
            (head.rows, head.cols),
            Some(targets),
            "nll",
        )?;
        let vocab = head.rows;
        let mut out = Vec::with_capacity(h.rows);
        for r0 in (0..h.rows).step_by(HEAD_ROWS_PER_CHUNK) {
            let r1 = (r0 + HEAD_ROWS_PER_CHUNK).min(h.rows);
            let mut logits = self.head_logits(h, head, r0, r1)?;
            let t = self.h2d_u32(&targets[r0..r1])?;
            let mut nll = self.alloc(r1 - r0)?;
            self.launch_softcap_nll(&mut logits, &t, &mut nll, r1 - r0, vocab, softcap)?;
            out.extend(self.d2h(&nll, 0..r1 - r0)?);
        }
        Ok(out)
    }

    fn log_probs(&self, h: &CudaTensor<G>, head: &CudaTensor<G>, softcap: f32) -> Result<Vec<f32>> {
        super::check_head((h.rows, h.cols), (head.rows, head.cols), None, "log_probs")?;
        let vocab = head.rows;
        let mut out = Vec::with_capacity(h.rows * vocab);
        for r0 in (0..h.rows).step_by(HEAD_ROWS_PER_CHUNK) {
            let r1 = (r0 + HEAD_ROWS_PER_CHUNK).min(h.rows);
            let mut logits = self.head_logits(h, head, r0, r1)?;
            self.launch_log_softmax(&mut logits, r1 - r0, vocab, softcap)?;
            out.extend(self.d2h(&logits, 0..(r1 - r0) * vocab)?);
        }
        Ok(out)
    }
}

/// The message of a backend error on one line, without the `backend: ` prefix
/// (for the CLI's "why CUDA was not used" notes).
pub fn reason(e: &Error) -> String {
    let s = match e {
        Error::Backend(s) => s.clone(),
        other => other.to_string(),
    };
    s.lines().next().unwrap_or("").to_string()
}

/// A run of `count` segment products starting at `plans[first]`, `strides` (elements of `a`,
/// `b`, `c`) apart: one strided-batched call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SegmentBatch {
    first: usize,
    count: usize,
    strides: [usize; 3],
}

/// Cuts the segment products `plans` (shape, offsets into `a`, `b`, `c`), in order, into
/// maximal runs that one strided-batched call computes: the same [`RowGemm`], every offset
/// advancing by a fixed non-negative stride, and the outputs `c` of the run disjoint (a
/// stride of at least one output block, so no two entries of a batch write one element).
fn segment_batches(plans: &[(RowGemm, [usize; 3])]) -> Vec<SegmentBatch> {
    let mut out: Vec<SegmentBatch> = Vec::new();
    for (i, (g, offs)) in plans.iter().enumerate() {
        if let Some(run) = out.last_mut() {
            let (g0, offs0) = &plans[run.first];
            let (_, prev) = &plans[i - 1];
            let step = |j: usize| offs[j].checked_sub(prev[j]);
            let fits = g == g0
                && (0..3).all(|j| match (step(j), run.count) {
                    (Some(d), 1) => j != 2 || d >= g.m * g.n,
                    (Some(d), _) => d == run.strides[j],
                    (None, _) => false,
                });
            if fits {
                if run.count == 1 {
                    run.strides = [0, 1, 2].map(|j| offs[j] - offs0[j]);
                }
                run.count += 1;
                continue;
            }
        }
        out.push(SegmentBatch {
            first: i,
            count: 1,
            strides: [0; 3],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without CUDA (CI, this dev box) creation must fail with one clean line,
    /// never a panic; on a GPU machine it must succeed.
    #[test]
    fn new_fails_cleanly_or_opens_a_device() {
        match CudaBackend::new() {
            Ok(b) => println!("CUDA device found: {}", b.name()),
            Err(e) => {
                let r = reason(&e);
                println!("no CUDA here: {r}");
                assert!(matches!(e, Error::Backend(_)), "{e:?}");
                assert!(r.starts_with("CUDA unavailable: "), "{r}");
                assert!(!r.contains('\n'));
            }
        }
    }

    /// Equal segments become one batched call; a ragged or skipped segment, another shape or a
    /// stride change starts a new run; outputs that would overlap are never batched.
    #[test]
    fn segment_products_batch_where_one_strided_call_computes_them() {
        let lin = |m| RowGemm::linear(m, 4, 3);
        // Four equal documents of 5 rows: x rows 5 apart, adapters 12 apart, outputs 20 apart.
        let eq: Vec<_> = (0..4).map(|k| (lin(5), [15 * k, 12 * k, 20 * k])).collect();
        assert_eq!(
            segment_batches(&eq),
            vec![SegmentBatch {
                first: 0,
                count: 4,
                strides: [15, 12, 20]
            }]
        );
        // The last document is shorter: its own call.
        let mut ragged = eq.clone();
        ragged[3].0 = lin(2);
        let runs = segment_batches(&ragged);
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].count, runs[1].first, runs[1].count), (3, 3, 1));
        // A skipped (empty) document makes the adapter stride jump: a new run there.
        let skip = vec![eq[0], eq[1], (lin(5), [30, 36, 40]), (lin(5), [45, 48, 60])];
        let runs = segment_batches(&skip);
        assert_eq!(
            runs.iter().map(|r| (r.first, r.count)).collect::<Vec<_>>(),
            vec![(0, 2), (2, 2)]
        );
        // Outputs closer than one block (20 elements) would race: never batched.
        let overlap: Vec<_> = (0..3).map(|k| (lin(5), [15 * k, 12 * k, 10 * k])).collect();
        assert_eq!(segment_batches(&overlap).len(), 3);
        // A shared operand (stride 0) is fine; accumulating into one C is not.
        let shared: Vec<_> = (0..3).map(|k| (lin(5), [0, 12 * k, 20 * k])).collect();
        assert_eq!(segment_batches(&shared)[0].strides, [0, 12, 20]);
        let same_c: Vec<_> = (0..3).map(|k| (lin(5), [15 * k, 12 * k, 0])).collect();
        assert_eq!(segment_batches(&same_c).len(), 3);
        assert!(segment_batches(&[]).is_empty());
    }
}
