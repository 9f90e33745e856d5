//! The training ops of [`TrainBackend`] against the CPU oracle, for any training backend (the
//! CUDA one on a device and on its emulator today): every backward op, the optimizer ops and
//! Newton-Schulz, on small shapes that are not multiples of any block size.

use super::{assert_close, attention_cases, data, Pair};

/// One `#[test]` per training op for the backend pair `$make` builds (an `Option<Pair<B>>`,
/// `B: TrainBackend`: `None` skips, having said why).
#[macro_export]
macro_rules! conformance_train_ops {
    ($make:expr) => {
        $crate::conformance_train_ops!(@each $make;
            linear_backward,
            optimizer_ops,
            newton_schulz,
            scatter_backward,
            norm_resid_smear_activation_backward,
            qk_norm_rope_backward,
            attention_backward,
            head_backward);
    };
    (@each $make:expr; $($op:ident),*) => {
        $(#[test]
        fn $op() {
            if let Some(p) = $make {
                $crate::common::conformance::train::$op(&p);
            }
        })*
    };
}
use pgolf_rt::backend::train::TrainBackend;
use pgolf_rt::backend::{AttnGeometry, Backend, RopeSpec};
use pgolf_rt::model::Activation;

/// Every optimizer op of the device step (`cuda/optim.cu`) against its oracle
/// (`backend/cpu/optim.rs`, what the CPU backend runs), on shapes that are not multiples of the
/// block size: Muon's momentum and update (f32 and bf16), Adam and AdamW, the EMA, QAT's fake
/// quantization, the squared norm over several tensors, and the trainer's copies (rows, row
/// blocks stacked and sliced).
pub fn optimizer_ops<B: TrainBackend>(p: &Pair<B>) {
    use pgolf_rt::backend::cpu::optim::AdamStep;
    let (r, c) = (37, 70);
    let n = r * c;
    let g = data(n, 0.41, 0.7);
    let w = data(n, 0.83, 1.3);
    for nesterov in [true, false] {
        let (mut bc, mut bg) = p.up(&data(n, 0.29, 0.5), r, c);
        let (gc, gg) = p.up(&g, r, c);
        let uc = p.cpu.muon_momentum(&mut bc, &gc, 0.95, nesterov).unwrap();
        let ug = p.gpu.muon_momentum(&mut bg, &gg, 0.95, nesterov).unwrap();
        p.check(
            &format!("muon_momentum buf (nesterov {nesterov})"),
            &bc,
            &bg,
        );
        p.check(&format!("muon_momentum u (nesterov {nesterov})"), &uc, &ug);
    }
    for bf16 in [false, true] {
        let (mut wc, mut wg) = p.up(&w, r, c);
        let (oc, og) = p.up(&g, r, c);
        p.cpu
            .muon_apply(&mut wc, &oc, 0.99, 0.04, 1.7, bf16)
            .unwrap();
        p.gpu
            .muon_apply(&mut wg, &og, 0.99, 0.04, 1.7, bf16)
            .unwrap();
        p.check(&format!("muon_apply (bf16 {bf16})"), &wc, &wg);
    }
    for decay in [1.0, 0.996] {
        let s = AdamStep {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            step_size: 0.05 / (1.0 - 0.9f32.powi(3)),
            bc2_sqrt: (1.0 - 0.95f32.powi(3)).sqrt(),
            decay,
        };
        let (mut wc, mut wg) = p.up(&w, r, c);
        let (gc, gg) = p.up(&g, r, c);
        let (mut mc, mut mg) = p.up(&data(n, 0.17, 0.1), r, c);
        let v0: Vec<f32> = data(n, 0.61, 0.3).iter().map(|x| x * x).collect();
        let (mut vc, mut vg) = p.up(&v0, r, c);
        p.cpu
            .adam_update(&mut wc, &gc, &mut mc, &mut vc, &s)
            .unwrap();
        p.gpu
            .adam_update(&mut wg, &gg, &mut mg, &mut vg, &s)
            .unwrap();
        p.check(&format!("adam_update w (decay {decay})"), &wc, &wg);
        p.check("adam_update m", &mc, &mg);
        p.check("adam_update v", &vc, &vg);
    }
    let (mut ec, mut eg) = p.up(&w, r, c);
    let (gc, gg) = p.up(&g, r, c);
    p.cpu.ema_update(&mut ec, &gc, 0.997).unwrap();
    p.gpu.ema_update(&mut eg, &gg, 0.997).unwrap();
    p.check("ema_update", &ec, &eg);
    for (first, momentum, wd) in [(true, 0.9, 0.0), (false, 0.9, 0.01), (false, 0.0, 0.0)] {
        let s = pgolf_rt::backend::cpu::optim::SgdStep {
            lr: 0.03,
            momentum,
            weight_decay: wd,
            grad_scale: 0.7,
            first,
        };
        let (mut wc, mut wg) = p.up(&w, r, c);
        let (gc, gg) = p.up(&g, r, c);
        let (mut bc, mut bg) = p.up(&data(n, 0.23, 0.4), r, c);
        p.cpu.sgd_update(&mut wc, &gc, &mut bc, &s).unwrap();
        p.gpu.sgd_update(&mut wg, &gg, &mut bg, &s).unwrap();
        let what = format!("sgd_update (first {first}, momentum {momentum}, wd {wd})");
        p.check(&format!("{what} w"), &wc, &wg);
        p.check(&format!("{what} buf"), &bc, &bg);
    }
    // Fake quantization rounds the same divisions the same way: equal values, a zero row kept.
    let mut wq = w.clone();
    wq[c..2 * c].fill(0.0);
    let (qc, qg) = p.up(&wq, r, c);
    let (fc, fg) = (
        p.cpu.fake_quant_rows(&qc).unwrap(),
        p.gpu.fake_quant_rows(&qg).unwrap(),
    );
    assert_eq!(
        p.cpu.download(&fc).unwrap(),
        p.gpu.download(&fg).unwrap(),
        "fake_quant_rows"
    );
    let tensors: Vec<Vec<f32>> = [(5, 3), (1, 1), (300, 257)]
        .iter()
        .enumerate()
        .map(|(i, &(a, b))| data(a * b, 0.3 + i as f32, 2.0))
        .collect();
    let up: Vec<_> = tensors.iter().map(|t| p.up(t, 1, t.len())).collect();
    let (sc, sg) = (
        p.cpu
            .sum_squares(&up.iter().map(|x| &x.0).collect::<Vec<_>>())
            .unwrap(),
        p.gpu
            .sum_squares(&up.iter().map(|x| &x.1).collect::<Vec<_>>())
            .unwrap(),
    );
    println!(
        "sum_squares: cpu {sc} gpu {sg} (rel {:.2e})",
        (sc - sg).abs() / sc
    );
    assert!((sc - sg).abs() <= 1e-12 * sc, "sum_squares {sg} vs {sc}");
    // Rows, stacked rows, a dot as a tensor, and values read back together.
    let (xc, xg) = p.up(&w[..5 * c], 5, c);
    p.check(
        "row 3",
        &p.cpu.row(&xc, 3).unwrap(),
        &p.gpu.row(&xg, 3).unwrap(),
    );
    assert!(p.gpu.row(&xg, 5).is_err());
    let rows_c: Vec<_> = (0..5).map(|i| p.cpu.row(&xc, i).unwrap()).collect();
    let rows_g: Vec<_> = (0..5).map(|i| p.gpu.row(&xg, i).unwrap()).collect();
    let sc: Vec<_> = (0..5).map(|i| (i != 2).then(|| &rows_c[i])).collect();
    let sg: Vec<_> = (0..5).map(|i| (i != 2).then(|| &rows_g[i])).collect();
    p.check(
        "stack_rows (row 2 left zero)",
        &p.cpu.stack_rows(&sc, c).unwrap(),
        &p.gpu.stack_rows(&sg, c).unwrap(),
    );
    // Row blocks stacked and sliced (batched LoRA TTT's adapters and gradients).
    let (ac, ag) = p.up(&g[..3 * c], 3, c);
    p.check(
        "concat_rows",
        &p.cpu.concat_rows(&[&xc, &ac, &xc]).unwrap(),
        &p.gpu.concat_rows(&[&xg, &ag, &xg]).unwrap(),
    );
    p.check(
        "slice_rows 1..4",
        &p.cpu.slice_rows(&xc, 1, 4).unwrap(),
        &p.gpu.slice_rows(&xg, 1, 4).unwrap(),
    );
    assert!(p.gpu.slice_rows(&xg, 4, 6).is_err() && p.gpu.slice_rows(&xg, 3, 2).is_err());
    let (_, narrow) = p.up(&w[..4], 1, 4);
    assert!(p.gpu.concat_rows(&[&xg, &narrow]).is_err());
    assert!(p.gpu.concat_rows(&[]).is_err());
    let (yc, yg) = p.up(&g[..5 * c], 5, c);
    p.check(
        "dot_tensor",
        &p.cpu.dot_tensor(&xc, &yc).unwrap(),
        &p.gpu.dot_tensor(&xg, &yg).unwrap(),
    );
    let firsts_c = p
        .cpu
        .read_values(&rows_c.iter().collect::<Vec<_>>())
        .unwrap();
    let firsts_g = p
        .gpu
        .read_values(&rows_g.iter().collect::<Vec<_>>())
        .unwrap();
    assert_eq!(firsts_c, firsts_g);
    assert_eq!(firsts_c, (0..5).map(|i| w[i * c]).collect::<Vec<_>>());
}

