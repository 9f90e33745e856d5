//! `EmuGpu`: the device layer of [`super::CudaBackend`] on the host (feature `cuda-emu`).
//!
//! The kernels are the real `cuda/*.cu` files, compiled by the host C++ compiler (build.rs)
//! after the prelude `cuda/emu/cuda_emu.h`, and launched through `cuda/emu/runtime.cpp`, which
//! runs every CUDA thread of a block as a fiber and releases `__syncthreads` and warp shuffles
//! as a GPU would. `CudaBackend<EmuGpu>` therefore runs the backend's own launch geometry,
//! argument packing and kernels, and its tests compare them with the CPU oracle in CI.
//!
//! What the emulator adds over a GPU, to catch bugs a GPU would hide:
//! - every argument's size is checked against the kernel's parameter list;
//! - fresh buffers from [`Gpu::alloc`] are filled with a NaN pattern, so reading what no one
//!   wrote shows up as NaN;
//! - every buffer carries a guard zone of [`GUARD`] values after its end, checked after each
//!   launch: a kernel that writes past a buffer's end is reported by name.
//!
//! What it cannot tell: speed, data races between threads, the device's exact rounding of
//! `expf`/`tanhf` and of contracted `a*b+c` (see `cuda/emu/README.md`).

use super::gpu::{check_gemm, BlasGemm, Gpu, KArg};
use crate::{Error, Result};
use cudarc::driver::LaunchConfig;
use std::ffi::{c_char, c_void, CString};

extern "C" {
    fn pgolf_emu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        args: *mut *mut c_void,
        arg_sizes: *const usize,
        nargs: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn pgolf_emu_has_kernel(name: *const c_char) -> i32;
}

/// Values after each buffer's end that kernels must never touch.
pub const GUARD: usize = 64;
/// The bits of the guard zone (a quiet NaN with a payload).
const GUARD_BITS: u32 = 0x7fc0_dead;
/// The bits [`Gpu::alloc`] fills fresh buffers with (another quiet NaN).
const UNINIT_BITS: u32 = 0x7fc0_beef;

/// A host buffer standing in for device memory: `len` values and the guard zone behind them.
pub struct EmuBuf<T> {
    data: Vec<T>,
    len: usize,
}

impl<T: Copy> EmuBuf<T> {
    fn new(values: &[T], fill: T, guard: T) -> EmuBuf<T> {
        let mut data = values.to_vec();
        if data.is_empty() {
            data.push(fill);
        }
        let len = data.len();
        data.extend(std::iter::repeat_n(guard, GUARD));
        EmuBuf { data, len }
    }

    /// The `len` values (without the guard zone).
    pub fn values(&self) -> &[T] {
        &self.data[..self.len]
    }
}

/// Element types whose guard zone is compared bit for bit (the f32 guard is a NaN).
trait GuardBits: Copy {
    fn bits(self) -> u32;
}
impl GuardBits for f32 {
    fn bits(self) -> u32 {
        self.to_bits()
    }
}
impl GuardBits for u32 {
    fn bits(self) -> u32 {
        self
    }
}

/// `off`, if it is within `b` (at most its end).
fn check_offset(b: &EmuBuf<f32>, off: usize) -> Result<usize> {
    if off > b.len {
        return Err(Error::Backend(format!(
            "cuda-emu: offset {off} past a buffer of {}",
            b.len
        )));
    }
    Ok(off)
}

fn guard_intact<T: GuardBits>(b: &EmuBuf<T>) -> bool {
    b.data[b.len..].iter().all(|&v| v.bits() == GUARD_BITS)
}

/// The host emulator as a device layer (stateless: launches are serialised inside the
/// emulator).
#[derive(Debug, Default, Clone, Copy)]
pub struct EmuGpu;

impl EmuGpu {
    /// `CudaBackend` on the emulator.
    pub fn backend() -> Result<super::CudaBackend<EmuGpu>> {
        super::CudaBackend::with_gpu(EmuGpu)
    }
}

fn f32_buf(values: &[f32], fill: u32) -> EmuBuf<f32> {
    EmuBuf::new(values, f32::from_bits(fill), f32::from_bits(GUARD_BITS))
}

