//! CUDA backend vs the CPU oracle: every `Backend` op on small shapes (the conformance suite,
//! `common/conformance`, plus CUDA's own refusal of a head dim it has no kernel for), then the
//! per-token NLL of
//! the first two 1024-token windows of both reference artifacts (float32 path: max abs diff
//! < 1e-4).
//!
//! Each check runs twice, on the two device layers of the backend:
//! - `gpu::*` on a real CUDA device; elsewhere each prints `SKIPPED: no CUDA device (...)`;
//! - `emu::*` (feature `cuda-emu`) on the host emulator of the same kernels (cuda/emu/), which
//!   runs everywhere, so CI exercises the backend's kernels, launch geometry and argument
//!   packing without a GPU.
//!
//! The reference data is found at `$PGOLF_SHARED` or `../shared` next to the repository
//! (scripts/gpu-check.sh sets `PGOLF_SHARED` on the GPU machine). Run with `PGOLF_CUDA_TF32`
//! unset: TF32 GEMMs are not expected to meet 1e-4.
#![cfg(feature = "cuda")]

mod common;

use common::conformance::{data, max_diff, AttnCase, AttnOp};
use common::devices::{check_tensor_core_attention, Pair, TOL};
use pgolf_rt::artifact::Artifact;
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::backend::cuda::gpu::Gpu;
use pgolf_rt::backend::cuda::CudaBackend;
use pgolf_rt::backend::train::TrainBackend;
use pgolf_rt::backend::{AttnGeometry, Backend};
use pgolf_rt::data::load_tokens;
use pgolf_rt::model::{ConfigOverrides, DeviceModel, ModelWeights};

/// The op checks every backend owes (`common::conformance`), with CUDA's own at the end of
/// the list: a head dim the kernels do not have is an error, not a wrong answer.
fn unsupported_head_dim_is_an_error<G: Gpu>(p: &Pair<G>) {
    let g = AttnGeometry {
        batch: 1,
        seq: 4,
        heads: 2,
        kv_heads: 1,
        head_dim: 12,
    };
    let (q, k) = (
        p.gpu.upload(&[0.0; 96], 4, 24).unwrap(),
        p.gpu.upload(&[0.0; 48], 4, 12).unwrap(),
    );
    assert!(
        p.gpu.attention(&q, &k, &k, &g, false).is_err(),
        "unsupported head_dim must be an error"
    );
}

/// `attention` as an [`AttnOp`].
struct Forward;

impl AttnOp for Forward {
    fn outputs<B: TrainBackend>(&self, be: &B, c: &AttnCase) -> Vec<Vec<f32>> {
        let t = c.upload(be);
        let y = be.attention(&t[0], &t[1], &t[2], &c.g, c.xsa).unwrap();
        vec![be.download(&y).unwrap()]
    }
}

/// The tensor-core forward (`cuda/attention_tc.cu`, TF32 products) within TF32 rounding of
/// the oracle (rounding v to TF32 alone gives ~1e-3 here, |v| ≤ 2).
fn attention_on_tensor_cores<G: Gpu>(gpu: CudaBackend<G>) {
    let shapes = [
        (2, 150, 4, 2, 64),
        (1, 97, 4, 1, 32),
        (1, 1, 8, 4, 64),
        (1, 64, 2, 2, 32),
        (1, 40, 2, 1, 16),
    ];
    check_tensor_core_attention(gpu, &Forward, &shapes, 5e-3);
}

fn model_nll_matches<G: Gpu>(gpu: CudaBackend<G>, artifact: &str) {
    let Some(s) = common::shared() else { return };
    let art = Artifact::load(s.join("reference").join(artifact)).expect("artifact");
    let w = ModelWeights::from_artifact(&art, &ConfigOverrides::default()).expect("weights");
    let toks = load_tokens(
        s.join("data/text_sp1024/fineweb_val_000000.bin")
            .to_str()
            .unwrap(),
    )
    .expect("val shard");
    let (batch, seq) = (2, 1024);
    let ids = &toks[..batch * seq];
    let targets = &toks[1..batch * seq + 1];
    let cpu = DeviceModel::new(CpuBackend::new(), &w).expect("cpu upload");
    let gpu = DeviceModel::new(gpu, &w).expect("cuda upload");
    let want = cpu.nll(ids, targets, batch, seq, None).expect("cpu nll");
    let got = gpu.nll(ids, targets, batch, seq, None).expect("cuda nll");
    let d = max_diff(&got, &want);
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    println!(
        "{artifact}: 2 windows, mean nll cuda {:.6} cpu {:.6}, max abs diff {d:.3e}",
        mean(&got),
        mean(&want)
    );
    assert!(d < TOL, "{artifact}: max abs NLL diff {d} >= {TOL}");
    // Scored subset (the sliding-window path) goes through gather_rows.
    let rows: Vec<usize> = (960..1024).chain(1984..2048).collect();
    let want = cpu
        .nll(ids, targets, batch, seq, Some(&rows))
        .expect("cpu nll rows");
    let got = gpu
        .nll(ids, targets, batch, seq, Some(&rows))
        .expect("cuda nll rows");
    let d = max_diff(&got, &want);
    println!("{artifact}: scored rows only, max abs diff {d:.3e}");
    assert!(
        d < TOL,
        "{artifact}: max abs NLL diff on scored rows {d} >= {TOL}"
    );
}

