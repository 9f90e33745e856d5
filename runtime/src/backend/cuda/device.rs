//! Finding a usable CUDA device without ever panicking.
//!
//! cudarc (feature `dynamic-loading`) opens libcuda/libnvrtc/libcublas lazily and **panics** when
//! a library is missing. So [`probe_libraries`] first opens what it can find
//! ([`super::libs::preload`], which also looks where PyTorch's wheels and the driver keep
//! them), then asks each library's unsafe `is_culib_present()` (which only tries `dlopen` on
//! the candidate names), and only then do we touch cudarc's safe API. A missing library, a driver without a device, or a context that
//! cannot be created all become one-line `Error::Backend("CUDA unavailable: ...")` messages.

use super::gemm::Blas;
use super::gpu::{check_gemm, BlasGemm, Gpu, KArg};
use super::modules::BuildReport;
use crate::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    LaunchConfig, PushKernelArg,
};
use std::collections::HashMap;
use std::sync::Arc;

/// Checks that every shared library the backend needs can be opened, in the order they are
/// used. The first one missing gives the error.
pub fn probe_libraries() -> Result<()> {
    super::libs::preload();
    // SAFETY: these functions only dlopen the candidate library names and drop the handles;
    // they touch no CUDA state.
    let libs: [(&str, bool, &str); 3] = unsafe {
        [
            (
                "libcuda.so",
                cudarc::driver::sys::is_culib_present(),
                "no NVIDIA driver on the loader path",
            ),
            (
                "libnvrtc.so",
                cudarc::nvrtc::sys::is_culib_present(),
                "install the CUDA 13 toolkit or the nvidia-cuda-nvrtc wheel and add its lib dir to LD_LIBRARY_PATH",
            ),
            (
                "libcublas.so",
                cudarc::cublas::sys::is_culib_present(),
                "install CUDA 13 cuBLAS (libcublas.so.13 + libcublasLt.so.13) on LD_LIBRARY_PATH",
            ),
        ]
    };
    for (name, present, hint) in libs {
        if !present {
            return Err(unavailable(format!("{name} not found ({hint})")));
        }
    }
    Ok(())
}

/// `Error::Backend("CUDA unavailable: {why}")`.
pub fn unavailable(why: impl std::fmt::Display) -> Error {
    Error::Backend(format!("CUDA unavailable: {why}"))
}

/// The first line of a caught panic's message.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let msg = p
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| p.downcast_ref::<&str>().copied())
        .unwrap_or("panic inside cudarc");
    msg.lines().next().unwrap_or(msg).to_string()
}

/// Turns any displayable CUDA error into `Error::Backend("cuda {op}: {e}")`.
pub trait CudaResultExt<T> {
    fn op(self, op: &str) -> Result<T>;
}

impl<T, E: std::fmt::Display> CudaResultExt<T> for std::result::Result<T, E> {
    fn op(self, op: &str) -> Result<T> {
        self.map_err(|e| Error::Backend(format!("cuda {op}: {e}")))
    }
}

/// Raises the release threshold of the device's default memory pool (which serves cudarc's
/// stream-ordered allocations) so freed buffers stay in the pool. With the default threshold 0
/// the pool hands its memory back to the driver at every synchronisation, i.e. after every
/// `nll`/`download`, and the next forward pass maps it again. Best effort: errors are ignored.
fn keep_freed_memory_pooled(ordinal: usize) {
    use cudarc::driver::{result, sys};
    let Ok(dev) = result::device::get(ordinal as i32) else {
        return;
    };
    let mut threshold = u64::MAX;
    // SAFETY: `dev` is a valid device; the attribute's value is a cuuint64_t.
    unsafe {
        if let Ok(pool) = result::device::get_default_mem_pool(dev) {
            let _ = result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut threshold as *mut u64).cast(),
            );
        }
    }
}

/// An opened device: context, the one stream every op runs on, and its compute capability.
pub struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    /// `(major, minor)`, e.g. `(9, 0)` on H100.
    pub compute_capability: (i32, i32),
    pub name: String,
    /// Device memory in bytes.
    pub total_memory: usize,
    /// Streaming multiprocessors.
    pub multiprocessors: i32,
    /// The driver's CUDA version, e.g. 13000 for 13.0.
    pub driver_version: i32,
}

