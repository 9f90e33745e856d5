//! Every `cuda/*.cu` kernel source compiles with NVRTC to PTX for sm_90 (H100).
//!
//! Needs only libnvrtc (no GPU, no driver): on CPU-only CI install the PyPI wheel
//! `nvidia-cuda-nvrtc==13.*` and put its `nvidia/cu13/lib` directory on `LD_LIBRARY_PATH`
//! (NVRTC dlopens `libnvrtc-builtins.so.13.*` from there). Without libnvrtc the test prints
//! `SKIPPED: ...` and passes.
#![cfg(feature = "cuda")]

use pgolf_rt::backend::cuda::modules::{compile, Kernels, ATTENTION_HEAD_DIMS, SOURCES};
use pgolf_rt::Error;

fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

#[test]
fn every_kernel_compiles_for_sm90() {
    if !nvrtc_present() {
        println!("SKIPPED: libnvrtc not found (install the nvidia-cuda-nvrtc wheel, see .ci/run)");
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
        println!("SKIPPED: libnvrtc not found (install the nvidia-cuda-nvrtc wheel, see .ci/run)");
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
