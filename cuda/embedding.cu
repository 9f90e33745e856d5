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
