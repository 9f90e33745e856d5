// Causal grouped-query attention on tensor cores, forward and backward: the flash algorithms
// of attention.cu and attention_backward.cu (tiles, online softmax, probabilities recomputed
// from the forward's logsumexp, no [T, T] matrix anywhere) with every product of a tile as
// m16n16k8 TF32 tensor-core MMAs (fp32 accumulate; `tc::` below). Used in the backend's TF32
// math mode (PGOLF_CUDA_TF32=1) on sm_80 and newer, for the head dims instantiated at the end.
// Reference: runtime/src/backend/cpu/attention.rs and cpu/backward/attention.rs, XSA included
// (the backward's XSA terms stay in attention_bwd_prep). They differ from the reference (and
// from the fp32 kernels) only by rounding the products' operands to TF32 (10-bit mantissa,
// cvt.rna): ~1e-3 relative. The backward recomputes exactly the forward's scores (same MMAs in
// the same order), so its probabilities match the forward's logsumexp.
//
// Layout as attention.cu: q/out/dO [B*T, H*HD], k/v [B*T, Hkv*HD], lse/D [B*T, H], row-major,
// kv head = h / (H/Hkv). Every kernel: block TC_WARPS * 32 threads, 64-row tiles, warp w owns
// rows [tile*64 + 16w, +16) of the tile (ops.rs ATTN_TC_* must match).
//  attention_tc_hd*, attention_tc_stats_hd*: grid (ceil(T/64), H, B); rows are queries.
//  attention_tc_bwd_dq_hd*: grid (ceil(T/64), H, B); rows are queries.
//  attention_tc_bwd_dkv_hd*: grid (ceil(T/64), Hkv, B); rows are keys, the group's heads
//      summed in the warp (no atomics: deterministic).
//
// How a warp works on a tile of TC_BC columns (keys, or queries for dK/dV) staged in shared
// memory by the whole block:
// 1. products of its 16 rows with the tile's 32 columns go, as MMAs, to a per-warp score tile
//    in shared memory (`ss`, and `os` for a second one);
// 2. lanes 2r and 2r+1 own row r and half the tile's columns each: they turn scores into
//    probabilities (online softmax in the forward, exp(s - lse) in the backward), combining
//    row sums and maxima with one shuffle, and write them back;
// 3. the [16 x TC_BC]·[TC_BC x HD] products go through the staging tile `os` into the lane's
//    half row of the outputs, kept in registers.
// The fragments' layout across lanes is opaque, which is why the element-wise steps work on
// shared-memory copies of the tiles instead of on fragments.
// Shared memory, forward and dQ: (2·BC·(HD+PAD) + WARPS·16·(BC+PAD) + WARPS·16·(HD+PAD))
// floats, 43 KiB at HD 64; dK/dV adds 2·BC floats (ops.rs checks ≤ 48 KiB for every HD).

