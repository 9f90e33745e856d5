//! Data-parallel loops that use rayon when the `parallel` feature is on and run serially
//! otherwise (wasm32), so kernels are written once.

/// Calls `f(row_index, row)` for every `cols`-wide row of `data`.
pub fn for_each_row<F>(data: &mut [f32], cols: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
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
pub fn for_each_chunk<F>(data: &mut [f32], len: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
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
