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

/// How a product rounds its operands (accumulation is always fp32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GemmMath {
    /// True fp32 multiply-adds (`CUBLAS_DEFAULT_MATH`).
    #[default]
    F32,
    /// Operands rounded to TF32 (10-bit mantissa) on tensor cores
    /// (`CUBLAS_TF32_TENSOR_OP_MATH`).
    Tf32,
    /// Operands rounded to bfloat16 (8-bit significand) on tensor cores, fp32 accumulation:
    /// `cublasGemmEx` on the fp32 buffers with `CUBLAS_COMPUTE_32F_FAST_16BF`, so no bf16
    /// copy of any tensor exists (the emulator rounds to nearest even, as PyTorch's `.bfloat16()`).
    Bf16,
}

/// One cuBLAS `sgemm` / `sgemmStridedBatched` call, in cuBLAS's own column-major terms:
/// for each batch entry `i < batch`,
/// `C_i[r + c·ldc] = alpha · Σ_l op(A_i)[r, l] · op(B_i)[l, c] + beta · C_i[r + c·ldc]`
/// over `r < m`, `c < n`, `l < k`, where `op(X)[r, c]` is `X[r + c·ld]`, or `X[c + r·ld]`
/// when transposed, and `X_i` starts `i · stride` elements after `X`. When `beta == 0`, `C`
/// is not read.
///
/// The backend builds these from row-major products ([`BlasGemm::from_row`]); the device
/// layer hands them to cuBLAS as they are, and the emulator computes them from this
/// definition, so the translation (operand order, transposes, leading dimensions, strides) is
/// tested in CI.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlasGemm {
    pub transa: bool,
    pub transb: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    pub math: GemmMath,
}

impl BlasGemm {
    /// The column-major call computing the row-major product `g`. A row-major `[r, c]`
    /// buffer is the column-major `[c, r]` matrix (its transpose), so `C = op(A)·op(B)`
    /// row-major is `Cᵀ (n×m) = op(B)ᵀ · op(A)ᵀ` column-major: cuBLAS's first operand is our
    /// `B` (transposed in cuBLAS's sense exactly when `b_t`, leading dimension `k` if so, else
    /// `n`), its second our `A` (transposed when `a_t`, leading dimension `m` if so, else
    /// `k`), and `ldc = n`. For `nn.Linear` (`a_t = false`, `b_t = true`) this is
    /// `transa = T`, `lda = K`, `transb = N`, `ldb = K`, `ldc = N`.
    pub fn from_row(g: &RowGemm, math: GemmMath) -> BlasGemm {
        BlasGemm {
            transa: g.b_t,
            transb: g.a_t,
            m: g.n,
            n: g.m,
            k: g.k,
            alpha: 1.0,
            beta: if g.accumulate { 1.0 } else { 0.0 },
            lda: if g.b_t { g.k } else { g.n },
            ldb: if g.a_t { g.m } else { g.k },
            ldc: g.n,
            batch: 1,
            stride_a: 0,
            stride_b: 0,
            stride_c: 0,
            math,
        }
    }

    /// `batch` equal products whose operands lie `stride_*` elements apart (one
    /// `sgemmStridedBatched` call).
    pub fn batched(
        mut self,
        batch: usize,
        stride_a: usize,
        stride_b: usize,
        stride_c: usize,
    ) -> Self {
        self.batch = batch;
        (self.stride_a, self.stride_b, self.stride_c) = (stride_a, stride_b, stride_c);
        self
    }

    /// Rows and columns of the stored `A`, `B`, `C` (before `op`).
    fn stored(&self) -> [(usize, usize); 3] {
        let dims = |t: bool, r: usize, c: usize| if t { (c, r) } else { (r, c) };
        [
            dims(self.transa, self.m, self.k),
            dims(self.transb, self.k, self.n),
            (self.m, self.n),
        ]
    }

    /// cuBLAS's argument rules (`CUBLAS_STATUS_INVALID_VALUE` otherwise): every dimension fits
    /// an `i32`, and each leading dimension is at least its stored matrix's row count (and 1).
    pub fn validate(&self) -> Result<()> {
        let fits = [
            self.m, self.n, self.k, self.lda, self.ldb, self.ldc, self.batch,
        ]
        .iter()
        .all(|&d| d <= i32::MAX as usize);
        let [(ra, _), (rb, _), (rc, _)] = self.stored();
        let lds = self.lda >= ra.max(1) && self.ldb >= rb.max(1) && self.ldc >= rc.max(1);
        if !fits || !lds || self.batch == 0 {
            return Err(crate::Error::Backend(format!(
                "gemm: invalid cuBLAS arguments {self:?}"
            )));
        }
        Ok(())
    }

    /// Elements of `A`, `B` and `C` the call touches, from the first one (0 for an empty
    /// matrix).
    pub fn extents(&self) -> [usize; 3] {
        let lds = [self.lda, self.ldb, self.ldc];
        let strides = [self.stride_a, self.stride_b, self.stride_c];
        let mut out = [0; 3];
        for (i, &(r, c)) in self.stored().iter().enumerate() {
            if r > 0 && c > 0 {
                out[i] = (self.batch.saturating_sub(1))
                    .saturating_mul(strides[i])
                    .saturating_add((c - 1).saturating_mul(lds[i]))
                    .saturating_add(r);
            }
        }
        out
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

    /// The device, e.g. `cuda (NVIDIA H100, sm_90)`; the backend adds its precision.
    fn describe(&self) -> String;
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

    /// The cuBLAS call `g` (see [`BlasGemm`]: `a` and `b` are cuBLAS's `A` and `B`), with
    /// `a`, `b` and `c` at element offsets `a_off`, `b_off`, `c_off` of their buffers.
    /// Arguments and sizes are checked first (`check_gemm`).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        g: &BlasGemm,
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

/// `Err` unless `g` is a valid cuBLAS call ([`BlasGemm::validate`]) whose matrices fit in
/// buffers of `(length, offset)` `a`, `b`, `c` (shared by both implementations of
/// [`Gpu::gemm`]).
pub(super) fn check_gemm(
    g: &BlasGemm,
    a: (usize, usize),
    b: (usize, usize),
    c: (usize, usize),
) -> Result<()> {
    g.validate()?;
    let [na, nb, nc] = g.extents();
    let within =
        |(len, off): (usize, usize), n: usize| off.checked_add(n).is_some_and(|e| e <= len);
    if !within(a, na) || !within(b, nb) || !within(c, nc) {
        return Err(crate::Error::Backend(format!(
            "gemm: {g:?} reaches past its buffers (length, offset) {a:?}, {b:?}, {c:?}"
        )));
    }
    Ok(())
}
