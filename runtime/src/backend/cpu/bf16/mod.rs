//! bf16 matrix products on the CPU (`--precision bf16`): both operands rounded to bfloat16
//! (round to nearest even), products accumulated in float32. This is what PyTorch's bf16
//! autocast does to the challenge scripts' `F.linear`; norms, softmax and the loss stay float32.
//!
//! Reference semantics (what the tests compare against, [`reference_linear`]):
//! `out[i][j] = Σ_k bf16(x[i][k]) · bf16(w[j][k])`. A product of two bf16 values is exact in
//! float32 (8 + 8 significant bits), so the only rounding besides the operands' is the float32
//! sum, whose order is the kernel's: the kernels agree with the reference within
//! `K · 2⁻²³ · Σ_k |x||w|` (the float32 summation bound), and with the float32 product within
//! the operand rounding, `2⁻⁸ · Σ_k |x||w|`.
//!
//! Two kernels, chosen at run time ([`Kernel::detect`]), over one packed weight layout:
//! - `amx.rs`: AMX-BF16 tiles (Intel Sapphire Rapids and later), 32 x 32 output blocks;
//! - `avx512.rs`: AVX512-BF16 `vdpbf16ps` (also AMD Zen 4), and the AMX machines' path for
//!   fewer than 16 rows (one-token decoding), where a 16-row tile would be mostly padding.
//!
//! A CPU with neither has no bf16 path; the backend then stays float32 and says so.
//!
//! **Packed layout** ([`PackedWeight`]): `w [n, k]` is cut into 16-column by 32-deep blocks;
//! block `(nb, kb)` is 16 rows of 64 bytes, row `r` holding for each output column `c` the pair
//! `(w[16nb + c][32kb + 2r], w[16nb + c][32kb + 2r + 1])`: AMX's B-tile ("VNNI") layout and, one
//! row at a time, a `vdpbf16ps` operand. Blocks of one `nb` are consecutive in `kb`, so a
//! column block's pairs run contiguously over the whole depth. `n` is padded to a multiple of
//! 32 and `k` to a multiple of 32, with zeros.

// Off x86-64 there is no kernel (`Kernel::detect` is `None`), so the drivers go unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
mod amx;
pub(crate) mod attention;
#[cfg(target_arch = "x86_64")]
mod avx512;

use super::par;
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

/// Output columns per packed block.
pub(crate) const NB: usize = 16;
/// Depth (bf16 values) per packed block: 16 pairs.
pub(crate) const KB: usize = 32;
/// bf16 values per packed block.
pub(crate) const BLOCK: usize = NB * KB;

/// A bf16 matrix-product kernel this CPU can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// AMX-BF16 tiles, with AVX512-BF16 for fewer than 16 rows.
    Amx,
    /// AVX512-BF16 `vdpbf16ps` on 512-bit registers.
    Avx512Bf16,
}

impl Kernel {
    /// The fastest bf16 kernel this CPU and operating system allow, detected once. AMX needs
    /// the CPU's AMX-BF16 and AMX-TILE bits, the OS's tile-data permission (Linux:
    /// `arch_prctl(ARCH_REQ_XCOMP_PERM)`) and AVX512-BF16 (every AMX CPU has it).
    pub fn detect() -> Option<Kernel> {
        static K: OnceLock<Option<Kernel>> = OnceLock::new();
        *K.get_or_init(detect_uncached)
    }

    /// Its name, as `pgolf-rt devices` and the backend's name show it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "AMX-BF16",
            Kernel::Avx512Bf16 => "AVX512-BF16",
        }
    }
}

fn detect_uncached() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("avx512bf16")
            || !std::arch::is_x86_feature_detected!("avx512f")
        {
            return None;
        }
        if std::env::var("PGOLF_CPU_NO_AMX").is_ok_and(|v| v == "1") {
            return Some(Kernel::Avx512Bf16);
        }
        Some(if amx::available() {
            Kernel::Amx
        } else {
            Kernel::Avx512Bf16
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Why this CPU has no bf16 kernel, for the one line the CLI prints when it falls back.
pub fn unavailable_reason() -> &'static str {
    "this CPU has neither AMX-BF16 nor AVX512-BF16"
}

/// `v` rounded to bfloat16 (nearest, ties to even; NaN stays NaN), as its 16 bits.
#[inline]
pub fn to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        ((b >> 16) as u16) | 0x40
    } else {
        ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
    }
}