impl Gpu for EmuGpu {
    type F32 = EmuBuf<f32>;
    type U32 = EmuBuf<u32>;
    type Func = CString;

    fn describe(&self) -> String {
        "cuda-emu (cuda/*.cu kernels run on the host)".into()
    }

    fn kernel(&self, file: &str, func: &str) -> Result<CString> {
        let name = CString::new(func).map_err(|_| Error::Backend("bad kernel name".into()))?;
        // SAFETY: a valid NUL-terminated string; the function only reads it.
        if unsafe { pgolf_emu_has_kernel(name.as_ptr()) } == 0 {
            return Err(Error::Backend(format!(
                "cuda-emu: no kernel {func} in cuda/{file}"
            )));
        }
        Ok(name)
    }

    fn alloc(&self, n: usize) -> Result<EmuBuf<f32>> {
        Ok(f32_buf(&vec![f32::from_bits(UNINIT_BITS); n], UNINIT_BITS))
    }

    fn zeros(&self, n: usize) -> Result<EmuBuf<f32>> {
        Ok(f32_buf(&vec![0.0; n], 0))
    }

    fn upload(&self, v: &[f32]) -> Result<EmuBuf<f32>> {
        Ok(f32_buf(v, 0))
    }

    fn upload_u32(&self, v: &[u32]) -> Result<EmuBuf<u32>> {
        Ok(EmuBuf::new(v, 0, GUARD_BITS))
    }

    fn download(&self, b: &EmuBuf<f32>, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
        b.values()
            .get(range.clone())
            .map(<[f32]>::to_vec)
            .ok_or_else(|| Error::Backend(format!("download: {range:?} of a buffer of {}", b.len)))
    }

    fn copy(&self, b: &EmuBuf<f32>) -> Result<EmuBuf<f32>> {
        Ok(f32_buf(b.values(), 0))
    }

    fn len(b: &EmuBuf<f32>) -> usize {
        b.len
    }

    fn gemm(
        &self,
        g: &BlasGemm,
        a: &EmuBuf<f32>,
        a_off: usize,
        b: &EmuBuf<f32>,
        b_off: usize,
        c: &mut EmuBuf<f32>,
        c_off: usize,
    ) -> Result<()> {
        check_gemm(g, (a.len, a_off), (b.len, b_off), (c.len, c_off))?;
        if g.k == 0 && g.beta == 0.0 && !(g.batch == 1 && g.ldc == g.m) {
            // What the real device refuses too (gemm.rs).
            return Err(Error::Backend(format!(
                "gemm: k = 0 with a strided or batched C is not supported: {g:?}"
            )));
        }
        let len = c.len;
        super::emu_blas::sgemm(
            g,
            &a.values()[a_off..],
            &b.values()[b_off..],
            &mut c.data[c_off..len],
        );
        Ok(())
    }

