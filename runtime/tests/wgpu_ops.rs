//! Every op of the wgpu backend against the CPU oracle: the conformance suite every backend
//! runs (`common/conformance`: sizes that are not multiples of the tile sizes, matmul 64,
//! attention 64/16, reductions 256, batch > 1, grouped-query attention, XSA on and off, the
//! ops with host defaults), then the shapes of a real forward, long windows, f16 weights and
//! the kernel timings. Without a wgpu adapter each test prints `SKIPPED: <reason>` and passes,
//! or fails under `PGOLF_REQUIRE_WGPU=1` (as in CI).
#![cfg(feature = "wgpu")]

mod common;

use pgolf_rt::backend::cpu::{CpuBackend, CpuTensor};
use pgolf_rt::backend::wgpu::WgpuBackend;
use pgolf_rt::backend::{AttnGeometry, Backend, RopeSpec};
use pgolf_rt::model::Activation;
use std::sync::OnceLock;

fn gpu() -> Option<&'static WgpuBackend> {
    static GPU: OnceLock<Result<WgpuBackend, String>> = OnceLock::new();
    match GPU.get_or_init(|| WgpuBackend::new().map_err(|e| e.to_string())) {
        Ok(b) => Some(b),
        Err(e) => {
            common::skip("PGOLF_REQUIRE_WGPU", e);
            None
        }
    }
}

/// Deterministic values in [-scale, scale).
fn rand(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

struct Pair<'a> {
    g: &'a WgpuBackend,
    c: CpuBackend,
}

impl Pair<'_> {
    fn up(
        &self,
        data: &[f32],
        rows: usize,
        cols: usize,
    ) -> (<WgpuBackend as Backend>::Tensor, CpuTensor) {
        (
            self.g.upload(data, rows, cols).unwrap(),
            self.c.upload(data, rows, cols).unwrap(),
        )
    }
}

fn pair() -> Option<Pair<'static>> {
    gpu().map(|g| Pair {
        g,
        c: CpuBackend::new(),
    })
}

/// Max |a-b| / (1 + |b|) over two equally long slices.
fn check(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst = 0.0f32;
    let mut at = 0;
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let e = (a - b).abs() / (1.0 + b.abs());
        if e > worst || e.is_nan() {
            worst = e;
            at = i;
            if e.is_nan() {
                break;
            }
        }
    }
    assert!(
        worst <= tol,
        "{what}: max rel error {worst:.3e} at {at}: {} vs {}",
        got[at],
        want[at]
    );
}

fn checkt(p: &Pair, what: &str, g: &<WgpuBackend as Backend>::Tensor, c: &CpuTensor, tol: f32) {
    assert_eq!(p.g.shape(g), (c.rows, c.cols), "{what}: shape");
    check(what, &p.g.download(g).unwrap(), &c.data, tol);
}

/// A fresh backend beside the CPU oracle for each conformance test (the backend is not `Clone`).
fn conformance_pair() -> Option<common::conformance::Pair<WgpuBackend>> {
    match WgpuBackend::new() {
        Ok(b) => Some(common::conformance::Pair::new(b)),
        Err(e) => {
            common::skip("PGOLF_REQUIRE_WGPU", e);
            None
        }
    }
}

// Every op against the CPU oracle: the conformance suite every backend runs.
conformance_ops!(conformance_pair());

#[test]
fn names_the_adapter() {
    let Some(g) = gpu() else { return };
    let name = g.name();
    eprintln!("{name}");
    assert!(name.starts_with("wgpu ("));
}

