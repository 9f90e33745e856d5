//! The wgpu backend: the same fused ops as the CPU oracle, as WGSL compute kernels on any GPU
//! wgpu reaches (Vulkan, Metal, DX12), including Mesa's software Vulkan (lavapipe) in CI.
//!
//! - `device.rs`: adapter/device selection (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME`,
//!   `PGOLF_WGPU_FALLBACK=1`); no adapter is an `Err`, never a panic.
//! - `pool.rs`: storage buffers recycled by size when tensors drop.
//! - `pipelines.rs`: the WGSL sources from the top-level `shaders/` folder (one kernel per file)
//!   and their pipelines, built on first use; a unit test validates every file with naga.
//! - `stream.rs`: one in-order command stream; ops record compute passes, the host syncs only on
//!   downloads (`download`, `nll`, `log_probs`). In WebAssembly (the browser's WebGPU, wgpu's
//!   `webgpu` backend) nothing may wait for the GPU: the backend opens with
//!   [`WgpuBackend::new_async`], and results come back through
//!   [`WgpuBackend::start_download`] / [`WgpuBackend::finish_download`] (`nll_tensor` keeps a
//!   pass's scores on the device until then); the blocking downloads are errors there.
//! - this file: the tensor type and the op launchers (shape checks, parameter blocks,
//!   dispatch sizes).
//!
//! Dispatch sizes: element-wise kernels 256 invocations per workgroup, one element each; per-row
//! kernels one workgroup per row; both over a 2-D grid flattened in the shader, so large
//! activations stay within the 65535-per-dimension limit. Matmul: 64×64 output tiles (8×8
//! invocations, 8×8 each), grid `(ceil(n/64), ceil(m/64))`. Attention: 64 queries per
//! workgroup, grid `(ceil(T/64), heads, batch)`. The head (`nll`, `log_probs`) runs the matmul
//! with a soft-cap epilogue into at most 64 MiB of logits at a time, then a row reduction.
//!
//! On llvmpipe (lavapipe) a loop nest silently stops after 65535 iterations; the kernels are
//! written to stay far below it at this model's shapes, and the launchers refuse shapes that
//! would reach it on a software adapter (see `shaders/README.md`).
//!
//! Storage: activations and all arithmetic are float32. Weight matrices (`upload_weight`: the
//! linear weights, embedding tables and head) are stored as f16 when the adapter offers
//! `wgpu::Features::SHADER_F16` (half the memory and bandwidth; the matmul and embedding kernels
//! then read them through an f16 variant and widen to f32), unless `PGOLF_WGPU_F32=1` or
//! [`WgpuBackend::with_f16_weights`]`(false)`; [`Backend::name`] says which storage is in use.
//! Only `linear`'s `w`, `embedding`/`gather_rows`'s table and the head of `nll`/`log_probs` may be
//! f16; the other ops refuse an f16 tensor. A tensor is a storage buffer plus its `[rows, cols]`
//! shape and storage type; host data enters only through `upload`/`upload_weight`, token ids and
//! the RoPE tables (fresh mapped-at-creation buffers, see `pool.rs` for why).

mod device;
mod pipelines;
mod pool;
mod stream;

pub use device::{f32_requested, fallback_requested};

use super::cpu::RopeTable;
use super::{AttnGeometry, Backend, RopeSpec};
use crate::model::Activation;
use crate::{Error, Result};
use device::Gpu;
use pipelines::{Kernel, PipelineCache, F16_WEIGHTS};
use pool::BufferPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use stream::{grid, Stream};
use wgpu::util::DeviceExt;

/// Workgroup size of the element-wise kernels.
const ELEM_WG: u64 = 256;
/// Matmul output tile (rows and columns per workgroup).
const MM_TILE: u64 = 64;
/// Queries per attention workgroup.
const ATTN_BQ: u64 = 64;
/// Largest head size the attention kernel is built for (workgroup memory: 2·16·HD floats).
const ATTN_MAX_HD: usize = 128;
/// Largest head size `qk_norm_rope` handles (its workgroup buffer).
const ROPE_MAX_HD: usize = 256;
/// llvmpipe (lavapipe, the CI adapter) silently ends a loop nest after this many iterations
/// (one counter per outermost loop, shared with the loops inside it).
const LLVMPIPE_LOOP_CAP: u64 = 65_535;

