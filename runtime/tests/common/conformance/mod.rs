//! One conformance suite for every backend: each op of [`Backend`] (and, in [`train`], of
//! [`TrainBackend`]) against the CPU oracle, on small shapes that are not multiples of any
//! tile size, batch > 1, grouped-query attention, XSA on and off, partial RoPE; and the
//! refusals every backend owes (an id or target out of range, overlapping segments). An op
//! with a host default (download, CPU oracle, upload) is checked on every backend the same
//! way, so a new op is covered everywhere the day it is added to the list below.
//!
//! [`conformance_ops!`] turns the list into one `#[test]` per op for a backend (wgpu, the CPU
//! at bf16); the CUDA tests reach the same functions through `on_both_devices!`.

pub mod train;

use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::backend::train::TrainBackend;
use pgolf_rt::backend::{AttnGeometry, Backend, RopeSpec};
use pgolf_rt::model::Activation;

/// Deterministic values in about [-amp, amp].
pub fn data(n: usize, seed: f32, amp: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 + 1.0) * seed).sin() * amp + ((i as f32) * 0.013 * seed).cos() * 0.1)
        .collect()
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    super::max_abs_diff(a, b)
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

pub type CpuTensor = <CpuBackend as Backend>::Tensor;

/// The CPU oracle and a backend under test (`gpu`: a GPU backend, or the CPU at another
/// precision), fed the same inputs and compared within `tol`.
pub struct Pair<B: Backend> {
    pub cpu: CpuBackend,
    pub gpu: B,
    /// Products and reductions over many terms (linear, attention, the head).
    pub tol: f32,
    /// Element-wise ops and short row reductions (norms, mixes, RoPE, activations).
    pub tol_elementwise: f32,
}

impl<B: Backend> Pair<B> {
    /// Float32 parity: within 1e-4 relative to the reference's scale.
    pub fn new(gpu: B) -> Pair<B> {
        Pair::with_tol(gpu, 1e-4, 1e-5)
    }

    pub fn with_tol(gpu: B, tol: f32, tol_elementwise: f32) -> Pair<B> {
        Pair {
            cpu: CpuBackend::new(),
            gpu,
            tol,
            tol_elementwise,
        }
    }

    /// `v` as a `[r, c]` tensor on both.
    pub fn up(&self, v: &[f32], r: usize, c: usize) -> (CpuTensor, B::Tensor) {
        (
            self.cpu.upload(v, r, c).unwrap(),
            self.gpu.upload(v, r, c).unwrap(),
        )
    }

    /// Same shape, values within the pair's tolerance.
    pub fn check(&self, what: &str, c: &CpuTensor, g: &B::Tensor) {
        self.check_within(what, c, g, self.tol);
    }

    /// Same shape, values within the element-wise tolerance.
    pub fn check_ew(&self, what: &str, c: &CpuTensor, g: &B::Tensor) {
        self.check_within(what, c, g, self.tol_elementwise);
    }

    fn check_within(&self, what: &str, c: &CpuTensor, g: &B::Tensor, tol: f32) {
        assert_eq!(self.cpu.shape(c), self.gpu.shape(g), "{what}: shapes");
        let (cv, gv) = (self.cpu.download(c).unwrap(), self.gpu.download(g).unwrap());
        assert_close(what, &gv, &cv, tol);
    }
}

/// One `#[test]` per inference op for the backend pair `$make` builds (an
/// `Option<Pair<B>>`: `None` skips, having said why).
#[macro_export]
macro_rules! conformance_ops {
    ($make:expr) => {
        $crate::conformance_ops!(@each $make;
            upload_download_copy_roundtrip,
            embedding_and_gather_rows,
            linear_matches,
            linear_segments_matches,
            norms_mixes_and_adds,
            sidecar_conv_and_gate,
            qk_norm_rope_full_and_partial,
            attention_causal_gqa_xsa,
            head_nll_and_log_probs);
    };
    (@each $make:expr; $($op:ident),*) => {
        $(#[test]
        fn $op() {
            if let Some(p) = $make {
                $crate::common::conformance::$op(&p);
            }
        })*
    };
}

pub fn upload_download_copy_roundtrip<B: Backend>(p: &Pair<B>) {
    let v = data(37 * 5, 0.7, 3.0);
    let g = p.gpu.upload(&v, 37, 5).unwrap();
    assert_eq!(p.gpu.download(&g).unwrap(), v);
    let g2 = p.gpu.copy(&g).unwrap();
    assert_eq!(p.gpu.download(&g2).unwrap(), v);
    assert_eq!(p.gpu.shape(&g2), (37, 5));
    let e = p.gpu.upload(&[], 0, 5).unwrap();
    assert!(p.gpu.download(&e).unwrap().is_empty());
    assert!(p.gpu.upload(&v, 5, 5).is_err(), "data and shape disagree");
}

