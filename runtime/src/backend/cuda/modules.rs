//! Kernel sources and their compilation.
//!
//! Every `cuda/*.cu` file of the repository is embedded in the binary with `include_str!` and
//! compiled by NVRTC for the device's architecture (`--gpu-architecture=sm_XY`) straight to
//! machine code (CUBIN), so the driver loads it as is: no second JIT compilation at module
//! load. The files compile in parallel, once per process per architecture (later
//! `CudaBackend`s reuse them), and each CUBIN is cached on disk ([`cache_dir`]) under a key
//! of the source, the options, the architecture and NVRTC's version, so a second process
//! starts without compiling. Should NVRTC not produce a CUBIN (an architecture newer than it
//! knows), the PTX is loaded instead and the driver compiles it.
//!
//! [`compile`] (PTX) and [`compile_cubin`] need only libnvrtc (no driver, no GPU): the
//! `cuda_kernels_compile` test uses them to check every source on CPU-only machines.

use super::device::CudaResultExt;
use super::gpu::Gpu;
use crate::{Error, Result};
use cudarc::driver::{CudaContext, CudaModule};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

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
        "col_reduce.cu",
        include_str!("../../../../cuda/col_reduce.cu"),
    ),
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
    ("optim.cu", include_str!("../../../../cuda/optim.cu")),
];

/// Head dims the attention kernel is instantiated for (`attention_hd{N}` entry points).
pub const ATTENTION_HEAD_DIMS: &[usize] = &[4, 8, 16, 32, 64, 128];

/// Head dims the tensor-core attention kernel is instantiated for (`attention_tc_hd{N}`).
pub const ATTENTION_TC_HEAD_DIMS: &[usize] = &[32, 64];

/// NVRTC options for `arch` (e.g. `sm_90`): exact IEEE division and square root, no fast
/// math, no flush to zero: the float32 path must match the CPU oracle to 1e-4.
pub fn options(arch: &str) -> Vec<String> {
    vec![
        "--ftz=false".into(),
        "--prec-sqrt=true".into(),
        "--prec-div=true".into(),
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
    ]
}

/// What NVRTC made of one source.
enum Output {
    Ptx,
    Cubin,
}

/// Compiles `src` (named `name` in messages) with NVRTC for `arch` and returns the PTX or
/// the CUBIN. Errors carry NVRTC's full log.
fn nvrtc(name: &str, src: &str, arch: &str, want: Output) -> Result<Vec<u8>> {
    use cudarc::nvrtc::{result, sys};
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::Backend(format!(
            "NVRTC failed on cuda/{name} for {arch} ({what}): {e}"
        ))
    };
    let c_src = CString::new(src).map_err(|e| fail("source", &e))?;
    let c_name = CString::new(name).map_err(|e| fail("name", &e))?;
    let prog = result::create_program(&c_src, Some(&c_name)).map_err(|e| fail("create", &e))?;
    // SAFETY: `prog` was created above from `c_src`/`c_name`, which outlive it, and is
    // destroyed exactly once at the end; the output buffers are sized by NVRTC's own calls.
    let out = unsafe {
        let compiled = result::compile_program(prog, &options(arch));
        let out = match compiled {
            Err(e) => {
                let log = result::get_program_log(prog)
                    .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned())
                    .unwrap_or_default();
                Err(Error::Backend(format!(
                    "NVRTC failed on cuda/{name} for {arch}: {e}\n{log}"
                )))
            }
            Ok(()) => match want {
                Output::Ptx => result::get_ptx(prog)
                    .map(|p| CStr::from_ptr(p.as_ptr()).to_bytes().to_vec())
                    .map_err(|e| fail("get PTX", &e)),
                Output::Cubin => {
                    let mut size = 0usize;
                    sys::nvrtcGetCUBINSize(prog, &mut size)
                        .result()
                        .map_err(|e| fail("CUBIN size", &e))
                        .and_then(|()| {
                            let mut buf = vec![0u8; size];
                            sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast())
                                .result()
                                .map(|()| buf)
                                .map_err(|e| fail("get CUBIN", &e))
                        })
                }
            },
        };
        let _ = result::destroy_program(prog);
        out
    }?;
    Ok(out)
}

/// Compiles one source to PTX for `arch` (e.g. `sm_90`) with [`options`].
pub fn compile(name: &str, src: &str, arch: &str) -> Result<Ptx> {
    let ptx = nvrtc(name, src, arch, Output::Ptx)?;
    String::from_utf8(ptx)
        .map(Ptx::from_src)
        .map_err(|e| Error::Backend(format!("NVRTC PTX of cuda/{name} is not text: {e}")))
}

/// Compiles one source to machine code (an ELF CUBIN) for the real architecture `arch`
/// (e.g. `sm_90`) with [`options`].
pub fn compile_cubin(name: &str, src: &str, arch: &str) -> Result<Vec<u8>> {
    nvrtc(name, src, arch, Output::Cubin)
}

