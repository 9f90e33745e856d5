//! Run-time choice of the vector instruction set for the element-wise kernels.
//!
//! The crate is built for baseline x86-64 (SSE2), so one binary runs on every x86 CPU; plain
//! loops over `f32` then vectorize 4 lanes wide at most. [`multiversion!`] compiles a kernel's
//! body three times, for AVX-512F, for AVX2+FMA and for the baseline, and calls the widest one
//! the CPU has. The body is the same Rust each time and Rust never contracts `a * b + c` into
//! an FMA on its own, so the three versions compute the same values: a kernel that keeps a
//! fixed number of partial sums (see [`LANES`]) gives bit-identical results on every CPU.
//! Other targets (wasm32, aarch64) compile only the baseline.

/// Partial sums the reductions keep (one AVX-512 vector of `f32`, two AVX2 ones), so that their
/// order, and so their rounding, is the same on every instruction set.
pub const LANES: usize = 16;

/// The instruction sets [`multiversion!`] compiles for on x86-64 (elsewhere it compiles only
/// the baseline and there is nothing to choose).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Baseline (SSE2).
    Base,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512F.
    Avx512,
}

/// The widest [`Level`] this CPU has (detected once).
#[cfg(target_arch = "x86_64")]
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        if std::is_x86_feature_detected!("avx512f") {
            Level::Avx512
        } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            Level::Avx2
        } else {
            Level::Base
        }
    })
}

/// `Σ x[i]·y[i]` with [`LANES`] partial sums (lane `l` takes the indices `≡ l` mod `LANES` of
/// the whole chunks, then the tail is added in order), combined pairwise.
#[inline(always)]
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let (xt, yt) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..LANES {
            acc[l] += a[l] * b[l];
        }
    }
    let mut tail = 0.0f32;
    for (a, b) in xt.iter().zip(yt) {
        tail += a * b;
    }
    reduce(acc) + tail
}

/// Pairwise sum of the partial sums.
#[inline(always)]
pub fn reduce(mut acc: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            acc[l] += acc[l + w];
        }
        w /= 2;
    }
    acc[0]
}

/// Defines a function whose body is compiled for each `Level` (x86-64) and run on the widest
/// one the CPU has. The arguments must be plain values or references (no generics).
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                match $crate::backend::cpu::simd::level() {
                    // SAFETY: `level` reported the features these versions are compiled for.
                    $crate::backend::cpu::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::backend::cpu::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::backend::cpu::simd::Level::Base => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    multiversion! {
        fn dot_mv(x: &[f32], y: &[f32]) -> f32 {
            dot(x, y)
        }
    }

    #[test]
    fn dot_is_the_same_on_every_level_and_near_f64() {
        for n in [0, 1, 15, 16, 17, 64, 100, 1000] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
            // The dispatched version (widest level) equals the baseline body bit for bit.
            assert_eq!(dot_mv(&x, &y).to_bits(), dot(&x, &y).to_bits(), "n {n}");
            assert!(
                (dot(&x, &y) as f64 - want).abs() < 1e-5 * (n as f64 + 1.0),
                "n {n}"
            );
        }
    }
}