pub fn embedding_and_gather_rows<B: Backend>(p: &Pair<B>) {
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
    assert!(
        p.gpu.gather_rows(&tg, &[50]).is_err(),
        "out-of-range row must be an error"
    );
}

pub fn linear_matches<B: Backend>(p: &Pair<B>) {
    for &(m, k, n) in &[
        (1, 1, 1),
        (3, 5, 7),
        (7, 33, 19),
        (37, 70, 45),
        (64, 64, 64),
        (130, 129, 65),
        (130, 512, 96),
        (17, 1536, 512),
        (257, 64, 1024),
    ] {
        let (xc, xg) = p.up(&data(m * k, 0.37, 1.0), m, k);
        let (wc, wg) = p.up(&data(n * k, 0.91, 0.2), n, k);
        p.check(
            &format!("linear {m}x{k}·{n}x{k}ᵀ"),
            &p.cpu.linear(&xc, &wc).unwrap(),
            &p.gpu.linear(&xg, &wg).unwrap(),
        );
    }
    let (_, xg) = p.up(&data(6, 0.3, 1.0), 2, 3);
    let (_, wg) = p.up(&data(8, 0.3, 1.0), 2, 4);
    assert!(
        p.gpu.linear(&xg, &wg).is_err(),
        "width mismatch is an error"
    );
}

/// Segment sets of 40 rows for the stacked-weight products: three members with an empty one
/// and rows no member covers; five equal documents (a backend may batch them into one call);
/// equal documents with a gap and a short last one (batches cut where the stride changes).
pub const SEGMENT_CASES: &[&[(usize, usize)]] = &[
    &[(0, 10), (10, 10), (15, 37)],
    &[(0, 8), (8, 16), (16, 24), (24, 32), (32, 40)],
    &[(0, 8), (8, 16), (16, 24), (30, 38), (38, 40)],
];

pub fn linear_segments_matches<B: Backend>(p: &Pair<B>) {
    let (rows, k, n) = (40, 24, 6);
    let (xc, xg) = p.up(&data(rows * k, 0.37, 1.0), rows, k);
    for segs in SEGMENT_CASES {
        let (wc, wg) = p.up(&data(segs.len() * n * k, 0.91, 0.3), segs.len() * n, k);
        p.check(
            &format!("linear_segments {segs:?}"),
            &p.cpu.linear_segments(&xc, &wc, segs).unwrap(),
            &p.gpu.linear_segments(&xg, &wg, segs).unwrap(),
        );
    }
    let (_, wg) = p.up(&data(3 * n * k, 0.91, 0.3), 3 * n, k);
    assert!(p.gpu.linear_segments(&xg, &wg, &[(0, 41)]).is_err());
    assert!(p
        .gpu
        .linear_segments(&xg, &wg, &[(5, 9), (0, 2), (9, 9)])
        .is_err());
}