/// NVRTC's version, e.g. `(13, 0)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    // SAFETY: only tries to dlopen libnvrtc by its candidate names. Without this check the
    // first NVRTC call on a machine without the library panics inside cudarc.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(Error::Backend(
            "libnvrtc not found on the loader path (install CUDA's NVRTC or set LD_LIBRARY_PATH)"
                .into(),
        ));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers; the call only writes them.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| Error::Backend(format!("nvrtcVersion: {e}")))?;
    Ok((major, minor))
}

/// Where compiled kernels are cached: `$PGOLF_KERNEL_CACHE` (`off` disables the cache), else
/// `$XDG_CACHE_HOME/pgolf-rt/kernels`, else `$HOME/.cache/pgolf-rt/kernels`.
pub fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("PGOLF_KERNEL_CACHE") {
        Some(v) if v == "off" || v == "0" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("pgolf-rt").join("kernels")),
    }
}

/// FNV-1a over every part (stable across builds and platforms, unlike `DefaultHasher`).
fn cache_key(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.iter().chain(&[0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// One kernel file's compiled image, and where it came from.
#[derive(Clone)]
pub struct Image {
    pub file: &'static str,
    /// An ELF CUBIN, or PTX text when NVRTC could not make a CUBIN for the architecture.
    pub bytes: Vec<u8>,
    pub cubin: bool,
    /// Read from the disk cache rather than compiled.
    pub cached: bool,
}

/// How the kernels of one architecture were obtained (for `pgolf-rt devices`).
#[derive(Clone, Debug)]
pub struct BuildReport {
    pub arch: String,
    pub files: usize,
    pub compiled: usize,
    pub from_disk_cache: usize,
    /// Files loaded as PTX (the driver compiles them at load).
    pub ptx_fallbacks: usize,
    pub seconds: f64,
    pub cache_dir: Option<PathBuf>,
}

impl std::fmt::Display for BuildReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} kernel files for {}: {} compiled, {} from the disk cache{}, {:.2} s (cache: {})",
            self.files,
            self.arch,
            self.compiled,
            self.from_disk_cache,
            if self.ptx_fallbacks > 0 {
                format!(", {} as PTX (driver JIT)", self.ptx_fallbacks)
            } else {
                String::new()
            },
            self.seconds,
            self.cache_dir
                .as_ref()
                .map_or("off".into(), |d| d.display().to_string())
        )
    }
}

/// The image of one source for `arch`: from the disk cache in `cache` (none: no cache), else
/// compiled (CUBIN, PTX as the fallback) and stored there. The cache key covers the source,
/// the options, the architecture and NVRTC's version. A cache that cannot be read or written
/// only costs time; a cached file that is not an ELF image is compiled again.
pub fn image(
    file: &'static str,
    src: &str,
    arch: &str,
    cache: Option<&std::path::Path>,
) -> Result<Image> {
    let version = nvrtc_version()?;
    let ver = format!("nvrtc {}.{}", version.0, version.1);
    let opts = options(arch).join(" ");
    let key = cache_key(&[src.as_bytes(), opts.as_bytes(), ver.as_bytes()]);
    let stem = file.trim_end_matches(".cu");
    let path = cache.map(|d| d.join(format!("{stem}-{arch}-{key:016x}.cubin")));
    if let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
        if bytes.starts_with(b"\x7fELF") {
            return Ok(Image {
                file,
                bytes,
                cubin: true,
                cached: true,
            });
        }
    }
    match compile_cubin(file, src, arch) {
        Ok(bytes) => {
            if let Some(p) = &path {
                let _ = store(p, &bytes);
            }
            Ok(Image {
                file,
                bytes,
                cubin: true,
                cached: false,
            })
        }
        Err(cubin_err) => {
            let ptx = nvrtc(file, src, arch, Output::Ptx).map_err(|_| cubin_err)?;
            Ok(Image {
                file,
                bytes: ptx,
                cubin: false,
                cached: false,
            })
        }
    }
}

