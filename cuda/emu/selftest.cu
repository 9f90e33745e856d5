// Kernels that test the emulator itself (runtime/src/backend/cuda/emu.rs tests); compiled only
// into cuda-emu, never into the GPU backend.

// Warp and block reductions through shuffles and shared memory: y[0] = sum, y[1] = lane-0
// value broadcast by __shfl_sync, y[2] = __shfl_down_sync partial of lane 0, per block.
extern "C" __global__ void emu_reductions(const float* __restrict__ x, float* __restrict__ y,
                                          int n) {
    __shared__ float part[32];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float v = i < n ? x[i] : 0.0f;
    float s = v;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    float d = v;
    for (int o = 16; o > 0; o >>= 1) d += __shfl_down_sync(0xffffffffu, d, o);
    const float first = __shfl_sync(0xffffffffu, v, 0);
    if (lane == 0) part[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int w = 0; w < (int)(blockDim.x + 31) / 32; w++) t += part[w];
        y[blockIdx.x * 3 + 0] = t;
        y[blockIdx.x * 3 + 1] = first;
        y[blockIdx.x * 3 + 2] = d;
    }
}

// y[i] = 1 for i <= n: one element past the end of an n-element buffer.
extern "C" __global__ void emu_write_past_end(float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 1.0f;
}

// Half of each warp waits at __syncthreads while the other half shuffles: no GPU can pass.
extern "C" __global__ void emu_divergent_barrier(float* y) {
    float v = (float)threadIdx.x;
    if ((threadIdx.x & 31) < 16) {
        __syncthreads();
    } else {
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    }
    y[threadIdx.x] = v;
}

// Threads that leave early no longer count at later barriers (as on Volta and later).
extern "C" __global__ void emu_early_exit(float* y, int keep) {
    __shared__ float s[256];
    if ((int)threadIdx.x >= keep) return;
    s[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    y[threadIdx.x] = s[keep - 1 - threadIdx.x];
}

// y[i] = x[i]: copies whatever the source holds.
extern "C" __global__ void emu_copy(const float* x, float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i];
}
