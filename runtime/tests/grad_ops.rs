//! Gradient checks of every CPU backward op against central finite differences (f32 forward,
//! f64 loss `L = Σ w ⊙ out` with random `w`), on small shapes.

use pgolf_rt::backend::cpu::{CpuBackend, CpuTensor};
use pgolf_rt::backend::train::TrainBackend;
use pgolf_rt::backend::{AttnGeometry, Backend, RopeSpec};
use pgolf_rt::model::Activation;
use pgolf_rt::train::lora::SplitMix64;

fn rand(rng: &mut SplitMix64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (2.0 * rng.next_f32() - 1.0) * scale)
        .collect()
}

fn t(rows: usize, cols: usize, data: Vec<f32>) -> CpuTensor {
    assert_eq!(data.len(), rows * cols);
    CpuTensor::new(rows, cols, data)
}

fn dot(w: &[f32], y: &[f32]) -> f64 {
    w.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Compares `grad` with central differences of `f` at `x`, coordinate by coordinate.
fn check(name: &str, x: &[f32], grad: &[f32], f: impl Fn(&[f32]) -> f64) {
    assert_eq!(x.len(), grad.len(), "{name}: gradient length");
    let h = 1e-2f32;
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
        xp[i] += h;
        xm[i] -= h;
        let num = (f(&xp) - f(&xm)) / (xp[i] as f64 - xm[i] as f64);
        let ana = grad[i] as f64;
        let err = (num - ana).abs();
        worst = worst.max(err / (1e-3 + ana.abs()));
        assert!(
            err <= 2e-3 + 2e-2 * ana.abs().max(num.abs()),
            "{name}[{i}]: numeric {num} vs analytic {ana}"
        );
    }
    eprintln!(
        "{name}: {} coords, worst relative error {worst:.2e}",
        x.len()
    );
}

#[test]
fn linear() {
    let be = CpuBackend::new();
    let mut r = SplitMix64(1);
    let (n, o, i) = (5, 4, 6);
    let x = rand(&mut r, n * i, 1.0);
    let w = rand(&mut r, o * i, 1.0);
    let gw = rand(&mut r, n * o, 1.0);
    let dy = t(n, o, gw.clone());
    let dx = be.linear_backward_input(&dy, &t(o, i, w.clone())).unwrap();
    let dw = be.linear_backward_weight(&dy, &t(n, i, x.clone())).unwrap();
    let l = |x: &[f32], w: &[f32]| {
        dot(
            &gw,
            &be.linear(&t(n, i, x.to_vec()), &t(o, i, w.to_vec()))
                .unwrap()
                .data,
        )
    };
    check("linear dx", &x, &dx.data, |v| l(v, &w));
    check("linear dw", &w, &dw.data, |v| l(&x, v));
}

#[test]
fn embedding_and_gather() {
    let be = CpuBackend::new();
    let mut r = SplitMix64(2);
    let table = rand(&mut r, 7 * 3, 1.0);
    let ids = [3u32, 1, 3, 6];
    let g = rand(&mut r, 4 * 3, 1.0);
    let d = be.embedding_backward(&t(4, 3, g.clone()), &ids, 7).unwrap();
    check("embedding", &table, &d.data, |v| {
        dot(&g, &be.embedding(&t(7, 3, v.to_vec()), &ids).unwrap().data)
    });
    let rows = [4usize, 0, 4];
    let g = rand(&mut r, 3 * 3, 1.0);
    let x = rand(&mut r, 5 * 3, 1.0);
    let d = be
        .gather_rows_backward(&t(3, 3, g.clone()), &rows, 5)
        .unwrap();
    check("gather_rows", &x, &d.data, |v| {
        dot(
            &g,
            &be.gather_rows(&t(5, 3, v.to_vec()), &rows).unwrap().data,
        )
    });
}

#[test]
fn rms_norm() {
    let be = CpuBackend::new();
    let mut r = SplitMix64(3);
    let x = rand(&mut r, 4 * 8, 1.0);
    let g = rand(&mut r, 4 * 8, 1.0);
    for scale in [1.0, 0.7] {
        let dx = be
            .rms_norm_backward(
                &t(4, 8, x.clone()),
                &t(4, 8, g.clone()),
                f32::EPSILON,
                scale,
            )
            .unwrap();
        check("rms_norm", &x, &dx.data, |v| {
            dot(
                &g,
                &be.rms_norm(&t(4, 8, v.to_vec()), f32::EPSILON, scale)
                    .unwrap()
                    .data,
            )
        });
    }
}

