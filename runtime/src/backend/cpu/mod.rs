//! The CPU backend: plain float32, multi-threaded, obviously right. It is the oracle every
//! other backend is tested against, so each kernel sits in its own file with its reference
//! semantics in the module doc and a naive test beside it.

mod attention;
mod backward;
mod decode;
pub(crate) use decode::Heads;
mod head;
mod math;
pub(crate) mod matmul;
mod norm;
pub mod optim;
pub(crate) mod par;
mod rope;
mod segments;

pub use matmul::linear;
pub use rope::RopeTable;

use super::{AttnGeometry, Backend, RopeSpec};
use crate::model::Activation;
use crate::{Error, Result};

/// A `[rows, cols]` row-major f32 matrix in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTensor {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// The float32 CPU backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

impl CpuBackend {
    /// A CPU backend using the global thread pool.
    pub fn new() -> Self {
        CpuBackend
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
/// made first).
fn map_rows<F>(x: &CpuTensor, f: F) -> CpuTensor
where
    F: Fn(usize, &[f32], &mut [f32]) + Sync + Send,
{
    let cols = x.cols;
    let mut data = vec![0.0f32; x.data.len()];
    par::for_each_row(&mut data, cols, |i, r| {
        f(i, &x.data[i * cols..(i + 1) * cols], r)
    });
    CpuTensor {
        rows: x.rows,
        cols,
        data,
    }
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
                head.iter_mut().for_each(|v| *v *= g[h]);
            }
        }
    });
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> String {
        format!("cpu (float32, {} threads)", par::threads())
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<CpuTensor> {
        if data.len() != rows * cols {
            return Err(Error::Backend(format!(
                "upload: {} values for {rows}x{cols}",
                data.len()
            )));
        }
        Ok(CpuTensor {
            rows,
            cols,
            data: data.to_vec(),
        })
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
        Ok(CpuTensor {
            rows: ids.len(),
            cols: d,
            data,
        })
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
        Ok(CpuTensor {
            rows: x.rows,
            cols: w.rows,
            data: matmul::linear(&x.data, x.rows, &w.data, w.rows, w.cols),
        })
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
        Ok(CpuTensor {
            rows: x.rows,
            cols: out,
            data: segments::forward(&x.data, x.rows, x.cols, &w.data, out, segs),
        })
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
            for c in 0..r.len() {
                r[c] = a[c] * src[c] + b[c] * r0[c];
            }
        }))
    }

    fn add_scaled(&self, x: &mut CpuTensor, y: &CpuTensor, scale: &CpuTensor) -> Result<()> {
        same_shape(x, y, "add_scaled")?;
        vector_len(scale, x.cols, "add_scaled")?;
        let cols = x.cols;
        par::for_each_row(&mut x.data, cols, |i, r| {
            let yr = &y.data[i * cols..(i + 1) * cols];
            for c in 0..cols {
                r[c] += scale.data[c] * yr[c];
            }
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
        let table = RopeTable::new(geom.seq, rope.dims, rope.base);
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
        Ok(CpuTensor {
            rows,
            cols: q.cols,
            data: attention::attention(&q.data, &k.data, &v.data, geom, xsa),
        })
    }

    fn activation(&self, h: &CpuTensor, act: Activation) -> Result<CpuTensor> {
        Ok(map_rows(h, |_, src, r| {
            for (v, &x) in r.iter_mut().zip(src) {
                let a = match act {
                    Activation::Relu2 => x.max(0.0),
                    Activation::LeakyRelu2 { slope } => {
                        if x >= 0.0 {
                            x
                        } else {
                            slope * x
                        }
                    }
                };
                *v = a * a;
            }
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
        Ok(head::nll(
            &h.data, h.cols, &head.data, head.rows, None, targets, softcap,
        ))
    }

    fn log_probs(&self, h: &CpuTensor, head: &CpuTensor, softcap: f32) -> Result<Vec<f32>> {
        super::check_head((h.rows, h.cols), (head.rows, head.cols), None, "log_probs")?;
        Ok(head::log_probs(
            &h.data, h.rows, h.cols, &head.data, head.rows, None, softcap,
        ))
    }
}
