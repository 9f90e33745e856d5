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

// Backward (reference: runtime/src/backend/cpu/backward/rope.rs), given x = q or k *before*
// the op and dc = the gradient of its output; one warp per (row, head) as the forward:
//   a = x * inv (inv = 1/sqrt(mean(x^2) + eps)),  b = rope(a),  c = g * b
//   dgain_rows[row, head] = sum(b ⊙ dc)                 (only when gain != NULL)
//   da = rope^T(g * dc)   (pairs (d1, d2) -> (d1*cos - d2*sin, d1*sin + d2*cos))
//   dx = inv * (da - x * (sum(da ⊙ x) / (hd * (mean(x^2) + eps))))
// The caller sums dgain_rows over rows for the gain's gradient.
extern "C" __global__ void qk_norm_rope_backward(
    const float* __restrict__ x, const float* __restrict__ dc, const float* __restrict__ cos_t,
    const float* __restrict__ sin_t, const float* __restrict__ gain, float* __restrict__ dx,
    float* __restrict__ dgain_rows, int rows, int heads, int hd, int seq, int half, float eps) {
    int warp = (int)((blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5);
    int lane = threadIdx.x & 31;
    if (warp >= rows * heads) return;  // whole warp exits together
    int row = warp / heads, h = warp % heads;
    const size_t off = (size_t)row * heads * hd + (size_t)h * hd;
    const float* xs = x + off;
    const float* ds = dc + off;
    float* out = dx + off;
    float ss = 0.0f;
    for (int i = lane; i < hd; i += 32) ss += xs[i] * xs[i];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const float r2 = ss / (float)hd + eps;
    const float inv = 1.0f / sqrtf(r2);
    const float g = gain ? gain[h] : 1.0f;
    const int pos = row % seq;
    const float* c = cos_t + (size_t)pos * half;
    const float* s = sin_t + (size_t)pos * half;
    float dg = 0.0f, dot = 0.0f;
    // da goes to `out` first; each lane only reads back what it wrote.
    for (int i = lane; i < half; i += 32) {
        const float x1 = xs[i] * inv, x2 = xs[i + half] * inv;
        const float b1 = x1 * c[i] + x2 * s[i], b2 = -x1 * s[i] + x2 * c[i];
        dg += b1 * ds[i] + b2 * ds[i + half];
        const float d1 = g * ds[i], d2 = g * ds[i + half];
        const float a1 = d1 * c[i] - d2 * s[i], a2 = d1 * s[i] + d2 * c[i];
        dot += a1 * xs[i] + a2 * xs[i + half];
        out[i] = a1;
        out[i + half] = a2;
    }
    for (int i = 2 * half + lane; i < hd; i += 32) {
        dg += xs[i] * inv * ds[i];
        const float a = g * ds[i];
        dot += a * xs[i];
        out[i] = a;
    }
    for (int o = 16; o > 0; o >>= 1) {
        dg += __shfl_xor_sync(0xffffffffu, dg, o);
        dot += __shfl_xor_sync(0xffffffffu, dot, o);
    }
    const float k = dot / ((float)hd * r2);
    for (int i = lane; i < half; i += 32) {
        out[i] = inv * (out[i] - xs[i] * k);
        out[i + half] = inv * (out[i + half] - xs[i + half] * k);
    }
    for (int i = 2 * half + lane; i < hd; i += 32) out[i] = inv * (out[i] - xs[i] * k);
    if (gain && lane == 0) dgain_rows[(size_t)row * heads + h] = dg;
}