/// Iterations of the attention kernel's key loop nest for the last query block of a window
/// (see `shaders/attention.wgsl`: per 16-key tile, the tile load, 4 score groups and 4
/// accumulate groups over `hd/4` chunks, and one rescale).
fn attention_loop_iterations(seq: usize, hd: usize) -> u64 {
    let hd4 = (hd / 4) as u64;
    let per_tile = 1 + (16 * hd4).div_ceil(64) + 2 * 4 * (1 + hd4) + hd4;
    (seq as u64).div_ceil(16) * per_tile
}

/// Iterations of the matmul kernel's K loop nest (per 16-wide K step: the step itself, 16 tile
/// loads, 16 k of FMAs).
fn matmul_loop_iterations(k: usize) -> u64 {
    (k as u64).div_ceil(16) * 33
}

/// Soft-capped logits kept on the device at once by `nll`/`log_probs` (bytes).
const LOGIT_CHUNK_BYTES: u64 = 64 << 20;

/// A `[rows, cols]` matrix in a device storage buffer (row-major), float32 or (weights only) f16.
pub struct WgpuTensor {
    buf: Option<wgpu::Buffer>,
    rows: usize,
    cols: usize,
    /// Stored as f16 (a weight from `upload_weight` on an f16 device).
    f16: bool,
    pool: Arc<BufferPool>,
}

impl WgpuTensor {
    fn buf(&self) -> &wgpu::Buffer {
        self.buf.as_ref().expect("live tensor has a buffer")
    }

    fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Bytes of data (without the pool's padding).
    fn bytes(&self) -> u64 {
        self.len() as u64 * if self.f16 { 2 } else { 4 }
    }
}

impl Drop for WgpuTensor {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.put(b);
        }
    }
}

impl std::fmt::Debug for WgpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ty = if self.f16 { "f16" } else { "f32" };
        write!(f, "WgpuTensor({}x{} {ty})", self.rows, self.cols)
    }
}

/// Little-endian f32 values, or f16 ones widened (a weight stored as f16).
fn decode_values(bytes: &[u8], f16: bool) -> Vec<f32> {
    if f16 {
        bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect()
    } else {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

/// A tensor's values on their way to the host, from [`WgpuBackend::start_download`].
pub struct Download {
    read: stream::Readback,
    f16: bool,
}

impl Download {
    /// Whether the values arrived: [`WgpuBackend::finish_download`] can take them.
    pub fn is_ready(&self) -> bool {
        self.read.is_ready()
    }
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Download(ready: {})", self.is_ready())
    }
}

/// RoPE cos/sin tables on the device.
struct RopeBuffers {
    cos: wgpu::Buffer,
    sin: wgpu::Buffer,
    half: usize,
}

/// The wgpu backend (float32 math; f16 weight storage where the adapter supports it).
pub struct WgpuBackend {
    gpu: Gpu,
    pool: Arc<BufferPool>,
    pipes: PipelineCache,
    stream: Stream,
    rope: Mutex<HashMap<(usize, usize, u32), Arc<RopeBuffers>>>,
}

fn err(msg: impl Into<String>) -> Error {
    Error::Backend(msg.into())
}

fn same_shape(a: &WgpuTensor, b: &WgpuTensor, op: &str) -> Result<()> {
    if (a.rows, a.cols) != (b.rows, b.cols) {
        return Err(err(format!(
            "{op}: shapes {}x{} and {}x{} differ",
            a.rows, a.cols, b.rows, b.cols
        )));
    }
    Ok(())
}

fn vector_len(v: &WgpuTensor, n: usize, op: &str) -> Result<()> {
    if v.len() != n {
        return Err(err(format!(
            "{op}: vector has {} values, expected {n}",
            v.len()
        )));
    }
    Ok(())
}

/// Err unless every tensor is float32 (only weights may be f16, and only some ops read them).
fn f32_only(ts: &[&WgpuTensor], op: &str) -> Result<()> {
    if ts.iter().any(|t| t.f16) {
        return Err(err(format!(
            "{op}: an f16 weight tensor cannot be an input here (f32 activations only)"
        )));
    }
    Ok(())
}

fn u32_of(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| err(format!("wgpu: {what} = {n} does not fit in 32 bits")))
}

