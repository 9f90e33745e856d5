//! Data-parallel loops that use rayon when the `parallel` feature is on and run serially
//! otherwise (wasm32), so kernels are written once.

/// Calls `f(row_index, row)` for every `cols`-wide row of `data`.
pub fn for_each_row<T, F>(data: &mut [T], cols: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    if cols == 0 {
        return;
    }
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        data.par_chunks_mut(cols)
            .enumerate()
            .with_min_len(16)
            .for_each(|(i, r)| f(i, r));
    }
    #[cfg(not(feature = "parallel"))]
    data.chunks_mut(cols).enumerate().for_each(|(i, r)| f(i, r));
}

/// Calls `f(chunk_index, chunk)` for every `len`-long chunk of `data` (the last may be shorter),
/// one task per chunk: for few, uneven pieces of work, where [`for_each_row`] would group them.
pub fn for_each_chunk<T, F>(data: &mut [T], len: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    if len == 0 {
        return;
    }
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        data.par_chunks_mut(len)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
    #[cfg(not(feature = "parallel"))]
    data.chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
}

/// Initialises `s` to `T::default()` (zero for numbers) and returns it as initialised values.
/// Parallel tasks call it on their own part of a new buffer (`Vec::spare_capacity_mut`) just
/// before they write it, instead of one serial zeroing pass over the whole buffer first.
pub fn init_default<T: Copy + Default>(s: &mut [std::mem::MaybeUninit<T>]) -> &mut [T] {
    for v in s.iter_mut() {
        v.write(T::default());
    }
    // SAFETY: every element was just initialised, and `MaybeUninit<T>` has `T`'s layout.
    unsafe { &mut *(s as *mut [std::mem::MaybeUninit<T>] as *mut [T]) }
}

/// A new `Vec` of `n` values whose `len`-long chunks (the last may be shorter) are written by
/// `f(chunk_index, chunk)`, one task per chunk, each chunk zeroed ([`init_default`]) in its
/// own task just before `f` gets it.
pub fn build_chunks<T, F>(n: usize, len: usize, f: F) -> Vec<T>
where
    T: Copy + Default + Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    let mut v: Vec<T> = Vec::with_capacity(n);
    if n > 0 {
        assert!(len > 0, "build_chunks: chunks of 0 values");
        for_each_chunk(&mut v.spare_capacity_mut()[..n], len, |i, c| {
            f(i, init_default(c))
        });
    }
    // SAFETY: the chunks cover all `n` elements and each was initialised by `init_default`.
    unsafe { v.set_len(n) };
    v
}

/// Elements per task of the element-wise helpers below (large enough that a task costs more
/// than scheduling it, small enough to spread a 17 M-parameter model over every core).
const ELEMENTWISE_CHUNK: usize = 1 << 15;

/// `f(&mut a[i], b[i])` for every `i`, in parallel chunks when available. Element-wise, so the
/// result does not depend on the split. `a` and `b` must have the same length.
pub fn zip_apply<F>(a: &mut [f32], b: &[f32], f: F)
where
    F: Fn(&mut f32, f32) + Sync + Send,
{
    debug_assert_eq!(a.len(), b.len());
    let n = ELEMENTWISE_CHUNK;
    for_each_chunk(a, n, |i, c| {
        c.iter_mut().zip(&b[i * n..]).for_each(|(x, &y)| f(x, y));
    });
}

/// `f(a[i], b[i])` for every `i`, as a new vector, in parallel chunks when available.
pub fn zip_map<F>(a: &[f32], b: &[f32], f: F) -> Vec<f32>
where
    F: Fn(f32, f32) -> f32 + Sync + Send,
{
    debug_assert_eq!(a.len(), b.len());
    let mut out = vec![0.0f32; a.len()];
    let n = ELEMENTWISE_CHUNK;
    for_each_chunk(&mut out, n, |i, c| {
        let (a, b) = (&a[i * n..], &b[i * n..]);
        c.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(o, (&x, &y))| *o = f(x, y));
    });
    out
}

/// Maps `0..n` to a vector, in parallel when available.
pub fn map_range<T, F>(n: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize) -> T + Sync + Send,
{
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        (0..n).into_par_iter().map(f).collect()
    }
    #[cfg(not(feature = "parallel"))]
    (0..n).map(f).collect()
}

/// Number of worker threads kernels will use.
pub fn threads() -> usize {
    #[cfg(feature = "parallel")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "parallel"))]
    1
}

/// The `gemm` crate's parallelism setting matching [`threads`].
pub fn gemm_parallelism() -> gemm::Parallelism {
    #[cfg(feature = "parallel")]
    {
        if threads() > 1 {
            return gemm::Parallelism::Rayon(threads());
        }
    }
    gemm::Parallelism::None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunked element-wise helpers cover every element exactly once, across chunk
    /// boundaries and a short last chunk, with the serial loop's values.
    #[test]
    fn zip_helpers_equal_the_serial_loops() {
        let n = 3 * ELEMENTWISE_CHUNK + 17;
        let a0: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut a = a0.clone();
        zip_apply(&mut a, &b, |x, y| *x = 0.9 * *x + y);
        let want: Vec<f32> = a0.iter().zip(&b).map(|(&x, &y)| 0.9 * x + y).collect();
        assert_eq!(a, want);
        let m = zip_map(&a0, &b, |x, y| x - 2.0 * y);
        let want: Vec<f32> = a0.iter().zip(&b).map(|(&x, &y)| x - 2.0 * y).collect();
        assert_eq!(m, want);
        assert!(zip_map(&[], &[], |x, y| x + y).is_empty());
    }
}
