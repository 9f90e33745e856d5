//! Matrix products through cuBLAS.
//!
//! Float32 path: `cublasSgemm` with the default math mode, i.e. true fp32 FMA, no TF32 — this
//! is the path the parity tests hold to 1e-4 against the CPU oracle. Setting the environment
//! variable `PGOLF_CUDA_TF32=1` switches the handle to `CUBLAS_TF32_TENSOR_OP_MATH` (tensor
//! cores with 10-bit mantissa inputs, fp32 accumulation) for speed; parity is then only
//! expected at the ~1e-3 level. A bf16 cuBLASLt path is NOT implemented yet.
//!
//! Row-major trick: cuBLAS is column-major, and a row-major `[r, c]` buffer is the
//! column-major `[c, r]` matrix (its transpose). So the row-major `C[m,n] = op(A)·op(B)` of
//! [`RowGemm`] is the column-major `Cᵀ (n×m) = op(B)ᵀ · op(A)ᵀ`: cuBLAS's first operand is our
//! `B` (transposed in cuBLAS's sense exactly when `b_t`, leading dimension `k` if so, else
//! `n`), its second our `A` (transposed when `a_t`, leading dimension `m` if so, else `k`), and
//! `ldc = n`. For `nn.Linear` (`a_t = false`, `b_t = true`) this is `transa = T`, `lda = K`,
//! `transb = N`, `ldb = K`, `ldc = N`.

use super::device::CudaResultExt;
use super::gpu::RowGemm;
use crate::{Error, Result};
use cudarc::cublas::sys::{cublasMath_t, cublasOperation_t};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut};
use std::sync::Arc;

/// A cuBLAS handle bound to the backend's stream.
pub struct Blas {
    handle: CudaBlas,
    stream: Arc<CudaStream>,
    pub tf32: bool,
}

/// The column-major sgemm computing the row-major product `g` (see the module doc), with
/// cuBLAS's `A` = our `B` and cuBLAS's `B` = our `A`. Sizes must fit in `i32` (checked by
/// [`super::gpu::check_gemm`]).
pub(crate) fn gemm_config(g: &RowGemm) -> GemmConfig<f32> {
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    GemmConfig {
        transa: op(g.b_t),
        transb: op(g.a_t),
        m: g.n as i32,
        n: g.m as i32,
        k: g.k as i32,
        alpha: 1.0f32,
        lda: if g.b_t { g.k } else { g.n } as i32,
        ldb: if g.a_t { g.m } else { g.k } as i32,
        beta: if g.accumulate { 1.0 } else { 0.0 },
        ldc: g.n as i32,
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

    /// `c = op(a) · op(b)` for the row-major product `g`; `a`, `b` are views starting at the
    /// matrices' first elements. Sizes are the caller's (`gpu::check_gemm`).
    pub fn gemm<A, B, C>(&self, g: &RowGemm, a: &A, b: &B, c: &mut C) -> Result<()>
    where
        A: DevicePtr<f32>,
        B: DevicePtr<f32>,
        C: DevicePtrMut<f32>,
    {
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        if g.k == 0 {
            if g.accumulate {
                return Ok(());
            }
            // cuBLAS leaves C untouched when k == 0; the product of empty rows is zero.
            return self.stream.memset_zeros(c).op("memset");
        }
        // cudarc's sgemm does not make the context current, and cuBLAS launches into whatever
        // context is current on the calling thread (a fresh thread has none, or device 0's).
        self.stream.context().bind_to_thread().op("bind context")?;
        let cfg = gemm_config(g);
        // SAFETY: sizes checked by the caller; all buffers live on the handle's stream/context.
        unsafe { self.handle.gemm(cfg, b, a, c) }.op("cublasSgemm")
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

    /// The config handed to cuBLAS (with cuBLAS's `A` = our `b`, its `B` = our `a`, as
    /// `Blas::gemm` calls it) computes the row-major product for every transpose combination,
    /// with and without accumulation; `RowGemm::linear` is the `nn.Linear` product `x · wᵀ`.
    #[test]
    fn gemm_config_computes_the_row_major_product() {
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (8, 2, 16), (5, 9, 1)] {
            for (a_t, b_t, accumulate) in [
                (false, false, false),
                (false, true, false),
                (true, false, false),
                (true, true, true),
                (false, true, true),
            ] {
                let g = RowGemm {
                    m,
                    n,
                    k,
                    a_t,
                    b_t,
                    accumulate,
                };
                let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
                let b: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.91).cos()).collect();
                let init = |i: usize| if accumulate { i as f32 * 0.5 } else { f32::NAN };
                let mut c: Vec<f32> = (0..m * n).map(init).collect();
                let cfg = gemm_config(&g);
                // cuBLAS's leading-dimension rules.
                let rows = |t: cublasOperation_t, r: i32, cc: i32| {
                    if t == cublasOperation_t::CUBLAS_OP_N {
                        r
                    } else {
                        cc
                    }
                };
                assert!(cfg.lda >= rows(cfg.transa, cfg.m, cfg.k).max(1));
                assert!(cfg.ldb >= rows(cfg.transb, cfg.k, cfg.n).max(1));
                assert!(cfg.ldc >= cfg.m.max(1));
                sgemm_ref(&cfg, &b, &a, &mut c);
                let op_a = |r: usize, l: usize| if a_t { a[l * m + r] } else { a[r * k + l] };
                let op_b = |l: usize, cc: usize| if b_t { b[cc * k + l] } else { b[l * n + cc] };
                for r in 0..m {
                    for cc in 0..n {
                        let mut want: f32 = (0..k).map(|l| op_a(r, l) * op_b(l, cc)).sum();
                        if accumulate {
                            want += init(r * n + cc);
                        }
                        let got = c[r * n + cc];
                        assert!(
                            (got - want).abs() < 1e-5,
                            "{g:?}: c[{r},{cc}] {got} vs {want}"
                        );
                    }
                }
            }
        }
        let lin = RowGemm::linear(3, 4, 5);
        assert!(!lin.a_t && lin.b_t && !lin.accumulate);
        let cfg = gemm_config(&lin);
        assert_eq!(cfg.transa, cublasOperation_t::CUBLAS_OP_T);
        assert_eq!(cfg.transb, cublasOperation_t::CUBLAS_OP_N);
        assert_eq!((cfg.lda, cfg.ldb, cfg.ldc), (5, 5, 4));
    }
}
