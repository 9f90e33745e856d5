// MLP activations, element-wise. relu^2: max(x, 0)^2. LeakyReLU^2: (x >= 0 ? x : slope*x)^2.
// Reference: runtime/src/backend/cpu/mod.rs (`CpuBackend::activation`).
// Launch: 1-D grid over n elements, block 256. `y` may alias `x`.

extern "C" __global__ void relu2(const float* x, float* y, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float a = fmaxf(x[i], 0.0f);
    y[i] = a * a;
}

extern "C" __global__ void leaky_relu2(const float* x, float* y, long long n, float slope) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    float a = v >= 0.0f ? v : slope * v;
    y[i] = a * a;
}

// Backward (reference: runtime/src/backend/cpu/backward/activation.rs), given the input h:
//   relu^2:  dh = h > 0 ? 2*h*dy : 0
//   leaky^2: dh = h >= 0 ? 2*h*dy : 2*slope*slope*h*dy
extern "C" __global__ void relu2_backward(const float* h, const float* dy, float* dh,
                                          long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float v = h[i];
    dh[i] = v > 0.0f ? 2.0f * v * dy[i] : 0.0f;
}

extern "C" __global__ void leaky_relu2_backward(const float* h, const float* dy, float* dh,
                                                long long n, float slope) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float v = h[i];
    dh[i] = v >= 0.0f ? 2.0f * v * dy[i] : 2.0f * slope * slope * v * dy[i];
}