// tc::: TF32 wmma m16n16k8 (the tile shape of nvcuda::wmma), written against NVRTC's
// builtins because NVRTC ships no <mma.h>: the same builtins <mma.h> wraps, the same opaque
// per-lane fragments (A 16x8 and B 8x16: 4 values per lane; C 16x16: 8). The builtins' last
// layout argument is 0 for row-major, 1 for column-major; mma's is (A col) * 2 + (B col).
// cuda/emu/cuda_emu.h implements the same API on the host.
#ifdef __CUDACC_RTC__
namespace tc {
struct frag_a {  // 16 x 8, loaded from row-major memory
    static constexpr int num_elements = 4;
    float x[4];
};
struct frag_b_row {  // 8 x 16, from row-major memory
    static constexpr int num_elements = 4;
    float x[4];
};
struct frag_b_col {  // 8 x 16, from column-major memory
    static constexpr int num_elements = 4;
    float x[4];
};
struct frag_c {  // 16 x 16 accumulator
    static constexpr int num_elements = 8;
    float x[8];
};
__device__ __forceinline__ void load(frag_a& f, const float* p, unsigned ldm) {
    __mma_tf32_m16n16k8_ld_a((int*)f.x, (const int*)p, ldm, 0);
}
__device__ __forceinline__ void load(frag_b_row& f, const float* p, unsigned ldm) {
    __mma_tf32_m16n16k8_ld_b((int*)f.x, (const int*)p, ldm, 0);
}
__device__ __forceinline__ void load(frag_b_col& f, const float* p, unsigned ldm) {
    __mma_tf32_m16n16k8_ld_b((int*)f.x, (const int*)p, ldm, 1);
}
// d = a·b + c
__device__ __forceinline__ void mma(frag_c& d, const frag_a& a, const frag_b_row& b, const frag_c& c) {
    __mma_tf32_m16n16k8_mma_f32(d.x, (const int*)a.x, (const int*)b.x, c.x, 0, 0);
}
__device__ __forceinline__ void mma(frag_c& d, const frag_a& a, const frag_b_col& b, const frag_c& c) {
    __mma_tf32_m16n16k8_mma_f32(d.x, (const int*)a.x, (const int*)b.x, c.x, 1, 0);
}
// Row-major store of an accumulator.
__device__ __forceinline__ void store(float* p, const frag_c& f, unsigned ldm) {
    __mma_m16n16k8_st_c_f32(p, f.x, ldm, 0);
}
template <class F>
__device__ __forceinline__ void fill(F& f, float v) {
#pragma unroll
    for (int i = 0; i < F::num_elements; i++) f.x[i] = v;
}
// cvt.rna.tf32.f32 on every element (round to a 10-bit mantissa, ties away from zero).
template <class F>
__device__ __forceinline__ void to_tf32(F& f) {
#pragma unroll
    for (int i = 0; i < F::num_elements; i++) {
        unsigned r;  // cvt's TF32 result is a .b32 register
        asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(f.x[i]));
        f.x[i] = __uint_as_float(r);
    }
}
}  // namespace tc
#endif

#define NEG_INF __int_as_float(0xff800000)

#define TC_BR 64
#define TC_WARPS 4
#define TC_BC 32
// Row padding: keeps every MMA pointer 32-byte aligned and ldm a multiple of 4 floats, and
// shifts consecutive rows across shared-memory banks.
#define TC_PAD 4

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800

// Rows [first, first + 16) of a [*, stride] matrix, columns [col, col + HD), into a 16 x HD
// tile with row stride ld (zero past row `last`), by the 32 lanes of a warp.
template <int HD>
__device__ __forceinline__ void warp_stage(float* dst, int ld, const float* __restrict__ src,
                                           size_t row0, int first, int last, size_t stride,
                                           size_t col, int lane) {
    for (int e = lane; e < 16 * HD; e += 32) {
        const int rr = e / HD, d = e % HD;
        dst[rr * ld + d] = first + rr <= last ? src[(row0 + first + rr) * stride + col + d] : 0.0f;
    }
}

// Rows [first, first + TC_BC) of two [*, stride] matrices (same columns) into two TC_BC x HD
// tiles with row stride ld, zero past row `first + n - 1`, by the whole block.
template <int HD>
__device__ __forceinline__ void block_stage(float* da, float* db, int ld,
                                            const float* __restrict__ a,
                                            const float* __restrict__ b, size_t row0, int first,
                                            int n, size_t stride, size_t col) {
    for (int e = threadIdx.x; e < TC_BC * HD; e += blockDim.x) {
        const int jj = e / HD, d = e % HD;
        float x = 0.0f, y = 0.0f;
        if (jj < n) {
            const size_t src = (row0 + first + jj) * stride + col + d;
            x = a[src];
            y = b[src];
        }
        da[jj * ld + d] = x;
        db[jj * ld + d] = y;
    }
}

// The 16 x HD tile at `src` (row stride ld) as HD/8 TF32 A fragments.
template <int HD>
__device__ __forceinline__ void load_rows(tc::frag_a* f, const float* src, int ld) {
#pragma unroll
    for (int kk = 0; kk < HD / 8; kk++) {
        tc::load(f[kk], src + kk * 8, ld);
        tc::to_tf32(f[kk]);
    }
}

// Rows [first, first + 16) of a [*, stride] matrix, columns [col, col + HD), as HD/8 TF32 A
// fragments (zero past the sequence), staged through the warp's tile `stage` (row stride ld).
template <int HD>
__device__ __forceinline__ void warp_rows(tc::frag_a* f, float* stage, int ld,
                                          const float* __restrict__ src, size_t row0, int first,
                                          int seq, size_t stride, size_t col, int lane) {
    warp_stage<HD>(stage, ld, src, row0, first, seq - 1, stride, col, lane);
    __syncwarp();
    load_rows<HD>(f, stage, ld);
    __syncwarp();  // the stage is rewritten next
}