impl Device {
    /// Opens device `ordinal` after probing the libraries. Never panics on a machine without
    /// CUDA (a panic from inside cudarc, e.g. a missing driver symbol, is caught and reported).
    pub fn open(ordinal: usize) -> Result<Device> {
        probe_libraries()?;
        let opened = std::panic::catch_unwind(|| -> Result<Device> {
            let count = CudaContext::device_count()
                .map_err(|e| unavailable(format!("cuInit/cuDeviceGetCount failed: {e}")))?;
            if count <= 0 {
                return Err(unavailable("the driver reports no CUDA device"));
            }
            if ordinal >= count as usize {
                return Err(unavailable(format!(
                    "device {ordinal} requested but only {count} present"
                )));
            }
            let ctx = CudaContext::new(ordinal).map_err(|e| {
                unavailable(format!("cannot create a context on device {ordinal}: {e}"))
            })?;
            // One stream for everything: ops are ordered by the stream, so cudarc's per-buffer
            // event tracking (meant for multi-stream use) is pure overhead here.
            // SAFETY: no other stream of this context ever touches our buffers.
            unsafe { ctx.disable_event_tracking() };
            keep_freed_memory_pooled(ordinal);
            let stream = ctx
                .new_stream()
                .map_err(|e| unavailable(format!("cannot create a stream: {e}")))?;
            let compute_capability = ctx
                .compute_capability()
                .map_err(|e| unavailable(format!("cannot read the compute capability: {e}")))?;
            let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
            let total_memory = ctx.total_mem().unwrap_or(0);
            let multiprocessors = ctx
                .attribute(
                    cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                )
                .unwrap_or(0);
            let mut driver_version = 0;
            // SAFETY: one valid out-pointer; the driver is initialised (a context exists).
            unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver_version) };
            Ok(Device {
                ctx,
                stream,
                compute_capability,
                name,
                total_memory,
                multiprocessors,
                driver_version,
            })
        });
        match opened {
            Ok(r) => r,
            Err(p) => Err(unavailable(panic_message(p.as_ref()))),
        }
    }

    /// NVRTC architecture option for this device, e.g. `sm_90`.
    pub fn arch(&self) -> String {
        let (ma, mi) = self.compute_capability;
        format!("sm_{ma}{mi}")
    }
}

/// A real NVIDIA GPU as the backend's device layer: the opened [`Device`], the kernels of
/// `cuda/*.cu` compiled by NVRTC for its architecture and loaded into its context, and a
/// cuBLAS handle on its stream.
pub struct CudaGpu {
    dev: Device,
    modules: HashMap<&'static str, Arc<CudaModule>>,
    kernels: BuildReport,
    blas: Blas,
}

impl CudaGpu {
    /// Opens device `ordinal`. Fails cleanly (never panics) when CUDA is not usable here.
    pub fn open(ordinal: usize) -> Result<CudaGpu> {
        let dev = Device::open(ordinal)?;
        // NVRTC and cuBLAS are first called here, and cudarc panics on a symbol missing from a
        // library it did find (e.g. a CUDA 12 libnvrtc/libcublas): report that as an error too.
        let (modules, kernels, blas) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let (modules, kernels) = super::modules::load_modules(&dev.ctx, &dev.arch())?;
                let blas = Blas::new(dev.stream.clone())?;
                Ok::<_, Error>((modules, kernels, blas))
            }))
            .map_err(|p| unavailable(panic_message(p.as_ref())))??;
        Ok(CudaGpu {
            dev,
            modules,
            kernels,
            blas,
        })
    }

    /// The opened device.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// How the kernels were obtained (compiled, from the disk cache, as PTX).
    pub fn kernel_report(&self) -> &BuildReport {
        &self.kernels
    }

    /// cuBLAS's version, e.g. 130100 for 13.1.0.
    pub fn cublas_version(&self) -> i32 {
        self.blas.version()
    }
}

/// Device address of element `off` of an f32 buffer at `base`.
fn offset_ptr(base: u64, off: usize) -> u64 {
    base + (off * std::mem::size_of::<f32>()) as u64
}

/// The null pointer pushed for [`KArg::Null`].
static NULL_PTR: u64 = 0;

impl Gpu for CudaGpu {
    type F32 = CudaSlice<f32>;
    type U32 = CudaSlice<u32>;
    type Func = CudaFunction;

    fn describe(&self) -> String {
        let (ma, mi) = self.dev.compute_capability;
        format!("cuda ({}, sm_{ma}{mi})", self.dev.name)
    }

    fn tensor_cores(&self) -> bool {
        self.dev.compute_capability.0 >= 8
    }

    fn kernel(&self, file: &str, func: &str) -> Result<CudaFunction> {
        self.modules
            .get(file)
            .ok_or_else(|| Error::Backend(format!("no module cuda/{file}")))?
            .load_function(func)
            .op(&format!("load function {func} from cuda/{file}"))
    }

