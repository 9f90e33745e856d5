//! Finding the CUDA libraries, and saying which ones were used.
//!
//! cudarc opens libcuda, libnvrtc and libcublas(Lt) by bare name, so the dynamic loader finds
//! them only on its own search path (`LD_LIBRARY_PATH`, the ld cache). Machines often keep
//! them elsewhere: the driver's folder `/usr/local/nvidia/lib64`, a toolkit under
//! `/usr/local/cuda`, or PyTorch's wheels (`site-packages/nvidia/cu13/lib`, `.../cublas/lib`).
//! [`preload`] opens each library by its soname first, and where the loader does not find it,
//! by its full path in those folders (and in `$PGOLF_CUDA_LIB_DIRS`, colon-separated, searched
//! first). A library opened by full path is then what cudarc's own `dlopen` of the soname
//! returns, because the loader matches already-loaded libraries by soname.
//!
//! [`resolved`] reads back, from the process's memory map, the file each library was loaded
//! from, for `pgolf-rt devices` and the GPU check.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The libraries the CUDA backend (and, later, multi-GPU training) may load, in load order
/// (a library before those that need it): `(name, sonames to try)`.
pub const LIBRARIES: &[(&str, &[&str])] = &[
    ("libcuda", &["libcuda.so.1", "libcuda.so"]),
    ("libnvrtc", &["libnvrtc.so.13", "libnvrtc.so"]),
    ("libnvrtc-builtins", &["libnvrtc-builtins.so.13"]),
    ("libcublasLt", &["libcublasLt.so.13", "libcublasLt.so"]),
    ("libcublas", &["libcublas.so.13", "libcublas.so"]),
    ("libnccl", &["libnccl.so.2", "libnccl.so"]),
];

/// Folders searched, in order, for a library the loader does not find by soname.
pub fn search_dirs() -> Vec<PathBuf> {
    search_dirs_with(std::env::var("PGOLF_CUDA_LIB_DIRS").ok().as_deref())
}