/// The float32 value of bf16 bits.
#[inline]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

/// A `[n, k]` weight in bf16, in the packed layout of the module doc: made once when the
/// model is uploaded, read by every product.
#[derive(Clone)]
pub struct PackedWeight {
    n: usize,
    k: usize,
    /// `k` padded to a multiple of [`KB`], in bf16 values.
    k_pad: usize,
    data: Vec<u16>,
    /// A few of the float32 values it was packed from, to notice (and repack) a weight that
    /// was changed in place without dropping its packed copy.
    witness: Vec<(usize, u32)>,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeight({}x{} bf16)", self.n, self.k)
    }
}

/// Elements of the float32 weight remembered in [`PackedWeight::witness`].
const WITNESSES: usize = 64;

impl PackedWeight {
    /// An all-zero packed `[n, k]` without a witness: what the packers below fill.
    fn zeroed(n: usize, k: usize) -> PackedWeight {
        let (n_pad, k_pad) = (round_up(n.max(1), 2 * NB), round_up(k.max(1), KB));
        PackedWeight {
            n,
            k,
            k_pad,
            data: vec![0u16; n_pad * k_pad],
            witness: Vec::new(),
        }
    }

    /// Where element (column `c` of a column block, depth `kk`) sits inside its block: depth
    /// block, then pair row, then the column's pair, then the pair's half.
    #[inline(always)]
    fn offset(c: usize, kk: usize) -> usize {
        (kk / KB) * BLOCK + ((kk % KB) / 2) * (2 * NB) + 2 * c + kk % 2
    }

    /// Packs row-major `w [n, k]`.
    pub fn pack(w: &[f32], n: usize, k: usize) -> PackedWeight {
        assert!(w.len() >= n * k, "pack: weight shorter than {n} x {k}");
        let mut p = Self::zeroed(n, k);
        // One column block (all its depth) per task.
        let per_nb = (p.k_pad / KB) * BLOCK;
        par::for_each_chunk(&mut p.data, per_nb, |nb, dst| {
            for c in 0..NB {
                let j = nb * NB + c;
                if j >= n {
                    break;
                }
                let row = &w[j * k..(j + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    dst[Self::offset(c, kk)] = to_bf16(v);
                }
            }
        });
        p.witness = (0..WITNESSES.min(n * k))
            .map(|i| {
                let at = i * (n * k) / WITNESSES.min(n * k);
                (at, w[at].to_bits())
            })
            .collect();
        p
    }

    /// Packs the `[n, k]` matrix whose element `(j, kk)` is `at(j, kk)`, element by element on
    /// the calling thread: the oracle of [`pack_rows`](Self::pack_rows) and
    /// [`pack_cols`](Self::pack_cols).
    #[cfg(test)]
    pub(crate) fn pack_with(n: usize, k: usize, at: impl Fn(usize, usize) -> f32) -> PackedWeight {
        let mut p = Self::zeroed(n, k);
        let per_nb = p.k_pad * NB;
        for j in 0..n {
            let (nb, c) = (j / NB, j % NB);
            for kk in 0..k {
                p.data[nb * per_nb + Self::offset(c, kk)] = to_bf16(at(j, kk));
            }
        }
        p
    }

    /// [`pack_with`](Self::pack_with) for a matrix given by rows: element `(j, kk)` is
    /// `row(j)[kk]` (`row(j)` has `k` values). Each row is rounded once, vectorized, and its
    /// pairs stored whole (attention's `K`, one per window and KV head).
    pub(crate) fn pack_rows<'a>(
        n: usize,
        k: usize,
        row: impl Fn(usize) -> &'a [f32],
    ) -> PackedWeight {
        let mut p = Self::zeroed(n, k);
        let per_nb = p.k_pad * NB;
        // An odd `k` leaves the last pair's second half zero.
        let mut b = vec![0u16; round_up(k, 2)];
        for j in 0..n {
            let (nb, c) = (j / NB, j % NB);
            convert_row(&row(j)[..k], &mut b[..k]);
            for (pair, v) in b.chunks_exact(2).enumerate() {
                let at = nb * per_nb + Self::offset(c, 2 * pair);
                p.data[at..at + 2].copy_from_slice(v);
            }
        }
        p
    }