// out [16 x TC_BC] (row stride TC_BC + TC_PAD) = a [16 x HD] · tileᵀ, `tile` TC_BC rows of HD
// (row stride ld): scores of 16 rows against the tile's rows.
template <int HD>
__device__ __forceinline__ void scores(float* out, const tc::frag_a* a, const float* tile, int ld) {
#pragma unroll
    for (int nb = 0; nb < TC_BC / 16; nb++) {
        tc::frag_c c;
        tc::fill(c, 0.0f);
#pragma unroll
        for (int kk = 0; kk < HD / 8; kk++) {
            tc::frag_b_col b;  // tileᵀ: a column-major view of the tile's rows
            tc::load(b, tile + nb * 16 * ld + kk * 8, ld);
            tc::to_tf32(b);
            tc::mma(c, a[kk], b, c);
        }
        tc::store(out + nb * 16, c, TC_BC + TC_PAD);
    }
}

// The [16 x TC_BC] tile at `p` (row stride TC_BC + TC_PAD) as TC_BC/8 TF32 A fragments.
__device__ __forceinline__ void load_probs(tc::frag_a* f, const float* p) {
#pragma unroll
    for (int kk = 0; kk < TC_BC / 8; kk++) {
        tc::load(f[kk], p + kk * 8, TC_BC + TC_PAD);
        tc::to_tf32(f[kk]);
    }
}

// acc (this lane's half of row r) += (p [16 x TC_BC] · tile [TC_BC x HD])[r], through the
// warp's staging tile `stage` (16 x HD, row stride HD + TC_PAD).
template <int HD>
__device__ __forceinline__ void accumulate(float* acc, const tc::frag_a* p, const float* tile,
                                           float* stage, int r, int half) {
    constexpr int LDK = HD + TC_PAD;
#pragma unroll
    for (int db = 0; db < HD / 16; db++) {
        tc::frag_c c;
        tc::fill(c, 0.0f);
#pragma unroll
        for (int kk = 0; kk < TC_BC / 8; kk++) {
            tc::frag_b_row b;
            tc::load(b, tile + kk * 8 * LDK + db * 16, LDK);
            tc::to_tf32(b);
            tc::mma(c, p[kk], b, c);
        }
        tc::store(stage + db * 16, c, LDK);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < HD / 2; i++) acc[i] += stage[r * LDK + half * (HD / 2) + i];
    __syncwarp();  // the staging tile is rewritten next
}

#endif  // sm_80+

template <int HD>
__device__ __forceinline__ void attention_tc_impl(const float* __restrict__ q,
                                                  const float* __restrict__ k,
                                                  const float* __restrict__ v,
                                                  float* __restrict__ out,
                                                  float* __restrict__ lse, int seq, int heads,
                                                  int kv_heads, int xsa) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    constexpr int LDK = HD + TC_PAD;     // row stride of ks, vs, os
    constexpr int LDS = TC_BC + TC_PAD;  // row stride of ss
    constexpr int HALF = HD / 2;         // outputs per lane
    __shared__ __align__(32) float ks[TC_BC * LDK];
    __shared__ __align__(32) float vs[TC_BC * LDK];
    __shared__ __align__(32) float ss[TC_WARPS][16 * LDS];
    __shared__ __align__(32) float os[TC_WARPS][16 * LDK];

    const int tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (heads / kv_heads);
    const size_t qw = (size_t)heads * HD, kw = (size_t)kv_heads * HD;
    const size_t row0 = (size_t)b * seq;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int r = lane >> 1, half = lane & 1;  // this lane's row of the warp's 16, and half
    const int q0 = tile * TC_BR + warp * 16;   // the warp's first query
    const int t = q0 + r;
    const bool active = t < seq;
    const int qlast = min(q0 + 15, seq - 1);   // the warp's last real query
    const float scale = 1.0f / sqrtf((float)HD);
    float* sw = ss[warp];
    float* ow = os[warp];

    // q of the warp's 16 rows, as TF32 fragments held for all tiles.
    tc::frag_a qf[HD / 8];
    warp_rows<HD>(qf, ow, LDK, q, row0, q0, seq, qw, (size_t)h * HD, lane);

    float acc[HALF];
