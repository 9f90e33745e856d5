//! Matrix products on f32, through the `gemm` crate (blocked, SIMD, multi-threaded).
//!
//! Reference semantics (what a test compares against):
//! `out[i][j] = sum_k x[i][k] * w[j][k]` — PyTorch's `F.linear(x, w)`.

/// Strided view of a matrix for [`gemm_into`]: element `(r, c)` is at `ptr[r*rs + c*cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

/// `out = a · b` for an `m x k` view `a` and a `k x n` view `b`, written into `out` with row
/// stride `out_rs` starting at `out_off` (`beta_accumulate` adds to what is there).
///
/// Bounds are checked here, so callers cannot make `gemm` read or write out of range.
#[allow(clippy::too_many_arguments)]
pub fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    a: View,
    b: View,
    out: &mut [f32],
    out_off: usize,
    out_rs: usize,
    accumulate: bool,
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |v: &View, r: usize, c: usize| v.offset + (r - 1) * v.rs + (c - 1) * v.cs;
    if k > 0 {
        assert!(last(&a, m, k) < a.data.len(), "gemm lhs out of bounds");
        assert!(last(&b, k, n) < b.data.len(), "gemm rhs out of bounds");
    }
    assert!(
        out_off + (m - 1) * out_rs + n <= out.len(),
        "gemm dst out of bounds"
    );
    // SAFETY: every index gemm touches was bounds-checked above; the views do not alias `out`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr().add(out_off),
            1,
            out_rs as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.offset),
            b.cs as isize,
            b.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `x [n, in] · wᵀ` for `w [out, in]`: returns `[n, out]`.
///
/// The output is not zeroed first: `gemm` overwrites all of it (a forward pass allocates
/// several hundred MB of these per batch, and zeroing them cost a few percent).
pub fn linear(x: &[f32], n: usize, w: &[f32], out_dim: usize, in_dim: usize) -> Vec<f32> {
    let len = n * out_dim;
    if len == 0 || in_dim == 0 {
        return vec![0.0; len];
    }
    assert!(
        x.len() >= n * in_dim,
        "linear: input shorter than {n} x {in_dim}"
    );
    assert!(
        w.len() >= out_dim * in_dim,
        "linear: weight shorter than {out_dim} x {in_dim}"
    );
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: `x` and `w` hold the `n x in` and `out x in` elements gemm reads (checked above);
    // `out` has capacity for the `n x out` result, which gemm writes in full and never reads
    // (`read_dst = false`, `k = in_dim > 0`), so its first `len` elements are initialised when
    // `set_len` runs.
    unsafe {
        gemm::gemm(
            n,
            out_dim,
            in_dim,
            out.as_mut_ptr(),
            1,
            out_dim as isize,
            false,
            x.as_ptr(),
            1,
            in_dim as isize,
            // wᵀ[k][j] = w[j][k]
            w.as_ptr(),
            in_dim as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            super::par::gemm_parallelism(),
        );
        out.set_len(len);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_naive() {
        let (n, i, o) = (7, 13, 5);
        let x: Vec<f32> = (0..n * i)
            .map(|v| ((v * 37 % 11) as f32 - 5.0) / 7.0)
            .collect();
        let w: Vec<f32> = (0..o * i)
            .map(|v| ((v * 17 % 13) as f32 - 6.0) / 5.0)
            .collect();
        // Freed memory full of NaN first: the output must not depend on what was there.
        drop(vec![f32::NAN; n * o * 64]);
        let got = linear(&x, n, &w, o, i);
        for r in 0..n {
            for c in 0..o {
                let want: f32 = (0..i).map(|k| x[r * i + k] * w[c * i + k]).sum();
                assert!((got[r * o + c] - want).abs() < 1e-4, "{r},{c}");
            }
        }
    }

    #[test]
    fn linear_overwrites_reused_memory_at_threaded_sizes() {
        let (n, i, o) = (300, 96, 200);
        let x: Vec<f32> = (0..n * i).map(|v| (v % 7) as f32 - 3.0).collect();
        let w: Vec<f32> = (0..o * i).map(|v| (v % 5) as f32 - 2.0).collect();
        for _ in 0..3 {
            drop(vec![f32::NAN; n * o]);
            let got = linear(&x, n, &w, o, i);
            for (idx, g) in got.iter().enumerate() {
                let (r, c) = (idx / o, idx % o);
                let want: f32 = (0..i).map(|k| x[r * i + k] * w[c * i + k]).sum();
                assert_eq!(*g, want, "{r},{c}");
            }
        }
    }
}