pub fn linear_backward<B: TrainBackend>(p: &Pair<B>) {
    for &(m, k, n) in &[(1, 1, 1), (7, 33, 19), (130, 64, 96)] {
        let (xc, xg) = p.up(&data(m * k, 0.37, 1.0), m, k);
        let (wc, wg) = p.up(&data(n * k, 0.91, 0.2), n, k);
        let (dc, dg) = p.up(&data(m * n, 0.53, 1.5), m, n);
        p.check(
            &format!("linear dx {m}x{n}·{n}x{k}"),
            &p.cpu.linear_backward_input(&dc, &wc).unwrap(),
            &p.gpu.linear_backward_input(&dg, &wg).unwrap(),
        );
        p.check(
            &format!("linear dw {m}x{n}ᵀ·{m}x{k}"),
            &p.cpu.linear_backward_weight(&dc, &xc).unwrap(),
            &p.gpu.linear_backward_weight(&dg, &xg).unwrap(),
        );
    }
    let (_, dg) = p.up(&data(6, 0.5, 1.0), 2, 3);
    let (_, wg) = p.up(&data(8, 0.5, 1.0), 4, 2);
    assert!(p.gpu.linear_backward_input(&dg, &wg).is_err());

    let (rows, k, n) = (40, 24, 6);
    let (xc, xg) = p.up(&data(rows * k, 0.37, 1.0), rows, k);
    let (dc, dg) = p.up(&data(rows * n, 0.53, 1.5), rows, n);
    for segs in super::SEGMENT_CASES {
        let (wc, wg) = p.up(&data(segs.len() * n * k, 0.91, 0.3), segs.len() * n, k);
        p.check(
            &format!("linear_segments dx {segs:?}"),
            &p.cpu
                .linear_segments_backward_input(&dc, &wc, segs)
                .unwrap(),
            &p.gpu
                .linear_segments_backward_input(&dg, &wg, segs)
                .unwrap(),
        );
        p.check(
            &format!("linear_segments dw {segs:?}"),
            &p.cpu
                .linear_segments_backward_weight(&dc, &xc, segs)
                .unwrap(),
            &p.gpu
                .linear_segments_backward_weight(&dg, &xg, segs)
                .unwrap(),
        );
    }
    let segs = super::SEGMENT_CASES[0];
    // A stacked weight that is not segments x out rows, and segments past the rows: errors.
    let (wc7, wg7) = p.up(&data(7 * k, 0.2, 1.0), 7, k);
    assert!(p
        .cpu
        .linear_segments_backward_input(&dc, &wc7, segs)
        .is_err());
    assert!(p
        .gpu
        .linear_segments_backward_input(&dg, &wg7, segs)
        .is_err());
    let past = [(0, 10), (10, rows + 1)];
    assert!(p
        .cpu
        .linear_segments_backward_weight(&dc, &xc, &past)
        .is_err());
    assert!(p
        .gpu
        .linear_segments_backward_weight(&dg, &xg, &past)
        .is_err());
}

