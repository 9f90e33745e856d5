//! Kernel launchers: argument packing and launch geometry for each `cuda/*.cu` entry point.
//! Shapes are validated by the `Backend` impl in `mod.rs` before these are called; these
//! functions only check what the kernels themselves assume (e.g. supported head dims).

use super::device::CudaResultExt;
use super::CudaBackend;
use crate::model::Activation;
use crate::{Error, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

const THREADS: u32 = 256;

fn grid_1d(n: usize) -> Result<LaunchConfig> {
    let blocks = n.div_ceil(THREADS as usize);
    if blocks > i32::MAX as usize {
        return Err(Error::Backend(format!("{n} elements exceed one launch")));
    }
    Ok(LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn grid_rows(rows: usize, threads: u32) -> Result<LaunchConfig> {
    if rows > i32::MAX as usize {
        return Err(Error::Backend(format!("{rows} rows exceed one launch")));
    }
    Ok(LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn int(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Backend(format!("{what} = {v} does not fit in i32")))
}

impl CudaBackend {
    /// Uninitialised device buffer of `n` floats (at least one, so empty tensors are valid).
    pub(super) fn alloc(&self, n: usize) -> Result<CudaSlice<f32>> {
        // SAFETY: every caller fully overwrites the first `n` values before reading them.
        unsafe { self.dev.stream.alloc::<f32>(n.max(1)) }.op("alloc")
    }

    /// Uploads `u32` indices (at least one element, padded with 0).
    pub(super) fn upload_u32(&self, v: &[u32]) -> Result<CudaSlice<u32>> {
        if v.is_empty() {
            return self.dev.stream.clone_htod(&[0u32]).op("upload ids");
        }
        self.dev.stream.clone_htod(v).op("upload ids")
    }

    /// `out[i] = table[ids[i]]` for `[*, cols]` matrices.
    pub(super) fn launch_gather(
        &self,
        table: &CudaSlice<f32>,
        ids: &CudaSlice<u32>,
        out: &mut CudaSlice<f32>,
        n: usize,
        cols: usize,
    ) -> Result<()> {
        if n == 0 || cols == 0 {
            return Ok(());
        }
        let (ni, ci) = (int(n, "rows")?, int(cols, "cols")?);
        let cfg = grid_rows(n, THREADS)?;
        let s = &self.dev.stream;
        let mut b = s.launch_builder(&self.kernels.gather_rows);
        b.arg(table).arg(ids).arg(out).arg(&ni).arg(&ci);
        // SAFETY: argument list matches `gather_rows` in cuda/embedding.cu; ids < table rows.
        unsafe { b.launch(cfg) }.op("gather_rows").map(|_| ())
    }

    pub(super) fn launch_rms_norm(
        &self,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        rows: usize,
        cols: usize,
        eps: f32,
        scale: f32,
    ) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let (ri, ci) = (int(rows, "rows")?, int(cols, "cols")?);
        let cfg = grid_rows(rows, THREADS)?;
        let mut b = self.dev.stream.launch_builder(&self.kernels.rms_norm);
        b.arg(x).arg(y).arg(&ri).arg(&ci).arg(&eps).arg(&scale);
        // SAFETY: matches `rms_norm` in cuda/rms_norm.cu.
        unsafe { b.launch(cfg) }.op("rms_norm").map(|_| ())
    }

    pub(super) fn launch_resid_mix(
        &self,
        x: &CudaSlice<f32>,
        x0: &CudaSlice<f32>,
        mix: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        n: usize,
        cols: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let (nl, ci) = (n as i64, int(cols, "cols")?);
        let mut b = self.dev.stream.launch_builder(&self.kernels.resid_mix);
        b.arg(x).arg(x0).arg(mix).arg(y).arg(&nl).arg(&ci);
        // SAFETY: matches `resid_mix` in cuda/elementwise.cu.
        unsafe { b.launch(grid_1d(n)?) }.op("resid_mix").map(|_| ())
    }

    pub(super) fn launch_add_scaled(
        &self,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        scale: &CudaSlice<f32>,
        n: usize,
        cols: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let (nl, ci) = (n as i64, int(cols, "cols")?);
        let mut b = self.dev.stream.launch_builder(&self.kernels.add_scaled);
        b.arg(x).arg(y).arg(scale).arg(&nl).arg(&ci);
        // SAFETY: matches `add_scaled` in cuda/elementwise.cu.
        unsafe { b.launch(grid_1d(n)?) }
            .op("add_scaled")
            .map(|_| ())
    }

    pub(super) fn launch_axpy(
        &self,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        s: f32,
        n: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let nl = n as i64;
        let mut b = self.dev.stream.launch_builder(&self.kernels.axpy);
        b.arg(x).arg(y).arg(&s).arg(&nl);
        // SAFETY: matches `axpy` in cuda/elementwise.cu.
        unsafe { b.launch(grid_1d(n)?) }.op("axpy").map(|_| ())
    }

    pub(super) fn launch_smear(
        &self,
        x: &CudaSlice<f32>,
        gate: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        n: usize,
        cols: usize,
        seq: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let (nl, ci, si) = (n as i64, int(cols, "cols")?, int(seq, "seq")?);
        let mut b = self.dev.stream.launch_builder(&self.kernels.smear);
        b.arg(x).arg(gate).arg(y).arg(&nl).arg(&ci).arg(&si);
        // SAFETY: matches `smear` in cuda/smear.cu.
        unsafe { b.launch(grid_1d(n)?) }.op("smear").map(|_| ())
    }

    /// Per-head norm + RoPE + optional gain, in place on `t` `[rows, heads*hd]`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch_qk_norm_rope(
        &self,
        t: &mut CudaSlice<f32>,
        cos: &CudaSlice<f32>,
        sin: &CudaSlice<f32>,
        gain: Option<&CudaSlice<f32>>,
        rows: usize,
        heads: usize,
        hd: usize,
        seq: usize,
        half: usize,
        eps: f32,
    ) -> Result<()> {
        let warps = rows * heads;
        if warps == 0 {
            return Ok(());
        }
        let blocks = warps.div_ceil(4);
        let cfg = LaunchConfig {
            grid_dim: (int(blocks, "blocks")? as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let (ri, hi, di, si, fi) = (
            int(rows, "rows")?,
            int(heads, "heads")?,
            int(hd, "head_dim")?,
            int(seq, "seq")?,
            int(half, "rope half")?,
        );
        let null: u64 = 0;
        let mut b = self.dev.stream.launch_builder(&self.kernels.qk_norm_rope);
        b.arg(t).arg(cos).arg(sin);
        match gain {
            Some(g) => b.arg(g),
            // A null device pointer: the kernel skips the gain.
            None => b.arg(&null),
        };
        b.arg(&ri).arg(&hi).arg(&di).arg(&si).arg(&fi).arg(&eps);
        // SAFETY: matches `qk_norm_rope` in cuda/qk_norm_rope.cu.
        unsafe { b.launch(cfg) }.op("qk_norm_rope").map(|_| ())
    }

    /// Causal GQA attention into `out` `[batch*seq, heads*hd]`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch_attention(
        &self,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        geom: &crate::backend::AttnGeometry,
        xsa: bool,
    ) -> Result<()> {
        let f = self
            .kernels
            .attention
            .iter()
            .find(|(hd, _)| *hd == geom.head_dim)
            .map(|(_, f)| f)
            .ok_or_else(|| {
                Error::Backend(format!(
                    "attention: head_dim {} not supported by the CUDA kernel (supported: {:?})",
                    geom.head_dim,
                    super::modules::ATTENTION_HEAD_DIMS
                ))
            })?;
        if geom.batch == 0 || geom.seq == 0 || geom.heads == 0 {
            return Ok(());
        }
        if geom.heads > 65_535 || geom.batch > 65_535 {
            return Err(Error::Backend(
                "attention: too many heads or windows".into(),
            ));
        }
        let cfg = LaunchConfig {
            grid_dim: (
                int(geom.seq.div_ceil(64), "query tiles")? as u32,
                geom.heads as u32,
                geom.batch as u32,
            ),
            block_dim: (64, 1, 1),
            shared_mem_bytes: 0,
        };
        let (si, hi, ki, xi) = (
            int(geom.seq, "seq")?,
            int(geom.heads, "heads")?,
            int(geom.kv_heads, "kv_heads")?,
            xsa as i32,
        );
        let mut b = self.dev.stream.launch_builder(f);
        b.arg(q)
            .arg(k)
            .arg(v)
            .arg(out)
            .arg(&si)
            .arg(&hi)
            .arg(&ki)
            .arg(&xi);
        // SAFETY: matches `attention_hd*` in cuda/attention.cu; shapes checked by the caller.
        unsafe { b.launch(cfg) }.op("attention").map(|_| ())
    }

    pub(super) fn launch_activation(
        &self,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        n: usize,
        act: Activation,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let nl = n as i64;
        let cfg = grid_1d(n)?;
        let s = &self.dev.stream;
        match act {
            Activation::Relu2 => {
                let mut b = s.launch_builder(&self.kernels.relu2);
                b.arg(x).arg(y).arg(&nl);
                // SAFETY: matches `relu2` in cuda/activation.cu.
                unsafe { b.launch(cfg) }.op("relu2").map(|_| ())
            }
            Activation::LeakyRelu2 { slope } => {
                let mut b = s.launch_builder(&self.kernels.leaky_relu2);
                b.arg(x).arg(y).arg(&nl).arg(&slope);
                // SAFETY: matches `leaky_relu2` in cuda/activation.cu.
                unsafe { b.launch(cfg) }.op("leaky_relu2").map(|_| ())
            }
        }
    }

    /// Soft-caps `logits` `[rows, vocab]` in place and writes `nll[r]` (offset `out_off`).
    pub(super) fn launch_softcap_nll(
        &self,
        logits: &mut CudaSlice<f32>,
        targets: &CudaSlice<u32>,
        nll: &mut CudaSlice<f32>,
        rows: usize,
        vocab: usize,
        cap: f32,
    ) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let (ri, vi) = (int(rows, "rows")?, int(vocab, "vocab")?);
        let mut b = self.dev.stream.launch_builder(&self.kernels.softcap_nll);
        b.arg(logits)
            .arg(targets)
            .arg(nll)
            .arg(&ri)
            .arg(&vi)
            .arg(&cap);
        // SAFETY: matches `softcap_nll` in cuda/head.cu; targets < vocab checked by the caller.
        unsafe { b.launch(grid_rows(rows, THREADS)?) }
            .op("softcap_nll")
            .map(|_| ())
    }

    /// Replaces `logits` `[rows, vocab]` by soft-capped log-probabilities, in place.
    pub(super) fn launch_log_softmax(
        &self,
        logits: &mut CudaSlice<f32>,
        rows: usize,
        vocab: usize,
        cap: f32,
    ) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let (ri, vi) = (int(rows, "rows")?, int(vocab, "vocab")?);
        let mut b = self
            .dev
            .stream
            .launch_builder(&self.kernels.softcap_log_softmax);
        b.arg(logits).arg(&ri).arg(&vi).arg(&cap);
        // SAFETY: matches `softcap_log_softmax` in cuda/head.cu.
        unsafe { b.launch(grid_rows(rows, THREADS)?) }
            .op("softcap_log_softmax")
            .map(|_| ())
    }
}
