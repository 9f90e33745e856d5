// Causal grouped-query attention backward, flash style: the probabilities are recomputed from
// the forward's logsumexp (attention_stats_hd* in cuda/attention.cu), no [T, T] matrix is
// ever stored; fp32 throughout. Reference: runtime/src/backend/cpu/backward/attention.rs.
//
//   S = Q_h K_gᵀ / sqrt(hd) (causal), P = exp(S - lse), O = P V_g (before XSA)
//   XSA (Y = O - (O·û)û, û_t = v_t / max(|v_t|, 1e-12)):
//       dO = dY - (dY·û)û,   dv_t += (dû - (dû·û)û) / |v_t|,   dû = -(O·û) dY - (dY·û) O
//   D_t = dO_t · O_t,   dS = P ⊙ (dO V_gᵀ - D) / sqrt(hd)
//   dQ_h = dS K_g,   dK_g = Σ_{h in g} dSᵀ Q_h,   dV_g = Σ_{h in g} Pᵀ dO_h  (+ the XSA term)
//
// Layout as the forward: q/dO [B*T, H*HD], k/v [B*T, Hkv*HD], lse/D [B*T, H], row-major;
// the KV head of query head h is h / (H/Hkv).
//  attention_bwd_prep: one warp per (row, KV head); dO and D for the heads of the group and
//      the XSA term of dv (dv_x, zero without XSA). Launch: block 128 (4 warps). HD <= 128.
//  attention_bwd_dq_hd*: grid (ceil(T/BR), H, B), one thread per query of a 64-query tile,
//      32-key tiles of K and V in shared memory (as the forward); dQ written once.
//  attention_bwd_dkv_hd*: grid (ceil(T/BR), Hkv, B), one thread per key of a 64-key tile,
//      32-query tiles of Q, dO, lse, D of each head of the group in shared memory; dK and dV
//      are written once per key (no atomics: deterministic), with dv_x added.
// ops.rs ATTN_QUERIES_PER_BLOCK must equal BR.

#define BR 64