impl WgpuBackend {
    /// Opens the adapter chosen by the environment (see `device.rs`); weights are stored as f16
    /// where the adapter offers `SHADER_F16`, unless `PGOLF_WGPU_F32=1`.
    pub fn new() -> Result<Self> {
        Self::with_f16_weights(!device::f32_requested())
    }

    /// Like [`WgpuBackend::new`], but f16 weight storage only if `allow_f16` (and the adapter
    /// offers `SHADER_F16`), whatever the environment says.
    pub fn with_f16_weights(allow_f16: bool) -> Result<Self> {
        Ok(Self::from_gpu(device::open(allow_f16)?))
    }

    /// [`WgpuBackend::new`] as a future, for WebAssembly in a browser, where opening the
    /// page's WebGPU adapter and device are promises (natively it works too). A browser without
    /// WebGPU, or without an adapter it may use, is an `Err`.
    pub async fn new_async() -> Result<Self> {
        Self::with_f16_weights_async(!device::f32_requested()).await
    }

    /// [`WgpuBackend::with_f16_weights`] as a future (see [`WgpuBackend::new_async`]).
    pub async fn with_f16_weights_async(allow_f16: bool) -> Result<Self> {
        Ok(Self::from_gpu(device::open_async(allow_f16).await?))
    }

    fn from_gpu(gpu: Gpu) -> Self {
        let pool = Arc::new(BufferPool::new(gpu.device.clone()));
        let pipes = PipelineCache::new(gpu.device.clone());
        WgpuBackend {
            gpu,
            pool,
            pipes,
            stream: Stream::new(),
            rope: Mutex::new(HashMap::new()),
        }
    }

    /// Starts copying `t` to the host without waiting for the GPU, which is how a browser reads
    /// results: `on_ready` runs once the values can be taken with
    /// [`WgpuBackend::finish_download`] (in a browser from its event loop, natively during a
    /// device poll such as [`WgpuBackend::synchronize`]). [`Backend::download`] is this plus a
    /// wait, natively; in WebAssembly it is an error.
    pub fn start_download(
        &self,
        t: &WgpuTensor,
        on_ready: impl FnOnce() + wgpu::WasmNotSend + 'static,
    ) -> Result<Download> {
        let count = t.bytes() as usize;
        Ok(Download {
            read: self
                .stream
                .start_read(&self.gpu, t.buf(), count, on_ready)?,
            f16: t.f16,
        })
    }

    /// The values of a [`Download`] whose `on_ready` ran, as [`Backend::download`] gives them;
    /// an error before then.
    pub fn finish_download(&self, d: Download) -> Result<Vec<f32>> {
        let bytes = self.stream.finish_read(&self.gpu, d.read)?;
        Ok(decode_values(&bytes, d.f16))
    }

