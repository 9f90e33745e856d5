// Per-head RMSNorm, rotary embedding and query gain, in place on q [rows, heads*hd] or
// k [rows, kv_heads*hd] (called once for each).
// Reference: runtime/src/backend/cpu/mod.rs (`CpuBackend::qk_norm_rope`),
//            runtime/src/backend/cpu/rope.rs (`RopeTable::apply`), cpu/norm.rs.
//
//   v = head / sqrt(mean(head^2) + eps)
//   for i < half (half = rope_dims/2), pos = row % seq:
//     v[i]        =  v[i]*cos[pos,i] + v[i+half]*sin[pos,i]
//     v[i+half]   = -v[i]*sin[pos,i] + v[i+half]*cos[pos,i]
//   dims past 2*half are left as they are; then v *= gain[head] (when gain != NULL).
//
// cos/sin are the host-built tables ([seq, half] each, f32, same values as the CPU RopeTable).
// Launch: one warp per (row, head); block 128 (4 warps), grid ceil(rows*heads / 4).
// Each lane owns disjoint rotation pairs, so the update is in place without shared memory.

extern "C" __global__ void qk_norm_rope(float* __restrict__ t, const float* __restrict__ cos_t,
                                        const float* __restrict__ sin_t,
                                        const float* __restrict__ gain, int rows, int heads,
                                        int hd, int seq, int half, float eps) {
    int warp = (int)((blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5);
    int lane = threadIdx.x & 31;
    if (warp >= rows * heads) return;  // whole warp exits together
    int row = warp / heads, h = warp % heads;
    float* v = t + (size_t)row * heads * hd + (size_t)h * hd;
    float ss = 0.0f;
    for (int i = lane; i < hd; i += 32) ss += v[i] * v[i];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    float inv = 1.0f / sqrtf(ss / (float)hd + eps);
    float g = gain ? gain[h] : 1.0f;
    int pos = row % seq;
    const float* c = cos_t + (size_t)pos * half;
    const float* s = sin_t + (size_t)pos * half;
    for (int i = lane; i < half; i += 32) {
        float x1 = v[i] * inv, x2 = v[i + half] * inv;
        v[i] = (x1 * c[i] + x2 * s[i]) * g;
        v[i + half] = (-x1 * s[i] + x2 * c[i]) * g;
    }
    for (int i = 2 * half + lane; i < hd; i += 32) v[i] = v[i] * inv * g;
}