    fn alloc(&self, n: usize) -> Result<CudaSlice<f32>> {
        // SAFETY: the trait's contract: callers overwrite what they later read.
        unsafe { self.dev.stream.alloc::<f32>(n.max(1)) }.op("alloc")
    }

    fn zeros(&self, n: usize) -> Result<CudaSlice<f32>> {
        self.dev
            .stream
            .alloc_zeros::<f32>(n.max(1))
            .op("alloc zeros")
    }

    fn upload(&self, v: &[f32]) -> Result<CudaSlice<f32>> {
        if v.is_empty() {
            return self.dev.stream.clone_htod(&[0.0f32]).op("upload");
        }
        self.dev.stream.clone_htod(v).op("upload")
    }

    fn upload_u32(&self, v: &[u32]) -> Result<CudaSlice<u32>> {
        if v.is_empty() {
            return self.dev.stream.clone_htod(&[0u32]).op("upload ids");
        }
        self.dev.stream.clone_htod(v).op("upload ids")
    }

    fn download(&self, b: &CudaSlice<f32>, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        if range.end > b.len() {
            return Err(Error::Backend(format!(
                "download: {range:?} of a buffer of {}",
                b.len()
            )));
        }
        // A copy into pageable host memory returns only once it has completed (CUDA's
        // documented behaviour); the synchronisation makes that explicit.
        let v = self.dev.stream.clone_dtoh(&b.slice(range)).op("download")?;
        self.synchronize()?;
        Ok(v)
    }

    fn copy(&self, b: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
        self.dev.stream.clone_dtod(b).op("copy")
    }

    fn len(b: &CudaSlice<f32>) -> usize {
        b.len()
    }

    fn gemm(
        &self,
        g: &BlasGemm,
        a: &CudaSlice<f32>,
        a_off: usize,
        b: &CudaSlice<f32>,
        b_off: usize,
        c: &mut CudaSlice<f32>,
        c_off: usize,
    ) -> Result<()> {
        check_gemm(g, (a.len(), a_off), (b.len(), b_off), (c.len(), c_off))?;
        let [_, _, nc] = g.extents();
        let mut c = c.slice_mut(c_off..c_off + nc);
        self.blas
            .gemm(g, &a.slice(a_off..), &b.slice(b_off..), &mut c)
    }

    unsafe fn launch(
        &self,
        f: &CudaFunction,
        name: &str,
        cfg: LaunchConfig,
        args: &mut [KArg<'_, Self>],
    ) -> Result<()> {
        // Pointers into the middle of a buffer are pushed as raw device addresses.
        let stream = &self.dev.stream;
        let mut raw: Vec<u64> = Vec::new();
        for a in args.iter_mut() {
            match a {
                KArg::F32At(buf, off) => raw.push(offset_ptr(buf.device_ptr(stream).0, *off)),
                KArg::F32MutAt(buf, off) => {
                    raw.push(offset_ptr(buf.device_ptr_mut(stream).0, *off))
                }
                _ => {}
            }
        }
        let mut raw_iter = raw.iter();
        let mut b = stream.launch_builder(f);
        for a in args.iter_mut() {
            match a {
                KArg::F32(buf) => b.arg(*buf),
                KArg::F32Mut(buf) => b.arg(&mut **buf),
                KArg::F32At(..) | KArg::F32MutAt(..) => b.arg(
                    raw_iter
                        .next()
                        .expect("one raw pointer per offset argument"),
                ),
                KArg::U32(buf) => b.arg(*buf),
                KArg::I32(v) => b.arg(&*v),
                KArg::I64(v) => b.arg(&*v),
                KArg::Float(v) => b.arg(&*v),
                KArg::Null => b.arg(&NULL_PTR),
            };
        }
        // SAFETY: the caller's contract.
        unsafe { b.launch(cfg) }
            .op(&format!("launch {name}"))
            .map(|_| ())
    }

    fn synchronize(&self) -> Result<()> {
        self.dev.stream.synchronize().op("synchronize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_become_one_line() {
        // The payloads `panic!` produces (`&str` for a literal, `String` when formatted), built
        // directly so the test does not print a panic of its own.
        let p: Box<dyn std::any::Any + Send> = Box::new("Missing symbol nvrtcX: oops\nmore");
        assert_eq!(panic_message(p.as_ref()), "Missing symbol nvrtcX: oops");
        let p: Box<dyn std::any::Any + Send> = Box::new(format!("Missing symbol {}\nmore", 7));
        assert_eq!(panic_message(p.as_ref()), "Missing symbol 7");
        let p: Box<dyn std::any::Any + Send> = Box::new(3u8);
        assert_eq!(panic_message(p.as_ref()), "panic inside cudarc");
    }
}