pub fn norms_mixes_and_adds<B: Backend>(p: &Pair<B>) {
    // Rows shorter and longer than a 256-wide reduction, one element, a model width.
    for &(r, c, eps, scale) in &[
        (67usize, 96usize, 1e-6f32, 1.0f32),
        (67, 96, 1e-5, 0.5),
        (5, 37, 1e-6, 1.0),
        (3, 600, 1e-6, 0.57),
        (129, 512, 1e-6, 1.0),
        (1, 1, 1e-6, 2.0),
    ] {
        let (xc, xg) = p.up(&data(r * c, 0.21, 3.0), r, c);
        p.check_ew(
            &format!("rms_norm {r}x{c} eps={eps} scale={scale}"),
            &p.cpu.rms_norm(&xc, eps, scale).unwrap(),
            &p.gpu.rms_norm(&xg, eps, scale).unwrap(),
        );
    }
    for (r, c) in [(67, 96), (33, 300)] {
        let (xc, xg) = p.up(&data(r * c, 0.21, 3.0), r, c);
        let (x0c, x0g) = p.up(&data(r * c, 0.57, 1.5), r, c);
        let (mc, mg) = p.up(&data(2 * c, 0.11, 1.2), 2, c);
        let (sc, sg) = p.up(&data(c, 0.43, 0.8), 1, c);
        p.check_ew(
            &format!("resid_mix {r}x{c}"),
            &p.cpu.resid_mix(&xc, &x0c, &mc).unwrap(),
            &p.gpu.resid_mix(&xg, &x0g, &mg).unwrap(),
        );
        assert!(
            p.gpu.resid_mix(&xg, &x0g, &xg).is_err(),
            "mix of the wrong shape"
        );
        let (mut ac, mut ag) = (p.cpu.copy(&xc).unwrap(), p.gpu.copy(&xg).unwrap());
        p.cpu.add_scaled(&mut ac, &x0c, &sc).unwrap();
        p.gpu.add_scaled(&mut ag, &x0g, &sg).unwrap();
        p.check_ew(&format!("add_scaled {r}x{c}"), &ac, &ag);
        assert!(
            p.gpu.add_scaled(&mut ag, &x0g, &x0g).is_err(),
            "scale of the wrong shape"
        );
        p.cpu.add_scalar_scaled(&mut ac, &x0c, -0.37).unwrap();
        p.gpu.add_scalar_scaled(&mut ag, &x0g, -0.37).unwrap();
        p.check_ew(&format!("add_scalar_scaled {r}x{c}"), &ac, &ag);
        assert!(
            p.gpu.add_scalar_scaled(&mut ag, &sg, 1.0).is_err(),
            "shapes differ"
        );
    }
    // Smear over sequences of 1, 7 (3 of them) and one of 67.
    for (seq, batch, c) in [(1, 67, 96), (7, 3, 45), (67, 1, 96)] {
        let (xc, xg) = p.up(&data(seq * batch * c, 0.21, 3.0), seq * batch, c);
        let (gc, gg) = p.up(&data(c, 0.43, 3.0), 1, c);
        p.check_ew(
            &format!("smear seq={seq} x{batch}"),
            &p.cpu.smear(&xc, &gc, seq).unwrap(),
            &p.gpu.smear(&xg, &gg, seq).unwrap(),
        );
    }
    let (_, xg) = p.up(&data(21 * 45, 0.21, 1.0), 21, 45);
    let (_, gg) = p.up(&data(45, 0.43, 1.0), 1, 45);
    assert!(
        p.gpu.smear(&xg, &gg, 8).is_err(),
        "rows not a multiple of seq"
    );
    let (xc, xg) = p.up(&data(77 * 130, 0.29, 3.0), 77, 130);
    for act in [Activation::Relu2, Activation::LeakyRelu2 { slope: 0.5 }] {
        p.check_ew(
            &format!("activation {act:?}"),
            &p.cpu.activation(&xc, act).unwrap(),
            &p.gpu.activation(&xg, act).unwrap(),
        );
    }
}

/// The shared sparse sidecar's ops (#581): the causal depthwise convolution (kernel 1 and 4,
/// sequences cut at `seq`) and the SiLU gate.
pub fn sidecar_conv_and_gate<B: Backend>(p: &Pair<B>) {
    let (r, c) = (2 * 29, 20);
    let (xc, xg) = p.up(&data(r * c, 0.29, 2.0), r, c);
    for k in [1, 4] {
        let (wc, wg) = p.up(&data(c * k, 0.63, 0.7), c, k);
        p.check(
            &format!("causal_conv k={k}"),
            &p.cpu.causal_conv(&xc, &wc, 29).unwrap(),
            &p.gpu.causal_conv(&xg, &wg, 29).unwrap(),
        );
    }
    let (bc, bg) = p.up(&data(c, 0.17, 0.5), 1, c);
    let (vc, vg) = p.up(&data(r * c, 0.83, 1.5), r, c);
    p.check(
        "silu_gate",
        &p.cpu.silu_gate(&xc, &bc, &vc).unwrap(),
        &p.gpu.silu_gate(&xg, &bg, &vg).unwrap(),
    );
}

