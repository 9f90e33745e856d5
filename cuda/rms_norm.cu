// Parameter-free RMSNorm per row: y = x / sqrt(mean(x^2) + eps) * scale (PyTorch F.rms_norm).
// Reference: runtime/src/backend/cpu/norm.rs (`rms_norm_in_place`).
// Launch: grid (rows), block 256 (any multiple of 32 up to 1024). Sum of squares in fp32,
// warp shuffles then one shared-memory pass.

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Block-wide sum; every thread gets the result. `shm` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* shm) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) shm[warp] = v;
    __syncthreads();
    v = (threadIdx.x < nwarps) ? shm[threadIdx.x] : 0.0f;
    if (warp == 0) v = warp_sum(v);
    if (threadIdx.x == 0) shm[0] = v;
    __syncthreads();
    return shm[0];
}

extern "C" __global__ void rms_norm(const float* __restrict__ x, float* __restrict__ y,
                                    int rows, int cols, float eps, float scale) {
    __shared__ float shm[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* xr = x + (size_t)r * cols;
    float* yr = y + (size_t)r * cols;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) ss += xr[c] * xr[c];
    ss = block_sum(ss, shm);
    float ms = ss / (float)(cols > 0 ? cols : 1);
    float inv = scale / sqrtf(ms + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = xr[c] * inv;
}

// Backward (reference: runtime/src/backend/cpu/backward/norm.rs), one block per row:
//   r2 = mean(x^2) + eps,  k = (sum dy*x) / (cols * r2),  dx = (scale / sqrt(r2)) * (dy - x*k)
extern "C" __global__ void rms_norm_backward(const float* __restrict__ x,
                                             const float* __restrict__ dy, float* __restrict__ dx,
                                             int rows, int cols, float eps, float scale) {
    __shared__ float shm[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* xr = x + (size_t)r * cols;
    const float* gr = dy + (size_t)r * cols;
    float* dr = dx + (size_t)r * cols;
    float ss = 0.0f, dot = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        ss += xr[c] * xr[c];
        dot += xr[c] * gr[c];
    }
    ss = block_sum(ss, shm);
    dot = block_sum(dot, shm);
    const float n = (float)(cols > 0 ? cols : 1);
    const float r2 = ss / n + eps;
    const float k = dot / (n * r2);
    const float s = scale / sqrtf(r2);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dr[c] = s * (gr[c] - xr[c] * k);
}
