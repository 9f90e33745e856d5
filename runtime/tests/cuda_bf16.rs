//! `--precision bf16` on the CUDA backend: every GEMM's operands rounded to bf16 (cuBLAS's
//! `CUBLAS_COMPUTE_32F_FAST_16BF`; the emulator rounds to nearest even), fp32 accumulation,
//! attention on the TF32 tensor-core kernels, everything else fp32. Against the CPU:
//! - a bf16 product is the CPU's bf16 reference (`cpu::bf16::reference_linear`, the same
//!   operand rounding) within the fp32 summation bound, and differs from the fp32 product;
//! - the conformance suites (forward and backward ops) with bf16 products within 5e-2 of the
//!   float32 oracle's scale, as the CPU's own bf16 path is held (`cpu_bf16.rs`), element-wise
//!   ops as exact as float32;
//! - the standard eval of the first two 1024-token windows of both reference artifacts, bf16
//!   GEMMs with the fp32 attention kernels, lands within 2e-3 bits per byte of the float32
//!   oracle's (and is not float32's to the bit). The fp32 attention keeps the emulated run in
//!   CI's time (the emulated tensor-core kernels take minutes per window); those kernels are
//!   held to the oracle op by op (`cuda_parity.rs`, `cuda_train_parity.rs`), and the GPU
//!   check's bf16 eval stages run the default path (tensor-core attention) end to end.
//!
//! Four bf16 trainer steps against the CPU's float32 are in `cuda_train_parity.rs`. Each check
//! runs on a real GPU (`gpu::*`, skipped without one) and on the emulator (`emu::*`).
#![cfg(feature = "cuda")]

mod common;

use common::conformance::{data, Pair};
use pgolf_rt::artifact::Artifact;
use pgolf_rt::backend::cpu::{bf16::reference_linear, CpuBackend};
use pgolf_rt::backend::cuda::gpu::Gpu;
use pgolf_rt::backend::cuda::CudaBackend;
use pgolf_rt::backend::{Backend, Precision};
use pgolf_rt::data::load_tokens;
use pgolf_rt::eval::{eval_standard, EvalOptions};
use pgolf_rt::model::{ConfigOverrides, DeviceModel, ModelWeights};

/// `b` in bf16.
pub fn bf16<G: Gpu>(b: CudaBackend<G>) -> CudaBackend<G> {
    let b = b.with_precision(Precision::Bf16).expect("CUDA offers bf16");
    assert_eq!(b.precision(), Precision::Bf16);
    b
}

/// The bf16 backend beside the float32 oracle with bf16's tolerances.
pub fn bf16_pair<G: Gpu>(b: CudaBackend<G>) -> Pair<CudaBackend<G>> {
    Pair::with_tol(bf16(b), 5e-2, 1e-5)
}

mod conformance {
    mod gpu {
        crate::conformance_ops!(crate::common::devices::cuda().map(crate::bf16_pair));
        mod train {
            crate::conformance_train_ops!(crate::common::devices::cuda().map(crate::bf16_pair));
        }
    }
    #[cfg(feature = "cuda-emu")]
    mod emu {
        use pgolf_rt::backend::cuda::emu::EmuGpu;
        crate::conformance_ops!(Some(crate::bf16_pair(EmuGpu::backend().unwrap())));
        mod train {
            use pgolf_rt::backend::cuda::emu::EmuGpu;
            crate::conformance_train_ops!(Some(crate::bf16_pair(EmuGpu::backend().unwrap())));
        }
    }
}