pub fn qk_norm_rope_full_and_partial<B: Backend>(p: &Pair<B>) {
    // (batch, seq, heads, kv_heads, head_dim, rope dims, base): full and partial RoPE, none,
    // and a window past 1,024 positions.
    for &(batch, seq, heads, kv_heads, hd, dims, base) in &[
        (
            3usize,
            45usize,
            4usize,
            2usize,
            64usize,
            64usize,
            10_000.0f32,
        ),
        (3, 45, 4, 2, 64, 16, 10_000.0),
        (3, 45, 4, 2, 32, 8, 500.0),
        (3, 45, 4, 2, 16, 0, 10_000.0),
        (2, 37, 4, 2, 16, 16, 10_000.0),
        (3, 5, 2, 1, 24, 0, 500.0),
        (1, 1030, 2, 2, 64, 64, 41_000.0),
    ] {
        let g = AttnGeometry {
            batch,
            seq,
            heads,
            kv_heads,
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
        let what = format!("qk_norm_rope {g:?} {rope:?}");
        p.check_ew(&format!("{what} q"), &qc, &qg);
        p.check_ew(&format!("{what} k"), &kc, &kg);
    }
}

pub fn attention_causal_gqa_xsa<B: Backend>(p: &Pair<B>) {
    let cases = [
        (2, 150, 4, 2, 8),
        (1, 64, 2, 2, 16),
        (2, 150, 4, 2, 16),
        (1, 1, 2, 1, 8),
        (2, 200, 8, 4, 64),
        (3, 77, 8, 4, 64),
        (1, 1, 8, 4, 64),
        (1, 97, 4, 1, 32),
        (1, 200, 2, 2, 32),
        (1, 130, 4, 1, 128),
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
        heads: 3,
        kv_heads: 2,
        head_dim: 4,
    };
    let (_, t) = p.up(&data(48, 0.3, 1.0), 4, 12);
    assert!(
        p.gpu.attention(&t, &t, &t, &g, false).is_err(),
        "heads % kv_heads != 0 must be an error"
    );
}

pub fn head_nll_and_log_probs<B: Backend>(p: &Pair<B>) {
    for &(rows, d, vocab, cap) in &[
        (5usize, 8usize, 11usize, 30.0f32),
        (37, 24, 70, 30.0),
        (300, 64, 1024, 30.0),
        (33, 32, 1000, 0.0),
        (5, 16, 300, 0.0),
        (1, 8, 1, 15.0),
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
            p.tol,
        );
        let lc = p.cpu.log_probs(&hc, &wc, cap).unwrap();
        let lg = p.gpu.log_probs(&hg, &wg, cap).unwrap();
        assert_close(
            &format!("log_probs {rows}x{d} vocab {vocab} cap {cap}"),
            &lg,
            &lc,
            p.tol,
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
    let (_, hg) = p.up(&data(4 * 8, 0.3, 1.0), 4, 8);
    let (_, wg) = p.up(&data(10 * 8, 0.3, 1.0), 10, 8);
    assert!(p.gpu.nll(&hg, &wg, &[0, 1, 2, 10], 30.0).is_err());
    assert!(
        p.gpu.nll(&hg, &wg, &[0, 1, 2], 30.0).is_err(),
        "a target per row"
    );
    assert!(p.gpu.nll(&hg, &wg, &[], 30.0).is_err());
}

/// One attention test case: geometry, XSA, and `q`, `k`, `v`, `dy` (fixed seeds).
pub struct AttnCase {
    pub g: AttnGeometry,
    pub xsa: bool,
    /// `[q, k, v, dy]` and their widths.
    pub inputs: [(Vec<f32>, usize); 4],
}

/// Every `(batch, seq, heads, kv_heads, head_dim)` with and without XSA.
pub fn attention_cases(shapes: &[(usize, usize, usize, usize, usize)]) -> Vec<AttnCase> {
    let mut out = Vec::new();
    for &(batch, seq, heads, kv_heads, head_dim) in shapes {
        for xsa in [false, true] {
            let rows = batch * seq;
            let (qw, kw) = (heads * head_dim, kv_heads * head_dim);
            out.push(AttnCase {
                g: AttnGeometry {
                    batch,
                    seq,
                    heads,
                    kv_heads,
                    head_dim,
                },
                xsa,
                inputs: [
                    (data(rows * qw, 0.37, 1.0), qw),
                    (data(rows * kw, 0.91, 1.0), kw),
                    (data(rows * kw, 0.13, 2.0), kw),
                    (data(rows * qw, 0.71, 1.0), qw),
                ],
            });
        }
    }
    out
}

impl AttnCase {
    pub fn name(&self) -> String {
        let g = &self.g;
        format!(
            "b{} t{} h{}/{} hd{} xsa={}",
            g.batch, g.seq, g.heads, g.kv_heads, g.head_dim, self.xsa
        )
    }

    /// The inputs uploaded to `be`.
    pub fn upload<B: Backend>(&self, be: &B) -> Vec<B::Tensor> {
        let rows = self.g.rows();
        self.inputs
            .iter()
            .map(|(x, c)| be.upload(x, rows, *c).unwrap())
            .collect()
    }
}

/// An attention op under test: its outputs, downloaded, on any training backend.
pub trait AttnOp {
    fn outputs<B: TrainBackend>(&self, be: &B, c: &AttnCase) -> Vec<Vec<f32>>;
}
