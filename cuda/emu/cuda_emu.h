// The CUDA built-ins the kernels of cuda/*.cu use, for running them on the host.
//
// cuda-emu compiles each kernel file with a host C++ compiler after this prelude and runs a
// launch block by block, every CUDA thread of a block as a fiber (ucontext) on one OS thread.
// A fiber runs until it reaches __syncthreads, a warp-synchronous intrinsic or its end; the
// scheduler then releases a barrier once every live thread of its scope (block or warp) waits
// on it. So the kernel's own code (indexing, masks, reductions, shared memory, early exits)
// runs as written, deterministically, and a barrier that a GPU would hang on is reported as an
// error instead of hanging.
//
// What it does not model: timing, races between threads (fibers never interleave between
// barriers, so a missing __syncthreads can go unnoticed), the device's float rounding in
// intrinsics (expf, tanhf, ... come from the host's libm, and NVRTC's contraction of a*b+c
// into FMA is not reproduced), warp-divergent shuffles (every live lane of a warp must take
// part, as the kernels here assume with their full masks).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};

// Set by the scheduler before it resumes a fiber (cuda/emu/runtime.cpp).
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

namespace pgolf_emu {
// Parks the running fiber until every live thread of the block waits here too.
void syncthreads();
// Parks the running fiber until every live lane of its warp waits here too.
void syncwarp();
// Warp exchange: publishes `v` for the running lane and returns what `src_lane` published
// (its own value when `src_lane` is not a live lane of the warp).
uint64_t exchange(uint64_t v, int src_lane);
// Lane index of the running fiber within its warp (threads numbered x-fastest).
int lane();
// Number of threads in the running fiber's warp (32, or fewer in a block's last warp).
int warp_width();

template <class T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}
}  // namespace pgolf_emu

// ---- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
// One block runs at a time, so function-local statics are the block's shared memory.
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

// ---- synchronisation
inline void __syncthreads() { pgolf_emu::syncthreads(); }
inline void __syncwarp(unsigned int = 0xffffffffu) { pgolf_emu::syncwarp(); }

template <class T>
inline T __shfl_sync(unsigned int, T v, int src, int width = 32) {
    const int l = pgolf_emu::lane();
    const int base = l - l % width;
    return pgolf_emu::from_bits<T>(pgolf_emu::exchange(pgolf_emu::to_bits(v), base + src % width));
}
template <class T>
inline T __shfl_xor_sync(unsigned int, T v, int mask, int width = 32) {
    const int l = pgolf_emu::lane();
    const int base = l - l % width;
    const int src = base + ((l % width) ^ mask);
    return pgolf_emu::from_bits<T>(pgolf_emu::exchange(pgolf_emu::to_bits(v), src < base + width ? src : l));
}
template <class T>
inline T __shfl_down_sync(unsigned int, T v, unsigned int delta, int width = 32) {
    const int l = pgolf_emu::lane();
    const int in = l % width + (int)delta;
    return pgolf_emu::from_bits<T>(pgolf_emu::exchange(pgolf_emu::to_bits(v), in < width ? l + (int)delta : l));
}
template <class T>
inline T __shfl_up_sync(unsigned int, T v, unsigned int delta, int width = 32) {
    const int l = pgolf_emu::lane();
    const int in = l % width - (int)delta;
    return pgolf_emu::from_bits<T>(pgolf_emu::exchange(pgolf_emu::to_bits(v), in >= 0 ? l - (int)delta : l));
}

// ---- atomics: fibers never interleave inside an expression, so plain updates are atomic.
inline float atomicAdd(float* p, float v) {
    float old = *p;
    *p = old + v;
    return old;
}
inline double atomicAdd(double* p, double v) {
    double old = *p;
    *p = old + v;
    return old;
}
inline int atomicAdd(int* p, int v) {
    int old = *p;
    *p = old + v;
    return old;
}
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {
    unsigned int old = *p;
    *p = old + v;
    return old;
}

// ---- integer min/max and bit casts (CUDA's device overloads)
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float __int_as_float(int i) { return pgolf_emu::from_bits<float>((uint32_t)i); }
inline int __float_as_int(float f) { return (int)(uint32_t)pgolf_emu::to_bits(f); }
inline float __uint_as_float(unsigned int i) { return pgolf_emu::from_bits<float>(i); }
inline unsigned int __float_as_uint(float f) { return (uint32_t)pgolf_emu::to_bits(f); }

// ---- float intrinsics (host libm: see the note at the top)
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

// ---- tensor cores: the `tc::` API of cuda/attention_tc.cu (TF32 wmma m16n16k8)
// A fragment's layout across a warp's lanes is opaque on the GPU, and kernels only touch
// fragment elements uniformly (x[i] for every i < num_elements), so here every lane holds the
// whole tile: loads read all of it, mma computes all of it, stores write all of it (every lane
// the same values). Each of them first waits for the whole warp, as the hardware's *.sync
// instructions do, so shared memory the lanes wrote before is visible to it.
namespace tc {
template <int R, int C, bool RowMajor>
struct tile {
    static constexpr int rows = R, cols = C, num_elements = R * C;
    static constexpr bool row_major = RowMajor;
    float x[R * C];  // row-major, the whole tile
};
using frag_a = tile<16, 8, true>;
using frag_b_row = tile<8, 16, true>;
using frag_b_col = tile<8, 16, false>;
using frag_c = tile<16, 16, true>;

// The tensor cores read only the top 19 bits of a TF32 operand.
inline float tf32_operand(float f) {
    return pgolf_emu::from_bits<float>((uint32_t)pgolf_emu::to_bits(f) & 0xffffe000u);
}
template <class F>
inline void load(F& f, const float* p, unsigned ldm) {
    pgolf_emu::syncwarp();
    for (int i = 0; i < F::rows; i++)
        for (int j = 0; j < F::cols; j++)
            f.x[i * F::cols + j] = F::row_major ? p[i * ldm + j] : p[j * ldm + i];
}
// d = a·b + c, fp32 accumulation in k order.
template <class B>
inline void mma(frag_c& d, const frag_a& a, const B& b, const frag_c& c) {
    pgolf_emu::syncwarp();
    float out[256];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float s = c.x[i * 16 + j];
            for (int k = 0; k < 8; k++) s += tf32_operand(a.x[i * 8 + k]) * tf32_operand(b.x[k * 16 + j]);
            out[i * 16 + j] = s;
        }
    for (int i = 0; i < 256; i++) d.x[i] = out[i];
}
inline void store(float* p, const frag_c& f, unsigned ldm) {
    pgolf_emu::syncwarp();
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) p[i * ldm + j] = f.x[i * 16 + j];
}
template <class F>
inline void fill(F& f, float v) {
    for (float& x : f.x) x = v;
}
// cvt.rna.tf32.f32: round to a 10-bit mantissa, ties away from zero.
template <class F>
inline void to_tf32(F& f) {
    for (float& x : f.x) {
        uint32_t u = (uint32_t)pgolf_emu::to_bits(x);
        if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
        x = pgolf_emu::from_bits<float>(u);
    }
}
}  // namespace tc