    /// The adapter's name, backend and device type.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.gpu.info
    }

    /// Whether the adapter offers `wgpu::Features::SHADER_F16` (whether or not it is used).
    pub fn adapter_has_f16(&self) -> bool {
        self.gpu
            .adapter_features
            .contains(wgpu::Features::SHADER_F16)
    }

    /// Whether weights from `upload_weight` are stored as f16.
    pub fn f16_weights(&self) -> bool {
        self.gpu.f16
    }

    /// Whether the adapter is a software rasteriser (lavapipe, WARP, llvmpipe).
    pub fn is_software(&self) -> bool {
        self.gpu.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Waits for all submitted work (for timing).
    pub fn synchronize(&self) -> Result<()> {
        self.stream.flush(&self.gpu);
        self.gpu
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| err(format!("wgpu: device poll failed: {e}")))?;
        self.stream.check(&self.gpu)
    }

    /// Checks a buffer of `data_bytes` fits the adapter's limits; its padded size.
    fn check_bytes(&self, data_bytes: u64, what: &str) -> Result<u64> {
        let bytes = BufferPool::size_for(data_bytes);
        let lim = &self.gpu.limits;
        let max = (lim.max_storage_buffer_binding_size).min(lim.max_buffer_size);
        if bytes > max {
            return Err(err(format!(
                "wgpu: {what} needs a {bytes}-byte buffer; the adapter allows {max}"
            )));
        }
        Ok(bytes)
    }

    fn alloc(&self, rows: usize, cols: usize, what: &str) -> Result<WgpuTensor> {
        let bytes = self.check_bytes(rows as u64 * cols as u64 * 4, what)?;
        Ok(WgpuTensor {
            buf: Some(self.pool.get(bytes)),
            rows,
            cols,
            f16: false,
            pool: self.pool.clone(),
        })
    }

    /// A fresh storage buffer holding `words` (little-endian, padded to the pool's sizes).
    fn init_buffer(&self, words: impl Iterator<Item = u32>, len: usize) -> wgpu::Buffer {
        let size = BufferPool::size_for(len as u64 * 4) as usize;
        let mut bytes = Vec::with_capacity(size);
        words.for_each(|w| bytes.extend_from_slice(&w.to_le_bytes()));
        bytes.resize(size, 0);
        self.gpu
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("pgolf-rt upload"),
                contents: &bytes,
                usage: pool::STORAGE,
            })
    }

    fn launch(
        &self,
        kernel: Kernel,
        variant: u32,
        params: &[u32],
        bufs: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) {
        let pipe = self.pipes.get(kernel, variant);
        self.stream.dispatch(&self.gpu, &pipe, params, bufs, groups);
    }

    /// Grid for `groups` flattened workgroups.
    fn grid(&self, groups: u64) -> [u32; 3] {
        grid(groups, self.gpu.limits.max_compute_workgroups_per_dimension)
    }

    fn elementwise_grid(&self, n: usize) -> [u32; 3] {
        self.grid((n as u64).div_ceil(ELEM_WG))
    }

    /// `out = x[x_off..] · wᵀ` for `m` rows of x, optional soft-cap epilogue.
    fn matmul_into(
        &self,
        x: &wgpu::Buffer,
        x_off: usize,
        m: usize,
        w: &WgpuTensor,
        out: &wgpu::Buffer,
        softcap: f32,
    ) -> Result<()> {
        let (n, k) = (w.rows, w.cols);
        if self.is_software() && matmul_loop_iterations(k) > LLVMPIPE_LOOP_CAP {
            return Err(err(format!(
                "linear: inner dimension {k} exceeds what the software adapter ({}) can run",
                self.gpu.info.name
            )));
        }
        let params = [
            u32_of(m, "rows")?,
            u32_of(n, "cols")?,
            u32_of(k, "inner dim")?,
            u32_of(x_off, "offset")?,
            softcap.to_bits(),
        ];
        let gx = (n as u64).div_ceil(MM_TILE);
        let gy = (m as u64).div_ceil(MM_TILE);
        let max = self.gpu.limits.max_compute_workgroups_per_dimension as u64;
        if gx > max || gy > max {
            return Err(err(format!(
                "wgpu: matmul {m}x{k}·{n}x{k}ᵀ exceeds the dispatch limit"
            )));
        }
        self.launch(
            Kernel::Matmul,
            if w.f16 { F16_WEIGHTS } else { 0 },
            &params,
            &[x, w.buf(), out],
            [gx as u32, gy as u32, 1],
        );
        Ok(())
    }

    fn rope_tables(&self, seq: usize, rope: &RopeSpec) -> Arc<RopeBuffers> {
        let key = (seq, rope.dims, rope.base.to_bits());
        let mut map = self.rope.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.get(&key) {
            return t.clone();
        }
        // Same f32 tables as the CPU oracle (GPU sin/cos are inaccurate at large angles).
        let t = RopeTable::new(seq, rope.dims, rope.base);
        let n = t.cos.len();
        let bufs = Arc::new(RopeBuffers {
            cos: self.init_buffer(t.cos.iter().map(|v| v.to_bits()), n),
            sin: self.init_buffer(t.sin.iter().map(|v| v.to_bits()), n),
            half: t.half,
        });
        if map.len() >= 16 {
            map.clear();
        }
        map.insert(key, bufs.clone());
        bufs
    }

    /// Soft-capped logits of `h` in row chunks: calls `f(first_row, rows, logits)`.
    fn for_each_logit_chunk(
        &self,
        h: &WgpuTensor,
        head: &WgpuTensor,
        softcap: f32,
        mut f: impl FnMut(usize, usize, &wgpu::Buffer) -> Result<()>,
    ) -> Result<()> {
        let vocab = head.rows.max(1);
        let chunk = ((LOGIT_CHUNK_BYTES / (vocab as u64 * 4)).max(1) as usize).min(h.rows);
        let logits = self.alloc(chunk, vocab, "logits")?;
        for r0 in (0..h.rows).step_by(chunk.max(1)) {
            let m = chunk.min(h.rows - r0);
            self.matmul_into(h.buf(), r0 * h.cols, m, head, logits.buf(), softcap)?;
            f(r0, m, logits.buf())?;
        }
        Ok(())
    }

    fn prep_heads(
        &self,
        t: &WgpuTensor,
        heads: usize,
        geom: &AttnGeometry,
        tables: &RopeBuffers,
        gain: Option<&WgpuTensor>,
        eps: f32,
    ) -> Result<()> {
        let rows = t.rows;
        let params = [
            u32_of(rows, "rows")?,
            u32_of(heads, "heads")?,
            u32_of(geom.head_dim, "head_dim")?,
            u32_of(geom.seq, "seq")?,
            u32_of(tables.half, "rope half")?,
            gain.is_some() as u32,
            eps.to_bits(),
        ];
        let gain_buf = gain.map_or(&tables.cos, |g| g.buf());
        self.launch(
            Kernel::QkNormRope,
            0,
            &params,
            &[t.buf(), &tables.cos, &tables.sin, gain_buf],
            self.grid((rows * heads) as u64),
        );
        Ok(())
    }
}