#pragma unroll
    for (int i = 0; i < HALF; i++) acc[i] = 0.0f;
    float m = NEG_INF, l = 0.0f;
    const int kend = min(seq, (tile + 1) * TC_BR);  // keys 0..kend-1 are visible to this tile
    for (int j0 = 0; j0 < kend; j0 += TC_BC) {
        __syncthreads();
        block_stage<HD>(ks, vs, LDK, k, v, row0, j0, min(TC_BC, kend - j0), kw, (size_t)kvh * HD);
        __syncthreads();
        // Warp-uniform: no key of this tile is visible to any of the warp's rows.
        if (q0 >= seq || j0 > qlast) continue;

        scores<HD>(sw, qf, ks, LDK);
        __syncwarp();
        // Online softmax on this lane's half of row r (causal: key j visible iff j <= t).
        float sc[TC_BC / 2];
        float mt = NEG_INF;
#pragma unroll
        for (int c = 0; c < TC_BC / 2; c++) {
            const int col = half * (TC_BC / 2) + c;
            const float s = (active && j0 + col <= t) ? sw[r * LDS + col] * scale : NEG_INF;
            sc[c] = s;
            mt = fmaxf(mt, s);
        }
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
        const float mn = fmaxf(m, mt);
        // mn = -inf only on rows past the sequence (key 0 is visible to every real row).
        const float corr = mn == NEG_INF ? 1.0f : expf(m - mn);
        float ps = 0.0f;
#pragma unroll
        for (int c = 0; c < TC_BC / 2; c++) {
            const float p = sc[c] == NEG_INF ? 0.0f : expf(sc[c] - mn);
            ps += p;
            sw[r * LDS + half * (TC_BC / 2) + c] = p;
        }
        ps += __shfl_xor_sync(0xffffffffu, ps, 1);
        l = l * corr + ps;
        m = mn;
#pragma unroll
        for (int i = 0; i < HALF; i++) acc[i] *= corr;
        __syncwarp();
        tc::frag_a pf[TC_BC / 8];
        load_probs(pf, sw);
        accumulate<HD>(acc, pf, vs, ow, r, half);
    }

    if (lse && active && half == 0) lse[(row0 + t) * heads + h] = m + logf(l);
    const float inv_l = active ? 1.0f / l : 0.0f;
#pragma unroll
    for (int i = 0; i < HALF; i++) acc[i] *= inv_l;
    if (xsa) {
        // y -= (y · v̂) v̂ with v̂ the token's own value, unit length; the pair splits the dot.
        const float* vt = v + (row0 + (active ? t : 0)) * kw + (size_t)kvh * HD;
        float n2 = 0.0f, dot = 0.0f;
#pragma unroll
        for (int i = 0; i < HALF; i++) {
            const float x = vt[half * HALF + i];
            n2 += x * x;
            dot += acc[i] * x;
        }
        n2 += __shfl_xor_sync(0xffffffffu, n2, 1);
        dot += __shfl_xor_sync(0xffffffffu, dot, 1);
        const float norm = fmaxf(sqrtf(n2), 1e-12f);
        const float proj = dot / norm;
#pragma unroll
        for (int i = 0; i < HALF; i++) acc[i] -= proj * vt[half * HALF + i] / norm;
    }
    if (!active) return;
    float* o = out + (row0 + t) * qw + (size_t)h * HD + half * HALF;
#pragma unroll
    for (int i = 0; i < HALF; i++) o[i] = acc[i];
#endif
}

// dQ = dS·K with dS = P ⊙ (dO·vᵀ - D) / sqrt(HD), P = exp(q·kᵀ/sqrt(HD) - lse) (causal).
template <int HD>
__device__ __forceinline__ void attention_tc_bwd_dq_impl(
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    const float* __restrict__ dout, const float* __restrict__ lse,
    const float* __restrict__ dsum, float* __restrict__ dq, int seq, int heads, int kv_heads) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    constexpr int LDK = HD + TC_PAD, LDS = TC_BC + TC_PAD, HALF = HD / 2;
    __shared__ __align__(32) float ks[TC_BC * LDK];
    __shared__ __align__(32) float vs[TC_BC * LDK];
    __shared__ __align__(32) float ss[TC_WARPS][16 * LDS];
    __shared__ __align__(32) float os[TC_WARPS][16 * LDK];

    const int tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (heads / kv_heads);
    const size_t qw = (size_t)heads * HD, kw = (size_t)kv_heads * HD;
    const size_t row0 = (size_t)b * seq;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int r = lane >> 1, half = lane & 1;
    const int q0 = tile * TC_BR + warp * 16;
    const int t = q0 + r;
    const bool active = t < seq;
    const int qlast = min(q0 + 15, seq - 1);
    const float scale = 1.0f / sqrtf((float)HD);
    float* sw = ss[warp];
    float* ow = os[warp];

    tc::frag_a qf[HD / 8], df[HD / 8];
    warp_rows<HD>(qf, ow, LDK, q, row0, q0, seq, qw, (size_t)h * HD, lane);
    warp_rows<HD>(df, ow, LDK, dout, row0, q0, seq, qw, (size_t)h * HD, lane);
    const float lt = active ? lse[(row0 + t) * heads + h] : 0.0f;
    const float dt = active ? dsum[(row0 + t) * heads + h] : 0.0f;

    float acc[HALF];
