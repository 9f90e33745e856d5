//! Matrix products through cuBLAS.
//!
//! Each product arrives as a [`BlasGemm`], already in cuBLAS's column-major terms (the
//! row-major translation is [`BlasGemm::from_row`], shared with the emulator, which computes
//! the same call from its definition). Float32 math (`CUBLAS_DEFAULT_MATH`) is true fp32 FMA,
//! the path the parity tests hold to 1e-4 against the CPU oracle; TF32 math
//! (`CUBLAS_TF32_TENSOR_OP_MATH`) rounds the operands to 10-bit mantissas on tensor cores with
//! fp32 accumulation (parity ~1e-3). The handle's math mode is switched when a call asks for
//! another one. Bf16 math is `cublasGemmEx` / `cublasGemmStridedBatchedEx` on the same fp32
//! buffers with compute type `CUBLAS_COMPUTE_32F_FAST_16BF`: cuBLAS rounds the operands to
//! bf16 for the tensor cores and accumulates in fp32, so no tensor is stored in bf16 (that, and
//! cuBLASLt's fused epilogues, are the next steps of the tensor-core issue).

use super::device::CudaResultExt;
use super::gpu::{BlasGemm, GemmMath};
use crate::{Error, Result};
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasMath_t, cublasOperation_t, cublasStatus_t,
    cudaDataType_t,
};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut};
use std::sync::{Arc, Mutex};

/// A cuBLAS handle bound to the backend's stream, and the math mode it is in.
pub struct Blas {
    handle: CudaBlas,
    stream: Arc<CudaStream>,
    math: Mutex<GemmMath>,
}

/// `g` as cudarc's sgemm arguments.
pub(crate) fn gemm_config(g: &BlasGemm) -> GemmConfig<f32> {
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    GemmConfig {
        transa: op(g.transa),
        transb: op(g.transb),
        m: g.m as i32,
        n: g.n as i32,
        k: g.k as i32,
        alpha: g.alpha,
        lda: g.lda as i32,
        ldb: g.ldb as i32,
        beta: g.beta,
        ldc: g.ldc as i32,
    }
}

impl Blas {
    /// Creates the handle (float32 math).
    pub fn new(stream: Arc<CudaStream>) -> Result<Blas> {
        let handle = CudaBlas::new(stream.clone()).op("cublasCreate")?;
        let blas = Blas {
            handle,
            stream,
            math: Mutex::new(GemmMath::Tf32),
        };
        blas.set_math(GemmMath::F32)?;
        Ok(blas)
    }

    /// cuBLAS's version (`cublasGetVersion`), e.g. 130100.
    pub fn version(&self) -> i32 {
        let mut v = 0;
        // SAFETY: a valid handle and one out-pointer.
        unsafe { cudarc::cublas::sys::cublasGetVersion_v2(*self.handle.handle(), &mut v) };
        v
    }

