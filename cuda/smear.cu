// SmearGate: y_t = (1 - g) * x_t + g * x_{t-1} within each window of `seq` rows,
// g = sigmoid(gate[c]), x_{-1} = 0 (first row of a window: y = (1 - g) * x).
// Reference: runtime/src/backend/cpu/mod.rs (`CpuBackend::smear`).
// Launch: 1-D grid over rows*cols elements, block 256. Out of place (reads x, writes y).

extern "C" __global__ void smear(const float* __restrict__ x, const float* __restrict__ gate,
                                 float* __restrict__ y, long long n, int cols, int seq) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int c = (int)(i % cols);
    long long row = i / cols;
    float g = 1.0f / (1.0f + expf(-gate[c]));
    float prev = (row % seq == 0) ? 0.0f : x[i - cols];
    y[i] = (1.0f - g) * x[i] + g * prev;
}
