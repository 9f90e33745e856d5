//! CUDA backend vs the CPU oracle: every `Backend` op on small shapes, then the per-token NLL of
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

use common::devices::{
    assert_close, attention_cases, check_tensor_core_attention, data, max_diff, AttnCase, AttnOp,
    Pair, TOL,
};
use pgolf_rt::artifact::Artifact;
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::backend::cuda::gpu::Gpu;
use pgolf_rt::backend::cuda::CudaBackend;
use pgolf_rt::backend::train::TrainBackend;
use pgolf_rt::backend::{AttnGeometry, Backend, RopeSpec};
use pgolf_rt::data::load_tokens;
use pgolf_rt::model::{Activation, ConfigOverrides, DeviceModel, ModelWeights};

fn upload_download_copy_roundtrip<G: Gpu>(p: &Pair<G>) {
    let v = data(37 * 5, 0.7, 3.0);
    let g = p.gpu.upload(&v, 37, 5).unwrap();
    assert_eq!(p.gpu.download(&g).unwrap(), v);
    let g2 = p.gpu.copy(&g).unwrap();
    assert_eq!(p.gpu.download(&g2).unwrap(), v);
    assert_eq!(p.gpu.shape(&g2), (37, 5));
    let e = p.gpu.upload(&[], 0, 5).unwrap();
    assert!(p.gpu.download(&e).unwrap().is_empty());
}

fn embedding_and_gather_rows<G: Gpu>(p: &Pair<G>) {
    let (tc, tg) = p.up(&data(50 * 24, 0.31, 2.0), 50, 24);
    let ids: Vec<u32> = (0..77u32).map(|i| (i * 13 + 5) % 50).collect();
    p.check(
        "embedding",
        &p.cpu.embedding(&tc, &ids).unwrap(),
        &p.gpu.embedding(&tg, &ids).unwrap(),
    );
    assert!(
        p.gpu.embedding(&tg, &[50]).is_err(),
        "out-of-range id must be an error"
    );
    let rows: Vec<usize> = vec![49, 0, 3, 3, 17];
    p.check(
        "gather_rows",
        &p.cpu.gather_rows(&tc, &rows).unwrap(),
        &p.gpu.gather_rows(&tg, &rows).unwrap(),
    );
}

fn linear_matches<G: Gpu>(p: &Pair<G>) {
    for &(m, k, n) in &[(1, 1, 1), (7, 33, 19), (130, 512, 96), (257, 64, 1024)] {
        let (xc, xg) = p.up(&data(m * k, 0.37, 1.0), m, k);
        let (wc, wg) = p.up(&data(n * k, 0.91, 0.2), n, k);
        p.check(
            &format!("linear {m}x{k}·{n}x{k}ᵀ"),
            &p.cpu.linear(&xc, &wc).unwrap(),
            &p.gpu.linear(&xg, &wg).unwrap(),
        );
    }
}

fn linear_segments_matches<G: Gpu>(p: &Pair<G>) {
    let (rows, k, n) = (40, 24, 6);
    // Three members with an empty one and rows no member covers.
    let segs = [(0, 10), (10, 10), (15, 37)];
    let (xc, xg) = p.up(&data(rows * k, 0.37, 1.0), rows, k);
    let (wc, wg) = p.up(&data(segs.len() * n * k, 0.91, 0.3), segs.len() * n, k);
    p.check(
        "linear_segments",
        &p.cpu.linear_segments(&xc, &wc, &segs).unwrap(),
        &p.gpu.linear_segments(&xg, &wg, &segs).unwrap(),
    );
    assert!(p.gpu.linear_segments(&xg, &wg, &[(0, 41)]).is_err());
    assert!(p
        .gpu
        .linear_segments(&xg, &wg, &[(5, 9), (0, 2), (9, 9)])
        .is_err());
}

fn norms_mixes_and_adds<G: Gpu>(p: &Pair<G>) {
    let (r, c) = (67, 96);
    let (xc, xg) = p.up(&data(r * c, 0.21, 3.0), r, c);
    let (x0c, x0g) = p.up(&data(r * c, 0.57, 1.5), r, c);
    let (mc, mg) = p.up(&data(2 * c, 0.11, 1.2), 2, c);
    let (sc, sg) = p.up(&data(c, 0.43, 0.8), 1, c);
    for (eps, scale) in [(1e-6f32, 1.0f32), (1e-5, 0.5)] {
        p.check(
            &format!("rms_norm eps={eps} scale={scale}"),
            &p.cpu.rms_norm(&xc, eps, scale).unwrap(),
            &p.gpu.rms_norm(&xg, eps, scale).unwrap(),
        );
    }
    p.check(
        "resid_mix",
        &p.cpu.resid_mix(&xc, &x0c, &mc).unwrap(),
        &p.gpu.resid_mix(&xg, &x0g, &mg).unwrap(),
    );
    let (mut ac, mut ag) = (p.cpu.copy(&xc).unwrap(), p.gpu.copy(&xg).unwrap());
    p.cpu.add_scaled(&mut ac, &x0c, &sc).unwrap();
    p.gpu.add_scaled(&mut ag, &x0g, &sg).unwrap();
    p.check("add_scaled", &ac, &ag);
    p.cpu.add_scalar_scaled(&mut ac, &x0c, -0.37).unwrap();
    p.gpu.add_scalar_scaled(&mut ag, &x0g, -0.37).unwrap();
    p.check("add_scalar_scaled", &ac, &ag);
    for seq in [1, 67] {
        p.check(
            &format!("smear seq={seq}"),
            &p.cpu.smear(&xc, &sc, seq).unwrap(),
            &p.gpu.smear(&xg, &sg, seq).unwrap(),
        );
    }
    for act in [Activation::Relu2, Activation::LeakyRelu2 { slope: 0.5 }] {
        p.check(
            &format!("activation {act:?}"),
            &p.cpu.activation(&xc, act).unwrap(),
            &p.gpu.activation(&xg, act).unwrap(),
        );
    }
}

