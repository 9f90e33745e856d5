// out = x · wᵀ with x [m, k] (starting at element x_off) and w [n, k] (nn.Linear layout), out [m, n].
// With softcap c > 0 the epilogue applies the logit soft-cap c·tanh(z / c).
//
// Tiling: an 8×8 workgroup computes a 64×64 output tile, each invocation an 8×8 register block:
// rows 4·ty + {0..3} and 32 + 4·ty + {0..3}, columns 4·tx + {0..3} and 32 + 4·tx + {0..3}, so
// its operands are two vec4s of each tile per k. K advances in steps of 16: both operands are
// read along k (contiguous in memory for x and w; consecutive invocations read consecutive k)
// and staged transposed in workgroup memory as vec4s of 4 rows ([BK][16 + 1 pad] vec4s each,
// ~8.5 KiB in total). Per k step an invocation does 4 vec4 workgroup loads for 64 FMAs, which
// is what makes it fast on lavapipe (llvmpipe), where every memory access costs a per-lane
// gather: 8× the FMAs per load of a 4×4 block. Edges are zero-filled, so any m, n, k work.
// Dispatch: (ceil(n / 64), ceil(m / 64), 1).
//
// The 16 accumulators are separate variables, and the inner k step is written out, on purpose:
// llvmpipe caps a loop nest at 65535 iterations (one counter per outermost loop, shared by the
// loops nested in it), so the K loop must stay shallow (33 iterations per 16-wide K step), and
// an accumulator array indexed dynamically would live in memory instead of registers.
//
// Weight storage: `Weight` is f32 here; the backend builds an f16 variant (weights stored as f16,
// read and accumulated in f32) by rewriting the alias line and prepending `enable f16;`.

alias Weight = f32;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    x_off: u32,
    softcap: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<Weight>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
// vec4s per staged k row (16 of data, one of padding against bank conflicts on the stores).
const RS: u32 = 17u;

var<workgroup> xs: array<vec4<f32>, 272>;
var<workgroup> ws: array<vec4<f32>, 272>;

// tanh as the CPU oracle computes it: odd Taylor series near 0, 1 - 2/(e^{2x}+1) elsewhere.
fn tanh_f(v: f32) -> f32 {
    let v2 = v * v;
    if abs(v) < 0.1 {
        return v * (1.0 + v2 * (-1.0 / 3.0 + v2 * (2.0 / 15.0 + v2 * (-17.0 / 315.0))));
    }
    return 1.0 - 2.0 / (exp(min(2.0 * v, 88.0)) + 1.0);
}

// Writes columns gc..gc+3 of row gr (what is inside the matrix), soft-capped if asked.
fn store4(gr: u32, gc: u32, v: vec4<f32>) {
    if gr >= p.m {
        return;
    }
    var r = v;
    if p.softcap > 0.0 {
        let c = p.softcap;
        let ic = 1.0 / c;
        r = vec4<f32>(
            c * tanh_f(v.x * ic),
            c * tanh_f(v.y * ic),
            c * tanh_f(v.z * ic),
            c * tanh_f(v.w * ic),
        );
    }
    let o = gr * p.n + gc;
    if gc < p.n {
        out[o] = r.x;
    }
    if gc + 1u < p.n {
        out[o + 1u] = r.y;
    }
    if gc + 2u < p.n {
        out[o + 2u] = r.z;
    }
    if gc + 3u < p.n {
        out[o + 3u] = r.w;
    }
}

@compute @workgroup_size(8, 8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let tx = lid.x;
    let ty = lid.y;
    // cIJ: row half I (rows 4·ty + 32·I ..), row i of 4 within it as the component of the vec4
    // chosen below, column half J. a0..a7 are named by row, b by column half.
    var c00 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0);
    var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0);
    var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0);
    var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0);
    var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0);
    var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0);
    var c71 = vec4<f32>(0.0);
    // Staging: element e = li + 64·s of the 64×16 tile is row e / 16, k e % 16.
    let kk = li % BK;
    let rb = li / BK;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        let gk = k0 + kk;
        for (var s = 0u; s < 16u; s++) {
            let r = rb + 4u * s;
            let gr = row0 + r;
            var xv = 0.0;
            if gr < p.m && gk < p.k {
                xv = x[p.x_off + gr * p.k + gk];
            }
            xs[kk * RS + r / 4u][r % 4u] = xv;
            let gc = col0 + r;
            var wv = 0.0;
            if gc < p.n && gk < p.k {
                wv = f32(w[gc * p.k + gk]);
            }
            ws[kk * RS + r / 4u][r % 4u] = wv;
        }
        workgroupBarrier();
        for (var j = 0u; j < BK; j++) {
            let a = xs[j * RS + ty];
            let a2 = xs[j * RS + 8u + ty];
            let b0 = ws[j * RS + tx];
            let b1 = ws[j * RS + 8u + tx];
            c00 = fma(vec4<f32>(a.x), b0, c00);
            c01 = fma(vec4<f32>(a.x), b1, c01);
            c10 = fma(vec4<f32>(a.y), b0, c10);
            c11 = fma(vec4<f32>(a.y), b1, c11);
            c20 = fma(vec4<f32>(a.z), b0, c20);
            c21 = fma(vec4<f32>(a.z), b1, c21);
            c30 = fma(vec4<f32>(a.w), b0, c30);
            c31 = fma(vec4<f32>(a.w), b1, c31);
            c40 = fma(vec4<f32>(a2.x), b0, c40);
            c41 = fma(vec4<f32>(a2.x), b1, c41);
            c50 = fma(vec4<f32>(a2.y), b0, c50);
            c51 = fma(vec4<f32>(a2.y), b1, c51);
            c60 = fma(vec4<f32>(a2.z), b0, c60);
            c61 = fma(vec4<f32>(a2.z), b1, c61);
            c70 = fma(vec4<f32>(a2.w), b0, c70);
            c71 = fma(vec4<f32>(a2.w), b1, c71);
        }
        workgroupBarrier();
    }
    let r0 = row0 + 4u * ty;
    let r1 = r0 + 32u;
    let g0 = col0 + 4u * tx;
    let g1 = g0 + 32u;
    store4(r0, g0, c00);
    store4(r0, g1, c01);
    store4(r0 + 1u, g0, c10);
    store4(r0 + 1u, g1, c11);
    store4(r0 + 2u, g0, c20);
    store4(r0 + 2u, g1, c21);
    store4(r0 + 3u, g0, c30);
    store4(r0 + 3u, g1, c31);
    store4(r1, g0, c40);
    store4(r1, g1, c41);
    store4(r1 + 1u, g0, c50);
    store4(r1 + 1u, g1, c51);
    store4(r1 + 2u, g0, c60);
    store4(r1 + 2u, g1, c61);
    store4(r1 + 3u, g0, c70);
    store4(r1 + 3u, g1, c71);
}