extern "C" __global__ void attention_bwd_prep(const float* __restrict__ o,
                                              const float* __restrict__ dy,
                                              const float* __restrict__ v,
                                              float* __restrict__ dout, float* __restrict__ dsum,
                                              float* __restrict__ dv_x, int rows, int heads,
                                              int kv_heads, int hd, int xsa) {
    const int warp = (int)((blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5);
    const int lane = threadIdx.x & 31;
    if (warp >= rows * kv_heads) return;  // whole warp exits together
    const int row = warp / kv_heads, kvh = warp % kv_heads;
    const int group = heads / kv_heads;
    const size_t qw = (size_t)heads * hd, kw = (size_t)kv_heads * hd;
    const float* vt = v + (size_t)row * kw + (size_t)kvh * hd;
    float nv = 1.0f;
    if (xsa) {
        float n2 = 0.0f;
        for (int i = lane; i < hd; i += 32) n2 += vt[i] * vt[i];
        for (int s = 16; s > 0; s >>= 1) n2 += __shfl_xor_sync(0xffffffffu, n2, s);
        nv = fmaxf(sqrtf(n2), 1e-12f);
    }
    float dvx[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // dims lane, lane+32, lane+64, lane+96
    for (int hh = 0; hh < group; hh++) {
        const int h = kvh * group + hh;
        const size_t off = (size_t)row * qw + (size_t)h * hd;
        const float *oh = o + off, *dyh = dy + off;
        float* doh = dout + off;
        if (xsa) {
            float ou = 0.0f, dyu = 0.0f;
            for (int i = lane; i < hd; i += 32) {
                const float u = vt[i] / nv;
                ou += oh[i] * u;
                dyu += dyh[i] * u;
            }
            for (int s = 16; s > 0; s >>= 1) {
                ou += __shfl_xor_sync(0xffffffffu, ou, s);
                dyu += __shfl_xor_sync(0xffffffffu, dyu, s);
            }
            float duu = 0.0f;
            for (int i = lane; i < hd; i += 32) {
                const float u = vt[i] / nv;
                duu += (-ou * dyh[i] - dyu * oh[i]) * u;
            }
            for (int s = 16; s > 0; s >>= 1) duu += __shfl_xor_sync(0xffffffffu, duu, s);
            for (int i = lane, e = 0; i < hd; i += 32, e++) {
                const float u = vt[i] / nv;
                const float du = -ou * dyh[i] - dyu * oh[i];
                dvx[e] += (du - duu * u) / nv;
                doh[i] = dyh[i] - dyu * u;
            }
        } else {
            for (int i = lane; i < hd; i += 32) doh[i] = dyh[i];
        }
        float d = 0.0f;
        for (int i = lane; i < hd; i += 32) d += doh[i] * oh[i];
        for (int s = 16; s > 0; s >>= 1) d += __shfl_xor_sync(0xffffffffu, d, s);
        if (lane == 0) dsum[(size_t)row * heads + h] = d;
    }
    float* dvr = dv_x + (size_t)row * kw + (size_t)kvh * hd;
    for (int i = lane, e = 0; i < hd; i += 32, e++) dvr[i] = dvx[e];
}

template <int HD, int BC>
__device__ __forceinline__ void attention_bwd_dq_impl(
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    const float* __restrict__ dout, const float* __restrict__ lse,
    const float* __restrict__ dsum, float* __restrict__ dq, int seq, int heads, int kv_heads) {
    __shared__ float ks[BC][HD];
    __shared__ float vs[BC][HD];
    const int tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (heads / kv_heads);
    const size_t qw = (size_t)heads * HD, kw = (size_t)kv_heads * HD;
    const size_t row0 = (size_t)b * seq;
    const int t = tile * BR + threadIdx.x;
    const bool active = t < seq;
    const float scale = 1.0f / sqrtf((float)HD);
    float qr[HD], dor[HD], acc[HD];
#pragma unroll
    for (int d = 0; d < HD; d++) {
        qr[d] = active ? q[(row0 + t) * qw + (size_t)h * HD + d] : 0.0f;
        dor[d] = active ? dout[(row0 + t) * qw + (size_t)h * HD + d] : 0.0f;
        acc[d] = 0.0f;
    }
    const float lt = active ? lse[(row0 + t) * heads + h] : 0.0f;
    const float dt = active ? dsum[(row0 + t) * heads + h] : 0.0f;
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
#pragma unroll 1
        for (int jj = 0; jj < jmax; jj++) {
            float s = 0.0f, dp = 0.0f;
#pragma unroll
            for (int d = 0; d < HD; d++) {
                s += qr[d] * ks[jj][d];
                dp += dor[d] * vs[jj][d];
            }
            const float p = expf(s * scale - lt);
            const float ds = p * (dp - dt) * scale;
#pragma unroll
            for (int d = 0; d < HD; d++) acc[d] += ds * ks[jj][d];
        }
    }
    if (!active) return;
    float* o = dq + (row0 + t) * qw + (size_t)h * HD;
#pragma unroll
    for (int d = 0; d < HD; d++) o[d] = acc[d];
}

template <int HD, int BC>
__device__ __forceinline__ void attention_bwd_dkv_impl(
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    const float* __restrict__ dout, const float* __restrict__ lse,
    const float* __restrict__ dsum, const float* __restrict__ dv_x, float* __restrict__ dk,
    float* __restrict__ dv, int seq, int heads, int kv_heads) {
    __shared__ float qs[BC][HD];
    __shared__ float dos[BC][HD];
    __shared__ float ls[BC];
    __shared__ float dd[BC];
    const int tile = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
    const int group = heads / kv_heads;
    const size_t qw = (size_t)heads * HD, kw = (size_t)kv_heads * HD;
    const size_t row0 = (size_t)b * seq;
    const int j = tile * BR + threadIdx.x;
    const bool active = j < seq;
    const float scale = 1.0f / sqrtf((float)HD);
    float kr[HD], vr[HD], dkr[HD], dvr[HD];
#pragma unroll
    for (int d = 0; d < HD; d++) {
        kr[d] = active ? k[(row0 + j) * kw + (size_t)kvh * HD + d] : 0.0f;
        vr[d] = active ? v[(row0 + j) * kw + (size_t)kvh * HD + d] : 0.0f;
        dkr[d] = 0.0f;
        dvr[d] = 0.0f;
    }
    // Queries t >= j see key j: the first query tile starts at this key tile.
    for (int hh = 0; hh < group; hh++) {
        const int h = kvh * group + hh;
        for (int t0 = tile * BR; t0 < seq; t0 += BC) {
            const int nq = min(BC, seq - t0);
            __syncthreads();
            for (int e = threadIdx.x; e < nq * HD; e += blockDim.x) {
                const int tt = e / HD, d = e % HD;
                const size_t src = (row0 + t0 + tt) * qw + (size_t)h * HD + d;
                qs[tt][d] = q[src];
                dos[tt][d] = dout[src];
            }
            for (int tt = threadIdx.x; tt < nq; tt += blockDim.x) {
                ls[tt] = lse[(row0 + t0 + tt) * heads + h];
                dd[tt] = dsum[(row0 + t0 + tt) * heads + h];
            }
            __syncthreads();
            const int first = active ? max(0, j - t0) : nq;  // queries t0+tt >= j
#pragma unroll 1
            for (int tt = first; tt < nq; tt++) {
                float s = 0.0f, dp = 0.0f;
#pragma unroll
                for (int d = 0; d < HD; d++) {
                    s += qs[tt][d] * kr[d];
                    dp += dos[tt][d] * vr[d];
                }
                const float p = expf(s * scale - ls[tt]);
                const float ds = p * (dp - dd[tt]) * scale;
#pragma unroll
                for (int d = 0; d < HD; d++) {
                    dvr[d] += p * dos[tt][d];
                    dkr[d] += ds * qs[tt][d];
                }
            }
        }
    }
    if (!active) return;
    const size_t off = (row0 + j) * kw + (size_t)kvh * HD;
#pragma unroll
    for (int d = 0; d < HD; d++) {
        dk[off + d] = dkr[d];
        dv[off + d] = dvr[d] + dv_x[off + d];
    }
}

#define ATTENTION_BWD_ENTRY(HD, BC)                                                              \
    extern "C" __global__ void __launch_bounds__(BR) attention_bwd_dq_hd##HD(                    \
        const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,     \
        const float* __restrict__ dout, const float* __restrict__ lse,                           \
        const float* __restrict__ dsum, float* __restrict__ dq, int seq, int heads,              \
        int kv_heads) {                                                                          \
        attention_bwd_dq_impl<HD, BC>(q, k, v, dout, lse, dsum, dq, seq, heads, kv_heads);       \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(BR) attention_bwd_dkv_hd##HD(                   \
        const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,     \
        const float* __restrict__ dout, const float* __restrict__ lse,                           \
        const float* __restrict__ dsum, const float* __restrict__ dv_x, float* __restrict__ dk,  \
        float* __restrict__ dv, int seq, int heads, int kv_heads) {                              \
        attention_bwd_dkv_impl<HD, BC>(q, k, v, dout, lse, dsum, dv_x, dk, dv, seq, heads,       \
                                       kv_heads);                                                \
    }

ATTENTION_BWD_ENTRY(4, 32)
ATTENTION_BWD_ENTRY(8, 32)
ATTENTION_BWD_ENTRY(16, 32)
ATTENTION_BWD_ENTRY(32, 32)
ATTENTION_BWD_ENTRY(64, 32)
ATTENTION_BWD_ENTRY(128, 32)