#pragma unroll
    for (int i = 0; i < HALF; i++) acc[i] = 0.0f;
    const int kend = min(seq, (tile + 1) * TC_BR);
    for (int j0 = 0; j0 < kend; j0 += TC_BC) {
        __syncthreads();
        block_stage<HD>(ks, vs, LDK, k, v, row0, j0, min(TC_BC, kend - j0), kw, (size_t)kvh * HD);
        __syncthreads();
        if (q0 >= seq || j0 > qlast) continue;

        scores<HD>(sw, qf, ks, LDK);  // s
        scores<HD>(ow, df, vs, LDK);  // dp = dO·vᵀ (row stride LDS in the staging tile)
        __syncwarp();
#pragma unroll
        for (int c = 0; c < TC_BC / 2; c++) {
            const int col = half * (TC_BC / 2) + c;
            float ds = 0.0f;
            if (active && j0 + col <= t) {
                const float p = expf(sw[r * LDS + col] * scale - lt);
                ds = p * (ow[r * LDS + col] - dt) * scale;
            }
            sw[r * LDS + col] = ds;
        }
        __syncwarp();
        tc::frag_a dsf[TC_BC / 8];
        load_probs(dsf, sw);
        accumulate<HD>(acc, dsf, ks, ow, r, half);
    }
    if (!active) return;
    float* o = dq + (row0 + t) * qw + (size_t)h * HD + half * HALF;
#pragma unroll
    for (int i = 0; i < HALF; i++) o[i] = acc[i];
#endif
}

// dK = Σ_h dSᵀ·Q_h and dV = Σ_h Pᵀ·dO_h over the query heads h of KV head kvh, from the
// transposed tiles Sᵀ = k·qᵀ and dPᵀ = v·dOᵀ (rows are keys, columns queries t >= key).
template <int HD>
__device__ __forceinline__ void attention_tc_bwd_dkv_impl(
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    const float* __restrict__ dout, const float* __restrict__ lse,
    const float* __restrict__ dsum, const float* __restrict__ dv_x, float* __restrict__ dk,
    float* __restrict__ dv, int seq, int heads, int kv_heads) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    constexpr int LDK = HD + TC_PAD, LDS = TC_BC + TC_PAD, HALF = HD / 2;
    __shared__ __align__(32) float qs[TC_BC * LDK];
    __shared__ __align__(32) float dos[TC_BC * LDK];
    __shared__ __align__(32) float ss[TC_WARPS][16 * LDS];
    __shared__ __align__(32) float os[TC_WARPS][16 * LDK];
    __shared__ float ls[TC_BC];
    __shared__ float dd[TC_BC];

    const int tile = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
    const int group = heads / kv_heads;
    const size_t qw = (size_t)heads * HD, kw = (size_t)kv_heads * HD;
    const size_t row0 = (size_t)b * seq;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int r = lane >> 1, half = lane & 1;
    const int k0 = tile * TC_BR + warp * 16;  // the warp's first key
    const int j = k0 + r;
    const bool active = j < seq;
    const float scale = 1.0f / sqrtf((float)HD);
    float* sw = ss[warp];
    float* ow = os[warp];

    tc::frag_a kf[HD / 8], vf[HD / 8];
    warp_rows<HD>(kf, ow, LDK, k, row0, k0, seq, kw, (size_t)kvh * HD, lane);
    warp_rows<HD>(vf, ow, LDK, v, row0, k0, seq, kw, (size_t)kvh * HD, lane);

    float dka[HALF], dva[HALF];