/// [`search_dirs`] with `extra` (colon-separated) in place of `$PGOLF_CUDA_LIB_DIRS`.
fn search_dirs_with(extra: Option<&str>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = extra
        .unwrap_or("")
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    for d in [
        "/usr/local/nvidia/lib64",
        "/usr/local/nvidia/lib",
        "/usr/local/cuda/lib64",
        "/usr/local/cuda/targets/x86_64-linux/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
    ] {
        dirs.push(PathBuf::from(d));
    }
    // Python environments that may hold NVIDIA's wheels (PyTorch's CUDA libraries).
    let mut envs: Vec<String> = ["VIRTUAL_ENV", "CONDA_PREFIX"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .collect();
    if let Ok(home) = std::env::var("HOME") {
        envs.push(format!("{home}/.local"));
    }
    let mut patterns: Vec<String> = envs
        .iter()
        .flat_map(|e| {
            [
                format!("{e}/lib/python3*/site-packages"),
                format!("{e}/lib/python3*/dist-packages"),
            ]
        })
        .collect();
    patterns.extend(
        [
            "/usr/local/lib/python3*/dist-packages",
            "/usr/local/lib/python3*/site-packages",
            "/usr/lib/python3/dist-packages",
            "/opt/*/.venv/lib/python3*/site-packages",
            "/opt/*/lib/python3*/site-packages",
            "/opt/conda/lib/python3*/site-packages",
        ]
        .map(String::from),
    );
    for p in &patterns {
        for site in expand(p) {
            for sub in [
                "nvidia/cu13/lib",
                "nvidia/cublas/lib",
                "nvidia/cuda_nvrtc/lib",
                "nvidia/nccl/lib",
            ] {
                let d = site.join(sub);
                if d.is_dir() {
                    dirs.push(d);
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// The paths matching `pattern`, whose components may be `*` or end in `*` (`python3*`).
fn expand(pattern: &str) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("/")];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for base in &out {
            if let Some(prefix) = comp.strip_suffix('*') {
                let Ok(rd) = std::fs::read_dir(base) else {
                    continue;
                };
                let mut names: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                    .map(|e| e.path())
                    .collect();
                names.sort();
                next.extend(names);
            } else {
                let p = base.join(comp);
                if p.exists() {
                    next.push(p);
                }
            }
        }
        out = next;
    }
    out
}

/// What [`preload`] did for one library.
#[derive(Clone, Debug)]
pub struct Preload {
    pub name: &'static str,
    /// `Ok(how)`: `"loader path"` or the full path it was opened from; `Err(why not)`.
    pub outcome: std::result::Result<String, String>,
}

/// Opens every library of [`LIBRARIES`] that can be found (once per process; later calls
/// return the first result). Missing ones are not an error here: the backend's probe says
/// which one it needs.
pub fn preload() -> &'static [Preload] {
    static DONE: OnceLock<Vec<Preload>> = OnceLock::new();
    DONE.get_or_init(|| {
        let dirs = search_dirs();
        let mut nvrtc_dir: Option<PathBuf> = None;
        LIBRARIES
            .iter()
            .map(|&(name, sonames)| {
                let outcome = if name == "libnvrtc-builtins" {
                    // Versioned by minor (libnvrtc-builtins.so.13.0): take the one beside the
                    // libnvrtc that was found, so the two match.
                    match &nvrtc_dir {
                        Some(d) => builtins(std::slice::from_ref(d)),
                        None => builtins(&dirs),
                    }
                } else {
                    open_first(sonames, &dirs)
                };
                if name == "libnvrtc" {
                    nvrtc_dir = resolved_path("libnvrtc.so")
                        .and_then(|p| p.parent().map(Path::to_path_buf));
                }
                Preload { name, outcome }
            })
            .collect()
    })
}

fn open_first(sonames: &[&str], dirs: &[PathBuf]) -> std::result::Result<String, String> {
    for so in sonames {
        if dlopen_global(Path::new(so)) {
            return Ok("loader path".into());
        }
    }
    for d in dirs {
        for so in sonames {
            let p = d.join(so);
            if p.is_file() && dlopen_global(&p) {
                return Ok(p.display().to_string());
            }
        }
    }
    Err(format!(
        "not found by the loader nor in {} folders searched",
        dirs.len()
    ))
}

fn builtins(dirs: &[PathBuf]) -> std::result::Result<String, String> {
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("libnvrtc-builtins.so.13"))
            })
            .collect();
        found.sort();
        if let Some(p) = found.last() {
            if dlopen_global(p) {
                return Ok(p.display().to_string());
            }
        }
    }
    Err("not found beside libnvrtc (NVRTC looks for it itself)".into())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn dlopen_global(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; the handle is kept for the life of the process
    // (never closed), as cudarc keeps its own.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    !h.is_null()
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn dlopen_global(_: &Path) -> bool {
    false
}

/// The file a loaded library whose file name starts with `prefix` (e.g. `libcublas.so`) was
/// mapped from, per `/proc/self/maps`.
pub fn resolved_path(prefix: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(PathBuf::from)
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
}

/// `(name, path)` of every library of [`LIBRARIES`] loaded in this process now.
pub fn resolved() -> Vec<(&'static str, Option<PathBuf>)> {
    LIBRARIES
        .iter()
        .map(|&(name, _)| (name, resolved_path(&format!("{name}.so"))))
        .collect()
}

/// `ncclGetVersion` of the loaded libnccl (e.g. 22703 for 2.27.3), if there is one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn nccl_version() -> Option<i32> {
    let c = std::ffi::CString::new("libnccl.so.2").ok()?;
    // SAFETY: RTLD_NOLOAD only returns an already-loaded library; the symbol is looked up by
    // its documented name and called with its documented signature `ncclResult_t(int*)`.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if h.is_null() {
            return None;
        }
        let f = libc::dlsym(h, c"ncclGetVersion".as_ptr());
        if f.is_null() {
            return None;
        }
        let f: extern "C" fn(*mut i32) -> i32 = std::mem::transmute(f);
        let mut v = 0;
        (f(&mut v) == 0).then_some(v)
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn nccl_version() -> Option<i32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_expand_like_a_shell_glob() {
        let root = std::env::temp_dir().join(format!("pgolf-libs-{}", std::process::id()));
        for d in ["a/python3.11/x", "a/python3.12/x", "a/other/x"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let got = expand(&format!("{}/a/python3*/x", root.display()));
        assert_eq!(
            got,
            vec![root.join("a/python3.11/x"), root.join("a/python3.12/x")]
        );
        assert!(expand(&format!("{}/missing/*", root.display())).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn extra_folders_come_first_and_once() {
        let dirs = search_dirs_with(Some("/x/one::/usr/local/cuda/lib64"));
        assert_eq!(dirs[0], PathBuf::from("/x/one"));
        assert_eq!(dirs[1], PathBuf::from("/usr/local/cuda/lib64"));
        let n = dirs
            .iter()
            .filter(|d| d.as_path() == Path::new("/usr/local/cuda/lib64"))
            .count();
        assert_eq!(n, 1);
    }
}