fn baseline9l_first_two_windows_nll<G: Gpu>(gpu: CudaBackend<G>) {
    model_nll_matches(gpu, "baseline9L_int8_zlib.ptz");
}

fn mlp3x11l_first_two_windows_nll<G: Gpu>(gpu: CudaBackend<G>) {
    model_nll_matches(gpu, "mlp3x11L_int6_zstd.ptz");
}

/// #581's sidecar model (its own code wrote it: `seed_submissions.rs`) through the backend's
/// default ops for the sidecar (download, CPU oracle, upload) and its kernels for the rest:
/// per-position NLL and the gradients of its mean against the CPU backend.
fn sidecar_model_nll_and_grads<G: Gpu>(gpu: CudaBackend<G>) {
    use pgolf_rt::train::TrainModel;
    let w = common::seeds::pr581();
    let ids: Vec<u32> = (0..257u32).map(|i| (i * 37 + 11) % 1024).collect();
    let (batch, seq) = (2, 128);
    let (x, y) = (&ids[..256], &ids[1..257]);
    let cpu = TrainModel::new(CpuBackend::new(), &w).unwrap();
    let dev = TrainModel::new(gpu, &w).unwrap();
    let want = cpu.model().nll(x, y, batch, seq, None).unwrap();
    let got = dev.model().nll(x, y, batch, seq, None).unwrap();
    let d = max_diff(&got, &want);
    println!("pr581 sidecar: max abs NLL diff {d:.3e}");
    assert!(d < TOL, "sidecar model NLL differs by {d}");
    let rows: Vec<usize> = (0..256).collect();
    let (_, gc) = cpu
        .loss_and_grads(x, batch, seq, &rows, y, None, true)
        .unwrap();
    let (_, gd) = dev
        .loss_and_grads(x, batch, seq, &rows, y, None, true)
        .unwrap();
    let (mut gc, mut gd) = (gc.base.unwrap(), gd.base.unwrap());
    for (a, b) in gc.params_mut().into_iter().zip(gd.params_mut()) {
        assert_eq!(a.name, b.name);
        let scale = a.values.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let e = max_diff(b.values, a.values) / scale;
        assert!(e < 1e-4, "gradient of {}: {e:.2e} relative", a.name);
    }
}

/// The traffic counters count what crosses: an upload's bytes, a download's bytes and its wait,
/// one launch per product or kernel, nothing for device-side copies.
fn traffic_is_counted<G: Gpu>(gpu: CudaBackend<G>) {
    let t0 = gpu.traffic().expect("the CUDA backend counts traffic");
    let x = gpu.upload(&data(6 * 4, 0.3, 1.0), 6, 4).unwrap();
    let w = gpu.upload(&data(5 * 4, 0.7, 1.0), 5, 4).unwrap();
    let t1 = gpu.traffic().unwrap().since(t0);
    assert_eq!(
        (t1.h2d_bytes, t1.d2h_bytes, t1.syncs, t1.launches),
        (4 * 44, 0, 0, 0)
    );
    let y = gpu.linear(&x, &w).unwrap();
    let _copy = gpu.copy(&y).unwrap();
    let t2 = gpu.traffic().unwrap().since(t0);
    assert_eq!(t2.launches, 1, "one product");
    assert_eq!(t2.h2d_bytes, 4 * 44, "a device-side copy is not traffic");
    let v = gpu.download(&y).unwrap();
    assert_eq!(v.len(), 30);
    let t3 = gpu.traffic().unwrap().since(t0);
    assert_eq!((t3.d2h_bytes, t3.syncs), (4 * 30, 1));
    // Clones share the counters.
    let c = gpu.clone();
    c.download(&x).unwrap();
    assert_eq!(gpu.traffic().unwrap().since(t0).syncs, 2);
}

