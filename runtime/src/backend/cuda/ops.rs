//! Kernel launchers: argument packing and launch geometry for each `cuda/*.cu` entry point.
//! Shapes are validated by the `Backend` impl in `mod.rs` before these are called; these
//! functions only check what the kernels themselves assume (e.g. supported head dims, sizes
//! that the kernels index with `int`). The launch geometry is computed by pure functions
//! (`*_config`) so it is unit-tested without a GPU.

use super::gpu::{Gpu, KArg};
use super::CudaBackend;
use crate::backend::AttnGeometry;
use crate::model::Activation;
use crate::{Error, Result};
use cudarc::driver::LaunchConfig;

/// Block size of the element-wise and one-block-per-row kernels: a multiple of 32 (the block
/// reductions in rms_norm.cu and head.cu use full-mask warp shuffles and 32 shared slots).
pub(super) const THREADS: u32 = 256;
const _: () = assert!(THREADS.is_multiple_of(32) && THREADS <= 1024);
/// Queries per attention block (one thread each); must equal `BR` in cuda/attention.cu.
pub(super) const ATTN_QUERIES_PER_BLOCK: usize = 64;
/// Queries per tensor-core attention block; must equal `TC_BR` in cuda/attention_tc.cu.
pub(super) const ATTN_TC_QUERIES_PER_BLOCK: usize = 64;
/// Threads per tensor-core attention block: `TC_WARPS` (4) warps of 16 queries each.
const ATTN_TC_THREADS: u32 = 128;
/// Warps (one per `(row, head)`) per qk_norm_rope block.
const QK_WARPS_PER_BLOCK: usize = 4;

pub(super) fn config(grid: (u32, u32, u32), block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One thread per element, `THREADS` per block.
pub(super) fn grid_1d(n: usize) -> Result<LaunchConfig> {
    let blocks = n.div_ceil(THREADS as usize);
    if blocks > i32::MAX as usize {
        return Err(Error::Backend(format!("{n} elements exceed one launch")));
    }
    Ok(config((blocks as u32, 1, 1), THREADS))
}

/// One block of `THREADS` per row (the kernels index rows with `int`).
pub(super) fn grid_rows(rows: usize) -> Result<LaunchConfig> {
    let r = int(rows, "rows")?;
    Ok(config((r as u32, 1, 1), THREADS))
}

/// One warp per `(row, head)`. The kernel computes `rows * heads` and the warp index in `int`,
/// so the padded warp count must fit.
pub(super) fn qk_norm_rope_config(rows: usize, heads: usize) -> Result<LaunchConfig> {
    let warps = rows
        .checked_mul(heads)
        .ok_or_else(|| Error::Backend("qk_norm_rope: rows * heads overflows".into()))?;
    let blocks = warps.div_ceil(QK_WARPS_PER_BLOCK);
    int(blocks * QK_WARPS_PER_BLOCK, "rows * heads")?;
    Ok(config(
        (blocks as u32, 1, 1),
        32 * QK_WARPS_PER_BLOCK as u32,
    ))
}

/// Grid `(query tiles, heads, windows)`, one thread per query of a tile; `None` when empty.
fn attention_config(g: &AttnGeometry) -> Result<Option<LaunchConfig>> {
    tiles_config(g, g.heads)
}

/// A tile grid of [`tiles_config`] for the tensor-core kernels (cuda/attention_tc.cu): the same
/// 64-row tiles, [`ATTN_TC_THREADS`] threads per block.
pub(super) fn tc_blocks(mut c: LaunchConfig) -> LaunchConfig {
    const _: () = assert!(ATTN_TC_QUERIES_PER_BLOCK == ATTN_QUERIES_PER_BLOCK);
    c.block_dim = (ATTN_TC_THREADS, 1, 1);
    c
}

/// The tensor-core forward's grid.
fn attention_tc_config(g: &AttnGeometry) -> Result<Option<LaunchConfig>> {
    Ok(tiles_config(g, g.heads)?.map(tc_blocks))
}

/// Grid `(64-row tiles, heads, windows)` with one thread per row of a tile (the attention
/// kernels: `heads` query heads, or KV heads for the dK/dV kernel); `None` when empty.
pub(super) fn tiles_config(g: &AttnGeometry, heads: usize) -> Result<Option<LaunchConfig>> {
    if g.batch == 0 || g.seq == 0 || heads == 0 {
        return Ok(None);
    }
    // gridDim.y and gridDim.z are limited to 65535.
    if heads > 65_535 || g.batch > 65_535 {
        return Err(Error::Backend(
            "attention: too many heads or windows".into(),
        ));
    }
    // The kernel computes `(tile + 1) * BR` and the query index in `int`.
    int(g.seq + ATTN_QUERIES_PER_BLOCK, "seq")?;
    let tiles = g.seq.div_ceil(ATTN_QUERIES_PER_BLOCK) as u32;
    Ok(Some(config(
        (tiles, heads as u32, g.batch as u32),
        ATTN_QUERIES_PER_BLOCK as u32,
    )))
}

/// The entry point of a per-head-dim kernel family for `hd`.
pub(super) fn by_head_dim<'a, F>(list: &'a [(usize, F)], hd: usize, op: &str) -> Result<&'a F> {
    list.iter()
        .find(|(d, _)| *d == hd)
        .map(|(_, f)| f)
        .ok_or_else(|| {
            Error::Backend(format!(
                "{op}: head_dim {hd} not supported by the CUDA kernel (supported: {:?})",
                super::modules::ATTENTION_HEAD_DIMS
            ))
        })
}

