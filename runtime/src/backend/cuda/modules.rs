//! Kernel sources and their compilation.
//!
//! Every `cuda/*.cu` file of the repository is embedded in the binary with `include_str!` and
//! compiled with NVRTC to PTX for the device's architecture (`--gpu-architecture=sm_XY`) the
//! first time a backend is created on a device of that architecture. The PTX is cached per
//! process (keyed by architecture) in a `OnceLock<Mutex<HashMap>>`, so later `CudaBackend`s
//! (e.g. one per test) only load modules into their context and never recompile. The driver
//! JIT-compiles the PTX to SASS at module load.
//!
//! [`compile`] needs only libnvrtc (no driver, no GPU): the `cuda_kernels_compile` test uses it
//! to check every source on CPU-only machines.

use super::device::CudaResultExt;
use super::gpu::Gpu;
use crate::{Error, Result};
use cudarc::driver::{CudaContext, CudaModule};
use cudarc::nvrtc::{CompileOptions, Ptx};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// `(file name, source)` of every kernel file, one kernel family per file.
pub const SOURCES: &[(&str, &str)] = &[
    (
        "embedding.cu",
        include_str!("../../../../cuda/embedding.cu"),
    ),
    ("rms_norm.cu", include_str!("../../../../cuda/rms_norm.cu")),
    (
        "elementwise.cu",
        include_str!("../../../../cuda/elementwise.cu"),
    ),
    ("smear.cu", include_str!("../../../../cuda/smear.cu")),
    (
        "qk_norm_rope.cu",
        include_str!("../../../../cuda/qk_norm_rope.cu"),
    ),
    (
        "attention.cu",
        include_str!("../../../../cuda/attention.cu"),
    ),
    (
        "attention_tc.cu",
        include_str!("../../../../cuda/attention_tc.cu"),
    ),
    (
        "attention_backward.cu",
        include_str!("../../../../cuda/attention_backward.cu"),
    ),
    (
        "activation.cu",
        include_str!("../../../../cuda/activation.cu"),
    ),
    ("head.cu", include_str!("../../../../cuda/head.cu")),
    (
        "newton_schulz.cu",
        include_str!("../../../../cuda/newton_schulz.cu"),
    ),
];

/// Head dims the attention kernel is instantiated for (`attention_hd{N}` entry points).
pub const ATTENTION_HEAD_DIMS: &[usize] = &[4, 8, 16, 32, 64, 128];

/// Head dims the tensor-core attention kernel is instantiated for (`attention_tc_hd{N}`).
pub const ATTENTION_TC_HEAD_DIMS: &[usize] = &[32, 64];

/// Compiles one source to PTX for `arch` (e.g. `sm_90`). Exact IEEE division and square root,
/// no fast math: the float32 path must match the CPU oracle to 1e-4.
/// Errors carry NVRTC's full log.
pub fn compile(name: &str, src: &str, arch: &str) -> Result<Ptx> {
    let opts = CompileOptions {
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        name: Some(name.to_string()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| {
        let detail = match &e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                log.to_string_lossy().into_owned()
            }
            other => format!("{other}"),
        };
        Error::Backend(format!("NVRTC failed on cuda/{name} for {arch}:\n{detail}"))
    })
}

