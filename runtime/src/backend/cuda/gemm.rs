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
    stream: Arc<CudaStream>,
    pub tf32: bool,
}

/// The column-major sgemm computing row-major `y[m, n] = x[m, k] · w[n, k]ᵀ` as
/// `Yᵀ = op(A)·op(B)` with `A = w` (`transa = T`) and `B = x` (`transb = N`); see the module doc.
/// Sizes must fit in `i32` (checked by [`Blas::linear`]).
pub(crate) fn linear_config(m: usize, n: usize, k: usize) -> GemmConfig<f32> {
    GemmConfig {
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
    }
}

impl Blas {
    /// Creates the handle; honours `PGOLF_CUDA_TF32=1`.
    pub fn new(stream: Arc<CudaStream>) -> Result<Blas> {
        let handle = CudaBlas::new(stream.clone()).op("cublasCreate")?;
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
        Ok(Blas {
            handle,
            stream,
            tf32,
        })
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
        // cudarc's sgemm does not make the context current, and cuBLAS launches into whatever
        // context is current on the calling thread (a fresh thread has none, or device 0's).
        self.stream.context().bind_to_thread().op("bind context")?;
        let cfg = linear_config(m, n, k);
        // SAFETY: sizes checked above; all buffers live on the handle's stream/context.
        unsafe { self.handle.gemm(cfg, w, x, y) }.op("cublasSgemm")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain column-major sgemm with cuBLAS's argument semantics:
    /// `C[i + j*ldc] = sum_l op(A)[i, l] * op(B)[l, j]`, `op(X)[r, c] = X[c + r*ld]` when transposed.
    fn sgemm_ref(cfg: &GemmConfig<f32>, a: &[f32], b: &[f32], c: &mut [f32]) {
        let t = |op: cublasOperation_t| op == cublasOperation_t::CUBLAS_OP_T;
        let (m, n, k) = (cfg.m as usize, cfg.n as usize, cfg.k as usize);
        let (lda, ldb, ldc) = (cfg.lda as usize, cfg.ldb as usize, cfg.ldc as usize);
        let at = |i: usize, l: usize| {
            if t(cfg.transa) {
                a[l + i * lda]
            } else {
                a[i + l * lda]
            }
        };
        let bt = |l: usize, j: usize| {
            if t(cfg.transb) {
                b[j + l * ldb]
            } else {
                b[l + j * ldb]
            }
        };
        for j in 0..n {
            for i in 0..m {
                let s: f32 = (0..k).map(|l| at(i, l) * bt(l, j)).sum();
                // Like cuBLAS, C is not read when beta == 0 (it may hold garbage).
                let old = if cfg.beta == 0.0 {
                    0.0
                } else {
                    cfg.beta * c[i + j * ldc]
                };
                c[i + j * ldc] = cfg.alpha * s + old;
            }
        }
    }

    /// The config handed to cuBLAS (with `a = w`, `b = x`, as `Blas::linear` calls it) computes the
    /// row-major `nn.Linear` product `y = x · wᵀ`.
    #[test]
    fn linear_config_computes_x_times_w_transposed() {
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (8, 2, 16), (5, 9, 1)] {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.91).cos()).collect();
            let mut y = vec![f32::NAN; m * n];
            let cfg = linear_config(m, n, k);
            // cuBLAS's leading-dimension rules for these transposes.
            assert!(cfg.lda >= cfg.k.max(1) && cfg.ldb >= cfg.k.max(1) && cfg.ldc >= cfg.m.max(1));
            sgemm_ref(&cfg, &w, &x, &mut y);
            for r in 0..m {
                for c in 0..n {
                    let want: f32 = (0..k).map(|l| x[r * k + l] * w[c * k + l]).sum();
                    let got = y[r * n + c];
                    assert!(
                        (got - want).abs() < 1e-5,
                        "({m},{n},{k}) y[{r},{c}] {got} vs {want}"
                    );
                }
            }
        }
    }
}
