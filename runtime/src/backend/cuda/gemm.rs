//! Matrix products through cuBLAS.
//!
//! Float32 path: `cublasSgemm` with the default math mode, i.e. true fp32 FMA, no TF32 — this
//! is the path the parity tests hold to 1e-4 against the CPU oracle. Setting the environment
//! variable `PGOLF_CUDA_TF32=1` switches the handle to `CUBLAS_TF32_TENSOR_OP_MATH` (tensor
//! cores with 10-bit mantissa inputs, fp32 accumulation) for speed; parity is then only
//! expected at the ~1e-3 level. A bf16 cuBLASLt path is NOT implemented yet.
//!
//! Row-major trick: cuBLAS is column-major, and a row-major `[r, c]` buffer is the
//! column-major `[c, r]` matrix. For `Y[M,N] = X[M,K] · W[N,K]ᵀ` we ask cuBLAS for
//! `Yᵀ (N×M) = op(W_cm) · X_cm` with `W_cm` the `K×N` column-major view of `w` transposed
//! (`transa = T`, `lda = K`), `X_cm` the `K×M` view of `x` (`transb = N`, `ldb = K`),
//! `ldc = N`.

use super::device::CudaResultExt;
use crate::{Error, Result};
use cudarc::cublas::sys::{cublasMath_t, cublasOperation_t};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use std::sync::Arc;

/// A cuBLAS handle bound to the backend's stream.
pub struct Blas {
    handle: CudaBlas,
    pub tf32: bool,
}

impl Blas {
    /// Creates the handle; honours `PGOLF_CUDA_TF32=1`.
    pub fn new(stream: Arc<CudaStream>) -> Result<Blas> {
        let handle = CudaBlas::new(stream).op("cublasCreate")?;
        let tf32 = std::env::var("PGOLF_CUDA_TF32").is_ok_and(|v| v == "1");
        let mode = if tf32 {
            cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: a valid handle created just above.
        let st = unsafe { cudarc::cublas::sys::cublasSetMathMode(*handle.handle(), mode) };
        if st != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(Error::Backend(format!("cuda cublasSetMathMode: {st:?}")));
        }
        Ok(Blas { handle, tf32 })
    }

    /// `y[m, n] = x[m, k] · w[n, k]ᵀ` (all row-major, f32). `y` must hold `m * n` values.
    pub fn linear<X, W>(
        &self,
        x: &X,
        w: &W,
        y: &mut CudaSlice<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()>
    where
        X: DevicePtr<f32>,
        W: DevicePtr<f32>,
    {
        if m == 0 || n == 0 {
            return Ok(());
        }
        let dims_ok = x.len() >= m * k && w.len() >= n * k && y.len() >= m * n;
        let fits = [m, n, k].iter().all(|&d| d <= i32::MAX as usize);
        if !dims_ok || !fits {
            return Err(Error::Backend(format!(
                "linear: bad sizes for [{m},{k}]·[{n},{k}]ᵀ"
            )));
        }
        if k == 0 {
            // cuBLAS leaves C untouched when k == 0; the product of empty rows is zero.
            return y.stream().clone().memset_zeros(y).op("memset");
        }
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: n as i32,
            n: m as i32,
            k: k as i32,
            alpha: 1.0f32,
            lda: k as i32,
            ldb: k as i32,
            beta: 0.0f32,
            ldc: n as i32,
        };
        // SAFETY: sizes checked above; all buffers live on the handle's stream/context.
        unsafe { self.handle.gemm(cfg, w, x, y) }.op("cublasSgemm")
    }
}