    /// [`pack_with`](Self::pack_with) for a matrix given by columns: element `(j, kk)` is
    /// `col(kk)[j]` (`col(kk)` has `n` values), i.e. the transpose of rows `col(0..k)`
    /// (attention's `V`). Two columns are rounded at a time and interleaved.
    pub(crate) fn pack_cols<'a>(
        n: usize,
        k: usize,
        col: impl Fn(usize) -> &'a [f32],
    ) -> PackedWeight {
        let mut p = Self::zeroed(n, k);
        let per_nb = p.k_pad * NB;
        let (mut e, mut o) = (vec![0u16; n], vec![0u16; n]);
        for kk in (0..k).step_by(2) {
            convert_row(&col(kk)[..n], &mut e);
            if kk + 1 < k {
                convert_row(&col(kk + 1)[..n], &mut o);
            } else {
                o.fill(0);
            }
            for (j, (&ev, &ov)) in e.iter().zip(&o).enumerate() {
                let at = (j / NB) * per_nb + Self::offset(j % NB, kk);
                p.data[at] = ev;
                p.data[at + 1] = ov;
            }
        }
        p
    }

    /// `(n, k)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Whether `w` still holds, at the remembered places, the values this was packed from.
    pub fn matches(&self, w: &[f32]) -> bool {
        w.len() == self.n * self.k
            && self
                .witness
                .iter()
                .all(|&(at, bits)| w[at].to_bits() == bits)
    }

    /// Column blocks of [`NB`] (always even).
    fn col_blocks(&self) -> usize {
        self.data.len() / (self.k_pad * NB)
    }

    /// The packed pairs of column block `nb`: `k_pad / 2` rows of [`NB`] pairs.
    fn col_block(&self, nb: usize) -> &[u16] {
        let len = self.k_pad * NB;
        &self.data[nb * len..(nb + 1) * len]
    }
}

/// A tensor's packed bf16 copy, if it has one. A cache of the tensor's values, so it takes no
/// part in comparing tensors.
#[derive(Clone, Default)]
pub struct Packed(Option<Arc<PackedWeight>>);

impl PartialEq for Packed {
    fn eq(&self, _: &Packed) -> bool {
        true
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(p) => write!(f, "{p:?}"),
            None => f.write_str("-"),
        }
    }
}

impl Packed {
    /// Holding `p`.
    pub fn new(p: PackedWeight) -> Packed {
        Packed(Some(Arc::new(p)))
    }

    /// Whether it holds a packed copy (stale or not).
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// The packed copy of `w [n, k]`: the one held if it still matches `w`, else packed now
    /// (a weight changed in place, or a tensor that was never a weight).
    pub fn get_or_pack(&self, w: &[f32], n: usize, k: usize) -> Cow<'_, PackedWeight> {
        match &self.0 {
            Some(p) if p.shape() == (n, k) && p.matches(w) => Cow::Borrowed(p),
            _ => Cow::Owned(PackedWeight::pack(w, n, k)),
        }
    }
}

/// `x [m, k]` as bf16 rows of `k_pad` values (zeros past `k`), with `m_pad - m` zero rows
/// after.
fn activations(x: &[f32], m: usize, k: usize, m_pad: usize, k_pad: usize) -> Vec<u16> {
    // Rows `m..m_pad` and columns `k..k_pad` stay zero.
    par::build_chunks(m_pad * k_pad, 16 * k_pad, |c, dst| {
        for (r, d) in dst.chunks_exact_mut(k_pad).enumerate() {
            let i = c * 16 + r;
            if i < m {
                convert_row(&x[i * k..(i + 1) * k], &mut d[..k]);
            }
        }
    })
}