impl Backend for WgpuBackend {
    type Tensor = WgpuTensor;

    fn name(&self) -> String {
        let i = &self.gpu.info;
        format!(
            "wgpu ({}, {:?} {:?}, {} weights)",
            i.name,
            i.backend,
            i.device_type,
            if self.gpu.f16 { "f16" } else { "f32" }
        )
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<WgpuTensor> {
        if data.len() != rows * cols {
            return Err(err(format!(
                "upload: {} values for {rows}x{cols}",
                data.len()
            )));
        }
        self.check_bytes(data.len() as u64 * 4, "upload")?;
        Ok(WgpuTensor {
            buf: Some(self.init_buffer(data.iter().map(|v| v.to_bits()), data.len())),
            rows,
            cols,
            f16: false,
            pool: self.pool.clone(),
        })
    }

    fn upload_weight(&self, data: &[f32], rows: usize, cols: usize) -> Result<WgpuTensor> {
        if !self.gpu.f16 {
            return self.upload(data, rows, cols);
        }
        if data.len() != rows * cols {
            return Err(err(format!(
                "upload_weight: {} values for {rows}x{cols}",
                data.len()
            )));
        }
        self.check_bytes(data.len() as u64 * 2, "upload_weight")?;
        // Two f16 per little-endian u32 word (element 2i in the low half).
        let h = |v: Option<&f32>| v.map_or(0, |&v| half::f16::from_f32(v).to_bits() as u32);
        let words = data.chunks(2).map(|c| h(c.first()) | (h(c.get(1)) << 16));
        Ok(WgpuTensor {
            buf: Some(self.init_buffer(words, data.len().div_ceil(2))),
            rows,
            cols,
            f16: true,
            pool: self.pool.clone(),
        })
    }

    fn download(&self, t: &WgpuTensor) -> Result<Vec<f32>> {
        let count = t.bytes() as usize;
        let bytes = self.stream.read_bytes(&self.gpu, t.buf(), count)?;
        Ok(decode_values(&bytes, t.f16))
    }

    fn copy(&self, t: &WgpuTensor) -> Result<WgpuTensor> {
        let bytes = self.check_bytes(t.bytes(), "copy")?;
        let out = WgpuTensor {
            buf: Some(self.pool.get(bytes)),
            rows: t.rows,
            cols: t.cols,
            f16: t.f16,
            pool: self.pool.clone(),
        };
        self.stream
            .copy(&self.gpu, t.buf(), out.buf(), t.bytes().next_multiple_of(4));
        Ok(out)
    }

    fn shape(&self, t: &WgpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn embedding(&self, table: &WgpuTensor, ids: &[u32]) -> Result<WgpuTensor> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= table.rows) {
            return Err(err(format!(
                "token id {id} out of range for a {}-row table",
                table.rows
            )));
        }
        let out = self.alloc(ids.len(), table.cols, "embedding")?;
        let n = out.len();
        if n == 0 {
            return Ok(out);
        }
        let ids_buf = self.init_buffer(ids.iter().copied(), ids.len());
        self.launch(
            Kernel::Embedding,
            if table.f16 { F16_WEIGHTS } else { 0 },
            &[u32_of(ids.len(), "rows")?, u32_of(table.cols, "cols")?],
            &[table.buf(), &ids_buf, out.buf()],
            self.elementwise_grid(n),
        );
        Ok(out)
    }

