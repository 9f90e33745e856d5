// Soft-capped logits -> log-softmax statistics, one block per row, over logits already
// computed by cuBLAS (z = h · headᵀ, [rows, vocab] row-major).
// Reference: runtime/src/backend/cpu/head.rs (`nll`, `log_probs`):
//   l = c * tanh(z / c)   (no cap when c == 0)
//   lse = max(l) + log(sum exp(l - max(l)))   (the sum is reduced in fp64, as on the CPU)
//   nll[r] = lse - l[target[r]]             (softcap_nll)
//   logp[r, :] = l - lse                    (softcap_log_softmax, in place)
// Launch: grid (rows), block 256 (a multiple of 32, at most 1024).

// -inf without <math.h> (NVRTC has no INFINITY macro).
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Soft-caps row `z` in place and returns its logsumexp (every thread gets it).
__device__ float capped_lse(float* z, int vocab, float cap) {
    __shared__ float smax[32];
    __shared__ double ssum[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    float mx = NEG_INF;
    const float inv = cap > 0.0f ? 1.0f / cap : 0.0f;
    for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
        float l = z[c];
        if (cap > 0.0f) l = cap * tanhf(l * inv);
        z[c] = l;
        mx = fmaxf(mx, l);
    }
    mx = warp_max(mx);
    if (lane == 0) smax[warp] = mx;
    __syncthreads();
    mx = (threadIdx.x < nwarps) ? smax[threadIdx.x] : NEG_INF;
    if (warp == 0) mx = warp_max(mx);
    if (threadIdx.x == 0) smax[0] = mx;
    __syncthreads();
    mx = smax[0];
    double s = 0.0;
    for (int c = threadIdx.x; c < vocab; c += blockDim.x) s += (double)expf(z[c] - mx);
    s = warp_sum_d(s);
    if (lane == 0) ssum[warp] = s;
    __syncthreads();
    s = (threadIdx.x < nwarps) ? ssum[threadIdx.x] : 0.0;
    if (warp == 0) s = warp_sum_d(s);
    if (threadIdx.x == 0) ssum[0] = s;
    __syncthreads();
    return mx + (float)log(ssum[0]);
}

extern "C" __global__ void softcap_nll(float* __restrict__ logits,
                                       const unsigned int* __restrict__ targets,
                                       float* __restrict__ nll, int rows, int vocab, float cap) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    float* z = logits + (size_t)r * vocab;
    const float lse = capped_lse(z, vocab, cap);
    if (threadIdx.x == 0) nll[r] = lse - z[targets[r]];
}

extern "C" __global__ void softcap_log_softmax(float* __restrict__ logits, int rows, int vocab,
                                               float cap) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    float* z = logits + (size_t)r * vocab;
    const float lse = capped_lse(z, vocab, cap);
    for (int c = threadIdx.x; c < vocab; c += blockDim.x) z[c] -= lse;
}

// Backward to the pre-cap logits (reference: runtime/src/backend/cpu/backward/head.rs), in
// place on z = h·headᵀ (+ delta) [rows, vocab], for per-row loss weights dnll:
//   l = c*tanh(z/c),  p = exp(l - lse),  dl = dnll[r] * (p - [j == target]),
//   dz = c > 0 ? dl * (1 - (l/c)^2) : dl
// With nll_out, the row's NLL lse - l[target] is written there too (the training loss from
// the same pass); with dnll null, every row's weight is g_uniform.
// Launch: grid (rows), block 256.
extern "C" __global__ void softcap_nll_backward(float* __restrict__ logits,
                                                const unsigned int* __restrict__ targets,
                                                const float* __restrict__ dnll, float g_uniform,
                                                float* __restrict__ nll_out, int rows, int vocab,
                                                float cap) {
    const int r = blockIdx.x;
    if (r >= rows) return;
    float* z = logits + (size_t)r * vocab;
    const float lse = capped_lse(z, vocab, cap);
    const float g = dnll ? dnll[r] : g_uniform;
    const int t = (int)targets[r];
    if (nll_out) {
        // Read before any thread overwrites z[t] below.
        const float zt = z[t];
        __syncthreads();
        if (threadIdx.x == 0) nll_out[r] = lse - zt;
    }
    for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
        const float l = z[c];
        const float p = expf(l - lse);
        const float dl = g * (p - (c == t ? 1.0f : 0.0f));
        if (cap > 0.0f) {
            const float th = l / cap;
            z[c] = dl * (1.0f - th * th);
        } else {
            z[c] = dl;
        }
    }
}
