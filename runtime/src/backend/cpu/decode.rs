//! The two ops incremental decoding ([`crate::model::Decoder`]) adds to the CPU backend: the
//! whole-window ops of [`Backend`](crate::backend::Backend) start every window at position 0 and
//! let each query see the keys of its own call only; a decoder runs new positions
//! `pos0..pos0+n` against the keys and values it has kept.
//!
//! Reference semantics (the oracle is the whole-window op over the full prefix):
//! - [`CpuBackend::qk_norm_rope_at`]: `qk_norm_rope` with row `i` at position `pos0 + i` (the
//!   same arithmetic: one shared loop, [`super::norm_rope_heads`]).
//! - [`CpuBackend::attention_cached`]: for new row `r` at position `t = pos0 + r`, query head
//!   `h`, KV head `g = h / (H / Hkv)`:
//!   `y = sum_{j<=t} softmax_j(q·k_j / sqrt(hd)) v_j` over the cached rows `k_j`, `v_j`; with
//!   XSA, `y -= (y·v̂_t) v̂_t`, `v̂_t = v_t / max(|v_t|, 1e-12)`. One query at a time, written
//!   plainly: a decoding step has a single query per head.

use super::math::exp;
use super::par::for_each_chunk;
use super::{norm_rope_heads, CpuBackend, CpuTensor, RopeTable};
use crate::{Error, Result};

/// Head layout of one attention call: query heads, KV heads, head width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl Heads {
    fn check(&self, q: &CpuTensor, kv_cols: usize, op: &str) -> Result<()> {
        let hd = self.head_dim;
        if self.kv_heads == 0
            || !self.heads.is_multiple_of(self.kv_heads)
            || q.cols != self.heads * hd
            || kv_cols != self.kv_heads * hd
        {
            return Err(Error::Backend(format!(
                "{op}: q/k shapes do not match {} heads / {} KV heads of {hd}",
                self.heads, self.kv_heads
            )));
        }
        Ok(())
    }
}