    fn gather_rows(&self, x: &WgpuTensor, rows: &[usize]) -> Result<WgpuTensor> {
        let ids = rows
            .iter()
            .map(|&r| u32_of(r, "row"))
            .collect::<Result<Vec<u32>>>()?;
        self.embedding(x, &ids)
    }

    fn linear(&self, x: &WgpuTensor, w: &WgpuTensor) -> Result<WgpuTensor> {
        f32_only(&[x], "linear")?;
        if x.cols != w.cols {
            return Err(err(format!(
                "linear: input width {} but weight is {}x{}",
                x.cols, w.rows, w.cols
            )));
        }
        let out = self.alloc(x.rows, w.rows, "linear")?;
        if out.len() > 0 {
            self.matmul_into(x.buf(), 0, x.rows, w, out.buf(), 0.0)?;
        }
        Ok(out)
    }

    fn rms_norm(&self, x: &WgpuTensor, eps: f32, scale: f32) -> Result<WgpuTensor> {
        f32_only(&[x], "rms_norm")?;
        let out = self.alloc(x.rows, x.cols, "rms_norm")?;
        self.launch(
            Kernel::RmsNorm,
            0,
            &[
                u32_of(x.rows, "rows")?,
                u32_of(x.cols, "cols")?,
                eps.to_bits(),
                scale.to_bits(),
            ],
            &[x.buf(), out.buf()],
            self.grid(x.rows as u64),
        );
        Ok(out)
    }

    fn resid_mix(&self, x: &WgpuTensor, x0: &WgpuTensor, mix: &WgpuTensor) -> Result<WgpuTensor> {
        f32_only(&[x, x0, mix], "resid_mix")?;
        same_shape(x, x0, "resid_mix")?;
        vector_len(mix, 2 * x.cols, "resid_mix")?;
        let out = self.alloc(x.rows, x.cols, "resid_mix")?;
        self.launch(
            Kernel::ResidMix,
            0,
            &[u32_of(x.len(), "size")?, u32_of(x.cols, "cols")?],
            &[x.buf(), x0.buf(), mix.buf(), out.buf()],
            self.elementwise_grid(x.len()),
        );
        Ok(out)
    }