pub(super) fn int(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Backend(format!("{what} = {v} does not fit in i32")))
}

impl<G: Gpu> CudaBackend<G> {
    /// The tensor-core entry point for head dim `hd` from `list`, when this backend uses tensor
    /// cores for attention and `cuda/attention_tc.cu` has that head dim.
    pub(super) fn tc_kernel<'a>(
        &self,
        list: &'a [(usize, G::Func)],
        hd: usize,
    ) -> Option<&'a G::Func> {
        if !self.tc_attention {
            return None;
        }
        list.iter().find(|(d, _)| *d == hd).map(|(_, f)| f)
    }

    /// Launches `f` with `args`; errors become `Error::Backend("cuda launch {name}: ...")`.
    ///
    /// # Safety
    /// [`Gpu::launch`]'s contract: `args` match the kernel's parameters, buffers are large
    /// enough for what it touches under `cfg`.
    pub(super) unsafe fn run(
        &self,
        f: &G::Func,
        name: &str,
        cfg: LaunchConfig,
        args: &mut [KArg<'_, G>],
    ) -> Result<()> {
        self.traffic.launch();
        // SAFETY: the caller's contract.
        unsafe { self.gpu.launch(f, name, cfg, args) }
    }

    /// `out[i] = table[ids[i]]` for `[*, cols]` matrices.
    pub(super) fn launch_gather(
        &self,
        table: &G::F32,
        ids: &G::U32,
        out: &mut G::F32,
        n: usize,
        cols: usize,
    ) -> Result<()> {
        if n == 0 || cols == 0 {
            return Ok(());
        }
        let (ni, ci) = (int(n, "rows")?, int(cols, "cols")?);
        // SAFETY: matches `gather_rows` in cuda/embedding.cu; ids < table rows (checked by
        // the caller), `out` holds n * cols.
        unsafe {
            self.run(
                &self.kernels.gather_rows,
                "gather_rows",
                grid_rows(n)?,
                &mut [
                    KArg::F32(table),
                    KArg::U32(ids),
                    KArg::F32Mut(out),
                    KArg::I32(ni),
                    KArg::I32(ci),
                ],
            )
        }
    }

    pub(super) fn launch_rms_norm(
        &self,
        x: &G::F32,
        y: &mut G::F32,
        rows: usize,
        cols: usize,
        eps: f32,
        scale: f32,
    ) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let (ri, ci) = (int(rows, "rows")?, int(cols, "cols")?);
        // SAFETY: matches `rms_norm` in cuda/rms_norm.cu; x and y hold rows * cols.
        unsafe {
            self.run(
                &self.kernels.rms_norm,
                "rms_norm",
                grid_rows(rows)?,
                &mut [
                    KArg::F32(x),
                    KArg::F32Mut(y),
                    KArg::I32(ri),
                    KArg::I32(ci),
                    KArg::Float(eps),
                    KArg::Float(scale),
                ],
            )
        }
    }

    pub(super) fn launch_resid_mix(
        &self,
        x: &G::F32,
        x0: &G::F32,
        mix: &G::F32,
        y: &mut G::F32,
        n: usize,
        cols: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let (nl, ci) = (n as i64, int(cols, "cols")?);
        // SAFETY: matches `resid_mix` in cuda/elementwise.cu; x, x0, y hold n, mix 2 * cols.
        unsafe {
            self.run(
                &self.kernels.resid_mix,
                "resid_mix",
                grid_1d(n)?,
                &mut [
                    KArg::F32(x),
                    KArg::F32(x0),
                    KArg::F32(mix),
                    KArg::F32Mut(y),
                    KArg::I64(nl),
                    KArg::I32(ci),
                ],
            )
        }
    }

    pub(super) fn launch_add_scaled(
        &self,
        x: &mut G::F32,
        y: &G::F32,
        scale: &G::F32,
        n: usize,
        cols: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let (nl, ci) = (n as i64, int(cols, "cols")?);
        // SAFETY: matches `add_scaled` in cuda/elementwise.cu; x, y hold n, scale cols.
        unsafe {
            self.run(
                &self.kernels.add_scaled,
                "add_scaled",
                grid_1d(n)?,
                &mut [
                    KArg::F32Mut(x),
                    KArg::F32(y),
                    KArg::F32(scale),
                    KArg::I64(nl),
                    KArg::I32(ci),
                ],
            )
        }
    }

    pub(super) fn launch_axpy(&self, x: &mut G::F32, y: &G::F32, s: f32, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        // SAFETY: matches `axpy` in cuda/elementwise.cu; x and y hold n.
        unsafe {
            self.run(
                &self.kernels.axpy,
                "axpy",
                grid_1d(n)?,
                &mut [
                    KArg::F32Mut(x),
                    KArg::F32(y),
                    KArg::Float(s),
                    KArg::I64(n as i64),
                ],
            )
        }
    }

    pub(super) fn launch_smear(
        &self,
        x: &G::F32,
        gate: &G::F32,
        y: &mut G::F32,
        n: usize,
        cols: usize,
        seq: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let (nl, ci, si) = (n as i64, int(cols, "cols")?, int(seq, "seq")?);
        // SAFETY: matches `smear` in cuda/smear.cu; x, y hold n, gate cols; seq > 0.
        unsafe {
            self.run(
                &self.kernels.smear,
                "smear",
                grid_1d(n)?,
                &mut [
                    KArg::F32(x),
                    KArg::F32(gate),
                    KArg::F32Mut(y),
                    KArg::I64(nl),
                    KArg::I32(ci),
                    KArg::I32(si),
                ],
            )
        }
    }

    /// Per-head norm + RoPE + optional gain, in place on `t` `[rows, heads*hd]`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch_qk_norm_rope(
        &self,
        t: &mut G::F32,
        cos: &G::F32,
        sin: &G::F32,
        gain: Option<&G::F32>,
        rows: usize,
        heads: usize,
        hd: usize,
        seq: usize,
        half: usize,
        eps: f32,
    ) -> Result<()> {
        if rows == 0 || heads == 0 {
            return Ok(());
        }
        let cfg = qk_norm_rope_config(rows, heads)?;
        // SAFETY: matches `qk_norm_rope` in cuda/qk_norm_rope.cu; t holds rows * heads * hd,
        // cos/sin seq * half, gain (when given) heads; a null gain is skipped by the kernel.
        unsafe {
            self.run(
                &self.kernels.qk_norm_rope,
                "qk_norm_rope",
                cfg,
                &mut [
                    KArg::F32Mut(t),
                    KArg::F32(cos),
                    KArg::F32(sin),
                    gain.map_or(KArg::Null, KArg::F32),
                    KArg::I32(int(rows, "rows")?),
                    KArg::I32(int(heads, "heads")?),
                    KArg::I32(int(hd, "head_dim")?),
                    KArg::I32(int(seq, "seq")?),
                    KArg::I32(int(half, "rope half")?),
                    KArg::Float(eps),
                ],
            )
        }
    }

    /// Causal GQA attention into `out` `[batch*seq, heads*hd]`.
    pub(super) fn launch_attention(
        &self,
        q: &G::F32,
        k: &G::F32,
        v: &G::F32,
        out: &mut G::F32,
        geom: &AttnGeometry,
        xsa: bool,
    ) -> Result<()> {
        let (f, cfg) = match self.tc_kernel(&self.kernels.attention_tc, geom.head_dim) {
            Some(f) => (f, attention_tc_config(geom)?),
            None => (
                by_head_dim(&self.kernels.attention, geom.head_dim, "attention")?,
                attention_config(geom)?,
            ),
        };
        let Some(cfg) = cfg else {
            return Ok(());
        };
        // SAFETY: matches `attention_hd*` in cuda/attention.cu and `attention_tc_hd*` in
        // cuda/attention_tc.cu (same parameters); shapes checked by the caller
        // (check_qkv: whole query groups per KV head, kv_heads > 0).
        unsafe {
            self.run(
                f,
                "attention",
                cfg,
                &mut [
                    KArg::F32(q),
                    KArg::F32(k),
                    KArg::F32(v),
                    KArg::F32Mut(out),
                    KArg::I32(int(geom.seq, "seq")?),
                    KArg::I32(int(geom.heads, "heads")?),
                    KArg::I32(int(geom.kv_heads, "kv_heads")?),
                    KArg::I32(xsa as i32),
                ],
            )
        }
    }

    pub(super) fn launch_activation(
        &self,
        x: &G::F32,
        y: &mut G::F32,
        n: usize,
        act: Activation,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let nl = n as i64;
        let cfg = grid_1d(n)?;
        // SAFETY: match `relu2` / `leaky_relu2` in cuda/activation.cu; x and y hold n.
        unsafe {
            match act {
                Activation::Relu2 => self.run(
                    &self.kernels.relu2,
                    "relu2",
                    cfg,
                    &mut [KArg::F32(x), KArg::F32Mut(y), KArg::I64(nl)],
                ),
                Activation::LeakyRelu2 { slope } => self.run(
                    &self.kernels.leaky_relu2,
                    "leaky_relu2",
                    cfg,
                    &mut [
                        KArg::F32(x),
                        KArg::F32Mut(y),
                        KArg::I64(nl),
                        KArg::Float(slope),
                    ],
                ),
            }
        }
    }

    /// Soft-caps `logits` `[rows, vocab]` in place and writes `nll[r]`.
    pub(super) fn launch_softcap_nll(
        &self,
        logits: &mut G::F32,
        targets: &G::U32,
        nll: &mut G::F32,
        rows: usize,
        vocab: usize,
        cap: f32,
    ) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let (ri, vi) = (int(rows, "rows")?, int(vocab, "vocab")?);
        // SAFETY: matches `softcap_nll` in cuda/head.cu; targets < vocab (checked by the
        // caller), logits hold rows * vocab, targets and nll rows.
        unsafe {
            self.run(
                &self.kernels.softcap_nll,
                "softcap_nll",
                grid_rows(rows)?,
                &mut [
                    KArg::F32Mut(logits),
                    KArg::U32(targets),
                    KArg::F32Mut(nll),
                    KArg::I32(ri),
                    KArg::I32(vi),
                    KArg::Float(cap),
                ],
            )
        }
    }

    /// Replaces `logits` `[rows, vocab]` by soft-capped log-probabilities, in place.
    pub(super) fn launch_log_softmax(
        &self,
        logits: &mut G::F32,
        rows: usize,
        vocab: usize,
        cap: f32,
    ) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let (ri, vi) = (int(rows, "rows")?, int(vocab, "vocab")?);
        // SAFETY: matches `softcap_log_softmax` in cuda/head.cu; logits hold rows * vocab.
        unsafe {
            self.run(
                &self.kernels.softcap_log_softmax,
                "softcap_log_softmax",
                grid_rows(rows)?,
                &mut [
                    KArg::F32Mut(logits),
                    KArg::I32(ri),
                    KArg::I32(vi),
                    KArg::Float(cap),
                ],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str) -> &'static str {
        super::super::modules::SOURCES
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    }

    /// The value of `#define NAME value` in a kernel source.
    fn define(src: &str, name: &str) -> usize {
        let key = format!("#define {name} ");
        let line = src.lines().find(|l| l.starts_with(&key)).unwrap();
        line[key.len()..].trim().parse().unwrap()
    }

    #[test]
    fn block_sizes_match_the_kernels_assumptions() {
        // attention.cu's tile height and __launch_bounds__ are BR.
        assert_eq!(define(source("attention.cu"), "BR"), ATTN_QUERIES_PER_BLOCK);
        assert!(source("attention.cu").contains("__launch_bounds__(BR)"));
        let qk = qk_norm_rope_config(5, 3).unwrap();
        assert_eq!(qk.block_dim.0 % 32, 0);
        // attention_tc.cu: tile height, warps, launch bounds.
        let tc = source("attention_tc.cu");
        assert_eq!(define(tc, "TC_BR"), ATTN_TC_QUERIES_PER_BLOCK);
        assert_eq!(define(tc, "TC_WARPS") * 16, ATTN_TC_QUERIES_PER_BLOCK);
        assert_eq!(define(tc, "TC_WARPS") * 32, ATTN_TC_THREADS as usize);
        assert!(tc.contains("__launch_bounds__(TC_WARPS * 32)"));
        let g = AttnGeometry {
            batch: 2,
            seq: 130,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
        };
        let c = attention_tc_config(&g).unwrap().unwrap();
        assert_eq!(c.grid_dim, (3, 4, 2));
        assert_eq!(c.block_dim, (ATTN_TC_THREADS, 1, 1));
    }

    #[test]
    fn grid_1d_covers_every_element_once() {
        for (n, blocks) in [(1, 1), (256, 1), (257, 2), (1 << 20, 4096)] {
            let c = grid_1d(n).unwrap();
            assert_eq!(c.grid_dim, (blocks, 1, 1), "n = {n}");
            assert_eq!(c.block_dim, (THREADS, 1, 1));
            assert!(c.grid_dim.0 as usize * THREADS as usize >= n);
        }
        assert!(grid_1d(THREADS as usize * (i32::MAX as usize + 1)).is_err());
        assert_eq!(grid_rows(7).unwrap().grid_dim, (7, 1, 1));
        assert!(grid_rows(i32::MAX as usize + 1).is_err());
    }

    #[test]
    fn qk_norm_rope_has_one_warp_per_row_head() {
        for (rows, heads) in [(1, 1), (3, 4), (2048, 8), (45 * 3, 2)] {
            let c = qk_norm_rope_config(rows, heads).unwrap();
            let warps = c.grid_dim.0 as usize * c.block_dim.0 as usize / 32;
            assert!(warps >= rows * heads && warps < rows * heads + QK_WARPS_PER_BLOCK);
        }
        // The kernel's `int` row*head arithmetic must not overflow.
        assert!(qk_norm_rope_config(1 << 20, 1 << 12).is_err());
        assert!(qk_norm_rope_config(usize::MAX, 2).is_err());
    }

    #[test]
    fn attention_grid_is_tiles_heads_windows() {
        let g = |batch, seq, heads| AttnGeometry {
            batch,
            seq,
            heads,
            kv_heads: 1,
            head_dim: 64,
        };
        let c = attention_config(&g(3, 1024, 8)).unwrap().unwrap();
        assert_eq!(c.grid_dim, (16, 8, 3));
        assert_eq!(c.block_dim, (ATTN_QUERIES_PER_BLOCK as u32, 1, 1));
        assert_eq!(
            c.shared_mem_bytes, 0,
            "the kernel's shared memory is static"
        );
        assert_eq!(
            attention_config(&g(1, 1, 1)).unwrap().unwrap().grid_dim,
            (1, 1, 1)
        );
        assert_eq!(
            attention_config(&g(1, 65, 2)).unwrap().unwrap().grid_dim,
            (2, 2, 1)
        );
        assert!(attention_config(&g(0, 64, 8)).unwrap().is_none());
        assert!(attention_config(&g(2, 0, 8)).unwrap().is_none());
        assert!(attention_config(&g(1, 64, 70_000)).is_err());
        assert!(attention_config(&g(70_000, 64, 8)).is_err());
        assert!(attention_config(&g(1, i32::MAX as usize, 8)).is_err());
    }

    /// `(HD, BC)` of every `MACRO(HD, BC)` line of a kernel source.
    fn entries(src: &str, mac: &str) -> Vec<(usize, usize)> {
        let key = format!("{mac}(");
        src.lines()
            .filter(|l| l.starts_with(&key))
            .map(|l| {
                let args: Vec<usize> = l[key.len()..l.len() - 1]
                    .split(',')
                    .map(|a| a.trim().parse().unwrap())
                    .collect();
                (args[0], args[1])
            })
            .collect()
    }

    /// The attention kernels keep their tiles in static shared memory: at most 48 KiB per block
    /// for every instantiated head dim, and the instantiated dims are the ones the launchers
    /// offer, forward and backward alike.
    #[test]
    fn attention_shared_memory_fits_48k() {
        let fwd = source("attention.cu");
        let br = define(fwd, "BR");
        let mut hds = Vec::new();
        for (hd, bc) in entries(fwd, "ATTENTION_ENTRY") {
            // K and V tiles and a score column per query.
            let bytes = 4 * (2 * bc * hd + bc * br);
            assert!(bytes <= 48 * 1024, "hd {hd}: {bytes} B of shared memory");
            hds.push(hd);
        }
        assert_eq!(hds, super::super::modules::ATTENTION_HEAD_DIMS);
        let tc = source("attention_tc.cu");
        let (bc, pad, warps) = (
            define(tc, "TC_BC"),
            define(tc, "TC_PAD"),
            define(tc, "TC_WARPS"),
        );
        let tc_hds: Vec<usize> = tc
            .lines()
            .filter_map(|l| l.strip_prefix("ATTENTION_TC_ENTRY("))
            .map(|l| l.trim_end_matches(')').parse().unwrap())
            .collect();
        for &hd in &tc_hds {
            // Two column tiles (K and V, or Q and dO), per warp a score tile and a staging
            // tile, and for dK/dV the tile's lse and D.
            let bytes = 4
                * (2 * bc * (hd + pad)
                    + warps * 16 * (bc + pad)
                    + warps * 16 * (hd + pad)
                    + 2 * bc);
            assert!(bytes <= 48 * 1024, "tc hd {hd}: {bytes} B of shared memory");
            // wmma: tiles of 16 keys and 8-deep k-steps, 32-byte aligned rows.
            assert!(hd % 16 == 0 && bc % 16 == 0 && ((hd + pad) * 4 * 8) % 32 == 0);
        }
        assert_eq!(tc_hds, super::super::modules::ATTENTION_TC_HEAD_DIMS);
        let bwd = source("attention_backward.cu");
        assert_eq!(define(bwd, "BR"), ATTN_QUERIES_PER_BLOCK);
        let mut hds = Vec::new();
        for (hd, bc) in entries(bwd, "ATTENTION_BWD_ENTRY") {
            // dQ: K and V tiles; dK/dV: Q and dO tiles plus lse and D per query.
            let bytes = (4 * 2 * bc * hd).max(4 * (2 * bc * hd + 2 * bc));
            assert!(
                bytes <= 48 * 1024,
                "backward hd {hd}: {bytes} B of shared memory"
            );
            hds.push(hd);
        }
        assert_eq!(hds, super::super::modules::ATTENTION_HEAD_DIMS);
    }
}
