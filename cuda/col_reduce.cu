// Column reductions of the backward: out[c] = sum over rows r of term(r, c), in fp64, for every
// gradient of a per-column parameter (resid_mix, the attention/MLP scales, q_gain, SmearGate's
// gate) and for `dot`. Parallel and deterministic: the rows are cut into chunks of
// `chunk_rows`; a block reduces 32 columns of one chunk with 8 row lanes (lane j takes rows
// r0 + j, r0 + j + 8, ...), the lanes are added in lane order, and each chunk's sum is kept as
// an fp32 (hi, lo) pair (~48 bits); `col_reduce_finish` then adds a column's chunks in chunk
// order. The result depends only on the shapes, never on timing; it is the serial fp64 sum up to
// fp64 rounding (the fp32 result agrees with the row-order sum of the oracles except, rarely, in
// the last bit).
//
// Terms (`mode`; references in runtime/src/backend/cpu/backward/):
//   0  a[r, c]                                    (a column sum)
//   1  (double)(a[r, c] * b[r, c])                (resid.rs `col_dot`: the product in fp32)
//   2  (double)a[r, c] * (double)b[r, c]          (reduce.rs `dot`: the product in fp64)
//   3  (double)a[r, c] * (double)(prev - b[r, c]) (smear.rs, the gate: a = dy, b = x,
//                                                  prev = b[r - 1, c], 0 at a window's first row)
//
// Launch col_reduce_partial: grid (ceil(cols / 32), chunks), block 256 (32 columns x 8 lanes);
// `partial` holds chunks * cols (hi, lo) pairs. Launch col_reduce_finish: 1-D grid over cols,
// block 256.

extern "C" __global__ void col_reduce_partial(const float* __restrict__ a,
                                              const float* __restrict__ b,
                                              float* __restrict__ partial, int rows, int cols,
                                              int seq, int mode, int chunk_rows) {
    __shared__ double lanes[256];
    int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
    int c = blockIdx.x * 32 + tx;
    long long r0 = (long long)blockIdx.y * chunk_rows;
    long long r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
    double acc = 0.0;
    if (c < cols) {
        for (long long r = r0 + ty; r < r1; r += 8) {
            size_t i = (size_t)r * cols + c;
            if (mode == 0) {
                acc += (double)a[i];
            } else if (mode == 1) {
                acc += (double)(a[i] * b[i]);
            } else if (mode == 2) {
                acc += (double)a[i] * (double)b[i];
            } else {
                float prev = (r % seq == 0) ? 0.0f : b[i - cols];
                acc += (double)a[i] * (double)(prev - b[i]);
            }
        }
    }
    lanes[threadIdx.x] = acc;
    __syncthreads();
    if (ty == 0 && c < cols) {
        double s = 0.0;
        for (int j = 0; j < 8; j++) s += lanes[j * 32 + tx];
        float hi = (float)s;
        size_t p = ((size_t)blockIdx.y * cols + c) * 2;
        partial[p] = hi;
        partial[p + 1] = (float)(s - (double)hi);
    }
}

// out[c] = (float)S, S = the column's chunk sums added in chunk order in fp64; with `gate`
// (SmearGate), S is first multiplied by g (1 - g), g = sigmoid(gate[c]) as the forward rounds
// it; with `lo`, lo[c] = (float)(S - out[c]) carries the next 24 bits. `out` and `lo` may be
// views at an offset.
extern "C" __global__ void col_reduce_finish(const float* __restrict__ partial, int chunks,
                                             int cols, const float* __restrict__ gate,
                                             float* __restrict__ out, float* __restrict__ lo) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    double s = 0.0;
    for (int k = 0; k < chunks; k++) {
        size_t p = ((size_t)k * cols + c) * 2;
        s += (double)partial[p] + (double)partial[p + 1];
    }
    if (gate) {
        double g = (double)(1.0f / (1.0f + expf(-gate[c])));
        s = s * g * (1.0 - g);
    }
    float hi = (float)s;
    out[c] = hi;
    if (lo) lo[c] = (float)(s - (double)hi);
}
