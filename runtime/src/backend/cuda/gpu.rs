//! The device layer under the CUDA backend: buffers, kernel launches and matrix products.
//!
//! [`super::CudaBackend`] is written once against [`Gpu`]; everything above this trait (shape
//! checks, launch geometry, argument packing, scratch sizes, chunking) is the same code on both
//! implementations:
//! - [`super::device::CudaGpu`]: a real NVIDIA GPU through cudarc (driver API, NVRTC, cuBLAS);
//! - `emu::EmuGpu` (feature `cuda-emu`): the same `cuda/*.cu` kernels compiled for the
//!   host and run thread by thread (`cuda/emu/`), with host buffers that carry guard zones, so
//!   CI, which has no GPU, runs the backend's real kernels against the CPU oracle.

use crate::Result;
use cudarc::driver::LaunchConfig;

/// One kernel argument, pushed in the kernel's parameter order.
pub enum KArg<'a, G: Gpu> {
    /// `const float*`
    F32(&'a G::F32),
    /// `float*`
    F32Mut(&'a mut G::F32),
    /// `const float*` to element `.1` of the buffer
    F32At(&'a G::F32, usize),
    /// `float*` to element `.1` of the buffer
    F32MutAt(&'a mut G::F32, usize),
    /// `const unsigned int*`
    U32(&'a G::U32),
    /// `int`
    I32(i32),
    /// `long long`
    I64(i64),
    /// `float`
    Float(f32),
    /// A null pointer (an optional buffer left out).
    Null,
}

/// A row-major matrix product `C[m, n] (+)= op(A)[m, k] · op(B)[k, n]`, where `op(A)` is `A`
/// stored `[m, k]`, or `Aᵀ` of an `A` stored `[k, m]` when `a_t` (likewise `B`: `[k, n]`, or
/// `[n, k]` when `b_t`). All three are dense with no padding; `accumulate` adds to `C`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowGemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_t: bool,
    pub b_t: bool,
    pub accumulate: bool,
}

impl RowGemm {
    /// `y[m, n] = x[m, k] · w[n, k]ᵀ` (`nn.Linear`).
    pub fn linear(m: usize, n: usize, k: usize) -> RowGemm {
        RowGemm {
            m,
            n,
            k,
            a_t: false,
            b_t: true,
            accumulate: false,
        }
    }

    /// Elements of the stored `A`, `B` and `C`.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.m * self.k, self.k * self.n, self.m * self.n)
    }
}

/// A device that runs the kernels of `cuda/*.cu`. Work may be queued asynchronously; reads
/// back to the host ([`Gpu::download`]) wait for everything queued before them.
pub trait Gpu: Send + Sync + Sized {
    /// A device buffer of `f32`.
    type F32: Send + Sync;
    /// A device buffer of `u32`.
    type U32: Send + Sync;
    /// A loaded kernel entry point.
    type Func: Send + Sync;

    /// What the backend reports as its name, e.g. `cuda (NVIDIA H100, sm_90, float32)`.
    fn describe(&self) -> String;
    /// Whether the TF32 math mode was asked for (`PGOLF_CUDA_TF32=1`): TF32 GEMMs, and
    /// attention on tensor cores where [`Gpu::tensor_cores`] (`cuda/attention_tc.cu`).
    fn tf32(&self) -> bool {
        false
    }
    /// Whether the TF32 tensor-core instructions of `cuda/attention_tc.cu` exist here (sm_80+;
    /// the emulator has host versions of them). On older devices its kernels are empty.
    fn tensor_cores(&self) -> bool {
        true
    }
    /// The entry point `func` of `cuda/{file}`.
    fn kernel(&self, file: &str, func: &str) -> Result<Self::Func>;

    /// A buffer of `n` values (at least one) whose contents are unspecified: every caller
    /// overwrites what it later reads.
    fn alloc(&self, n: usize) -> Result<Self::F32>;
    /// A buffer of `n` zeros (at least one value).
    fn zeros(&self, n: usize) -> Result<Self::F32>;
    /// A device copy of `v` (one padding zero when empty).
    fn upload(&self, v: &[f32]) -> Result<Self::F32>;
    /// A device copy of `v` (one padding zero when empty).
    fn upload_u32(&self, v: &[u32]) -> Result<Self::U32>;
    /// Values `range` of `b`, once all queued work is done.
    fn download(&self, b: &Self::F32, range: std::ops::Range<usize>) -> Result<Vec<f32>>;
    /// A copy of the whole buffer.
    fn copy(&self, b: &Self::F32) -> Result<Self::F32>;
    /// Values the buffer holds.
    fn len(b: &Self::F32) -> usize;

    /// `c = op(a) · op(b)` (see [`RowGemm`]), with `a`, `b` and `c` at element offsets
    /// `a_off`, `b_off`, `c_off` of their buffers. Sizes are checked here.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        g: &RowGemm,
        a: &Self::F32,
        a_off: usize,
        b: &Self::F32,
        b_off: usize,
        c: &mut Self::F32,
        c_off: usize,
    ) -> Result<()>;

    /// Launches `f` (named `name` in errors) with `args`.
    ///
    /// # Safety
    /// `args` must match the kernel's parameter list in type and order, and every buffer must
    /// be large enough for what the kernel touches under `cfg` (the emulator checks the sizes
    /// of the arguments and the guard zones of the buffers; a GPU checks nothing).
    unsafe fn launch(
        &self,
        f: &Self::Func,
        name: &str,
        cfg: LaunchConfig,
        args: &mut [KArg<'_, Self>],
    ) -> Result<()>;

    /// Waits for all queued work.
    fn synchronize(&self) -> Result<()>;
}

/// `Err` unless the stored matrices of `g` fit in buffers of `(length, offset)` `a`, `b`, `c`
/// (shared by both implementations of [`Gpu::gemm`]).
pub(super) fn check_gemm(
    g: &RowGemm,
    a: (usize, usize),
    b: (usize, usize),
    c: (usize, usize),
) -> Result<()> {
    let (na, nb, nc) = g.sizes();
    let fits = [g.m, g.n, g.k].iter().all(|&d| d <= i32::MAX as usize);
    let within =
        |(len, off): (usize, usize), n: usize| off.checked_add(n).is_some_and(|e| e <= len);
    if !fits || !within(a, na) || !within(b, nb) || !within(c, nc) {
        return Err(crate::Error::Backend(format!(
            "gemm: bad sizes for {g:?} (buffers of (length, offset) {a:?}, {b:?}, {c:?})"
        )));
    }
    Ok(())
}