#[test]
fn resid_mix_and_add_scaled() {
    let be = CpuBackend::new();
    let mut r = SplitMix64(4);
    let (n, c) = (3, 5);
    let x = rand(&mut r, n * c, 1.0);
    let x0 = rand(&mut r, n * c, 1.0);
    let mix = rand(&mut r, 2 * c, 1.5);
    let g = rand(&mut r, n * c, 1.0);
    let (dx, dx0, dmix) = be
        .resid_mix_backward(
            &t(n, c, x.clone()),
            &t(n, c, x0.clone()),
            &t(2, c, mix.clone()),
            &t(n, c, g.clone()),
        )
        .unwrap();
    let l = |x: &[f32], x0: &[f32], m: &[f32]| {
        dot(
            &g,
            &be.resid_mix(
                &t(n, c, x.to_vec()),
                &t(n, c, x0.to_vec()),
                &t(2, c, m.to_vec()),
            )
            .unwrap()
            .data,
        )
    };
    check("resid_mix dx", &x, &dx.data, |v| l(v, &x0, &mix));
    check("resid_mix dx0", &x0, &dx0.data, |v| l(&x, v, &mix));
    check("resid_mix dmix", &mix, &dmix.data, |v| l(&x, &x0, v));

    let y = rand(&mut r, n * c, 1.0);
    let s = rand(&mut r, c, 1.0);
    let (dy, ds) = be
        .add_scaled_backward(
            &t(n, c, y.clone()),
            &t(1, c, s.clone()),
            &t(n, c, g.clone()),
        )
        .unwrap();
    let l = |y: &[f32], s: &[f32]| {
        let mut out = t(n, c, x.clone());
        be.add_scaled(&mut out, &t(n, c, y.to_vec()), &t(1, c, s.to_vec()))
            .unwrap();
        dot(&g, &out.data)
    };
    check("add_scaled dy", &y, &dy.data, |v| l(v, &s));
    check("add_scaled dscale", &s, &ds.data, |v| l(&y, v));
}

#[test]
fn qk_norm_rope() {
    let be = CpuBackend::new();
    let mut r = SplitMix64(5);
    for rope_dims in [4, 2] {
        let geom = AttnGeometry {
            batch: 2,
            seq: 5,
            heads: 4,
            kv_heads: 2,
            head_dim: 4,
        };
        let rope = RopeSpec {
            base: 10.0,
            dims: rope_dims,
        };
        let n = 10;
        let q = rand(&mut r, n * 16, 1.0);
        let k = rand(&mut r, n * 8, 1.0);
        let gain = rand(&mut r, 4, 2.0);
        let (wq, wk) = (rand(&mut r, n * 16, 1.0), rand(&mut r, n * 8, 1.0));
        let eps = 1e-6;
        let l = |q: &[f32], k: &[f32], g: &[f32]| {
            let (mut q, mut k) = (t(n, 16, q.to_vec()), t(n, 8, k.to_vec()));
            be.qk_norm_rope(&mut q, &mut k, &geom, &rope, &t(1, 4, g.to_vec()), eps)
                .unwrap();
            dot(&wq, &q.data) + dot(&wk, &k.data)
        };
        let (dq, dk, dg) = be
            .qk_norm_rope_backward(
                &t(n, 16, q.clone()),
                &t(n, 8, k.clone()),
                &t(n, 16, wq.clone()),
                &t(n, 8, wk.clone()),
                &geom,
                &rope,
                &t(1, 4, gain.clone()),
                eps,
            )
            .unwrap();
        check("qk_norm_rope dq", &q, &dq.data, |v| l(v, &k, &gain));
        check("qk_norm_rope dk", &k, &dk.data, |v| l(&q, v, &gain));
        check("qk_norm_rope dgain", &gain, &dg.data, |v| l(&q, &k, v));
    }
}

#[test]
fn attention() {
    let be = CpuBackend::new();
    let mut r = SplitMix64(6);
    // (batch, seq, heads, kv_heads): seq 70 spans two query blocks of the backward kernel.
    for (batch, seq, heads, kvh, xsa) in [
        (2, 6, 4, 2, false),
        (2, 6, 4, 2, true),
        (1, 70, 2, 1, false),
        (1, 70, 2, 1, true),
    ] {
        let geom = AttnGeometry {
            batch,
            seq,
            heads,
            kv_heads: kvh,
            head_dim: 4,
        };
        let n = batch * seq;
        let (qc, kc) = (heads * 4, kvh * 4);
        let q = rand(&mut r, n * qc, 1.5);
        let k = rand(&mut r, n * kc, 1.5);
        let v = rand(&mut r, n * kc, 1.0);
        let w = rand(&mut r, n * qc, 1.0);
        let l = |q: &[f32], k: &[f32], v: &[f32]| {
            dot(
                &w,
                &be.attention(
                    &t(n, qc, q.to_vec()),
                    &t(n, kc, k.to_vec()),
                    &t(n, kc, v.to_vec()),
                    &geom,
                    xsa,
                )
                .unwrap()
                .data,
            )
        };
        let (dq, dk, dv) = be
            .attention_backward(
                &t(n, qc, q.clone()),
                &t(n, kc, k.clone()),
                &t(n, kc, v.clone()),
                &t(n, qc, w.clone()),
                &geom,
                xsa,
            )
            .unwrap();
        check(&format!("attention(xsa={xsa}) dq"), &q, &dq.data, |x| {
            l(x, &k, &v)
        });
        check(&format!("attention(xsa={xsa}) dk"), &k, &dk.data, |x| {
            l(&q, x, &v)
        });
        check(&format!("attention(xsa={xsa}) dv"), &v, &dv.data, |x| {
            l(&q, &k, x)
        });
    }
}

