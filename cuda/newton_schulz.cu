// The elementwise steps of Muon's Newton-Schulz orthogonalisation; its products are cuBLAS
// GEMMs (runtime/src/backend/cuda/newton_schulz.rs).
// Reference: runtime/src/train/muon.rs (`newton_schulz`, `newton_schulz_bf16`).
// Launch: 1-D grid over n elements, block 256.

// Nearest bf16 (ties to even), as a float: what a PyTorch bf16 op writes. NaN stays NaN.
__device__ __forceinline__ float round_bf16(float x) {
    unsigned int b = __float_as_uint(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) return x;
    b += 0x7fffu + ((b >> 16) & 1u);
    return __uint_as_float(b & 0xffff0000u);
}

// out = R(R(alpha * x) + beta * y), R = round_bf16 when bf16 != 0 else the identity; the
// `+ beta * y` term is left out when y is null. Inner rounding first: the bf16 reference
// rounds `alpha * x` as its own tensor op before the add.
extern "C" __global__ void ns_axpby(float* __restrict__ out, const float* __restrict__ x,
                                    float alpha, const float* __restrict__ y, float beta,
                                    long long n, int bf16) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = alpha * x[i];
    if (bf16) v = round_bf16(v);
    if (y) {
        v += beta * y[i];
        if (bf16) v = round_bf16(v);
    }
    out[i] = v;
}

// out = R(inv * x), inv = 1 / (sqrt(s) + 1e-7) for the squared norm s = pairs[0] + pairs[1] (a
// (hi, lo) pair summed on the device, see `sum_squares_partial` in cuda/optim.cu); in the bf16
// run inv = 1 / bf16(bf16(sqrt(s)) + 1e-7) and R rounds to bf16. Every thread derives the same
// inv from the pair: no read back to the host.
extern "C" __global__ void ns_normalize(float* __restrict__ out, const float* __restrict__ x,
                                        const float* __restrict__ pairs, long long n, int bf16) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float norm = (float)sqrt((double)pairs[0] + (double)pairs[1]);
    float inv = bf16 ? 1.0f / round_bf16(round_bf16(norm) + 1e-7f) : 1.0f / (norm + 1e-7f);
    float v = inv * x[i];
    if (bf16) v = round_bf16(v);
    out[i] = v;
}
