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

// Backward (reference: runtime/src/backend/cpu/backward/smear.rs), windows of `seq` rows:
//   dx_t = (1 - g) * dy_t + g * dy_{t+1}   (no second term at a window's last row)
// Launch: 1-D grid over rows*cols elements, block 256.
extern "C" __global__ void smear_backward_dx(const float* __restrict__ dy,
                                             const float* __restrict__ gate,
                                             float* __restrict__ dx, long long n, int cols,
                                             int seq) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int c = (int)(i % cols);
    long long row = i / cols;
    float g = 1.0f / (1.0f + expf(-gate[c]));
    float v = dy[i] * (1.0f - g);
    if (row % seq + 1 < seq) v += g * dy[i + cols];
    dx[i] = v;
}

// The gate's gradient, dgate[c] = g (1 - g) * sum_t dy_t[c] * (x_{t-1}[c] - x_t[c]), is a column
// reduction: col_reduce.cu, mode 3.
