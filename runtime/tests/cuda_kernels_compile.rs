//! Every `cuda/*.cu` kernel source compiles with NVRTC to PTX for sm_90 (H100).
//!
//! Needs only libnvrtc (no GPU, no driver): on CPU-only CI install the PyPI wheel
//! `nvidia-cuda-nvrtc==13.*` and put its `nvidia/cu13/lib` directory on `LD_LIBRARY_PATH`
//! (NVRTC dlopens `libnvrtc-builtins.so.13.*` from there). Without libnvrtc the test prints
//! `SKIPPED: ...` and passes.
#![cfg(feature = "cuda")]

use pgolf_rt::backend::cuda::modules::{compile, SOURCES};

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

#[test]
fn attention_has_every_head_dim_entry_point() {
    if !nvrtc_present() {
        println!("SKIPPED: libnvrtc not found (install the nvidia-cuda-nvrtc wheel, see .ci/run)");
        return;
    }
    let src = SOURCES
        .iter()
        .find(|(n, _)| *n == "attention.cu")
        .expect("attention.cu embedded")
        .1;
    let ptx = compile("attention.cu", src, "sm_90")
        .expect("attention.cu compiles")
        .to_src();
    for hd in pgolf_rt::backend::cuda::modules::ATTENTION_HEAD_DIMS {
        assert!(
            ptx.contains(&format!(".entry attention_hd{hd}(")),
            "no attention_hd{hd} entry point in the PTX"
        );
    }
}