#[test]
fn activation() {
    let be = CpuBackend::new();
    let mut r = SplitMix64(7);
    // Keep away from the kink at 0 so central differences stay exact.
    let h: Vec<f32> = rand(&mut r, 40, 2.0)
        .into_iter()
        .map(|v| if v.abs() < 0.05 { v + 0.1 } else { v })
        .collect();
    let g = rand(&mut r, 40, 1.0);
    for act in [Activation::Relu2, Activation::LeakyRelu2 { slope: 0.5 }] {
        let dh = be
            .activation_backward(&t(4, 10, h.clone()), &t(4, 10, g.clone()), act)
            .unwrap();
        check(&format!("{act:?}"), &h, &dh.data, |v| {
            dot(&g, &be.activation(&t(4, 10, v.to_vec()), act).unwrap().data)
        });
    }
}

#[test]
fn head_softcap_ce() {
    let be = CpuBackend::new();
    let mut r = SplitMix64(8);
    let (n, d, vocab) = (5, 8, 11);
    let h = rand(&mut r, n * d, 1.0);
    let head = rand(&mut r, vocab * d, 1.5);
    let delta = rand(&mut r, n * vocab, 1.0);
    let targets = [3u32, 0, 10, 3, 7];
    let g = rand(&mut r, n, 1.0);
    for softcap in [3.0, 0.0] {
        let l = |h: &[f32], w: &[f32], dl: Option<&[f32]>| {
            let dt = dl.map(|x| t(n, vocab, x.to_vec()));
            let nll = be
                .nll_delta(
                    &t(n, d, h.to_vec()),
                    &t(vocab, d, w.to_vec()),
                    dt.as_ref(),
                    &targets,
                    softcap,
                )
                .unwrap();
            dot(&g, &nll)
        };
        let (dh, dw) = be
            .nll_backward(
                &t(n, d, h.clone()),
                &t(vocab, d, head.clone()),
                &targets,
                softcap,
                &g,
            )
            .unwrap();
        check("nll dh", &h, &dh.data, |v| l(v, &head, None));
        check("nll dhead", &head, &dw.data, |v| l(&h, v, None));
        let dz = be
            .nll_backward_logits(
                &t(n, d, h.clone()),
                &t(vocab, d, head.clone()),
                Some(&t(n, vocab, delta.clone())),
                &targets,
                softcap,
                &g,
            )
            .unwrap();
        check("nll ddelta", &delta, &dz.data, |v| l(&h, &head, Some(v)));
    }
    // A zero delta reproduces the inference kernel bit for bit.
    let zero = t(n, vocab, vec![0.0; n * vocab]);
    let (ht, wt) = (t(n, d, h.clone()), t(vocab, d, head.clone()));
    assert_eq!(
        be.nll_delta(&ht, &wt, Some(&zero), &targets, 30.0).unwrap(),
        be.nll(&ht, &wt, &targets, 30.0).unwrap()
    );
}

#[test]
fn smear_and_scalar_scale() {
    let be = CpuBackend::new();
    let mut r = SplitMix64(9);
    // Two windows of 3 rows, 5 columns: the first row of each window has no predecessor.
    let (rows, cols, seq) = (6, 5, 3);
    let x = rand(&mut r, rows * cols, 1.0);
    let gate = rand(&mut r, cols, 2.0);
    let g = rand(&mut r, rows * cols, 1.0);
    let (dx, dgate) = be
        .smear_backward(
            &t(rows, cols, x.clone()),
            &t(1, cols, gate.clone()),
            &t(rows, cols, g.clone()),
            seq,
        )
        .unwrap();
    let l = |x: &[f32], gate: &[f32]| {
        dot(
            &g,
            &be.smear(&t(rows, cols, x.to_vec()), &t(1, cols, gate.to_vec()), seq)
                .unwrap()
                .data,
        )
    };
    check("smear dx", &x, &dx.data, |v| l(v, &gate));
    check("smear dgate", &gate, &dgate.data, |v| l(&x, v));
    assert!(be
        .smear_backward(
            &t(rows, cols, x.clone()),
            &t(1, cols, gate),
            &t(rows, cols, g),
            4
        )
        .is_err());
    // x += s·y: ds = dot(dout, y).
    let y = rand(&mut r, rows * cols, 1.0);
    let base = rand(&mut r, rows * cols, 1.0);
    let w = rand(&mut r, rows * cols, 1.0);
    let ds = be
        .dot(&t(rows, cols, w.clone()), &t(rows, cols, y.clone()))
        .unwrap() as f32;
    check("add_scalar_scaled ds", &[0.4], &[ds], |s| {
        let mut out = t(rows, cols, base.clone());
        be.add_scalar_scaled(&mut out, &t(rows, cols, y.clone()), s[0])
            .unwrap();
        dot(&w, &out.data)
    });
}
