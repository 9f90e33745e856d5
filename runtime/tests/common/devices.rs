//! The CPU oracle beside the CUDA backend on either of its device layers: a real GPU (tests
//! skip with a printed reason when there is none) or the host emulator of its kernels (feature
//! `cuda-emu`, runs everywhere). `on_both_devices!` turns each check into a `gpu::` and an
//! `emu::` test.

use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::backend::cuda::gpu::Gpu;
use pgolf_rt::backend::cuda::modules::ATTENTION_TC_HEAD_DIMS;
use pgolf_rt::backend::cuda::{reason, CudaBackend, CudaGpu};
use pgolf_rt::backend::Backend;

/// Float32 tolerance of every CUDA-vs-CPU comparison (relative to the largest reference value
/// where that exceeds 1).
pub const TOL: f32 = 1e-4;

/// The backend on device 0, or `None` after [`super::skip`] (`PGOLF_REQUIRE_CUDA=1` makes a
/// missing device a failure: the GPU check sets it).
pub fn cuda() -> Option<CudaBackend<CudaGpu>> {
    match CudaBackend::new() {
        Ok(b) => Some(b),
        Err(e) => {
            super::skip(
                "PGOLF_REQUIRE_CUDA",
                format_args!("no CUDA device ({})", reason(&e)),
            );
            None
        }
    }
}

use super::conformance::{attention_cases, max_diff, AttnOp};

pub type Tensor<G> = <CudaBackend<G> as Backend>::Tensor;

/// The CPU oracle and the CUDA backend ([`super::conformance::Pair`]).
pub type Pair<G> = super::conformance::Pair<CudaBackend<G>>;

/// One `#[test]` per check in `gpu` (a real device, skipped without one) and in `emu` (the
/// host emulator of the kernels, feature `cuda-emu`). `ops:` checks take a [`Pair`] (CUDA's
/// own; the conformance suite's run through [`conformance_on_both_devices!`]),
/// `backends:` checks a `CudaBackend<G>`.
#[macro_export]
macro_rules! on_both_devices {
    (ops: $($op:ident),* ; backends: $($be:ident),* $(,)?) => {
        mod gpu {
            $(#[test]
            fn $op() {
                if let Some(b) = $crate::common::devices::cuda() {
                    super::$op(&$crate::common::conformance::Pair::new(b));
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
                super::$op(&$crate::common::conformance::Pair::new(
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

/// A conformance suite's tests (`conformance_ops` or `conformance_train_ops`, by name) on both
/// device layers: `conformance::gpu::*` (a real device, skipped without one) and
/// `conformance::emu::*` (the emulator, feature `cuda-emu`), so the suite's op list is the one
/// place an op is added.
#[macro_export]
macro_rules! conformance_on_both_devices {
    ($suite:ident) => {
        mod conformance {
            mod gpu {
                $crate::$suite!(
                    $crate::common::devices::cuda().map($crate::common::conformance::Pair::new)
                );
            }
            #[cfg(feature = "cuda-emu")]
            mod emu {
                $crate::$suite!(Some($crate::common::conformance::Pair::new(
                    pgolf_rt::backend::cuda::emu::EmuGpu::backend().expect("emulator"),
                )));
            }
        }
    };
}

/// Checks the tensor-core attention kernels (`cuda/attention_tc.cu`) through `op`: every output
/// within `rel_tol` of the oracle relative to its scale (at least 1); for head dims the kernels
/// have, not bit-identical to the fp32 kernels (so the path is really taken); for the others,
/// the fp32 kernels' values bit for bit.
pub fn check_tensor_core_attention<G: Gpu>(
    gpu: CudaBackend<G>,
    op: &impl AttnOp,
    shapes: &[(usize, usize, usize, usize, usize)],
    rel_tol: f32,
) {
    let cpu = CpuBackend::new();
    let tc = gpu.clone().with_tensor_core_attention(true);
    let exact = gpu.with_tensor_core_attention(false);
    for c in attention_cases(shapes) {
        let (want, got, fp32) = (
            op.outputs(&cpu, &c),
            op.outputs(&tc, &c),
            op.outputs(&exact, &c),
        );
        let what = format!("tensor-core attention {}", c.name());
        let has_tc = ATTENTION_TC_HEAD_DIMS.contains(&c.g.head_dim);
        for (i, ((got, want), fp32)) in got.iter().zip(&want).zip(&fp32).enumerate() {
            let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
            let d = max_diff(got, want);
            println!("{what} output {i}: max abs diff {d:.2e} (scale {scale:.2})");
            assert!(
                got.iter().all(|x| x.is_finite()),
                "{what} output {i}: non-finite"
            );
            assert!(
                d <= rel_tol * scale,
                "{what} output {i}: {d} > {rel_tol} * {scale}"
            );
            if !has_tc {
                assert_eq!(got, fp32, "{what} output {i}: must be the fp32 kernels'");
            }
        }
        if has_tc && c.g.seq > 1 {
            assert!(
                got != fp32,
                "{what}: bit-identical to the fp32 kernels (TC path not taken?)"
            );
        }
    }
}