impl CpuBackend {
    /// `qk_norm_rope` for rows at positions `pos0, pos0 + 1, ...`: each head of `q` and `k`
    /// RMS-normalised, its first `table` dims rotated, and `q`'s heads times `q_gain`.
    /// `table` must cover positions up to `pos0 + rows - 1`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn qk_norm_rope_at(
        &self,
        q: &mut CpuTensor,
        k: &mut CpuTensor,
        heads: Heads,
        pos0: usize,
        table: &RopeTable,
        q_gain: &CpuTensor,
        eps: f32,
    ) -> Result<()> {
        heads.check(q, k.cols, "qk_norm_rope_at")?;
        let positions = table.cos.len() / table.half.max(1);
        if q.rows != k.rows || pos0 + q.rows > positions || q_gain.data.len() != heads.heads {
            return Err(Error::Backend(format!(
                "qk_norm_rope_at: {} query rows, {} key rows at position {pos0} with a table of {positions} positions",
                q.rows, k.rows
            )));
        }
        let hd = heads.head_dim;
        norm_rope_heads(q, hd, table, |i| pos0 + i, Some(&q_gain.data), eps);
        norm_rope_heads(k, hd, table, |i| pos0 + i, None, eps);
        Ok(())
    }

    /// Causal attention of the new rows `q [n, H*hd]` (positions `pos0..pos0+n`) over the cached
    /// keys and values `k`, `v` `[pos0+n, Hkv*hd]` (the new rows' own keys included, last).
    pub(crate) fn attention_cached(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        heads: Heads,
        pos0: usize,
        xsa: bool,
    ) -> Result<CpuTensor> {
        heads.check(q, k.cols, "attention_cached")?;
        if (k.rows, k.cols) != (v.rows, v.cols) || k.rows != pos0 + q.rows {
            return Err(Error::Backend(format!(
                "attention_cached: {} new rows at position {pos0} over {} keys and {} values",
                q.rows, k.rows, v.rows
            )));
        }
        let Heads {
            heads: nh,
            kv_heads,
            head_dim: hd,
        } = heads;
        let (qw, kw) = (nh * hd, kv_heads * hd);
        let group = nh / kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0.0f32; q.rows * qw];
        // One task per (new row, query head): its output is one contiguous head.
        for_each_chunk(&mut out, hd, |task, y| {
            let (r, h) = (task / nh, task % nh);
            let t = pos0 + r; // keys 0..=t are visible
            let off = (h / group) * hd;
            let qh = &q.data[r * qw + h * hd..][..hd];
            let key = |j: usize| &k.data[j * kw + off..][..hd];
            let val = |j: usize| &v.data[j * kw + off..][..hd];
            let mut p: Vec<f32> = (0..=t)
                .map(|j| qh.iter().zip(key(j)).map(|(a, b)| a * b).sum::<f32>() * scale)
                .collect();
            let mx = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for s in &mut p {
                *s = exp(*s - mx);
                sum += *s;
            }
            for (j, &pj) in p.iter().enumerate() {
                y.iter_mut().zip(val(j)).for_each(|(a, &b)| *a += pj * b);
            }
            let inv = 1.0 / sum;
            y.iter_mut().for_each(|a| *a *= inv);
            if xsa {
                let vt = val(t);
                let norm = vt.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                let dot: f32 = y.iter().zip(vt).map(|(a, b)| a * b / norm).sum();
                y.iter_mut().zip(vt).for_each(|(a, b)| *a -= dot * b / norm);
            }
        });
        Ok(CpuTensor::new(q.rows, qw, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{AttnGeometry, Backend, RopeSpec};

    fn tensor(rows: usize, cols: usize, s: f32) -> CpuTensor {
        let data = (0..rows * cols)
            .map(|i| (i as f32 * s).sin() * 2.0)
            .collect();
        CpuTensor::new(rows, cols, data)
    }

    fn rows(t: &CpuTensor, from: usize) -> CpuTensor {
        CpuTensor::new(t.rows - from, t.cols, t.data[from * t.cols..].to_vec())
    }

    /// The last rows of the whole-window ops, computed from a cache of the earlier rows.
    #[test]
    fn cached_ops_match_the_whole_window_ops() {
        let be = CpuBackend::new();
        for (nh, kvh, hd) in [(4, 2, 8), (2, 2, 16), (4, 1, 20)] {
            for xsa in [false, true] {
                let (t_len, pos0) = (37, 30);
                let g = AttnGeometry {
                    batch: 1,
                    seq: t_len,
                    heads: nh,
                    kv_heads: kvh,
                    head_dim: hd,
                };
                let rope = RopeSpec {
                    base: 100.0,
                    dims: hd / 2 * 2 - 2,
                };
                let gain = tensor(1, nh, 0.5);
                let (mut q, mut k) = (tensor(t_len, nh * hd, 0.37), tensor(t_len, kvh * hd, 0.91));
                let v = tensor(t_len, kvh * hd, 0.13);
                let (mut q_new, mut k_new) = (rows(&q, pos0), rows(&k, pos0));
                be.qk_norm_rope(&mut q, &mut k, &g, &rope, &gain, 1e-6)
                    .unwrap();
                let want = be.attention(&q, &k, &v, &g, xsa).unwrap();
                let heads = Heads {
                    heads: nh,
                    kv_heads: kvh,
                    head_dim: hd,
                };
                let table = RopeTable::new(t_len, rope.dims, rope.base);
                be.qk_norm_rope_at(&mut q_new, &mut k_new, heads, pos0, &table, &gain, 1e-6)
                    .unwrap();
                assert_eq!(q_new, rows(&q, pos0), "same arithmetic as qk_norm_rope");
                assert_eq!(k_new, rows(&k, pos0));
                let got = be
                    .attention_cached(&q_new, &k, &v, heads, pos0, xsa)
                    .unwrap();
                let err = super::super::max_abs_diff(&got.data, &rows(&want, pos0).data);
                assert!(err < 1e-5, "{nh}/{kvh}/{hd} xsa={xsa}: max err {err}");
                assert!(be
                    .attention_cached(&q_new, &k, &v, heads, pos0 + 1, xsa)
                    .is_err());
            }
        }
    }
}