/// Stacked-weight products over equal documents are one strided-batched call: 8 documents of
/// 16 rows cost one launch forward and one per backward product; a short last document adds
/// one call, and an empty document in the middle cuts the run (the values themselves are the
/// conformance suite's `linear_segments` checks).
fn equal_segments_are_one_launch<G: Gpu>(gpu: CudaBackend<G>) {
    let (docs, len, k, n) = (8, 16, 24, 6);
    let x = gpu
        .upload(&data(docs * len * k, 0.3, 1.0), docs * len, k)
        .unwrap();
    let w = gpu
        .upload(&data(docs * n * k, 0.7, 1.0), docs * n, k)
        .unwrap();
    let dy = gpu
        .upload(&data(docs * len * n, 0.5, 1.0), docs * len, n)
        .unwrap();
    let launches = |segs: &[(usize, usize)]| {
        let t0 = gpu.traffic().unwrap();
        gpu.linear_segments(&x, &w, segs).unwrap();
        let t1 = gpu.traffic().unwrap();
        gpu.linear_segments_backward_input(&dy, &w, segs).unwrap();
        let t2 = gpu.traffic().unwrap();
        gpu.linear_segments_backward_weight(&dy, &x, segs).unwrap();
        let t3 = gpu.traffic().unwrap();
        // The outputs are zeroed first (one memset, not counted as a launch) where rows can
        // be left uncovered; what is counted is the products.
        [t1.since(t0), t2.since(t1), t3.since(t2)].map(|t| t.launches)
    };
    let equal: Vec<_> = (0..docs).map(|d| (d * len, (d + 1) * len)).collect();
    let mut short = equal.clone();
    short[docs - 1].1 -= 5;
    let mut hole = equal.clone();
    hole[3].1 = hole[3].0;
    let (e, s, h) = (launches(&equal), launches(&short), launches(&hole));
    println!("launches (forward, dx, dw): equal {e:?}, short last {s:?}, empty 4th {h:?}");
    assert_eq!(e, [1, 1, 1], "equal documents: one call per product");
    for i in 0..3 {
        assert_eq!(s[i], e[i] + 1, "a short last document is one more call");
        assert_eq!(h[i], e[i] + 1, "an empty document cuts the run in two");
    }
}

// Every op against the CPU oracle: the conformance suite every backend runs.
conformance_on_both_devices!(conformance_ops);

on_both_devices!(
    ops: unsupported_head_dim_is_an_error;
    backends: attention_on_tensor_cores,
        traffic_is_counted,
        equal_segments_are_one_launch,
        baseline9l_first_two_windows_nll,
        mlp3x11l_first_two_windows_nll,
        sidecar_model_nll_and_grads
);

/// `PGOLF_REQUIRE_CUDA=1` (what the GPU check sets) turns a missing device into a failure:
/// this test binary runs one of its own `gpu::` tests again as a child, with and without it.
/// Without a device the child passes with `SKIPPED` by default and fails when CUDA is
/// required; with one it passes either way.
#[test]
fn require_cuda_turns_a_missing_device_into_a_failure() {
    let run = |require: bool| {
        let mut c = std::process::Command::new(std::env::current_exe().unwrap());
        c.args([
            "--exact",
            "conformance::gpu::upload_download_copy_roundtrip",
            "--nocapture",
        ]);
        if require {
            c.env("PGOLF_REQUIRE_CUDA", "1");
        } else {
            c.env_remove("PGOLF_REQUIRE_CUDA");
        }
        let out = c.output().expect("re-run this test binary");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok_default, text_default) = run(false);
    let (ok_required, text_required) = run(true);
    assert!(ok_default, "without PGOLF_REQUIRE_CUDA: {text_default}");
    if CudaBackend::new().is_ok() {
        assert!(ok_required, "with a device: {text_required}");
        assert!(!text_required.contains("SKIPPED"), "{text_required}");
    } else {
        assert!(
            text_default.contains("SKIPPED: no CUDA device"),
            "{text_default}"
        );
        assert!(
            !ok_required,
            "PGOLF_REQUIRE_CUDA=1 must fail: {text_required}"
        );
        assert!(
            text_required.contains("required but missing: no CUDA device"),
            "{text_required}"
        );
    }
}