fn convert_row(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bf16") {
        // SAFETY: the CPU has AVX512-BF16 (checked just above); lengths are equal.
        unsafe { avx512::convert(src, dst) };
        return;
    }
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d = to_bf16(s));
}

/// A pointer that may cross to rayon's workers: each task writes a disjoint block.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub *mut f32);
// SAFETY: the tasks given an `OutPtr` write disjoint blocks of one live allocation.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// How an `[m, n]` output (`col_pairs` pairs of `NB` columns) is cut into tasks: returns
/// `(strips, groups)`, `strips` row strips of `strip` rows, each split into `groups` groups of
/// column pairs when there are fewer strips than 4 tasks per worker thread ([`par::threads`]).
fn grid(m: usize, col_pairs: usize, strip: usize) -> (usize, usize) {
    let strips = m.div_ceil(strip);
    let want = 4 * par::threads();
    let groups = if strips >= want {
        1
    } else {
        want.div_ceil(strips).min(col_pairs)
    };
    (strips, groups)
}

/// One product's shape for the kernels: `a`'s row stride `lda` (bf16 values, a multiple of
/// [`KB`]), the depth blocks `kbs` summed over, the output's row stride `ldo` and the columns
/// written (`ncols`, at most the weight's padded width).
pub(crate) struct Job {
    pub lda: usize,
    pub kbs: usize,
    pub ldo: usize,
    pub ncols: usize,
}

/// Output rows per task (and per AMX block).
const STRIP: usize = 32;