/// `linear` in bf16 against the CPU's bf16 reference: within `K · 2⁻²³ · Σ|x||w|` (fp32 sums
/// of exact bf16 products), and off the fp32 product (the rounding really happens).
fn products_round_operands_to_bf16<G: Gpu>(gpu: CudaBackend<G>) {
    let gpu = bf16(gpu);
    for (m, n, k) in [(7, 33, 64), (130, 96, 512), (1, 1024, 1536)] {
        let (x, w) = (data(m * k, 0.37, 2.0), data(n * k, 0.71, 0.5));
        let (xt, wt) = (gpu.upload(&x, m, k).unwrap(), gpu.upload(&w, n, k).unwrap());
        let got = gpu.download(&gpu.linear(&xt, &wt).unwrap()).unwrap();
        let (want, mag) = reference_linear(&x, m, &w, n, k);
        let cpu = CpuBackend::new();
        let (xc, wc) = (cpu.upload(&x, m, k).unwrap(), cpu.upload(&w, n, k).unwrap());
        let fp32 = cpu.download(&cpu.linear(&xc, &wc).unwrap()).unwrap();
        let mut worst = 0.0f64;
        for i in 0..m * n {
            let bound = k as f64 * f32::EPSILON as f64 * mag[i] + 1e-30;
            let e = (got[i] as f64 - want[i]).abs();
            worst = worst.max(e / bound);
            assert!(
                e <= bound,
                "[{m}x{k}]·[{n}x{k}]ᵀ entry {i}: {} vs the bf16 reference {} ({e:.2e} > {bound:.2e})",
                got[i],
                want[i]
            );
        }
        println!("bf16 linear {m}x{n}x{k}: worst error {worst:.3} of the fp32 summation bound");
        assert!(
            got != fp32,
            "{m}x{n}x{k}: bf16 gave the fp32 product to the bit"
        );
    }
}

const TOL_BPB: f64 = 2e-3;

/// The standard eval of the first two 1024-token windows with bf16 GEMMs (fp32 attention)
/// against the float32 oracle.
fn two_windows_within_2e3_bpb<G: Gpu>(gpu: CudaBackend<G>, artifact: &str) {
    let Some(s) = common::shared() else { return };
    let art = Artifact::load(s.join("reference").join(artifact)).expect("artifact");
    let w = ModelWeights::from_artifact(&art, &ConfigOverrides::default()).expect("weights");
    let lut = common::sp1024(&s).byte_lut(1024);
    let toks = load_tokens(common::val_shard(&s).to_str().unwrap()).unwrap();
    let toks = &toks[..2 * 1024 + 1];
    let opts = || EvalOptions {
        seq_len: 1024,
        batch: 2,
        progress: None,
    };
    let f32_model = DeviceModel::new(CpuBackend::new(), &w).unwrap();
    let bf16_model = DeviceModel::new(bf16(gpu).with_tensor_core_attention(false), &w).unwrap();
    let a = eval_standard(&f32_model, toks, &lut, opts()).unwrap();
    let b = eval_standard(&bf16_model, toks, &lut, opts()).unwrap();
    let d = b.val_bpb - a.val_bpb;
    println!(
        "{artifact}: cuda bf16 val_bpb {:.8} vs cpu float32 {:.8} (diff {d:+.2e}) over {} targets",
        b.val_bpb, a.val_bpb, a.tokens
    );
    assert_eq!((a.tokens, a.bytes), (b.tokens, b.bytes));
    assert!(d.abs() < TOL_BPB, "{artifact}: bf16 differs by {d} bpb");
    assert!(d != 0.0, "{artifact}: bf16 gave float32's bpb to the bit");
}

fn baseline9l_two_windows_bf16<G: Gpu>(gpu: CudaBackend<G>) {
    two_windows_within_2e3_bpb(gpu, "baseline9L_int8_zlib.ptz");
}

fn mlp3x11l_two_windows_bf16<G: Gpu>(gpu: CudaBackend<G>) {
    two_windows_within_2e3_bpb(gpu, "mlp3x11L_int6_zstd.ptz");
}

/// The backend names its precision, and `bf16` is offered beside `f32` and `tf32`.
fn names_its_precision<G: Gpu>(gpu: CudaBackend<G>) {
    assert!(CudaBackend::<G>::PRECISIONS.contains(&Precision::Bf16));
    let name = bf16(gpu).name();
    assert!(name.contains("bf16 gemm"), "{name}");
}

on_both_devices!(
    ops: ;
    backends: products_round_operands_to_bf16,
        baseline9l_two_windows_bf16,
        mlp3x11l_two_windows_bf16,
        names_its_precision
);
