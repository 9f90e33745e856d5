// The optimizer step on the device: Muon's momentum and update, Adam/AdamW, the EMA, QAT's fake
// quantization, the squared global norm, and the small copies the trainer needs to keep every
// parameter on the device (rows, stacked rows, reading back a few scalars at once).
// Reference: runtime/src/backend/cpu/optim.rs (the float32 oracles; every formula below is
// written the way the oracle evaluates it, though NVRTC may contract a*b+c into one FMA).
// Launch: element-wise kernels on a 1-D grid over n elements, block 256; `fake_quant_rows`
// one block of 256 per row; `sum_squares_partial` a fixed grid of SS_BLOCKS blocks of 256.

#define SS_THREADS 256

// Nearest bf16 (ties to even), as a float. NaN stays NaN.
__device__ __forceinline__ float round_bf16(float x) {
    unsigned int b = __float_as_uint(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) return x;
    b += 0x7fffu + ((b >> 16) & 1u);
    return __uint_as_float(b & 0xffff0000u);
}

// buf = mu * buf + g; u = g + mu * buf (nesterov) or buf.
extern "C" __global__ void muon_momentum(float* __restrict__ buf, const float* __restrict__ g,
                                         float* __restrict__ u, float mu, int nesterov,
                                         long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float b = mu * buf[i] + g[i];
    buf[i] = b;
    u[i] = nesterov ? g[i] + mu * b : b;
}

// w = w * decay - (lr * s) * o, or with bf16: w = w * decay - lr * bf16(o * s).
extern "C" __global__ void muon_apply(float* __restrict__ w, const float* __restrict__ o,
                                      float decay, float lr, float shape_scale, int bf16,
                                      long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    if (bf16) {
        float oo = round_bf16(o[i] * shape_scale);
        w[i] = w[i] * decay - lr * oo;
    } else {
        float scale = lr * shape_scale;
        w[i] = w[i] * decay - scale * o[i];
    }
}

// Adam/AdamW: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g g; w = w decay - step * m / (sqrt(v)/bc2 + eps).
extern "C" __global__ void adam_update(float* __restrict__ w, const float* __restrict__ g,
                                       float* __restrict__ m, float* __restrict__ v, float beta1,
                                       float beta2, float eps, float step_size, float bc2_sqrt,
                                       float decay, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = g[i];
    float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float denom = sqrtf(vi) / bc2_sqrt + eps;
    w[i] = w[i] * decay - step_size * mi / denom;
}

// SGD with momentum and coupled weight decay (torch.optim.SGD): d = g scale + wd w;
// b = d on the first step (or with mu == 0), else mu b + d; w -= lr b.
extern "C" __global__ void sgd_update(float* __restrict__ w, const float* __restrict__ g,
                                      float* __restrict__ b, float lr, float mu, float wd,
                                      float scale, int restart, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float d = g[i] * scale + wd * w[i];
    float bi = restart ? d : mu * b[i] + d;
    b[i] = bi;
    w[i] -= lr * bi;
}

// e = d * e + (1 - d) * w.
extern "C" __global__ void ema_update(float* __restrict__ e, const float* __restrict__ w, float d,
                                      long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    e[i] = d * e[i] + (1.0f - d) * w[i];
}

// One block per row: s = amax / 127; q = clamp(4 * rint(rint(w / s) / 4), -128, 124); out = q * s.
// rintf rounds ties to even, as the oracle's round_ties_even.
extern "C" __global__ void fake_quant_rows(const float* __restrict__ w, float* __restrict__ out,
                                           int rows, int cols) {
    __shared__ float red[SS_THREADS];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* x = w + (long long)r * cols;
    float* y = out + (long long)r * cols;
    float m = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, fabsf(x[j]));
    red[threadIdx.x] = m;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + s]);
        __syncthreads();
    }
    float amax = red[0];
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        if (amax == 0.0f) {
            y[j] = x[j];
        } else {
            float scale = amax / 127.0f;
            float q = rintf(x[j] / scale);
            q = fminf(fmaxf(rintf(q / 4.0f) * 4.0f, -128.0f), 124.0f);
            y[j] = q * scale;
        }
    }
}

// Block b sums x[i]^2 (x[i] when square == 0) over its grid-strided share in double, and
// writes the sum as the pair (hi, lo) = (float(s), float(s - hi)) to partial[2b], partial[2b+1].
// Fixed grid, fixed order: the result does not depend on scheduling.
extern "C" __global__ void sum_squares_partial(const float* __restrict__ x, long long n,
                                               float* __restrict__ partial, int square) {
    __shared__ double red[SS_THREADS];
    double s = 0.0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        double v = (double)x[i];
        s += square ? v * v : v;
    }
    red[threadIdx.x] = s;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if ((int)threadIdx.x < k) red[threadIdx.x] += red[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        double t = red[0];
        float hi = (float)t;
        partial[2 * blockIdx.x] = hi;
        partial[2 * blockIdx.x + 1] = (float)(t - (double)hi);
    }
}

// One thread: out[2 slot], out[2 slot + 1] = the (hi, lo) pair of the sum, in order, of the n
// (hi, lo) pairs of `pairs`.
extern "C" __global__ void sum_pairs(const float* __restrict__ pairs, int n,
                                     float* __restrict__ out, int slot) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double t = 0.0;
    for (int i = 0; i < n; i++) t += (double)pairs[2 * i] + (double)pairs[2 * i + 1];
    float hi = (float)t;
    out[2 * slot] = hi;
    out[2 * slot + 1] = (float)(t - (double)hi);
}

// One thread: out[0] = float(the sum, in order, of the n (hi, lo) pairs of `pairs`).
extern "C" __global__ void pairs_total(const float* __restrict__ pairs, int n,
                                       float* __restrict__ out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double t = 0.0;
    for (int i = 0; i < n; i++) t += (double)pairs[2 * i] + (double)pairs[2 * i + 1];
    out[0] = (float)t;
}

// One thread: out[0] = the sum, in order, of hi[i] + lo[i] over n columns (a column dot's
// pairs, as `col_reduce_finish` writes them) as a float.
extern "C" __global__ void sum_columns(const float* __restrict__ hi, const float* __restrict__ lo,
                                       int n, float* __restrict__ out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double t = 0.0;
    for (int i = 0; i < n; i++) t += (double)hi[i] + (double)lo[i];
    out[0] = (float)t;
}

// dst[i] = src[i] for i < n (the pointers may point into the middle of buffers).
extern "C" __global__ void copy_f32(const float* __restrict__ src, float* __restrict__ dst,
                                    long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    dst[i] = src[i];
}