/// Writes `bytes` to `path` through a uniquely named temporary file and a rename, so a
/// concurrent reader sees the whole file or none.
fn store(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(
        ".{}.{}.{}.{nanos:x}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("kernel"),
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

type ImageSet = Arc<(Vec<Image>, BuildReport)>;

/// The image of every source for `arch`, compiled (in parallel) or read from the disk cache
/// once per process.
pub fn images_for(arch: &str) -> Result<ImageSet> {
    static CACHE: OnceLock<Mutex<HashMap<String, ImageSet>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    // Hold the lock while compiling: concurrent first users wait instead of compiling twice.
    let mut map = cache
        .lock()
        .map_err(|_| Error::Backend("kernel cache lock poisoned".into()))?;
    if let Some(set) = map.get(arch) {
        return Ok(set.clone());
    }
    let t0 = Instant::now();
    let dir = cache_dir();
    let images: Vec<Image> = std::thread::scope(|s| {
        let jobs: Vec<_> = SOURCES
            .iter()
            .map(|&(file, src)| {
                let dir = dir.as_deref();
                s.spawn(move || image(file, src, arch, dir))
            })
            .collect();
        jobs.into_iter()
            .map(|j| {
                j.join()
                    .map_err(|_| Error::Backend("a kernel compilation thread panicked".into()))?
            })
            .collect::<Result<_>>()
    })?;
    let report = BuildReport {
        arch: arch.to_string(),
        files: images.len(),
        compiled: images.iter().filter(|i| !i.cached).count(),
        from_disk_cache: images.iter().filter(|i| i.cached).count(),
        ptx_fallbacks: images.iter().filter(|i| !i.cubin).count(),
        seconds: t0.elapsed().as_secs_f64(),
        cache_dir: dir.clone(),
    };
    let set = Arc::new((images, report));
    map.insert(arch.to_string(), set.clone());
    Ok(set)
}

/// Loads the image of every source for `arch` into `ctx`, by file name, and says how the
/// images were obtained.
pub fn load_modules(
    ctx: &Arc<CudaContext>,
    arch: &str,
) -> Result<(HashMap<&'static str, Arc<CudaModule>>, BuildReport)> {
    let set = images_for(arch)?;
    let mut modules = HashMap::new();
    for img in set.0.iter() {
        let image = if img.cubin {
            Ptx::from_binary(img.bytes.clone())
        } else {
            Ptx::from_src(String::from_utf8_lossy(&img.bytes).into_owned())
        };
        let m = ctx
            .load_module(image)
            .op(&format!("load module cuda/{}", img.file))?;
        modules.insert(img.file, m);
    }
    Ok((modules, set.1.clone()))
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
    pub mul_cols: F,
    /// Column reductions of the backward, in two passes (`cuda/col_reduce.cu`).
    pub col_reduce_partial: F,
    pub col_reduce_finish: F,
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
    pub ns_normalize: F,
    pub muon_momentum: F,
    pub muon_apply: F,
    pub adam_update: F,
    pub ema_update: F,
    pub sgd_update: F,
    pub fake_quant_rows: F,
    pub sum_squares_partial: F,
    pub sum_pairs: F,
    pub pairs_total: F,
    pub sum_columns: F,
    pub copy_f32: F,
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
            mul_cols: f("elementwise.cu", "mul_cols")?,
            col_reduce_partial: f("col_reduce.cu", "col_reduce_partial")?,
            col_reduce_finish: f("col_reduce.cu", "col_reduce_finish")?,
            scatter_rows_sum: f("embedding.cu", "scatter_rows_sum")?,
            qk_norm_rope_backward: f("qk_norm_rope.cu", "qk_norm_rope_backward")?,
            softcap_nll_backward: f("head.cu", "softcap_nll_backward")?,
            attention_stats: per_hd("attention.cu", "attention_stats_hd")?,
            attention_bwd_prep: f("attention_backward.cu", "attention_bwd_prep")?,
            attention_bwd_dq: per_hd("attention_backward.cu", "attention_bwd_dq_hd")?,
            attention_bwd_dkv: per_hd("attention_backward.cu", "attention_bwd_dkv_hd")?,
            ns_axpby: f("newton_schulz.cu", "ns_axpby")?,
            ns_normalize: f("newton_schulz.cu", "ns_normalize")?,
            muon_momentum: f("optim.cu", "muon_momentum")?,
            muon_apply: f("optim.cu", "muon_apply")?,
            adam_update: f("optim.cu", "adam_update")?,
            ema_update: f("optim.cu", "ema_update")?,
            sgd_update: f("optim.cu", "sgd_update")?,
            fake_quant_rows: f("optim.cu", "fake_quant_rows")?,
            sum_squares_partial: f("optim.cu", "sum_squares_partial")?,
            sum_pairs: f("optim.cu", "sum_pairs")?,
            pairs_total: f("optim.cu", "pairs_total")?,
            sum_columns: f("optim.cu", "sum_columns")?,
            copy_f32: f("optim.cu", "copy_f32")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_depend_on_every_part() {
        let k = cache_key(&[b"src", b"opts", b"ver"]);
        assert_eq!(k, cache_key(&[b"src", b"opts", b"ver"]));
        assert_ne!(k, cache_key(&[b"src ", b"opts", b"ver"]));
        assert_ne!(k, cache_key(&[b"src", b"opts", b"ver2"]));
        // Part boundaries count: "ab"+"c" is not "a"+"bc".
        assert_ne!(cache_key(&[b"ab", b"c"]), cache_key(&[b"a", b"bc"]));
    }

    #[test]
    fn stored_files_are_whole_and_replace_older_ones() {
        let dir = std::env::temp_dir().join(format!("pgolf-kcache-{}", std::process::id()));
        let p = dir.join("k.cubin");
        store(&p, b"first").unwrap();
        store(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary files left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