    fn add_scaled(&self, x: &mut WgpuTensor, y: &WgpuTensor, scale: &WgpuTensor) -> Result<()> {
        f32_only(&[x, y, scale], "add_scaled")?;
        same_shape(x, y, "add_scaled")?;
        vector_len(scale, x.cols, "add_scaled")?;
        self.launch(
            Kernel::AddScaled,
            0,
            &[u32_of(x.len(), "size")?, u32_of(x.cols, "cols")?],
            &[x.buf(), y.buf(), scale.buf()],
            self.elementwise_grid(x.len()),
        );
        Ok(())
    }

    fn add_scalar_scaled(&self, x: &mut WgpuTensor, y: &WgpuTensor, s: f32) -> Result<()> {
        f32_only(&[x, y], "add_scalar_scaled")?;
        same_shape(x, y, "add_scalar_scaled")?;
        self.launch(
            Kernel::Axpy,
            0,
            &[u32_of(x.len(), "size")?, s.to_bits()],
            &[x.buf(), y.buf()],
            self.elementwise_grid(x.len()),
        );
        Ok(())
    }

    fn smear(&self, x: &WgpuTensor, gate: &WgpuTensor, seq: usize) -> Result<WgpuTensor> {
        f32_only(&[x, gate], "smear")?;
        vector_len(gate, x.cols, "smear")?;
        if seq == 0 || !x.rows.is_multiple_of(seq) {
            return Err(err(format!(
                "smear: {} rows is not a multiple of seq {seq}",
                x.rows
            )));
        }
        let out = self.alloc(x.rows, x.cols, "smear")?;
        self.launch(
            Kernel::Smear,
            0,
            &[
                u32_of(x.len(), "size")?,
                u32_of(x.cols, "cols")?,
                u32_of(seq, "seq")?,
            ],
            &[x.buf(), gate.buf(), out.buf()],
            self.elementwise_grid(x.len()),
        );
        Ok(out)
    }

    fn qk_norm_rope(
        &self,
        q: &mut WgpuTensor,
        k: &mut WgpuTensor,
        geom: &AttnGeometry,
        rope: &RopeSpec,
        q_gain: &WgpuTensor,
        eps: f32,
    ) -> Result<()> {
        f32_only(&[q, k, q_gain], "qk_norm_rope")?;
        let hd = geom.head_dim;
        geom.check_qk((q.rows, q.cols), (k.rows, k.cols), "qk_norm_rope")?;
        vector_len(q_gain, geom.heads, "qk_norm_rope")?;
        if hd == 0 || hd > ROPE_MAX_HD || rope.dims > hd || geom.seq == 0 {
            return Err(err(format!(
                "qk_norm_rope: head_dim {hd} / rope dims {} unsupported on wgpu (head_dim <= {ROPE_MAX_HD})",
                rope.dims
            )));
        }
        let tables = self.rope_tables(geom.seq, rope);
        self.prep_heads(q, geom.heads, geom, &tables, Some(q_gain), eps)?;
        self.prep_heads(k, geom.kv_heads, geom, &tables, None, eps)?;
        Ok(())
    }