    unsafe fn launch(
        &self,
        f: &CString,
        name: &str,
        cfg: LaunchConfig,
        args: &mut [KArg<'_, Self>],
    ) -> Result<()> {
        // Each argument's value in a u64 slot (pointers are host addresses), and its size as
        // the kernel declares it.
        let mut slots: Vec<u64> = Vec::with_capacity(args.len());
        let mut sizes: Vec<usize> = Vec::with_capacity(args.len());
        for a in args.iter_mut() {
            let (v, size) = match a {
                KArg::F32(b) => (b.data.as_ptr() as u64, 8),
                KArg::F32Mut(b) => (b.data.as_mut_ptr() as u64, 8),
                KArg::F32At(b, off) => (b.data[check_offset(b, *off)?..].as_ptr() as u64, 8),
                KArg::F32MutAt(b, off) => {
                    let off = check_offset(b, *off)?;
                    (b.data[off..].as_mut_ptr() as u64, 8)
                }
                KArg::U32(b) => (b.data.as_ptr() as u64, 8),
                KArg::I32(v) => (*v as u32 as u64, 4),
                KArg::I64(v) => (*v as u64, 8),
                KArg::Float(v) => (v.to_bits() as u64, 4),
                KArg::Null => (0, 8),
            };
            slots.push(v);
            sizes.push(size);
        }
        let mut ptrs: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| (s as *mut u64).cast::<c_void>())
            .collect();
        let (gd, bd) = (cfg.grid_dim, cfg.block_dim);
        let grid = [gd.0, gd.1, gd.2];
        let block = [bd.0, bd.1, bd.2];
        if cfg.shared_mem_bytes != 0 {
            return Err(Error::Backend(format!(
                "cuda-emu {name}: dynamic shared memory is not emulated"
            )));
        }
        let mut err = vec![0 as c_char; 512];
        // SAFETY: the caller's contract (arguments match the kernel, buffers are large enough);
        // the emulator checks the count and sizes of the arguments before it runs anything.
        // Slots are little-endian u64s, so a 4-byte argument is read from their low half.
        let rc = unsafe {
            pgolf_emu_launch(
                f.as_ptr(),
                grid.as_ptr(),
                block.as_ptr(),
                ptrs.as_mut_ptr(),
                sizes.as_ptr(),
                ptrs.len(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            // SAFETY: the emulator wrote a NUL-terminated message into `err`.
            let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
            return Err(Error::Backend(format!(
                "cuda-emu {name}: {}",
                msg.to_string_lossy()
            )));
        }
        for (i, a) in args.iter().enumerate() {
            let intact = match a {
                KArg::F32(b) => guard_intact(b),
                KArg::F32Mut(b) => guard_intact(b),
                KArg::F32At(b, _) => guard_intact(b),
                KArg::F32MutAt(b, _) => guard_intact(b),
                KArg::U32(b) => guard_intact(b),
                _ => true,
            };
            if !intact {
                return Err(Error::Backend(format!(
                    "cuda-emu {name}: argument {i} was written past its end"
                )));
            }
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The emulator's own guarantees, on the deliberately simple or broken kernels of
    //! `cuda/emu/selftest.cu`.
    use super::*;

    fn cfg(blocks: u32, threads: u32) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn run(name: &str, c: LaunchConfig, args: &mut [KArg<'_, EmuGpu>]) -> Result<()> {
        let f = EmuGpu.kernel("emu/selftest.cu", name).unwrap();
        // SAFETY: the tests pass what each selftest kernel declares (or, on purpose, not; the
        // emulator must then refuse before running anything).
        unsafe { EmuGpu.launch(&f, name, c, args) }
    }

    #[test]
    fn shuffles_and_block_barriers_reduce_like_a_gpu() {
        // 3 blocks of 96 threads (3 warps), the last block partly past n.
        let n = 250;
        let x: Vec<f32> = (0..n).map(|i| (i % 17) as f32 - 8.0).collect();
        let xb = EmuGpu.upload(&x).unwrap();
        let mut y = EmuGpu.zeros(9).unwrap();
        run(
            "emu_reductions",
            cfg(3, 96),
            &mut [KArg::F32(&xb), KArg::F32Mut(&mut y), KArg::I32(n as i32)],
        )
        .unwrap();
        let y = y.values();
        let at = |i: usize| if i < n { x[i] } else { 0.0 };
        for b in 0..3 {
            let sum: f32 = (b * 96..(b + 1) * 96).map(at).sum();
            let lane0 = at(b * 96);
            // __shfl_down_sync: lane 0 accumulates the whole first warp.
            let down: f32 = (b * 96..b * 96 + 32).map(at).sum();
            assert_eq!(y[b * 3], sum, "block {b} sum");
            assert_eq!(y[b * 3 + 1], lane0, "block {b} broadcast");
            assert_eq!(y[b * 3 + 2], down, "block {b} shfl_down");
        }
    }

    #[test]
    fn a_write_past_the_end_is_reported() {
        let mut y = EmuGpu.alloc(100).unwrap();
        let e = run(
            "emu_write_past_end",
            cfg(1, 128),
            &mut [KArg::F32Mut(&mut y), KArg::I32(100)],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("argument 0 was written past its end"), "{e}");
        // In bounds it passes.
        let mut y = EmuGpu.alloc(101).unwrap();
        run(
            "emu_write_past_end",
            cfg(1, 128),
            &mut [KArg::F32Mut(&mut y), KArg::I32(100)],
        )
        .unwrap();
        assert!(y.values().iter().all(|&v| v == 1.0));
    }

    #[test]
    fn wrong_argument_sizes_and_counts_are_refused() {
        let mut y = EmuGpu.alloc(10).unwrap();
        let e = run(
            "emu_write_past_end",
            cfg(1, 32),
            &mut [KArg::F32Mut(&mut y), KArg::I64(9)],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("argument 1 is 4 bytes in the kernel, 8 given"),
            "{e}"
        );
        let e = run(
            "emu_write_past_end",
            cfg(1, 32),
            &mut [KArg::F32Mut(&mut y)],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("takes 2 arguments, 1 given"), "{e}");
        assert!(EmuGpu.kernel("x.cu", "no_such_kernel").is_err());
    }

    #[test]
    fn a_barrier_no_gpu_could_pass_is_an_error_not_a_hang() {
        let mut y = EmuGpu.zeros(64).unwrap();
        let e = run(
            "emu_divergent_barrier",
            cfg(1, 64),
            &mut [KArg::F32Mut(&mut y)],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("threads wait at different barriers"), "{e}");
        // The emulator is usable again after the failed launch.
        shuffles_and_block_barriers_reduce_like_a_gpu();
    }

    #[test]
    fn threads_that_exit_early_leave_the_barrier() {
        let mut y = EmuGpu.zeros(256).unwrap();
        run(
            "emu_early_exit",
            cfg(1, 256),
            &mut [KArg::F32Mut(&mut y), KArg::I32(70)],
        )
        .unwrap();
        let y = y.values();
        for (t, &v) in y[..70].iter().enumerate() {
            assert_eq!(v, (69 - t) as f32);
        }
        assert!(y[70..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn unwritten_memory_reads_as_nan_and_launch_limits_hold() {
        let src = EmuGpu.alloc(5).unwrap();
        let mut dst = EmuGpu.zeros(5).unwrap();
        run(
            "emu_copy",
            cfg(1, 32),
            &mut [KArg::F32(&src), KArg::F32Mut(&mut dst), KArg::I32(5)],
        )
        .unwrap();
        assert!(dst
            .values()
            .iter()
            .all(|v| v.is_nan() && v.to_bits() == UNINIT_BITS));
        for bad in [cfg(0, 32), cfg(1, 0), cfg(1, 1025)] {
            let e = run(
                "emu_copy",
                bad,
                &mut [KArg::F32(&src), KArg::F32Mut(&mut dst), KArg::I32(5)],
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("invalid launch configuration"), "{e}");
        }
    }

    #[test]
    fn gemm_checks_buffers_and_runs_the_cublas_call() {
        use crate::backend::cuda::gpu::{GemmMath, RowGemm};
        let (m, n, k) = (3, 4, 5);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 - 2.0).collect();
        // A stored [k, m] (a_t), B stored [k, n], accumulate onto 1.
        let g = RowGemm {
            m,
            n,
            k,
            a_t: true,
            b_t: false,
            accumulate: true,
        };
        let call = BlasGemm::from_row(&g, GemmMath::F32);
        let (ab, bb) = (EmuGpu.upload(&a).unwrap(), EmuGpu.upload(&b).unwrap());
        let mut c = EmuGpu.upload(&vec![1.0; m * n]).unwrap();
        // cuBLAS's A is our B.
        EmuGpu.gemm(&call, &bb, 0, &ab, 0, &mut c, 0).unwrap();
        for r in 0..m {
            for cc in 0..n {
                let want = 1.0 + (0..k).map(|l| a[l * m + r] * b[l * n + cc]).sum::<f32>();
                assert!((c.values()[r * n + cc] - want).abs() < 1e-5);
            }
        }
        assert!(EmuGpu.gemm(&call, &bb, 1, &ab, 0, &mut c, 0).is_err());
        assert!(EmuGpu.gemm(&call, &bb, 0, &ab, 0, &mut c, 1).is_err());
        let bad_ld = BlasGemm { ldc: n - 1, ..call };
        assert!(EmuGpu.gemm(&bad_ld, &bb, 0, &ab, 0, &mut c, 0).is_err());
    }
}
