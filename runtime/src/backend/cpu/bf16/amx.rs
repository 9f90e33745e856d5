//! The AMX-BF16 kernel: 32 x 32 output blocks as four 16 x 16 float32 tiles (`tmm0`-`tmm3`),
//! fed per 32-deep step by two 16-row activation tiles (`tmm4`, `tmm5`) and two packed weight
//! tiles (`tmm6`, `tmm7`), four `tdpbf16ps` per step. Reference: [`super::reference_linear`].
//!
//! Stable Rust has no AMX intrinsics, so the instructions are written as inline assembly; the
//! tile registers are invisible to the compiler, which never emits AMX code of its own, so the
//! tiles keep their values from one `asm!` block to the next within a task.

use super::{Job, OutPtr, PackedWeight, BLOCK, KB, NB};
use std::arch::asm;
use std::ops::Range;

/// `ldtilecfg`'s 64-byte operand: palette 1, eight tiles of 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

fn config() -> TileConfig {
    let mut c = [0u8; 64];
    c[0] = 1;
    for t in 0..8 {
        c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
        c[48 + t] = 16; // rows
    }
    TileConfig(c)
}

/// Whether the CPU has AMX-BF16 and AMX-TILE and the OS lets this process use the tile data
/// (asked for once, for the whole process).
pub(super) fn available() -> bool {
    // CPUID.(EAX=7, ECX=0):EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
    let c = std::arch::x86_64::__cpuid_count(7, 0);
    if (c.edx >> 22) & 1 == 0 || (c.edx >> 24) & 1 == 0 {
        return false;
    }
    os_permits()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn os_permits() -> bool {
    const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these codes only reads/writes the `u64` we pass.
    unsafe {
        if libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) != 0
        {
            return false;
        }
        let mut mask: u64 = 0;
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_GET_XCOMP_PERM,
            &mut mask as *mut u64,
        ) == 0
            && (mask >> XFEATURE_XTILEDATA) & 1 == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn os_permits() -> bool {
    false
}

/// Output rows `rows` (a multiple of 32 from the start, at most 32 of them) by the columns of
/// packed column-block pairs `pairs` (those below `job.ncols`), `job.kbs` depth blocks deep.
///
/// # Safety
/// [`available`] returned true; `a` holds `rows.start + 32` rows of `job.lda` bf16 values
/// (`job.lda >= 32 * job.kbs`); `job.kbs` is at most the weight's depth blocks; `out` points at
/// rows of `job.ldo >= job.ncols` floats, at least `rows.end` of them, and no other thread
/// writes these rows x columns meanwhile.
pub(super) unsafe fn strip(
    a: &[u16],
    job: &Job,
    rows: Range<usize>,
    pairs: Range<usize>,
    w: &PackedWeight,
    out: OutPtr,
) {
    debug_assert!(rows.start.is_multiple_of(32));
    debug_assert!(a.len() >= (rows.start + 32) * job.lda);
    let (n, ldo, kbs, k_pad) = (job.ncols, job.ldo, job.kbs, job.lda);
    let cfg = config();
    let lda = k_pad * 2;
    let full_rows = rows.len() == 32;
    let mut scratch = Scratch([0.0; 32 * 32]);
    // SAFETY (all blocks): tile loads read 16 rows of 64 bytes at the given stride, inside `a`
    // (rows.start..+32 of m_pad rows, columns kb*32..+32 of k_pad) and inside the packed
    // column blocks (16 rows of 64 bytes at kb*BLOCK); stores write 16 rows of 64 bytes inside
    // `out`'s block (checked `full_rows` and `c0 + 32 <= n`) or inside `scratch`.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        let a0 = a.as_ptr().add(rows.start * k_pad);
        let a1 = a0.add(16 * k_pad);
        for p in pairs {
            let c0 = 2 * p * NB;
            let b0 = w.col_block(2 * p).as_ptr();
            let b1 = w.col_block(2 * p + 1).as_ptr();
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for kb in 0..kbs {
                asm!(
                    "tileloadd tmm4, [{a0} + {lda}*1]",
                    "tileloadd tmm5, [{a1} + {lda}*1]",
                    "tileloadd tmm6, [{b0} + {s}*1]",
                    "tileloadd tmm7, [{b1} + {s}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0.add(kb * KB),
                    a1 = in(reg) a1.add(kb * KB),
                    b0 = in(reg) b0.add(kb * BLOCK),
                    b1 = in(reg) b1.add(kb * BLOCK),
                    lda = in(reg) lda,
                    s = in(reg) 64usize,
                    options(nostack, readonly)
                );
            }
            if full_rows && c0 + 2 * NB <= n {
                let o = out.0.add(rows.start * ldo + c0);
                store4(o, o.add(NB), o.add(16 * ldo), o.add(16 * ldo + NB), ldo * 4);
            } else {
                let s = scratch.0.as_mut_ptr();
                store4(s, s.add(NB), s.add(16 * 32), s.add(16 * 32 + NB), 32 * 4);
                let cols = (n - c0).min(2 * NB);
                for r in 0..rows.len() {
                    std::ptr::copy_nonoverlapping(
                        s.add(r * 32),
                        out.0.add((rows.start + r) * ldo + c0),
                        cols,
                    );
                }
            }
        }
        asm!("tilerelease", options(nostack, nomem));
    }
}

#[repr(C, align(64))]
struct Scratch([f32; 32 * 32]);

/// Stores `tmm0`..`tmm3` at `t0`..`t3`, rows `stride` bytes apart.
///
/// # Safety
/// Each destination has 16 rows of 64 writable bytes at that stride.
#[inline(always)]
unsafe fn store4(t0: *mut f32, t1: *mut f32, t2: *mut f32, t3: *mut f32, stride: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        asm!(
            "tilestored [{t0} + {s}*1], tmm0",
            "tilestored [{t1} + {s}*1], tmm1",
            "tilestored [{t2} + {s}*1], tmm2",
            "tilestored [{t3} + {s}*1], tmm3",
            t0 = in(reg) t0,
            t1 = in(reg) t1,
            t2 = in(reg) t2,
            t3 = in(reg) t3,
            s = in(reg) stride,
            options(nostack)
        );
    }
}