/// `x [m, k] · wᵀ` in bf16 with float32 accumulation: `[m, n]`.
pub fn linear(x: &[f32], m: usize, w: &PackedWeight, kernel: Kernel) -> Vec<f32> {
    let (n, k) = (w.n, w.k);
    assert!(
        x.len() >= m * k,
        "bf16 linear: input shorter than {m} x {k}"
    );
    if m == 0 || n == 0 {
        return vec![0.0; m * n];
    }
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: `run` writes every one of the `m x n` values (each task its rows x columns, the
    // tasks covering all of them) and reads none, so they are initialised at `set_len`; until
    // then the buffer is only written through the raw pointer.
    unsafe {
        run(x, m, w, kernel, OutPtr(out.as_mut_ptr()));
        out.set_len(m * n);
    }
    out
}

/// [`linear`] into `out [m, n]` (overwritten).
pub fn linear_into(x: &[f32], m: usize, w: &PackedWeight, kernel: Kernel, out: &mut [f32]) {
    assert!(
        x.len() >= w.k * m,
        "bf16 linear: input shorter than {m} x {}",
        w.k
    );
    assert!(
        out.len() >= m * w.n,
        "bf16 linear: output shorter than {m} x {}",
        w.n
    );
    if m > 0 && w.n > 0 {
        // SAFETY: `out` holds the `m x n` values `run` writes (checked above).
        unsafe { run(x, m, w, kernel, OutPtr(out.as_mut_ptr())) };
    }
}

/// Writes all of `x [m, k] · wᵀ` (`m, n > 0`) at `out`.
///
/// # Safety
/// `out` points at `m x n` writable floats that nothing else accesses meanwhile.
#[allow(unused_variables)]
unsafe fn run(x: &[f32], m: usize, w: &PackedWeight, kernel: Kernel, out: OutPtr) {
    #[cfg(target_arch = "x86_64")]
    {
        let use_amx = kernel == Kernel::Amx && m >= 16;
        let strip = STRIP;
        let m_pad = if use_amx { round_up(m, 32) } else { m };
        let a = activations(x, m, w.k, m_pad, w.k_pad);
        let job = Job {
            lda: w.k_pad,
            kbs: w.k_pad / KB,
            ldo: w.n,
            ncols: w.n,
        };
        let col_pairs = w.col_blocks() / 2;
        let (strips, groups) = grid(m, col_pairs, strip);
        let per_group = col_pairs.div_ceil(groups);
        let dst = out;
        par::map_range(strips * groups, |t| {
            let (s, g) = (t / groups, t % groups);
            let rows = (s * strip)..((s + 1) * strip).min(m);
            let pairs = (g * per_group)..((g + 1) * per_group).min(col_pairs);
            if pairs.is_empty() {
                return;
            }
            // SAFETY: `a` holds `m_pad` rows of `k_pad`; `out` holds `m x n`; this task writes
            // only rows `rows` x the columns of `pairs`, disjoint from every other task's.
            unsafe {
                if use_amx {
                    amx::strip(&a, &job, rows, pairs, w, dst);
                } else {
                    avx512::strip(&a, &job, rows, pairs, w, dst);
                }
            }
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no bf16 kernel off x86_64 (Kernel::detect returns None)")
}

/// `out[i][j] = Σ_{kk < depth} a[i][kk] · w[j][kk]` for `i < m`, `j < ncols`, on the calling
/// thread: for products inside a parallel task (attention). `a` holds bf16 rows of `lda` values
/// (a multiple of [`KB`], at least `depth` rounded up to it, zeros from `depth` to there), and
/// `m` rounded up to 32 rows where the kernel is AMX and `m >= 16`; `ncols` is at most `w`'s
/// width padded to 32; `out` holds rows of `ldo >= ncols` floats.
#[allow(clippy::too_many_arguments, unused_variables)]
pub(crate) fn product(
    a: &[u16],
    m: usize,
    lda: usize,
    w: &PackedWeight,
    depth: usize,
    ncols: usize,
    out: &mut [f32],
    ldo: usize,
    kernel: Kernel,
) {
    if m == 0 || ncols == 0 {
        return;
    }
    let kbs = depth.div_ceil(KB);
    let use_amx = kernel == Kernel::Amx && m >= 16;
    let a_rows = if use_amx { round_up(m, 32) } else { m };
    assert!(lda.is_multiple_of(KB) && kbs * KB <= lda && kbs * KB <= w.k_pad);
    assert!(ncols <= w.col_blocks() * NB && ncols <= ldo);
    assert!(a.len() >= a_rows * lda && out.len() >= (m - 1) * ldo + ncols);
    let job = Job {
        lda,
        kbs,
        ldo,
        ncols,
    };
    let pairs = 0..ncols.div_ceil(2 * NB);
    let dst = OutPtr(out.as_mut_ptr());
    #[cfg(target_arch = "x86_64")]
    for r0 in (0..m).step_by(STRIP) {
        let rows = r0..(r0 + STRIP).min(m);
        // SAFETY: the bounds asserted above; one thread writes `out`.
        unsafe {
            if use_amx {
                amx::strip(a, &job, rows, pairs.clone(), w, dst);
            } else {
                avx512::strip(a, &job, rows, pairs.clone(), w, dst);
            }
        }
    }
}

/// `x` rounded to bf16 into `dst` (same length).
pub(crate) fn convert(x: &[f32], dst: &mut [u16]) {
    convert_row(x, dst)
}

/// The reference of the module doc, in f64: `Σ_k bf16(x[i][k]) · bf16(w[j][k])`, with
/// `Σ_k |x||w|` beside each value (what the error bounds scale with).
pub fn reference_linear(
    x: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    k: usize,
) -> (Vec<f64>, Vec<f64>) {
    let r = |v: f32| from_bf16(to_bf16(v)) as f64;
    let mut out = vec![0.0f64; m * n];
    let mut mag = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let p = r(x[i * k + kk]) * r(w[j * k + kk]);
                s += p;
                a += p.abs();
            }
            out[i * n + j] = s;
            mag[i * n + j] = a;
        }
    }
    (out, mag)
}

#[cfg(test)]
mod tests;