/// Muon's Newton-Schulz on the device against the host oracle (`TrainBackend::newton_schulz`'s
/// default, which the CPU backend keeps): wide, tall and square, float32 and bf16.
pub fn newton_schulz<B: TrainBackend>(p: &Pair<B>) {
    for &(rows, cols) in &[(12, 20), (20, 12), (16, 16), (48, 130)] {
        let (uc, ug) = p.up(&data(rows * cols, 0.71, 0.8), rows, cols);
        let f32_gpu = p.gpu.newton_schulz(&ug, 5, false).unwrap();
        p.check(
            &format!("newton_schulz f32 {rows}x{cols}"),
            &p.cpu.newton_schulz(&uc, 5, false).unwrap(),
            &f32_gpu,
        );
        // bf16: the same roundings in the same order; only the f32 summation order of the
        // products differs, which can move a value across a bf16 rounding boundary. Seen on
        // the emulator: every value equal. Asserted: at least 99% equal, the rest within one
        // bf16 step at the value's magnitude (2^-7 relative), as a GPU's order may differ.
        let want = p
            .cpu
            .download(&p.cpu.newton_schulz(&uc, 5, true).unwrap())
            .unwrap();
        let got = p
            .gpu
            .download(&p.gpu.newton_schulz(&ug, 5, true).unwrap())
            .unwrap();
        let equal = got.iter().zip(&want).filter(|(a, b)| a == b).count();
        let d = super::max_diff(&got, &want);
        println!(
            "newton_schulz bf16 {rows}x{cols}: {equal}/{} equal, max diff {d:.2e}",
            got.len()
        );
        assert!(equal * 100 >= got.len() * 99, "only {equal} equal");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= w.abs().max(g.abs()) / 128.0,
                "newton_schulz bf16 {rows}x{cols}: {g} vs {w}: more than one bf16 step"
            );
        }
        assert!(
            got.iter().all(|v| half::bf16::from_f32(*v).to_f32() == *v),
            "bf16 NS output is not bf16-representable"
        );
        let f = p.gpu.download(&f32_gpu).unwrap();
        let d = super::max_diff(&got, &f);
        assert!(
            d > 1e-4,
            "bf16 NS equals the f32 one ({d}): no rounding applied"
        );
    }
    // Several matrices at once, shapes repeated and interleaved (a backend may batch each
    // shape): every result the oracle's for that matrix, in order.
    let shapes = [(12, 20), (20, 12), (12, 20), (16, 16), (12, 20), (20, 12)];
    let ups: Vec<_> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(r, c))| p.up(&data(r * c, 0.3 + 0.11 * i as f32, 0.8), r, c))
        .collect();
    for bf16 in [false, true] {
        let gu: Vec<_> = ups.iter().map(|(_, g)| g).collect();
        let got = p.gpu.newton_schulz_many(&gu, 5, bf16).unwrap();
        assert_eq!(got.len(), shapes.len());
        for (i, ((uc, _), g)) in ups.iter().zip(&got).enumerate() {
            assert_eq!(p.gpu.shape(g), shapes[i]);
            let want = p.cpu.newton_schulz(uc, 5, bf16).unwrap();
            let (w, g) = (p.cpu.download(&want).unwrap(), p.gpu.download(g).unwrap());
            let scale = w.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let d = super::max_diff(&g, &w);
            // bf16: one bf16 step, as above; f32: the products' tolerance.
            let tol = if bf16 { scale / 128.0 } else { p.tol * scale };
            assert!(
                d <= tol,
                "newton_schulz_many[{i}] {:?} bf16={bf16}: {d}",
                shapes[i]
            );
        }
    }
    assert!(p.gpu.newton_schulz_many(&[], 5, false).unwrap().is_empty());
}