    fn set_math(&self, math: GemmMath) -> Result<()> {
        let mut cur = self
            .math
            .lock()
            .map_err(|_| Error::Backend("cuBLAS math lock poisoned".into()))?;
        if *cur == math {
            return Ok(());
        }
        let mode = match math {
            // Bf16 calls name their compute type (`gemm_bf16`); the mode is the default one.
            GemmMath::F32 | GemmMath::Bf16 => cublasMath_t::CUBLAS_DEFAULT_MATH,
            GemmMath::Tf32 => cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH,
        };
        // SAFETY: a valid handle created by `new`.
        let st = unsafe { cudarc::cublas::sys::cublasSetMathMode(*self.handle.handle(), mode) };
        if st != cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(Error::Backend(format!("cuda cublasSetMathMode: {st:?}")));
        }
        *cur = math;
        Ok(())
    }

    /// Runs the cuBLAS call `g`; `a`, `b` and `c` are views starting at the matrices' first
    /// elements. Arguments and sizes are the caller's (`gpu::check_gemm`).
    pub fn gemm<A, B, C>(&self, g: &BlasGemm, a: &A, b: &B, c: &mut C) -> Result<()>
    where
        A: DevicePtr<f32>,
        B: DevicePtr<f32>,
        C: DevicePtrMut<f32>,
    {
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        if g.k == 0 && g.beta != 0.0 {
            return Ok(());
        }
        if g.k == 0 {
            // cuBLAS leaves C untouched when k == 0; the product of empty rows is zero.
            if g.batch == 1 && g.ldc == g.m {
                return self.stream.memset_zeros(c).op("memset");
            }
            return Err(Error::Backend(format!(
                "gemm: k = 0 with a strided or batched C is not supported: {g:?}"
            )));
        }
        // cudarc's sgemm does not make the context current, and cuBLAS launches into whatever
        // context is current on the calling thread (a fresh thread has none, or device 0's).
        self.stream.context().bind_to_thread().op("bind context")?;
        self.set_math(g.math)?;
        if g.math == GemmMath::Bf16 {
            return self.gemm_bf16(g, a, b, c);
        }
        let gemm = gemm_config(g);
        if g.batch == 1 {
            // SAFETY: arguments and sizes checked by the caller; all buffers live on the
            // handle's stream/context.
            unsafe { self.handle.gemm(gemm, a, b, c) }.op("cublasSgemm")
        } else {
            let cfg = StridedBatchedConfig {
                gemm,
                batch_size: g.batch as i32,
                stride_a: g.stride_a as i64,
                stride_b: g.stride_b as i64,
                stride_c: g.stride_c as i64,
            };
            // SAFETY: as above; the strides keep every entry inside the checked extents.
            unsafe { self.handle.gemm_strided_batched(cfg, a, b, c) }
                .op("cublasSgemmStridedBatched")
        }
    }

    /// `g` with bf16 operands and fp32 accumulation on fp32 buffers
    /// (`CUBLAS_COMPUTE_32F_FAST_16BF`), batched or not.
    fn gemm_bf16<A, B, C>(&self, g: &BlasGemm, a: &A, b: &B, c: &mut C) -> Result<()>
    where
        A: DevicePtr<f32>,
        B: DevicePtr<f32>,
        C: DevicePtrMut<f32>,
    {
        let cfg = gemm_config(g);
        let f32t = cudaDataType_t::CUDA_R_32F;
        let compute = cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF;
        let algo = cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT;
        let (alpha, beta) = (cfg.alpha, cfg.beta);
        let handle = *self.handle.handle();
        let (pa, _ra) = a.device_ptr(&self.stream);
        let (pb, _rb) = b.device_ptr(&self.stream);
        let (pc, _rc) = c.device_ptr_mut(&self.stream);
        let (alpha, beta) = (
            &alpha as *const f32 as *const _,
            &beta as *const f32 as *const _,
        );
        let (pa, pb, pc) = (pa as *const _, pb as *const _, pc as *mut _);
        // SAFETY: arguments and sizes checked by the caller (`gpu::check_gemm`); the buffers
        // live on the handle's stream and context; alpha and beta outlive the call, which
        // reads them before returning (host pointer mode).
        let r = unsafe {
            if g.batch == 1 {
                cudarc::cublas::result::gemm_ex(
                    handle, cfg.transa, cfg.transb, cfg.m, cfg.n, cfg.k, alpha, pa, f32t, cfg.lda,
                    pb, f32t, cfg.ldb, beta, pc, f32t, cfg.ldc, compute, algo,
                )
            } else {
                cudarc::cublas::result::gemm_strided_batched_ex(
                    handle,
                    cfg.transa,
                    cfg.transb,
                    cfg.m,
                    cfg.n,
                    cfg.k,
                    alpha,
                    pa,
                    f32t,
                    cfg.lda,
                    g.stride_a as i64,
                    pb,
                    f32t,
                    cfg.ldb,
                    g.stride_b as i64,
                    beta,
                    pc,
                    f32t,
                    cfg.ldc,
                    g.stride_c as i64,
                    g.batch as i32,
                    compute,
                    algo,
                )
            }
        };
        r.op("cublasGemmEx (bf16)")
    }
}
