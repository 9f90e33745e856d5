// out = x · wᵀ with x [m, k] (starting at element x_off) and w [n, k] (nn.Linear layout), out [m, n].
// With softcap c > 0 the epilogue applies the logit soft-cap c·tanh(z / c).
//
// Tiling: a 16×16 workgroup computes a 64×64 output tile, each invocation a 4×4 register block
// (rows ly + 16i, cols lx + 16j, strided so workgroup-memory reads do not conflict). K advances
// in steps of 16: both operands are read along k (contiguous in memory for x and w), staged
// transposed in workgroup memory ([BK][64] each, 8 KiB in total). Edges are zero-filled, so any
// m, n, k work. Dispatch: (ceil(n / 64), ceil(m / 64), 1).

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
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> xs: array<f32, 1024>;
var<workgroup> ws: array<f32, 1024>;

// tanh as the CPU oracle computes it: odd Taylor series near 0, 1 - 2/(e^{2x}+1) elsewhere.
fn tanh_f(v: f32) -> f32 {
    let v2 = v * v;
    if abs(v) < 0.1 {
        return v * (1.0 + v2 * (-1.0 / 3.0 + v2 * (2.0 / 15.0 + v2 * (-17.0 / 315.0))));
    }
    return 1.0 - 2.0 / (exp(min(2.0 * v, 88.0)) + 1.0);
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    // acc[i][j]: row ly + 16i, column lx + 16j. The 4×4 block is written out by hand: llvmpipe
    // (lavapipe) caps a loop nest at 65535 iterations, so the K loop must stay shallow.
    var acc: array<vec4<f32>, 4>;
    acc[0] = vec4<f32>(0.0);
    acc[1] = vec4<f32>(0.0);
    acc[2] = vec4<f32>(0.0);
    acc[3] = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var e = 0u; e < 4u; e++) {
            let idx = li + e * 256u;
            let r = idx / BK;
            let kk = idx % BK;
            let gk = k0 + kk;
            let gr = row0 + r;
            var xv = 0.0;
            if gr < p.m && gk < p.k {
                xv = x[p.x_off + gr * p.k + gk];
            }
            xs[kk * BM + r] = xv;
            let gc = col0 + r;
            var wv = 0.0;
            if gc < p.n && gk < p.k {
                wv = w[gc * p.k + gk];
            }
            ws[kk * BN + r] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let xa = kk * BM + lid.y;
            let wb = kk * BN + lid.x;
            let b = vec4<f32>(ws[wb], ws[wb + 16u], ws[wb + 32u], ws[wb + 48u]);
            acc[0] = fma(vec4<f32>(xs[xa]), b, acc[0]);
            acc[1] = fma(vec4<f32>(xs[xa + 16u]), b, acc[1]);
            acc[2] = fma(vec4<f32>(xs[xa + 32u]), b, acc[2]);
            acc[3] = fma(vec4<f32>(xs[xa + 48u]), b, acc[3]);
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let gr = row0 + lid.y + 16u * i;
        if gr >= p.m {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let gc = col0 + lid.x + 16u * j;
            if gc < p.n {
                var v = acc[i][j];
                if p.softcap > 0.0 {
                    v = p.softcap * tanh_f(v * (1.0 / p.softcap));
                }
                out[gr * p.n + gc] = v;
            }
        }
    }
}
