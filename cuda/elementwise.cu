// Residual mixing and scaled adds on [rows, cols] row-major matrices.
// Reference: runtime/src/backend/cpu/mod.rs (`resid_mix`, `add_scaled`, `add_scalar_scaled`).
// Launch: 1-D grid over rows*cols elements, block 256.

// y = mix[0, c] * x + mix[1, c] * x0   (mix is [2, cols] row-major)
extern "C" __global__ void resid_mix(const float* __restrict__ x, const float* __restrict__ x0,
                                     const float* __restrict__ mix, float* __restrict__ y,
                                     long long n, int cols) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int c = (int)(i % cols);
    y[i] = mix[c] * x[i] + mix[cols + c] * x0[i];
}

// x += scale[c] * y   (per-column scale, [1, cols])
extern "C" __global__ void add_scaled(float* __restrict__ x, const float* __restrict__ y,
                                      const float* __restrict__ scale, long long n, int cols) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int c = (int)(i % cols);
    x[i] += scale[c] * y[i];
}

// x += s * y   (scalar s)
extern "C" __global__ void axpy(float* __restrict__ x, const float* __restrict__ y, float s,
                                long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    x[i] += s * y[i];
}

// out = s[c] * dy   (per-column scale; the dy of resid_mix and add_scaled backward)
extern "C" __global__ void mul_cols(const float* __restrict__ dy, const float* __restrict__ s,
                                    float* __restrict__ out, long long n, int cols) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = dy[i] * s[(int)(i % cols)];
}

