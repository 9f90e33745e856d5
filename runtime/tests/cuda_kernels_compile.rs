//! Every `cuda/*.cu` kernel source compiles with NVRTC to PTX for sm_90 (H100).
//!
//! Needs only libnvrtc (no GPU, no driver): on CPU-only CI install the PyPI wheel
//! `nvidia-cuda-nvrtc==13.*` and put its `nvidia/cu13/lib` directory on `LD_LIBRARY_PATH`
//! (NVRTC dlopens `libnvrtc-builtins.so.13.*` from there). Without libnvrtc the test prints
//! `SKIPPED: ...` and passes, or fails under `PGOLF_REQUIRE_NVRTC=1` (as in CI).
#![cfg(feature = "cuda")]

mod common;

use pgolf_rt::backend::cuda::modules::{
    compile, compile_cubin, image, Kernels, ATTENTION_HEAD_DIMS, SOURCES,
};
use pgolf_rt::Error;

fn nvrtc_present() -> bool {
    // What the backend does first: open the libraries found on the loader path or in the
    // folders it searches (PGOLF_CUDA_LIB_DIRS, the toolkit, PyTorch's wheels).
    pgolf_rt::backend::cuda::libs::preload();
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

#[test]
fn every_kernel_compiles_for_sm90() {
    if !nvrtc_present() {
        common::skip(
            "PGOLF_REQUIRE_NVRTC",
            "libnvrtc not found (install the nvidia-cuda-nvrtc wheel, see .ci/run)",
        );
        return;
    }
    let mut failures = Vec::new();
    for &(name, src) in SOURCES {
        match compile(name, src, "sm_90") {
            Ok(ptx) => {
                let text = ptx.to_src();
                assert!(
                    text.contains(".entry"),
                    "cuda/{name}: PTX has no kernel entry point"
                );
                println!("ok: cuda/{name} -> {} bytes of PTX", text.len());
            }
            Err(e) => failures.push(format!("{e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every entry point the backend loads (`Kernels::load_with`'s list) is a kernel of the PTX
/// NVRTC makes of the file the backend loads it from.
#[test]
fn every_entry_point_the_backend_loads_is_in_the_ptx() {
    if !nvrtc_present() {
        common::skip(
            "PGOLF_REQUIRE_NVRTC",
            "libnvrtc not found (install the nvidia-cuda-nvrtc wheel, see .ci/run)",
        );
        return;
    }
    let ptx: std::collections::HashMap<&str, String> = SOURCES
        .iter()
        .map(|&(name, src)| {
            (
                name,
                compile(name, src, "sm_90").expect("compiles").to_src(),
            )
        })
        .collect();
    let loaded = Kernels::load_with(|file, func| {
        let text = ptx
            .get(file)
            .ok_or_else(|| Error::Backend(format!("no cuda/{file}")))?;
        if !text.contains(&format!(".entry {func}(")) {
            return Err(Error::Backend(format!("no {func} in cuda/{file}")));
        }
        Ok(format!("{file}:{func}"))
    });
    let k = loaded.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(k.attention.len(), ATTENTION_HEAD_DIMS.len());
    assert_eq!(k.attention_bwd_dkv.len(), ATTENTION_HEAD_DIMS.len());
    assert_eq!(k.softcap_nll_backward, "head.cu:softcap_nll_backward");
}

/// Every source compiles to machine code (an ELF CUBIN) for sm_90, which the device loads
/// without a driver JIT.
#[test]
fn every_kernel_compiles_to_a_cubin_for_sm90() {
    if !nvrtc_present() {
        common::skip(
            "PGOLF_REQUIRE_NVRTC",
            "libnvrtc not found (install the nvidia-cuda-nvrtc wheel, see .ci/run)",
        );
        return;
    }
    for &(name, src) in SOURCES {
        let cubin = compile_cubin(name, src, "sm_90").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            cubin.starts_with(b"\x7fELF"),
            "cuda/{name}: not an ELF image"
        );
        println!("ok: cuda/{name} -> {} bytes of sm_90 CUBIN", cubin.len());
    }
}

/// The disk cache: the first build compiles and stores, the second reads the same bytes back,
/// and a damaged cache file is compiled again, not loaded.
#[test]
fn compiled_kernels_are_cached_on_disk() {
    if !nvrtc_present() {
        common::skip(
            "PGOLF_REQUIRE_NVRTC",
            "libnvrtc not found (install the nvidia-cuda-nvrtc wheel, see .ci/run)",
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("pgolf-kernel-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (name, src) = SOURCES[0];
    let first = image(name, src, "sm_90", Some(&dir)).unwrap();
    assert!(first.cubin && !first.cached);
    let second = image(name, src, "sm_90", Some(&dir)).unwrap();
    assert!(second.cached, "the second build reads the cache");
    assert_eq!(first.bytes, second.bytes);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::write(&files[0], b"not an ELF file").unwrap();
    let third = image(name, src, "sm_90", Some(&dir)).unwrap();
    assert!(
        !third.cached && third.bytes == first.bytes,
        "a damaged entry is rebuilt"
    );
    // Another architecture is another entry.
    let other = image(name, src, "sm_80", Some(&dir)).unwrap();
    assert!(!other.cached);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
