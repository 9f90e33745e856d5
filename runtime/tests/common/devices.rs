//! The CPU oracle beside the CUDA backend on either of its device layers: a real GPU (tests
//! skip with a printed reason when there is none) or the host emulator of its kernels (feature
//! `cuda-emu`, runs everywhere). `on_both_devices!` turns each check into a `gpu::` and an
//! `emu::` test.

use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::backend::cuda::gpu::Gpu;
use pgolf_rt::backend::cuda::{reason, CudaBackend, CudaGpu};
use pgolf_rt::backend::Backend;
use std::path::PathBuf;

/// Float32 tolerance of every CUDA-vs-CPU comparison (relative to the largest reference value
/// where that exceeds 1).
pub const TOL: f32 = 1e-4;

/// The backend on device 0, or `None` with `SKIPPED: ...` printed.
pub fn cuda() -> Option<CudaBackend<CudaGpu>> {
    match CudaBackend::new() {
        Ok(b) => Some(b),
        Err(e) => {
            println!("SKIPPED: no CUDA device ({})", reason(&e));
            None
        }
    }
}

/// Deterministic values in about [-amp, amp].
pub fn data(n: usize, seed: f32, amp: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 + 1.0) * seed).sin() * amp + ((i as f32) * 0.013 * seed).cos() * 0.1)
        .collect()
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert!(x.is_finite() == y.is_finite(), "finite mismatch {x} vs {y}");
            (x - y).abs()
        })
        .fold(0.0, f32::max)
}

/// Relative to the magnitude of the reference where it is large (GEMM sums of many terms).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let d = max_diff(got, want);
    println!("{what}: max abs diff {d:.3e} (reference max |v| {scale:.2})");
    assert!(
        d <= tol * scale,
        "{what}: max abs diff {d} > {tol} * {scale}"
    );
}

pub type Tensor<G> = <CudaBackend<G> as Backend>::Tensor;
pub type CpuTensor = <CpuBackend as Backend>::Tensor;

/// The CPU oracle and the CUDA backend, fed the same inputs.
pub struct Pair<G: Gpu> {
    pub cpu: CpuBackend,
    pub gpu: CudaBackend<G>,
}

impl<G: Gpu> Pair<G> {
    pub fn new(gpu: CudaBackend<G>) -> Pair<G> {
        Pair {
            cpu: CpuBackend::new(),
            gpu,
        }
    }

    /// `v` as a `[r, c]` tensor on both.
    pub fn up(&self, v: &[f32], r: usize, c: usize) -> (CpuTensor, Tensor<G>) {
        (
            self.cpu.upload(v, r, c).unwrap(),
            self.gpu.upload(v, r, c).unwrap(),
        )
    }

    /// Same shape, values within [`TOL`].
    pub fn check(&self, what: &str, c: &CpuTensor, g: &Tensor<G>) {
        assert_eq!(self.cpu.shape(c), self.gpu.shape(g), "{what}: shapes");
        let (cv, gv) = (self.cpu.download(c).unwrap(), self.gpu.download(g).unwrap());
        assert_close(what, &gv, &cv, TOL);
    }
}

/// The reference data at `$PGOLF_SHARED` (the GPU machine) or `../shared`, or `None` with
/// `SKIPPED: ...` printed.
pub fn shared() -> Option<PathBuf> {
    let p = std::env::var_os("PGOLF_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")));
    if p.join("reference").is_dir() && p.join("data").is_dir() {
        Some(p)
    } else {
        println!(
            "SKIPPED: reference data not found at {} (set PGOLF_SHARED)",
            p.display()
        );
        None
    }
}

/// One `#[test]` per check in `gpu` (a real device, skipped without one) and in `emu` (the
/// host emulator of the kernels, feature `cuda-emu`). `ops:` checks take a [`Pair`],
/// `backends:` checks a `CudaBackend<G>`.
#[macro_export]
macro_rules! on_both_devices {
    (ops: $($op:ident),* ; backends: $($be:ident),* $(,)?) => {
        mod gpu {
            $(#[test]
            fn $op() {
                if let Some(b) = $crate::common::devices::cuda() {
                    super::$op(&$crate::common::devices::Pair::new(b));
                }
            })*
            $(#[test]
            fn $be() {
                if let Some(b) = $crate::common::devices::cuda() {
                    super::$be(b);
                }
            })*
        }
        #[cfg(feature = "cuda-emu")]
        mod emu {
            use pgolf_rt::backend::cuda::emu::EmuGpu;
            $(#[test]
            fn $op() {
                super::$op(&$crate::common::devices::Pair::new(
                    EmuGpu::backend().expect("emulator"),
                ));
            })*
            $(#[test]
            fn $be() {
                super::$be(EmuGpu::backend().expect("emulator"));
            })*
        }
    };
}