pub fn scatter_backward<B: TrainBackend>(p: &Pair<B>) {
    let (dc, dg) = p.up(&data(77 * 24, 0.31, 2.0), 77, 24);
    let ids: Vec<u32> = (0..77u32).map(|i| (i * 13 + 5) % 50).collect();
    p.check(
        "embedding_backward (repeated ids)",
        &p.cpu.embedding_backward(&dc, &ids, 50).unwrap(),
        &p.gpu.embedding_backward(&dg, &ids, 50).unwrap(),
    );
    let rows: Vec<usize> = (0..77).map(|i| (i * 7) % 90).collect();
    p.check(
        "gather_rows_backward",
        &p.cpu.gather_rows_backward(&dc, &rows, 90).unwrap(),
        &p.gpu.gather_rows_backward(&dg, &rows, 90).unwrap(),
    );
    assert!(p.gpu.embedding_backward(&dg, &ids, 40).is_err());
}

pub fn norm_resid_smear_activation_backward<B: TrainBackend>(p: &Pair<B>) {
    let (r, c) = (67, 96);
    let (xc, xg) = p.up(&data(r * c, 0.21, 3.0), r, c);
    let (x0c, x0g) = p.up(&data(r * c, 0.57, 1.5), r, c);
    let (dc, dg) = p.up(&data(r * c, 0.83, 1.0), r, c);
    let (mc, mg) = p.up(&data(2 * c, 0.11, 1.2), 2, c);
    let (sc, sg) = p.up(&data(c, 0.43, 0.8), 1, c);
    for (eps, scale) in [(1e-6f32, 1.0f32), (1e-5, 0.5)] {
        p.check(
            &format!("rms_norm_backward eps={eps} scale={scale}"),
            &p.cpu.rms_norm_backward(&xc, &dc, eps, scale).unwrap(),
            &p.gpu.rms_norm_backward(&xg, &dg, eps, scale).unwrap(),
        );
    }
    let (a, b) = (
        p.cpu.resid_mix_backward(&xc, &x0c, &mc, &dc).unwrap(),
        p.gpu.resid_mix_backward(&xg, &x0g, &mg, &dg).unwrap(),
    );
    p.check("resid_mix_backward dx", &a.0, &b.0);
    p.check("resid_mix_backward dx0", &a.1, &b.1);
    p.check("resid_mix_backward dmix", &a.2, &b.2);
    let (a, b) = (
        p.cpu.add_scaled_backward(&x0c, &sc, &dc).unwrap(),
        p.gpu.add_scaled_backward(&x0g, &sg, &dg).unwrap(),
    );
    p.check("add_scaled_backward dy", &a.0, &b.0);
    p.check("add_scaled_backward dscale", &a.1, &b.1);
    for seq in [1, 67] {
        let (a, b) = (
            p.cpu.smear_backward(&xc, &sc, &dc, seq).unwrap(),
            p.gpu.smear_backward(&xg, &sg, &dg, seq).unwrap(),
        );
        p.check(&format!("smear_backward dx seq={seq}"), &a.0, &b.0);
        p.check(&format!("smear_backward dgate seq={seq}"), &a.1, &b.1);
    }
    // Column reductions over several row chunks (1,024 rows each on CUDA, the last partial).
    let (lr, lc) = (2500, 37);
    let (yc, yg) = p.up(&data(lr * lc, 0.37, 1.1), lr, lc);
    let (ec, eg) = p.up(&data(lr * lc, 0.71, 0.9), lr, lc);
    let (gc, gg) = p.up(&data(lc, 0.19, 0.7), 1, lc);
    let (a, b) = (
        p.cpu.add_scaled_backward(&yc, &gc, &ec).unwrap(),
        p.gpu.add_scaled_backward(&yg, &gg, &eg).unwrap(),
    );
    p.check("add_scaled_backward dscale, 2500 rows", &a.1, &b.1);
    let (a, b) = (
        p.cpu.smear_backward(&yc, &gc, &ec, 500).unwrap(),
        p.gpu.smear_backward(&yg, &gg, &eg, 500).unwrap(),
    );
    p.check("smear_backward dgate, 2500 rows", &a.1, &b.1);
    let (dc2, dg2) = (p.cpu.dot(&yc, &ec).unwrap(), p.gpu.dot(&yg, &eg).unwrap());
    assert!(
        (dc2 - dg2).abs() <= 1e-9 * dc2.abs().max(1.0),
        "dot, 2500 rows: {dg2} vs {dc2}"
    );
    for act in [Activation::Relu2, Activation::LeakyRelu2 { slope: 0.5 }] {
        p.check(
            &format!("activation_backward {act:?}"),
            &p.cpu.activation_backward(&xc, &dc, act).unwrap(),
            &p.gpu.activation_backward(&xg, &dg, act).unwrap(),
        );
    }
    let (dc_, dg_) = (p.cpu.dot(&xc, &dc).unwrap(), p.gpu.dot(&xg, &dg).unwrap());
    println!("dot: cpu {dc_} cuda {dg_}");
    assert!(
        (dc_ - dg_).abs() <= 1e-9 * dc_.abs().max(1.0),
        "dot {dc_} vs {dg_}"
    );
    p.check(
        "scaled",
        &p.cpu.scaled(&xc, -0.7).unwrap(),
        &p.gpu.scaled(&xg, -0.7).unwrap(),
    );
}

