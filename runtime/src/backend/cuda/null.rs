//! `NullGpu`: the CUDA backend's device layer with no device at all (feature `cuda-emu`):
//! buffers are only lengths, launches and matrix products are checked and dropped, downloads
//! return zeros. `CudaBackend<NullGpu>` runs the backend's own code (shapes, launch geometry,
//! argument packing, scratch sizes, and every host-device copy) at full model size in seconds,
//! so its [`crate::backend::Traffic`] counters give the traffic of a real run's step without a
//! GPU (`pgolf-rt train --backend cuda-null --profile`). Its numbers (losses, weights) mean
//! nothing.

use super::gpu::{check_gemm, BlasGemm, Gpu, KArg};
use crate::{Error, Result};
use cudarc::driver::LaunchConfig;

/// A device buffer of `n` values that holds none.
#[derive(Debug, Clone, Copy)]
pub struct NullBuf(usize);

/// The device layer that does nothing but check sizes.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullGpu;

impl NullGpu {
    /// `CudaBackend` on no device.
    pub fn backend() -> Result<super::CudaBackend<NullGpu>> {
        super::CudaBackend::with_gpu(NullGpu)
    }
}

impl Gpu for NullGpu {
    type F32 = NullBuf;
    type U32 = NullBuf;
    type Func = ();

    fn describe(&self) -> String {
        "cuda-null (no device: counts traffic, computes nothing)".into()
    }

    fn kernel(&self, _file: &str, _func: &str) -> Result<()> {
        Ok(())
    }

    fn alloc(&self, n: usize) -> Result<NullBuf> {
        Ok(NullBuf(n.max(1)))
    }

    fn zeros(&self, n: usize) -> Result<NullBuf> {
        Ok(NullBuf(n.max(1)))
    }

    fn upload(&self, v: &[f32]) -> Result<NullBuf> {
        Ok(NullBuf(v.len().max(1)))
    }

    fn upload_u32(&self, v: &[u32]) -> Result<NullBuf> {
        Ok(NullBuf(v.len().max(1)))
    }

    fn download(&self, b: &NullBuf, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
        if range.end > b.0 {
            return Err(Error::Backend(format!(
                "download: {range:?} of a buffer of {}",
                b.0
            )));
        }
        Ok(vec![0.0; range.len()])
    }

    fn copy(&self, b: &NullBuf) -> Result<NullBuf> {
        Ok(*b)
    }

    fn len(b: &NullBuf) -> usize {
        b.0
    }

    fn gemm(
        &self,
        g: &BlasGemm,
        a: &NullBuf,
        a_off: usize,
        b: &NullBuf,
        b_off: usize,
        c: &mut NullBuf,
        c_off: usize,
    ) -> Result<()> {
        check_gemm(g, (a.0, a_off), (b.0, b_off), (c.0, c_off))
    }

    unsafe fn launch(
        &self,
        _f: &(),
        _name: &str,
        _cfg: LaunchConfig,
        _args: &mut [KArg<'_, Self>],
    ) -> Result<()> {
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