    fn attention(
        &self,
        q: &WgpuTensor,
        k: &WgpuTensor,
        v: &WgpuTensor,
        geom: &AttnGeometry,
        xsa: bool,
    ) -> Result<WgpuTensor> {
        f32_only(&[q, k, v], "attention")?;
        let rows = geom.rows();
        geom.check_qkv(
            (q.rows, q.cols),
            (k.rows, k.cols),
            (v.rows, v.cols),
            "attention",
        )?;
        let hd = geom.head_dim;
        if hd == 0 || hd > ATTN_MAX_HD || !hd.is_multiple_of(4) {
            return Err(err(format!(
                "attention: head_dim {hd} unsupported on wgpu (a multiple of 4, at most {ATTN_MAX_HD})"
            )));
        }
        if self.is_software() && attention_loop_iterations(geom.seq, hd) > LLVMPIPE_LOOP_CAP {
            return Err(err(format!(
                "attention: a {}-token window exceeds what the software adapter ({}) can run \
                 (llvmpipe stops a loop nest after {LLVMPIPE_LOOP_CAP} iterations)",
                geom.seq, self.gpu.info.name
            )));
        }
        let out = self.alloc(rows, q.cols, "attention")?;
        if rows == 0 {
            return Ok(out);
        }
        let max = self.gpu.limits.max_compute_workgroups_per_dimension as usize;
        if geom.heads > max || geom.batch > max {
            return Err(err("attention: batch or heads exceed the dispatch limit"));
        }
        let params = [
            u32_of(geom.seq, "seq")?,
            u32_of(geom.heads, "heads")?,
            u32_of(geom.kv_heads, "kv_heads")?,
            xsa as u32,
            (1.0 / (hd as f32).sqrt()).to_bits(),
        ];
        self.launch(
            Kernel::Attention,
            hd as u32,
            &params,
            &[q.buf(), k.buf(), v.buf(), out.buf()],
            [
                (geom.seq as u64).div_ceil(ATTN_BQ) as u32,
                geom.heads as u32,
                geom.batch as u32,
            ],
        );
        Ok(out)
    }

    fn activation(&self, h: &WgpuTensor, act: Activation) -> Result<WgpuTensor> {
        f32_only(&[h], "activation")?;
        let out = self.alloc(h.rows, h.cols, "activation")?;
        let (kind, slope) = match act {
            Activation::Relu2 => (0u32, 0.0f32),
            Activation::LeakyRelu2 { slope } => (1, slope),
        };
        self.launch(
            Kernel::Activation,
            0,
            &[u32_of(h.len(), "size")?, kind, slope.to_bits()],
            &[h.buf(), out.buf()],
            self.elementwise_grid(h.len()),
        );
        Ok(out)
    }

    fn nll(
        &self,
        h: &WgpuTensor,
        head: &WgpuTensor,
        targets: &[u32],
        softcap: f32,
    ) -> Result<Vec<f32>> {
        let out = self.nll_tensor(h, head, targets, softcap)?;
        self.download(&out)
    }

    fn nll_tensor(
        &self,
        h: &WgpuTensor,
        head: &WgpuTensor,
        targets: &[u32],
        softcap: f32,
    ) -> Result<WgpuTensor> {
        f32_only(&[h], "nll")?;
        super::check_head(
            (h.rows, h.cols),
            (head.rows, head.cols),
            Some(targets),
            "nll",
        )?;
        let out = self.alloc(h.rows, 1, "nll")?;
        if h.rows == 0 {
            return Ok(out);
        }
        let tgt = self.init_buffer(targets.iter().copied(), targets.len());
        let vocab = u32_of(head.rows, "vocab")?;
        self.for_each_logit_chunk(h, head, softcap, |r0, m, logits| {
            self.launch(
                Kernel::Nll,
                0,
                &[u32_of(m, "rows")?, vocab, u32_of(r0, "row")?],
                &[logits, &tgt, out.buf()],
                self.grid(m as u64),
            );
            Ok(())
        })?;
        Ok(out)
    }

    fn log_probs(&self, h: &WgpuTensor, head: &WgpuTensor, softcap: f32) -> Result<Vec<f32>> {
        f32_only(&[h], "log_probs")?;
        super::check_head((h.rows, h.cols), (head.rows, head.cols), None, "log_probs")?;
        let vocab = head.rows;
        let mut out = Vec::with_capacity(h.rows * vocab);
        self.for_each_logit_chunk(h, head, softcap, |_, m, logits| {
            self.launch(
                Kernel::LogSoftmax,
                0,
                &[u32_of(m, "rows")?, u32_of(vocab, "vocab")?],
                &[logits],
                self.grid(m as u64),
            );
            out.extend(decode_values(
                &self.stream.read_bytes(&self.gpu, logits, m * vocab * 4)?,
                false,
            ));
            Ok(())
        })?;
        Ok(out)
    }
}