pub fn qk_norm_rope_backward<B: TrainBackend>(p: &Pair<B>) {
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
        let (qw, kw) = (g.heads * hd, g.kv_heads * hd);
        let (qc, qg) = p.up(&data(rows * qw, 0.33, 2.0), rows, qw);
        let (kc, kg) = p.up(&data(rows * kw, 0.77, 2.0), rows, kw);
        let (dqc, dqg) = p.up(&data(rows * qw, 0.19, 1.0), rows, qw);
        let (dkc, dkg) = p.up(&data(rows * kw, 0.61, 1.0), rows, kw);
        let (gc, gg) = p.up(&data(g.heads, 0.5, 1.5), 1, g.heads);
        let rope = RopeSpec { base, dims };
        let a = p
            .cpu
            .qk_norm_rope_backward(&qc, &kc, &dqc, &dkc, &g, &rope, &gc, 1e-6)
            .unwrap();
        let b = p
            .gpu
            .qk_norm_rope_backward(&qg, &kg, &dqg, &dkg, &g, &rope, &gg, 1e-6)
            .unwrap();
        let what = format!("qk_norm_rope_backward hd={hd} dims={dims}");
        p.check(&format!("{what} dq"), &a.0, &b.0);
        p.check(&format!("{what} dk"), &a.1, &b.1);
        p.check(&format!("{what} dgain"), &a.2, &b.2);
    }
}

