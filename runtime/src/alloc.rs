//! Process-wide allocator tuning for repeated forward passes.
//!
//! The CPU backend allocates each activation afresh (`[rows, d]` float32 buffers of several MB).
//! glibc's malloc serves blocks above its mmap threshold with `mmap` and gives them back with
//! `munmap` when freed, and trims the heap top back to the kernel, so every forward pass
//! touches fresh pages: at batch 4 on the baseline9L model that is ~190 k page faults per pass,
//! ~15% of its CPU time spent in the kernel. Keeping freed memory in the process removes them.

/// Makes the C allocator keep freed memory for reuse instead of returning it to the kernel
/// (glibc on Linux: no `mmap`-served blocks, no heap trimming). Call it once at start-up in a
/// program that runs many forward passes; the cost is that the process holds on to its peak
/// heap. Returns whether the allocator was tuned (`false` on other platforms, where this does
/// nothing).
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's tuning parameters; it is safe to call at any
        // time from any thread (glibc takes the arena lock).
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_accepts_the_tuning() {
        let tuned = super::retain_freed_memory();
        assert_eq!(tuned, cfg!(all(target_os = "linux", target_env = "gnu")));
        // Memory still allocates and frees normally afterwards.
        let v = vec![1.0f32; 1 << 22];
        assert_eq!(v.iter().sum::<f32>(), (1 << 22) as f32);
    }
}
