//! The CPU oracle beside the CUDA backend on either of its device layers: a real GPU (tests
//! skip with a printed reason when there is none) or the host emulator of its kernels (feature
//! `cuda-emu`, runs everywhere). `on_both_devices!` turns each check into a `gpu::` and an
//! `emu::` test.

use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::backend::cuda::gpu::Gpu;
use pgolf_rt::backend::cuda::modules::ATTENTION_TC_HEAD_DIMS;
use pgolf_rt::backend::cuda::{reason, CudaBackend, CudaGpu};
use pgolf_rt::backend::train::TrainBackend;
use pgolf_rt::backend::{AttnGeometry, Backend};

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