fn qk_norm_rope_full_and_partial<G: Gpu>(p: &Pair<G>) {
    for &(hd, dims, base) in &[
        (64usize, 64usize, 10_000.0f32),
        (64, 16, 10_000.0),
        (32, 8, 500.0),
        (16, 0, 10_000.0),
    ] {
        let g = AttnGeometry {
            batch: 3,
            seq: 45,
            heads: 4,
            kv_heads: 2,
            head_dim: hd,
        };
        let rows = g.batch * g.seq;
        let (mut qc, mut qg) = p.up(&data(rows * g.heads * hd, 0.33, 2.0), rows, g.heads * hd);
        let (mut kc, mut kg) = p.up(
            &data(rows * g.kv_heads * hd, 0.77, 2.0),
            rows,
            g.kv_heads * hd,
        );
        let (gc, gg) = p.up(&data(g.heads, 0.5, 1.5), 1, g.heads);
        let rope = RopeSpec { base, dims };
        p.cpu
            .qk_norm_rope(&mut qc, &mut kc, &g, &rope, &gc, 1e-6)
            .unwrap();
        p.gpu
            .qk_norm_rope(&mut qg, &mut kg, &g, &rope, &gg, 1e-6)
            .unwrap();
        p.check(&format!("qk_norm_rope q hd={hd} dims={dims}"), &qc, &qg);
        p.check(&format!("qk_norm_rope k hd={hd} dims={dims}"), &kc, &kg);
    }
}

fn attention_causal_gqa_xsa<G: Gpu>(p: &Pair<G>) {
    let cases = [
        (2, 150, 4, 2, 8),
        (1, 64, 2, 2, 16),
        (2, 200, 8, 4, 64),
        (1, 1, 8, 4, 64),
        (1, 97, 4, 1, 32),
        (1, 130, 2, 1, 128),
    ];
    for c in attention_cases(&cases) {
        let (tc, tg) = (c.upload(&p.cpu), c.upload(&p.gpu));
        p.check(
            &format!("attention {}", c.name()),
            &p.cpu
                .attention(&tc[0], &tc[1], &tc[2], &c.g, c.xsa)
                .unwrap(),
            &p.gpu
                .attention(&tg[0], &tg[1], &tg[2], &c.g, c.xsa)
                .unwrap(),
        );
    }
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

fn head_nll_and_log_probs<G: Gpu>(p: &Pair<G>) {
    for &(rows, d, vocab, cap) in &[
        (5usize, 8usize, 11usize, 30.0f32),
        (300, 64, 1024, 30.0),
        (33, 32, 1000, 0.0),
    ] {
        let (hc, hg) = p.up(&data(rows * d, 0.31, 3.0), rows, d);
        let (wc, wg) = p.up(&data(vocab * d, 0.77, 0.5), vocab, d);
        let t: Vec<u32> = (0..rows as u32)
            .map(|i| (i * 7 + 3) % vocab as u32)
            .collect();
        let nc = p.cpu.nll(&hc, &wc, &t, cap).unwrap();
        let ng = p.gpu.nll(&hg, &wg, &t, cap).unwrap();
        assert_close(
            &format!("nll {rows}x{d} vocab {vocab} cap {cap}"),
            &ng,
            &nc,
            TOL,
        );
        let lc = p.cpu.log_probs(&hc, &wc, cap).unwrap();
        let lg = p.gpu.log_probs(&hg, &wg, cap).unwrap();
        assert_close(
            &format!("log_probs {rows}x{d} vocab {vocab} cap {cap}"),
            &lg,
            &lc,
            TOL,
        );
    }
    let (hg, wg) = (
        p.gpu.upload(&[1.0; 4], 1, 4).unwrap(),
        p.gpu.upload(&[1.0; 8], 2, 4).unwrap(),
    );
    assert!(
        p.gpu.nll(&hg, &wg, &[2], 30.0).is_err(),
        "out-of-range target must be an error"
    );
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

on_both_devices!(
    ops: upload_download_copy_roundtrip,
        embedding_and_gather_rows,
        linear_matches,
        linear_segments_matches,
        norms_mixes_and_adds,
        qk_norm_rope_full_and_partial,
        attention_causal_gqa_xsa,
        head_nll_and_log_probs;
    backends: attention_on_tensor_cores,
        traffic_is_counted,
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
            "gpu::upload_download_copy_roundtrip",
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
