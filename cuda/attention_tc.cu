// Causal grouped-query attention on tensor cores: the flash algorithm of attention.cu (online
// softmax over key tiles, no [T, T] matrix anywhere) with both products of a key tile,
// S = q·kᵀ and O += p·v, as m16n16k8 TF32 tensor-core MMAs (fp32 accumulate; `tc::` below). Used in the backend's
// TF32 math mode (PGOLF_CUDA_TF32=1) on sm_80 and newer, for the head dims listed below.
// Reference: runtime/src/backend/cpu/attention.rs (`attention`), XSA included. It differs from
// the reference (and from attention.cu, which is exact fp32) only by rounding q, k, p and v to
// TF32 (10-bit mantissa, cvt.rna) before each product: ~1e-3 relative on the output.
//
// Layout as attention.cu: q [B*T, H*HD], k/v [B*T, Hkv*HD], out [B*T, H*HD], row-major,
// kv head = h / (H/Hkv). Launch: grid (ceil(T/TC_BR), H, B), block TC_WARPS * 32 threads
// (ops.rs ATTN_TC_* must match). Warp w owns query rows [tile*64 + 16w, +16).
//
// Per key tile of TC_BC keys (K and V staged in shared memory by the whole block):
// 1. the warp computes its 16 x TC_BC scores with MMAs into its shared tile `ss`;
// 2. lanes 2r and 2r+1 own query row r: each takes half the tile's columns, they combine the
//    row max and sum with one shuffle, write p = exp(s - m) back over the scores, and rescale
//    their half of the row's HD outputs, which they keep in registers (acc);
// 3. the warp multiplies p·v with MMAs into its staging tile `os`, and each lane adds its half
//    row from there into acc.
// The fragments' layout across lanes is opaque, which is why the softmax and the accumulator work on
// shared-memory copies of the tiles instead of on fragments.
// Shared memory: (2·BC·(HD+PAD) + WARPS·16·(BC+PAD) + WARPS·16·(HD+PAD)) floats: 43 KiB at
// HD 64 (ops.rs checks ≤ 48 KiB for every instantiated HD).

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
// Row padding: keeps every wmma pointer 32-byte aligned and ldm a multiple of 4 floats, and
// shifts consecutive rows across shared-memory banks.
#define TC_PAD 4

template <int HD>
__device__ __forceinline__ void attention_tc_impl(const float* __restrict__ q,
                                                  const float* __restrict__ k,
                                                  const float* __restrict__ v,
                                                  float* __restrict__ out, int seq, int heads,
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

    // q of the warp's 16 rows (zero past the sequence), as TF32 fragments held for all tiles.
    for (int e = lane; e < 16 * HD; e += 32) {
        const int rr = e / HD, d = e % HD;
        ow[rr * LDK + d] = q0 + rr < seq ? q[(row0 + q0 + rr) * qw + (size_t)h * HD + d] : 0.0f;
    }
    __syncwarp();
    tc::frag_a qf[HD / 8];
#pragma unroll
    for (int kk = 0; kk < HD / 8; kk++) {
        tc::load(qf[kk], ow + kk * 8, LDK);
        tc::to_tf32(qf[kk]);
    }
    __syncwarp();

    float acc[HALF];
#pragma unroll
    for (int i = 0; i < HALF; i++) acc[i] = 0.0f;
    float m = NEG_INF, l = 0.0f;
    const int kend = min(seq, (tile + 1) * TC_BR);  // keys 0..kend-1 are visible to this tile
    for (int j0 = 0; j0 < kend; j0 += TC_BC) {
        const int nk = min(TC_BC, kend - j0);
        __syncthreads();
        // Keys past nk are zero: the products read whole tiles, and 0·0 keeps them finite.
        for (int e = threadIdx.x; e < TC_BC * HD; e += blockDim.x) {
            const int jj = e / HD, d = e % HD;
            float kv = 0.0f, vv = 0.0f;
            if (jj < nk) {
                const size_t src = (row0 + j0 + jj) * kw + (size_t)kvh * HD + d;
                kv = k[src];
                vv = v[src];
            }
            ks[jj * LDK + d] = kv;
            vs[jj * LDK + d] = vv;
        }
        __syncthreads();
        // Warp-uniform: no key of this tile is visible to any of the warp's rows.
        if (q0 >= seq || j0 > qlast) continue;

        // 1. s = q·kᵀ (kᵀ read as a column-major view of the k tile).
#pragma unroll
        for (int nb = 0; nb < TC_BC / 16; nb++) {
            tc::frag_c sf;
            tc::fill(sf, 0.0f);
#pragma unroll
            for (int kk = 0; kk < HD / 8; kk++) {
                tc::frag_b_col kf;
                tc::load(kf, ks + nb * 16 * LDK + kk * 8, LDK);
                tc::to_tf32(kf);
                tc::mma(sf, qf[kk], kf, sf);
            }
            tc::store(sw + nb * 16, sf, LDS);
        }
        __syncwarp();

        // 2. Online softmax on this lane's half of row r (causal: key j visible iff j <= t).
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

        // 3. o_tile = p·v into the staging tile, then acc += this lane's half row of it.
        tc::frag_a pf[TC_BC / 8];
#pragma unroll
        for (int kk = 0; kk < TC_BC / 8; kk++) {
            tc::load(pf[kk], sw + kk * 8, LDS);
            tc::to_tf32(pf[kk]);
        }
#pragma unroll
        for (int db = 0; db < HD / 16; db++) {
            tc::frag_c of;
            tc::fill(of, 0.0f);
#pragma unroll
            for (int kk = 0; kk < TC_BC / 8; kk++) {
                tc::frag_b_row vf;
                tc::load(vf, vs + kk * 8 * LDK + db * 16, LDK);
                tc::to_tf32(vf);
                tc::mma(of, pf[kk], vf, of);
            }
            tc::store(ow + db * 16, of, LDK);
        }
        __syncwarp();
#pragma unroll
        for (int i = 0; i < HALF; i++) acc[i] += ow[r * LDK + half * HALF + i];
        __syncwarp();  // ss and os are overwritten by the next tile
    }

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

#define ATTENTION_TC_ENTRY(HD)                                                                \
    extern "C" __global__ void __launch_bounds__(TC_WARPS * 32) attention_tc_hd##HD(          \
        const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, \
        float* __restrict__ out, int seq, int heads, int kv_heads, int xsa) {                 \
        attention_tc_impl<HD>(q, k, v, out, seq, heads, kv_heads, xsa);                       \
    }

ATTENTION_TC_ENTRY(32)
ATTENTION_TC_ENTRY(64)