pub fn attention_backward<B: TrainBackend>(p: &Pair<B>) {
    let cases = [
        (2, 150, 4, 2, 8),
        (1, 64, 2, 2, 16),
        (2, 100, 8, 4, 64),
        (1, 1, 8, 4, 64),
        (1, 97, 4, 1, 32),
        (1, 70, 2, 1, 128),
    ];
    for c in attention_cases(&cases) {
        let (tc, tg) = (c.upload(&p.cpu), c.upload(&p.gpu));
        let a = p
            .cpu
            .attention_backward(&tc[0], &tc[1], &tc[2], &tc[3], &c.g, c.xsa)
            .unwrap();
        let b = p
            .gpu
            .attention_backward(&tg[0], &tg[1], &tg[2], &tg[3], &c.g, c.xsa)
            .unwrap();
        let what = format!("attention_backward {}", c.name());
        p.check(&format!("{what} dq"), &a.0, &b.0);
        p.check(&format!("{what} dk"), &a.1, &b.1);
        p.check(&format!("{what} dv"), &a.2, &b.2);
    }
}

pub fn head_backward<B: TrainBackend>(p: &Pair<B>) {
    for &(rows, d, vocab, cap, with_delta) in &[
        (5usize, 8usize, 11usize, 30.0f32, false),
        (5, 8, 11, 30.0, true),
        (300, 64, 1024, 30.0, true),
        (33, 32, 1000, 0.0, true),
    ] {
        let (hc, hg) = p.up(&data(rows * d, 0.31, 3.0), rows, d);
        let (wc, wg) = p.up(&data(vocab * d, 0.77, 0.5), vocab, d);
        let (zc, zg) = p.up(&data(rows * vocab, 0.29, 2.0), rows, vocab);
        let (dc, dg) = if with_delta {
            (Some(&zc), Some(&zg))
        } else {
            (None, None)
        };
        let t: Vec<u32> = (0..rows as u32)
            .map(|i| (i * 7 + 3) % vocab as u32)
            .collect();
        let dnll: Vec<f32> = (0..rows).map(|i| 0.5 + (i % 3) as f32 * 0.25).collect();
        let what = format!("head {rows}x{d} vocab {vocab} cap {cap} delta {with_delta}");
        assert_close(
            &format!("{what} nll_delta"),
            &p.gpu.nll_delta(&hg, &wg, dg, &t, cap).unwrap(),
            &p.cpu.nll_delta(&hc, &wc, dc, &t, cap).unwrap(),
            p.tol,
        );
        assert_close(
            &format!("{what} log_probs_delta"),
            &p.gpu.log_probs_delta(&hg, &wg, dg, cap).unwrap(),
            &p.cpu.log_probs_delta(&hc, &wc, dc, cap).unwrap(),
            p.tol,
        );
        p.check(
            &format!("{what} nll_backward_logits"),
            &p.cpu
                .nll_backward_logits(&hc, &wc, dc, &t, cap, &dnll)
                .unwrap(),
            &p.gpu
                .nll_backward_logits(&hg, &wg, dg, &t, cap, &dnll)
                .unwrap(),
        );
        let (a, b) = (
            p.cpu.nll_backward(&hc, &wc, &t, cap, &dnll).unwrap(),
            p.gpu.nll_backward(&hg, &wg, &t, cap, &dnll).unwrap(),
        );
        p.check(&format!("{what} nll_backward dh"), &a.0, &b.0);
        p.check(&format!("{what} nll_backward dhead"), &a.1, &b.1);
    }
}
