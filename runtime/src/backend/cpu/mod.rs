//! The CPU backend: plain float32, multi-threaded, obviously right. It is the oracle every
//! other backend is tested against, so each kernel sits in its own file with its reference
//! semantics in the module doc and a naive test beside it.

mod attention;
mod backward;
pub mod bf16;
mod decode;
pub(crate) use decode::Heads;
mod elementwise;
mod head;
mod math;
pub(crate) mod matmul;
mod norm;
pub mod optim;
pub(crate) mod par;
mod rope;
mod segments;
pub mod sidecar;
pub(crate) mod simd;

pub use matmul::linear;
pub use rope::RopeTable;

use super::{AttnGeometry, Backend, Precision, RopeSpec};
use crate::model::Activation;
use crate::{Error, Result};

/// A `[rows, cols]` row-major f32 matrix in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTensor {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
    /// The weight's bf16 packed copy, made by a bf16 backend's `upload_weight` (`None`
    /// elsewhere). Derived from `data`: the backend's in-place ops drop it, and a product
    /// checks it against `data` before use ([`bf16::PackedWeight::matches`]).
    pub(crate) packed: bf16::Packed,
}

impl CpuTensor {
    /// A tensor of `rows x cols` values (`data.len()` must be `rows * cols`).
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> CpuTensor {
        debug_assert_eq!(data.len(), rows * cols);
        CpuTensor {
            rows,
            cols,
            data,
            packed: bf16::Packed::default(),
        }
    }

    /// The values, for writing in place: drops the bf16 copy, which would be stale.
    pub fn data_mut(&mut self) -> &mut [f32] {
        self.packed = bf16::Packed::default();
        &mut self.data
    }
}

/// The CPU backend: float32 (the oracle), or with bf16 matrix products on CPUs that have a
/// bf16 kernel ([`bf16::Kernel`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend {
    bf16: Option<bf16::Kernel>,
}

impl CpuBackend {
    /// The float32 CPU backend, using the global thread pool.
    pub fn new() -> Self {
        CpuBackend { bf16: None }
    }

    /// The CPU backend in precision `p`: `f32`, or `bf16` where this CPU has a bf16 kernel
    /// (an error naming what is missing where it has none; `tf32` is a GPU format).
    pub fn with_precision(p: Precision) -> Result<Self> {
        match p {
            Precision::F32 => Ok(CpuBackend::new()),
            Precision::Bf16 => match bf16::Kernel::detect() {
                Some(k) => Ok(CpuBackend { bf16: Some(k) }),
                None => Err(Error::Backend(format!(
                    "--precision bf16: {}",
                    bf16::unavailable_reason()
                ))),
            },
            Precision::Tf32 => Err(Error::Backend(format!(
                "--precision tf32: the CPU backend offers {}",
                Precision::list(&CpuBackend::precisions())
            ))),
        }
    }

    /// The fastest CPU path here: bf16 products where the CPU has a kernel, else float32.
    pub fn fastest() -> Self {
        CpuBackend {
            bf16: bf16::Kernel::detect(),
        }
    }

    /// The precision of its matrix products.
    pub fn precision(&self) -> Precision {
        if self.bf16.is_some() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    /// The precisions this CPU offers.
    pub fn precisions() -> Vec<Precision> {
        let mut p = vec![Precision::F32];
        if bf16::Kernel::detect().is_some() {
            p.push(Precision::Bf16);
        }
        p
    }

    /// The bf16 kernel and `w`'s packed copy (packed now if it has none or a stale one), when
    /// this backend multiplies in bf16.
    fn bf16_weight<'w>(
        &self,
        w: &'w CpuTensor,
    ) -> Option<(bf16::Kernel, std::borrow::Cow<'w, bf16::PackedWeight>)> {
        let k = self.bf16?;
        Some((k, w.packed.get_or_pack(&w.data, w.rows, w.cols)))
    }
}

fn same_shape(a: &CpuTensor, b: &CpuTensor, op: &str) -> Result<()> {
    if (a.rows, a.cols) != (b.rows, b.cols) {
        return Err(Error::Backend(format!(
            "{op}: shapes {}x{} and {}x{} differ",
            a.rows, a.cols, b.rows, b.cols
        )));
    }
    Ok(())
}

/// A new tensor of `x`'s shape with row `i` written by `f(i, x_row, out_row)` (no copy of `x`
/// made first). `out_row` is zero when `f` gets it: each task zeroes its own rows just before
/// `f` writes them (in cache), instead of one serial pass over the whole new buffer first.
fn map_rows<F>(x: &CpuTensor, f: F) -> CpuTensor
where
    F: Fn(usize, &[f32], &mut [f32]) + Sync + Send,
{
    /// Rows per task.
    const ROWS: usize = 16;
    let cols = x.cols;
    let data = par::build_chunks(x.data.len(), ROWS * cols.max(1), |c, chunk| {
        for (r, out) in chunk.chunks_exact_mut(cols).enumerate() {
            let i = c * ROWS + r;
            f(i, &x.data[i * cols..(i + 1) * cols], out)
        }
    });
    CpuTensor::new(x.rows, cols, data)
}