type PtxSet = Arc<Vec<(&'static str, Ptx)>>;

/// PTX of every source for `arch`, compiled once per process.
pub fn ptx_for(arch: &str) -> Result<PtxSet> {
    static CACHE: OnceLock<Mutex<HashMap<String, PtxSet>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    // Hold the lock while compiling: concurrent first users wait instead of compiling twice.
    let mut map = cache
        .lock()
        .map_err(|_| Error::Backend("kernel cache lock poisoned".into()))?;
    if let Some(set) = map.get(arch) {
        return Ok(set.clone());
    }
    let set: Vec<(&'static str, Ptx)> = SOURCES
        .iter()
        .map(|&(name, src)| compile(name, src, arch).map(|p| (name, p)))
        .collect::<Result<_>>()?;
    let set = Arc::new(set);
    map.insert(arch.to_string(), set.clone());
    Ok(set)
}

/// Loads the PTX of every source for `arch` (compiled once per process) into `ctx`, by file
/// name.
pub fn load_modules(
    ctx: &Arc<CudaContext>,
    arch: &str,
) -> Result<HashMap<&'static str, Arc<CudaModule>>> {
    let set = ptx_for(arch)?;
    let mut modules = HashMap::new();
    for (name, ptx) in set.iter() {
        let m = ctx
            .load_module(ptx.clone())
            .op(&format!("load module cuda/{name}"))?;
        modules.insert(*name, m);
    }
    Ok(modules)
}

/// Every kernel entry point, as the device layer's handles (`F` = [`Gpu::Func`]).
pub struct Kernels<F> {
    pub gather_rows: F,
    pub rms_norm: F,
    pub resid_mix: F,
    pub add_scaled: F,
    pub axpy: F,
    pub smear: F,
    pub qk_norm_rope: F,
    /// `(head_dim, attention_hd{head_dim})`.
    pub attention: Vec<(usize, F)>,
    /// `(head_dim, attention_tc_hd{head_dim})`: TF32 tensor cores (the TF32 math mode).
    pub attention_tc: Vec<(usize, F)>,
    /// Tensor-core `attention_tc_stats_hd*`, `attention_tc_bwd_dq_hd*`, `attention_tc_bwd_dkv_hd*`.
    pub attention_tc_stats: Vec<(usize, F)>,
    pub attention_tc_bwd_dq: Vec<(usize, F)>,
    pub attention_tc_bwd_dkv: Vec<(usize, F)>,
    pub relu2: F,
    pub leaky_relu2: F,
    pub softcap_nll: F,
    pub softcap_log_softmax: F,
    // Training (backward) entry points.
    pub rms_norm_backward: F,
    pub relu2_backward: F,
    pub leaky_relu2_backward: F,
    pub smear_backward_dx: F,
    pub smear_backward_gate: F,
    pub mul_cols: F,
    pub col_dot: F,
    pub scatter_rows_sum: F,
    pub qk_norm_rope_backward: F,
    pub softcap_nll_backward: F,
    /// `(head_dim, attention_stats_hd{head_dim})`: forward without XSA, with logsumexp.
    pub attention_stats: Vec<(usize, F)>,
    pub attention_bwd_prep: F,
    /// `(head_dim, attention_bwd_dq_hd{head_dim})`.
    pub attention_bwd_dq: Vec<(usize, F)>,
    /// `(head_dim, attention_bwd_dkv_hd{head_dim})`.
    pub attention_bwd_dkv: Vec<(usize, F)>,
    // Optimizer entry points.
    pub ns_axpby: F,
}

impl<F> Kernels<F> {
    /// Looks every entry point up on `gpu`.
    pub fn load<G: Gpu<Func = F>>(gpu: &G) -> Result<Kernels<F>> {
        Self::load_with(|file, func| gpu.kernel(file, func))
    }

    /// Every entry point the backend uses, each from `f(file, function)` (the one list of
    /// them: tests check it against NVRTC's PTX).
    pub fn load_with(f: impl Fn(&str, &str) -> Result<F>) -> Result<Kernels<F>> {
        let per_dims = |dims: &[usize], file: &str, prefix: &str| -> Result<Vec<(usize, F)>> {
            dims.iter()
                .map(|&hd| Ok((hd, f(file, &format!("{prefix}{hd}"))?)))
                .collect()
        };
        let per_hd = |file: &str, prefix: &str| per_dims(ATTENTION_HEAD_DIMS, file, prefix);
        Ok(Kernels {
            gather_rows: f("embedding.cu", "gather_rows")?,
            rms_norm: f("rms_norm.cu", "rms_norm")?,
            resid_mix: f("elementwise.cu", "resid_mix")?,
            add_scaled: f("elementwise.cu", "add_scaled")?,
            axpy: f("elementwise.cu", "axpy")?,
            smear: f("smear.cu", "smear")?,
            qk_norm_rope: f("qk_norm_rope.cu", "qk_norm_rope")?,
            attention: per_hd("attention.cu", "attention_hd")?,
            attention_tc: per_dims(ATTENTION_TC_HEAD_DIMS, "attention_tc.cu", "attention_tc_hd")?,
            attention_tc_stats: per_dims(
                ATTENTION_TC_HEAD_DIMS,
                "attention_tc.cu",
                "attention_tc_stats_hd",
            )?,
            attention_tc_bwd_dq: per_dims(
                ATTENTION_TC_HEAD_DIMS,
                "attention_tc.cu",
                "attention_tc_bwd_dq_hd",
            )?,
            attention_tc_bwd_dkv: per_dims(
                ATTENTION_TC_HEAD_DIMS,
                "attention_tc.cu",
                "attention_tc_bwd_dkv_hd",
            )?,
            relu2: f("activation.cu", "relu2")?,
            leaky_relu2: f("activation.cu", "leaky_relu2")?,
            softcap_nll: f("head.cu", "softcap_nll")?,
            softcap_log_softmax: f("head.cu", "softcap_log_softmax")?,
            rms_norm_backward: f("rms_norm.cu", "rms_norm_backward")?,
            relu2_backward: f("activation.cu", "relu2_backward")?,
            leaky_relu2_backward: f("activation.cu", "leaky_relu2_backward")?,
            smear_backward_dx: f("smear.cu", "smear_backward_dx")?,
            smear_backward_gate: f("smear.cu", "smear_backward_gate")?,
            mul_cols: f("elementwise.cu", "mul_cols")?,
            col_dot: f("elementwise.cu", "col_dot")?,
            scatter_rows_sum: f("embedding.cu", "scatter_rows_sum")?,
            qk_norm_rope_backward: f("qk_norm_rope.cu", "qk_norm_rope_backward")?,
            softcap_nll_backward: f("head.cu", "softcap_nll_backward")?,
            attention_stats: per_hd("attention.cu", "attention_stats_hd")?,
            attention_bwd_prep: f("attention_backward.cu", "attention_bwd_prep")?,
            attention_bwd_dq: per_hd("attention_backward.cu", "attention_bwd_dq_hd")?,
            attention_bwd_dkv: per_hd("attention_backward.cu", "attention_bwd_dkv_hd")?,
            ns_axpby: f("newton_schulz.cu", "ns_axpby")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cu_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cuda");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cu"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = SOURCES.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "cuda/*.cu and modules::SOURCES differ");
    }
}