/// The shapes of a real standard-eval forward (2 windows of 1024, d=512, 8/4 heads of 64,
/// MLP 1024 wide, vocab 1024).
#[test]
fn model_sized_ops_match_cpu() {
    let Some(p) = pair() else { return };
    let (batch, seq, d, heads, kv, hd, vocab) = (2, 1024, 512, 8, 4, 64, 1024);
    let rows = batch * seq;
    let (xg, xc) = p.up(&rand(rows * d, 31, 1.0), rows, d);
    let (wg, wc) = p.up(&rand(2 * d * d, 32, 0.05), 2 * d, d);
    let (a, b) = (
        p.g.rms_norm(&xg, 1e-6, 1.0).unwrap(),
        p.c.rms_norm(&xc, 1e-6, 1.0).unwrap(),
    );
    checkt(&p, "rms_norm 2048x512", &a, &b, 2e-6);
    let (h, hc) = (p.g.linear(&a, &wg).unwrap(), p.c.linear(&b, &wc).unwrap());
    checkt(&p, "linear 2048x512 -> 1024", &h, &hc, 5e-5);
    let (act, actc) = (
        p.g.activation(&h, Activation::Relu2).unwrap(),
        p.c.activation(&hc, Activation::Relu2).unwrap(),
    );
    checkt(&p, "relu2 2048x1024", &act, &actc, 5e-5);
    let geom = AttnGeometry {
        batch,
        seq,
        heads,
        kv_heads: kv,
        head_dim: hd,
    };
    let rope = RopeSpec {
        base: 10_000.0,
        dims: hd,
    };
    let (mut qg, mut qc) = p.up(&rand(rows * heads * hd, 33, 2.0), rows, heads * hd);
    let (mut kg, mut kc) = p.up(&rand(rows * kv * hd, 34, 2.0), rows, kv * hd);
    let (vg, vc) = p.up(&rand(rows * kv * hd, 35, 2.0), rows, kv * hd);
    let (gg, gc) = p.up(&rand(heads, 36, 2.0), 1, heads);
    p.g.qk_norm_rope(&mut qg, &mut kg, &geom, &rope, &gg, 1e-6)
        .unwrap();
    p.c.qk_norm_rope(&mut qc, &mut kc, &geom, &rope, &gc, 1e-6)
        .unwrap();
    checkt(&p, "q 2x1024", &qg, &qc, 1e-5);
    checkt(&p, "k 2x1024", &kg, &kc, 1e-5);
    let (y, yc) = (
        p.g.attention(&qg, &kg, &vg, &geom, false).unwrap(),
        p.c.attention(&qc, &kc, &vc, &geom, false).unwrap(),
    );
    checkt(&p, "attention 2x1024", &y, &yc, 5e-5);
    let (eg, ec) = p.up(&rand(vocab * d, 37, 0.3), vocab, d);
    let t: Vec<u32> = (0..rows as u32)
        .map(|i| (i * 131 + 7) % vocab as u32)
        .collect();
    let ga = p.g.nll(&a, &eg, &t, 30.0).unwrap();
    let ca = p.c.nll(&b, &ec, &t, 30.0).unwrap();
    check("nll 2048 rows", &ga, &ca, 5e-5);
}

/// Long windows: every 64-query block of every (window, head) against the CPU.
#[test]
fn attention_long_windows_every_block() {
    let Some(p) = pair() else { return };
    for &(batch, seq, heads, kv, hd) in
        &[(1, 1024, 1, 1, 64), (2, 1024, 8, 4, 64), (1, 600, 2, 1, 32)]
    {
        let geom = AttnGeometry {
            batch,
            seq,
            heads,
            kv_heads: kv,
            head_dim: hd,
        };
        let rows = batch * seq;
        let (qg, qc) = p.up(&rand(rows * heads * hd, 41, 2.0), rows, heads * hd);
        let (kg, kc) = p.up(&rand(rows * kv * hd, 42, 2.0), rows, kv * hd);
        let (vg, vc) = p.up(&rand(rows * kv * hd, 43, 2.0), rows, kv * hd);
        let a =
            p.g.download(&p.g.attention(&qg, &kg, &vg, &geom, false).unwrap())
                .unwrap();
        let b = p.c.attention(&qc, &kc, &vc, &geom, false).unwrap().data;
        let mut bad = Vec::new();
        for bi in 0..batch {
            for h in 0..heads {
                for blk in 0..seq.div_ceil(64) {
                    let mut e = 0.0f32;
                    for t in blk * 64..((blk + 1) * 64).min(seq) {
                        let o = (bi * seq + t) * heads * hd + h * hd;
                        for d in 0..hd {
                            e = e.max((a[o + d] - b[o + d]).abs());
                        }
                    }
                    if e > 1e-4 {
                        bad.push(format!("(b{bi} h{h} blk{blk}: {e:.1e})"));
                    }
                }
            }
        }
        assert!(
            bad.is_empty(),
            "{geom:?}: {} bad blocks: {}",
            bad.len(),
            bad.join(" ")
        );
    }
}

