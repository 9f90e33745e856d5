// Causal grouped-query attention, flash style: exact softmax(q·kᵀ/sqrt(hd))·v computed with an
// online (running max / running sum) softmax in fp32 over key tiles held in shared memory.
// No [T, T] score matrix exists anywhere; memory is O(T * hd) per head.
// Reference: runtime/src/backend/cpu/attention.rs (`attention`), including XSA:
//   y_t -= (y_t · v̂_t) v̂_t,  v̂_t = v_t / max(|v_t|, 1e-12)   (v_t: the token's own value,
//   in the KV head of the query head's group).
//
// Layout: q [B*T, H*HD], k/v [B*T, Hkv*HD], out [B*T, H*HD], row-major; kv head = h / (H/Hkv).
// Launch: grid (ceil(T/BR), H, B), block BR = 64 (ops.rs ATTN_QUERIES_PER_BLOCK must equal BR):
// one thread per query row of a 64-query tile.
// Each thread keeps its query and its fp32 accumulator in registers and its scores for the
// current tile in shared memory; the block streams K/V tiles of BC = 32 keys through shared
// memory (all threads read the same key, so those loads are broadcasts). Keys past the tile's last query are never loaded (causal).
// Head dims: one entry point per supported HD (attention_hd{4,8,16,32,64,128}).
// attention_stats_hd{HD}: the same without XSA, also writing each row's logsumexp of the
// scaled scores, lse [B*T, H] (what the backward, cuda/attention_backward.cu, recomputes
// probabilities from).

// -inf without <math.h> (NVRTC has no INFINITY macro).
#define NEG_INF __int_as_float(0xff800000)

#define BR 64

template <int HD, int BC>
__device__ __forceinline__ void attention_impl(const float* __restrict__ q,
                                               const float* __restrict__ k,
                                               const float* __restrict__ v,
                                               float* __restrict__ out,
                                               float* __restrict__ lse, int seq, int heads,
                                               int kv_heads, int xsa) {
    __shared__ float ks[BC][HD];
    __shared__ float vs[BC][HD];
    __shared__ float ss[BC][BR];
    const int tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (heads / kv_heads);
    const size_t qw = (size_t)heads * HD, kw = (size_t)kv_heads * HD;
    const size_t row0 = (size_t)b * seq;
    const int t = tile * BR + threadIdx.x;
    const bool active = t < seq;
    // 1/sqrt(HD) exactly as the CPU computes it (rsqrtf is approximate: up to 2 ulp off).
    const float scale = 1.0f / sqrtf((float)HD);

    float qr[HD], acc[HD];
#pragma unroll
    for (int d = 0; d < HD; d++) {
        qr[d] = active ? q[(row0 + t) * qw + (size_t)h * HD + d] : 0.0f;
        acc[d] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    const int kend = min(seq, (tile + 1) * BR);  // keys 0..kend-1 are visible to this tile
    for (int j0 = 0; j0 < kend; j0 += BC) {
        const int nk = min(BC, kend - j0);
        __syncthreads();
        for (int e = threadIdx.x; e < nk * HD; e += blockDim.x) {
            const int jj = e / HD, d = e % HD;
            const size_t src = (row0 + j0 + jj) * kw + (size_t)kvh * HD + d;
            ks[jj][d] = k[src];
            vs[jj][d] = v[src];
        }
        __syncthreads();
        const int jmax = active ? min(nk, t - j0 + 1) : 0;  // keys j0+jj <= t
        if (jmax <= 0) continue;
        // Scores of this tile go to shared memory, one column per thread (conflict free);
        // only the HD-long loops are unrolled, so q/acc stay in registers and code stays small.
        float mt = NEG_INF;
#pragma unroll 1
        for (int jj = 0; jj < jmax; jj++) {
            float dot = 0.0f;
#pragma unroll
            for (int d = 0; d < HD; d++) dot += qr[d] * ks[jj][d];
            dot *= scale;
            ss[jj][threadIdx.x] = dot;
            mt = fmaxf(mt, dot);
        }
        const float mn = fmaxf(m, mt);
        const float corr = expf(m - mn);  // m = -inf on the first tile: corr = 0
        l *= corr;
#pragma unroll
        for (int d = 0; d < HD; d++) acc[d] *= corr;
#pragma unroll 1
        for (int jj = 0; jj < jmax; jj++) {
            const float p = expf(ss[jj][threadIdx.x] - mn);
            l += p;
#pragma unroll
            for (int d = 0; d < HD; d++) acc[d] += p * vs[jj][d];
        }
        m = mn;
    }
    if (!active) return;
    if (lse) lse[(row0 + t) * heads + h] = m + logf(l);
    const float inv_l = 1.0f / l;
#pragma unroll
    for (int d = 0; d < HD; d++) acc[d] *= inv_l;
    if (xsa) {
        const float* vt = v + (row0 + t) * kw + (size_t)kvh * HD;
        float n2 = 0.0f;
#pragma unroll
        for (int d = 0; d < HD; d++) n2 += vt[d] * vt[d];
        const float norm = fmaxf(sqrtf(n2), 1e-12f);
        float dot = 0.0f;
#pragma unroll
        for (int d = 0; d < HD; d++) dot += acc[d] * vt[d] / norm;
#pragma unroll
        for (int d = 0; d < HD; d++) acc[d] -= dot * vt[d] / norm;
    }
    float* o = out + (row0 + t) * qw + (size_t)h * HD;
#pragma unroll
    for (int d = 0; d < HD; d++) o[d] = acc[d];
}

#define ATTENTION_ENTRY(HD, BC)                                                              \
    extern "C" __global__ void __launch_bounds__(BR) attention_hd##HD(                       \
        const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, \
        float* __restrict__ out, int seq, int heads, int kv_heads, int xsa) {                \
        attention_impl<HD, BC>(q, k, v, out, nullptr, seq, heads, kv_heads, xsa);            \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(BR) attention_stats_hd##HD(                 \
        const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, \
        float* __restrict__ out, float* __restrict__ lse, int seq, int heads, int kv_heads) { \
        attention_impl<HD, BC>(q, k, v, out, lse, seq, heads, kv_heads, 0);                  \
    }

ATTENTION_ENTRY(4, 32)
ATTENTION_ENTRY(8, 32)
ATTENTION_ENTRY(16, 32)
ATTENTION_ENTRY(32, 32)
ATTENTION_ENTRY(64, 32)
ATTENTION_ENTRY(128, 32)