#pragma unroll
    for (int i = 0; i < HALF; i++) dka[i] = dva[i] = 0.0f;
    for (int hh = 0; hh < group; hh++) {
        const int h = kvh * group + hh;
        // Queries t >= key: the first query tile that sees this key tile starts at it.
        for (int t0 = tile * TC_BR; t0 < seq; t0 += TC_BC) {
            const int nq = min(TC_BC, seq - t0);
            __syncthreads();
            block_stage<HD>(qs, dos, LDK, q, dout, row0, t0, nq, qw, (size_t)h * HD);
            for (int tt = threadIdx.x; tt < TC_BC; tt += blockDim.x) {
                ls[tt] = tt < nq ? lse[(row0 + t0 + tt) * heads + h] : 0.0f;
                dd[tt] = tt < nq ? dsum[(row0 + t0 + tt) * heads + h] : 0.0f;
            }
            __syncthreads();
            // Warp-uniform: no query of this tile sees any of the warp's keys.
            if (k0 >= seq || t0 + nq - 1 < k0) continue;

            scores<HD>(sw, kf, qs, LDK);   // sᵀ
            scores<HD>(ow, vf, dos, LDK);  // dpᵀ (row stride LDS in the staging tile)
            __syncwarp();
#pragma unroll
            for (int c = 0; c < TC_BC / 2; c++) {
                const int col = half * (TC_BC / 2) + c;
                float p = 0.0f, ds = 0.0f;
                if (active && col < nq && t0 + col >= j) {
                    p = expf(sw[r * LDS + col] * scale - ls[col]);
                    ds = p * (ow[r * LDS + col] - dd[col]) * scale;
                }
                sw[r * LDS + col] = p;
                ow[r * LDS + col] = ds;
            }
            __syncwarp();
            tc::frag_a pf[TC_BC / 8], dsf[TC_BC / 8];
            load_probs(pf, sw);
            load_probs(dsf, ow);
            __syncwarp();  // ow becomes the staging tile
            accumulate<HD>(dva, pf, dos, ow, r, half);
            accumulate<HD>(dka, dsf, qs, ow, r, half);
        }
    }
    if (!active) return;
    const size_t off = (row0 + j) * kw + (size_t)kvh * HD + half * HALF;
#pragma unroll
    for (int i = 0; i < HALF; i++) {
        dk[off + i] = dka[i];
        dv[off + i] = dva[i] + dv_x[off + i];
    }
#endif
}

#define ATTENTION_TC_ENTRY(HD)                                                                 \
    extern "C" __global__ void __launch_bounds__(TC_WARPS * 32) attention_tc_hd##HD(           \
        const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,  \
        float* __restrict__ out, int seq, int heads, int kv_heads, int xsa) {                  \
        attention_tc_impl<HD>(q, k, v, out, nullptr, seq, heads, kv_heads, xsa);               \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(TC_WARPS * 32) attention_tc_stats_hd##HD(     \
        const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,  \
        float* __restrict__ out, float* __restrict__ lse, int seq, int heads, int kv_heads) {  \
        attention_tc_impl<HD>(q, k, v, out, lse, seq, heads, kv_heads, 0);                     \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(TC_WARPS * 32) attention_tc_bwd_dq_hd##HD(    \
        const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,  \
        const float* __restrict__ dout, const float* __restrict__ lse,                         \
        const float* __restrict__ dsum, float* __restrict__ dq, int seq, int heads,            \
        int kv_heads) {                                                                        \
        attention_tc_bwd_dq_impl<HD>(q, k, v, dout, lse, dsum, dq, seq, heads, kv_heads);      \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(TC_WARPS * 32) attention_tc_bwd_dkv_hd##HD(   \
        const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,  \
        const float* __restrict__ dout, const float* __restrict__ lse,                         \
        const float* __restrict__ dsum, const float* __restrict__ dv_x, float* __restrict__ dk, \
        float* __restrict__ dv, int seq, int heads, int kv_heads) {                            \
        attention_tc_bwd_dkv_impl<HD>(q, k, v, dout, lse, dsum, dv_x, dk, dv, seq, heads,      \
                                      kv_heads);                                               \
    }

ATTENTION_TC_ENTRY(32)
ATTENTION_TC_ENTRY(64)