/// Per-kernel timings at the baseline's shapes (one 1024-token window, d=512, 8/4 heads of 64,
/// MLP 1024, vocab 1024), for profiling:
/// `cargo test --release --features wgpu --test wgpu_ops -- --ignored --nocapture kernel_timings`.
#[test]
#[ignore]
fn kernel_timings() {
    let Some(g) = gpu() else { return };
    eprintln!("{}", g.name());
    // Process CPU time (s) from /proc (lavapipe runs on this process's threads), steadier than
    // wall time on a shared machine.
    let cpu = || -> f64 {
        let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let f: Vec<&str> = s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (tick(11) + tick(12)) / 100.0
    };
    let time = |what: &str, reps: usize, f: &dyn Fn()| {
        f();
        g.synchronize().unwrap();
        let (t, c) = (std::time::Instant::now(), cpu());
        for _ in 0..reps {
            f();
        }
        g.synchronize().unwrap();
        eprintln!(
            "{what}: {:.1} ms wall, {:.1} ms CPU",
            t.elapsed().as_secs_f64() * 1e3 / reps as f64,
            (cpu() - c) * 1e3 / reps as f64
        );
    };
    let (seq, d, heads, kv, hd, vocab) = (1024, 512, 8, 4, 64, 1024);
    let x = g.upload(&rand(seq * 2 * d, 1, 1.0), seq, 2 * d).unwrap();
    let x1 = g.upload(&rand(seq * d, 1, 1.0), seq, d).unwrap();
    for (n, k) in [(512, 512), (256, 512), (1024, 512), (512, 1024)] {
        let w = g.upload(&rand(n * k, 2, 0.05), n, k).unwrap();
        let xin = if k == d { &x1 } else { &x };
        time(&format!("linear {seq}x{k}·({n}x{k})ᵀ"), 2, &|| {
            drop(g.linear(xin, &w).unwrap());
        });
        let w = g.upload_weight(&rand(n * k, 2, 0.05), n, k).unwrap();
        time(
            &format!("linear {seq}x{k}·({n}x{k})ᵀ, upload_weight"),
            2,
            &|| {
                drop(g.linear(xin, &w).unwrap());
            },
        );
    }
    let geom = AttnGeometry {
        batch: 1,
        seq,
        heads,
        kv_heads: kv,
        head_dim: hd,
    };
    let q = g
        .upload(&rand(seq * heads * hd, 3, 1.0), seq, heads * hd)
        .unwrap();
    let k = g
        .upload(&rand(seq * kv * hd, 4, 1.0), seq, kv * hd)
        .unwrap();
    let v = g
        .upload(&rand(seq * kv * hd, 5, 1.0), seq, kv * hd)
        .unwrap();
    time("attention 1x1024, 8/4 heads of 64", 2, &|| {
        drop(g.attention(&q, &k, &v, &geom, false).unwrap());
    });
    time("rms_norm 1024x512", 5, &|| {
        drop(g.rms_norm(&x1, 1e-6, 1.0).unwrap());
    });
    let head = g.upload(&rand(vocab * d, 6, 0.3), vocab, d).unwrap();
    let t: Vec<u32> = (0..seq as u32).map(|i| i % vocab as u32).collect();
    time("nll 1024 rows, vocab 1024", 2, &|| {
        g.nll(&x1, &head, &t, 30.0).unwrap();
    });
}