/// The largest `|a[i] − b[i]|` (the slices must have the same length): the CPU kernels' tests.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn vector_len(v: &CpuTensor, n: usize, op: &str) -> Result<()> {
    if v.data.len() != n {
        return Err(Error::Backend(format!(
            "{op}: vector has {} values, expected {n}",
            v.data.len()
        )));
    }
    Ok(())
}

/// `qk_norm_rope` on one of `q`, `k`: each `hd`-wide head of row `i` is RMS-normalised, rotated
/// at position `pos(i)` and, with `gain`, multiplied by `gain[head]`.
fn norm_rope_heads<P>(
    t: &mut CpuTensor,
    hd: usize,
    table: &RopeTable,
    pos: P,
    gain: Option<&[f32]>,
    eps: f32,
) where
    P: Fn(usize) -> usize + Sync + Send,
{
    let cols = t.cols;
    par::for_each_row(&mut t.data, cols, |i, r| {
        for (h, head) in r.chunks_exact_mut(hd).enumerate() {
            norm::rms_norm_in_place(head, eps, 1.0);
            table.apply(head, pos(i));
            if let Some(g) = gain {
                elementwise::scale_row(head, g[h]);
            }
        }
    });
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> String {
        match self.bf16 {
            Some(k) => format!(
                "cpu (bf16 products on {}, {} threads)",
                k.name(),
                par::threads()
            ),
            None => format!("cpu (float32, {} threads)", par::threads()),
        }
    }

    fn upload_weight(&self, data: &[f32], rows: usize, cols: usize) -> Result<CpuTensor> {
        let mut t = self.upload(data, rows, cols)?;
        if self.bf16.is_some() && rows * cols > 0 {
            t.packed = bf16::Packed::new(bf16::PackedWeight::pack(data, rows, cols));
        }
        Ok(t)
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<CpuTensor> {
        if data.len() != rows * cols {
            return Err(Error::Backend(format!(
                "upload: {} values for {rows}x{cols}",
                data.len()
            )));
        }
        Ok(CpuTensor::new(rows, cols, data.to_vec()))
    }

    fn download(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.data.clone())
    }

    fn copy(&self, t: &CpuTensor) -> Result<CpuTensor> {
        Ok(t.clone())
    }

    fn shape(&self, t: &CpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn embedding(&self, table: &CpuTensor, ids: &[u32]) -> Result<CpuTensor> {
        let d = table.cols;
        let mut data = Vec::with_capacity(ids.len() * d);
        for &id in ids {
            let id = id as usize;
            if id >= table.rows {
                return Err(Error::Backend(format!(
                    "token id {id} out of range for a {}-row table",
                    table.rows
                )));
            }
            data.extend_from_slice(&table.data[id * d..(id + 1) * d]);
        }
        Ok(CpuTensor::new(ids.len(), d, data))
    }

    fn gather_rows(&self, x: &CpuTensor, rows: &[usize]) -> Result<CpuTensor> {
        let ids: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        self.embedding(x, &ids)
    }

    fn linear(&self, x: &CpuTensor, w: &CpuTensor) -> Result<CpuTensor> {
        if x.cols != w.cols {
            return Err(Error::Backend(format!(
                "linear: input width {} but weight is {}x{}",
                x.cols, w.rows, w.cols
            )));
        }
        let data = match self.bf16_weight(w) {
            Some((k, p)) => bf16::linear(&x.data, x.rows, &p, k),
            None => matmul::linear(&x.data, x.rows, &w.data, w.rows, w.cols),
        };
        Ok(CpuTensor::new(x.rows, w.rows, data))
    }

    fn linear_segments(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        segs: &[(usize, usize)],
    ) -> Result<CpuTensor> {
        let out = crate::backend::check_segments(
            x.rows,
            (x.cols, w.cols),
            w.rows,
            segs,
            "linear_segments",
        )?;
        Ok(CpuTensor::new(
            x.rows,
            out,
            segments::forward(&x.data, x.rows, x.cols, &w.data, out, segs),
        ))
    }

    fn rms_norm(&self, x: &CpuTensor, eps: f32, scale: f32) -> Result<CpuTensor> {
        Ok(map_rows(x, |_, src, r| {
            norm::rms_norm_into(src, r, eps, scale)
        }))
    }

    fn resid_mix(&self, x: &CpuTensor, x0: &CpuTensor, mix: &CpuTensor) -> Result<CpuTensor> {
        same_shape(x, x0, "resid_mix")?;
        vector_len(mix, 2 * x.cols, "resid_mix")?;
        let (a, b) = mix.data.split_at(x.cols);
        Ok(map_rows(x, |i, src, r| {
            let r0 = &x0.data[i * x.cols..(i + 1) * x.cols];
            elementwise::resid_mix_row(r, src, r0, a, b);
        }))
    }

    fn add_scaled(&self, x: &mut CpuTensor, y: &CpuTensor, scale: &CpuTensor) -> Result<()> {
        same_shape(x, y, "add_scaled")?;
        vector_len(scale, x.cols, "add_scaled")?;
        let cols = x.cols;
        par::for_each_row(&mut x.data, cols, |i, r| {
            elementwise::add_scaled_row(r, &y.data[i * cols..(i + 1) * cols], &scale.data);
        });
        Ok(())
    }

    fn add_scalar_scaled(&self, x: &mut CpuTensor, y: &CpuTensor, s: f32) -> Result<()> {
        same_shape(x, y, "add_scalar_scaled")?;
        x.data
            .iter_mut()
            .zip(&y.data)
            .for_each(|(a, b)| *a += s * b);
        Ok(())
    }

    fn smear(&self, x: &CpuTensor, gate: &CpuTensor, seq: usize) -> Result<CpuTensor> {
        vector_len(gate, x.cols, "smear")?;
        if seq == 0 || !x.rows.is_multiple_of(seq) {
            return Err(Error::Backend(format!(
                "smear: {} rows is not a multiple of seq {seq}",
                x.rows
            )));
        }
        let g: Vec<f32> = gate.data.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
        let cols = x.cols;
        Ok(map_rows(x, |i, src, r| {
            if i % seq == 0 {
                for c in 0..cols {
                    r[c] = src[c] * (1.0 - g[c]);
                }
            } else {
                let prev = &x.data[(i - 1) * cols..i * cols];
                for c in 0..cols {
                    r[c] = (1.0 - g[c]) * src[c] + g[c] * prev[c];
                }
            }
        }))
    }

    fn qk_norm_rope(
        &self,
        q: &mut CpuTensor,
        k: &mut CpuTensor,
        geom: &AttnGeometry,
        rope: &RopeSpec,
        q_gain: &CpuTensor,
        eps: f32,
    ) -> Result<()> {
        let hd = geom.head_dim;
        geom.check_qk((q.rows, q.cols), (k.rows, k.cols), "qk_norm_rope")?;
        vector_len(q_gain, geom.heads, "qk_norm_rope")?;
        let table = RopeTable::shared(geom.seq, rope.dims, rope.base);
        let seq = geom.seq;
        norm_rope_heads(q, hd, &table, |i| i % seq, Some(&q_gain.data), eps);
        norm_rope_heads(k, hd, &table, |i| i % seq, None, eps);
        Ok(())
    }

    fn attention(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        geom: &AttnGeometry,
        xsa: bool,
    ) -> Result<CpuTensor> {
        let rows = geom.rows();
        geom.check_qkv(
            (q.rows, q.cols),
            (k.rows, k.cols),
            (v.rows, v.cols),
            "attention",
        )?;
        let data = match self.bf16 {
            Some(kern) => bf16::attention::attention(&q.data, &k.data, &v.data, geom, xsa, kern),
            None => attention::attention(&q.data, &k.data, &v.data, geom, xsa),
        };
        Ok(CpuTensor::new(rows, q.cols, data))
    }

    fn activation(&self, h: &CpuTensor, act: Activation) -> Result<CpuTensor> {
        let leaky = match act {
            Activation::Relu2 => None,
            Activation::LeakyRelu2 { slope } => Some(slope),
        };
        Ok(map_rows(h, |_, src, r| {
            elementwise::activation_row(r, src, leaky)
        }))
    }

    fn nll(
        &self,
        h: &CpuTensor,
        head: &CpuTensor,
        targets: &[u32],
        softcap: f32,
    ) -> Result<Vec<f32>> {
        super::check_head(
            (h.rows, h.cols),
            (head.rows, head.cols),
            Some(targets),
            "nll",
        )?;
        let bf16 = self.bf16_weight(head);
        let bf16 = bf16.as_ref().map(|(k, p)| (*k, &**p));
        Ok(head::nll(
            &h.data, h.cols, &head.data, head.rows, None, targets, softcap, bf16,
        ))
    }

    fn log_probs(&self, h: &CpuTensor, head: &CpuTensor, softcap: f32) -> Result<Vec<f32>> {
        super::check_head((h.rows, h.cols), (head.rows, head.cols), None, "log_probs")?;
        let bf16 = self.bf16_weight(head);
        let bf16 = bf16.as_ref().map(|(k, p)| (*k, &**p));
        Ok(head::log_probs(
            &h.data, h.rows, h.cols, &head.data, head.rows, None, softcap, bf16,
        ))
    }
}
