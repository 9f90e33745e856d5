// Row gather: out[i, :] = table[ids[i], :].
// Reference: runtime/src/backend/cpu/mod.rs (`CpuBackend::embedding`, `gather_rows`).
// Ids are range-checked on the host before launch, so no check here.
// Launch: grid (n_ids), block 256; each block copies one row, threads stride over columns.

extern "C" __global__ void gather_rows(const float* __restrict__ table,
                                       const unsigned int* __restrict__ ids,
                                       float* __restrict__ out, int n, int cols) {
    int i = blockIdx.x;
    if (i >= n) return;
    const float* src = table + (size_t)ids[i] * cols;
    float* dst = out + (size_t)i * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
}

// Backward of a row gather, deterministically (no atomics): out[dest[b], :] = sum of
// dy[src[j], :] for j in [starts[b], starts[b+1]), in that order (the host lists each
// destination's sources in increasing order, as the CPU's sequential scatter-add adds them).
// `out` is zeroed beforehand; rows no source maps to stay zero.
// Reference: runtime/src/backend/cpu/backward/embedding.rs. Launch: grid (n_dest), block 256.
extern "C" __global__ void scatter_rows_sum(const float* __restrict__ dy,
                                            const unsigned int* __restrict__ src,
                                            const unsigned int* __restrict__ starts,
                                            const unsigned int* __restrict__ dest,
                                            float* __restrict__ out, int n_dest, int cols) {
    int b = blockIdx.x;
    if (b >= n_dest) return;
    const unsigned int j0 = starts[b], j1 = starts[b + 1];
    float* o = out + (size_t)dest[b] * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float s = 0.0f;
        for (unsigned int j = j0; j < j1; j++) s += dy[(size_t)src[j] * cols + c];
        o[c] = s;
    }
}