/// f16 weight storage (`upload_weight` on an adapter with `SHADER_F16`): linear, embedding and
/// the head read f16 weights and match the CPU run on the same weights rounded to f16; activations
/// stay f32, and f32-only ops refuse an f16 tensor. The f32 switch (`with_f16_weights(false)`)
/// stores weights exactly. Without `SHADER_F16` the f16 half prints `SKIPPED: <reason>`.
#[test]
fn f16_weights_match_cpu_on_rounded_weights() {
    if gpu().is_none() {
        return;
    }
    let f32_gpu = WgpuBackend::with_f16_weights(false).unwrap();
    assert!(!f32_gpu.f16_weights());
    assert!(
        f32_gpu.name().ends_with(", f32 weights)"),
        "{}",
        f32_gpu.name()
    );
    let w = rand(33 * 70, 50, 0.5);
    let t = f32_gpu.upload_weight(&w, 33, 70).unwrap();
    assert_eq!(
        f32_gpu.download(&t).unwrap(),
        w,
        "f32 weights are stored exactly"
    );

    let g = WgpuBackend::with_f16_weights(true).unwrap();
    if !g.adapter_has_f16() {
        common::skip(
            "PGOLF_REQUIRE_WGPU",
            format_args!(
                "(f16 half) adapter {:?} does not offer SHADER_F16; weights stay f32 ({})",
                g.adapter_info().name,
                g.name()
            ),
        );
        assert!(!g.f16_weights());
        return;
    }
    assert!(g.f16_weights() && g.name().ends_with(", f16 weights)"));
    let p = Pair {
        g: &g,
        c: CpuBackend::new(),
    };
    let round =
        |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect() };
    // Odd element counts exercise the last half-filled word.
    for (i, &(m, k, n)) in [(3, 5, 7), (130, 129, 65), (200, 512, 96), (1024, 512, 1024)]
        .iter()
        .enumerate()
    {
        let wv = rand(n * k, 60 + i as u64, 0.5);
        let wg = g.upload_weight(&wv, n, k).unwrap();
        assert_eq!(g.download(&wg).unwrap(), round(&wv), "f16 round trip");
        let wc = p.c.upload(&round(&wv), n, k).unwrap();
        let (xg, xc) = p.up(&rand(m * k, 70 + i as u64, 1.0), m, k);
        let (a, b) = (g.linear(&xg, &wg).unwrap(), p.c.linear(&xc, &wc).unwrap());
        checkt(&p, &format!("f16 linear {m}x{k}·({n}x{k})ᵀ"), &a, &b, 5e-5);
        let wg2 = g.copy(&wg).unwrap();
        assert_eq!(g.download(&wg2).unwrap(), round(&wv), "copy keeps f16");
        assert!(
            g.rms_norm(&wg, 1e-6, 1.0).is_err(),
            "f16 input to an f32 op"
        );
        assert!(g.linear(&wg, &wg).is_err(), "f16 activations are refused");
    }
    let tv = rand(71 * 24, 80, 1.0);
    let tg = g.upload_weight(&tv, 71, 24).unwrap();
    let tc = p.c.upload(&round(&tv), 71, 24).unwrap();
    let ids: Vec<u32> = (0..301u32).map(|i| (i * 37 + 5) % 71).collect();
    let (a, b) = (
        g.embedding(&tg, &ids).unwrap(),
        p.c.embedding(&tc, &ids).unwrap(),
    );
    checkt(&p, "f16 embedding", &a, &b, 0.0);
    let (rows, dim, vocab) = (300, 64, 1024);
    let (hg, hc) = p.up(&rand(rows * dim, 81, 2.0), rows, dim);
    let hv = rand(vocab * dim, 82, 2.0);
    let headg = g.upload_weight(&hv, vocab, dim).unwrap();
    let headc = p.c.upload(&round(&hv), vocab, dim).unwrap();
    let tg: Vec<u32> = (0..rows as u32)
        .map(|i| (i * 31 + 7) % vocab as u32)
        .collect();
    let a = g.nll(&hg, &headg, &tg, 30.0).unwrap();
    let b = p.c.nll(&hc, &headc, &tg, 30.0).unwrap();
    check("f16 nll", &a, &b, 2e-5);
    let a = g.log_probs(&hg, &headg, 30.0).unwrap();
    let b = p.c.log_probs(&hc, &headc, 30.0).unwrap();
    check("f16 log_probs", &a, &b, 2e-5);
}
