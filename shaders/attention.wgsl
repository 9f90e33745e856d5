// Causal grouped-query attention, one pass with an online softmax (flash-attention style): the
// T×T score matrix never exists. q [B*T, H*HD], k/v [B*T, Hkv*HD], out [B*T, H*HD];
// query head h reads KV head h / (H / Hkv); softmax scale 1/sqrt(HD) (passed as `scale`).
// With xsa != 0 each output row loses its component along the token's own normalised value
// vector: y -= (y·v̂) v̂, v̂ = v / max(|v|, 1e-12).
//
// Tiling: a 64-invocation workgroup owns BQ = 64 consecutive queries of one (window, head), one
// query per invocation (q row and accumulator in registers, as vec4s). Keys/values stream
// through workgroup memory BK = 16 at a time, only up to the block's last query (causal). Per
// tile each invocation computes its 16 scores four at a time, rescales its running max, sum and
// accumulator once, then accumulates. Dispatch: (ceil(T / BQ), H, B).
//
// Rows are handled as vec4s on purpose: llvmpipe/lavapipe caps the iterations of a loop nest at
// 65535 (one counter per outermost loop, shared by the nested loops) and silently exits the
// loop past it; with vec4s one key costs ~10 nested iterations, so windows up to ~6000 tokens
// stay under the cap.
// HD (a multiple of 4) is a compile-time constant: the host rewrites the line below.
const HD: u32 = 64u;
const HD4: u32 = HD / 4u;

struct Params {
    seq: u32,
    heads: u32,
    kv_heads: u32,
    xsa: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;

const BQ: u32 = 64u;
const BK: u32 = 16u;
const NEG: f32 = -1e30;

// Key/value tiles: key jj, chunk c at jj * HD4 + c.
var<workgroup> ks: array<vec4<f32>, BK * HD4>;
var<workgroup> vs: array<vec4<f32>, BK * HD4>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let blk = wid.x;
    let h = wid.y;
    let b = wid.z;
    let kvh = h / (p.heads / p.kv_heads);
    // Row widths in vec4s.
    let qw = p.heads * HD4;
    let kw = p.kv_heads * HD4;
    let t = blk * BQ + lid;
    let tq = min(t, p.seq - 1u);
    let qbase = (b * p.seq + tq) * qw + h * HD4;
    let kbase = b * p.seq * kw + kvh * HD4;

    var qv: array<vec4<f32>, HD4>;
    var acc: array<vec4<f32>, HD4>;
    for (var c = 0u; c < HD4; c++) {
        qv[c] = q[qbase + c];
        acc[c] = vec4<f32>(0.0);
    }
    var m = NEG;
    var l = 0.0;
    let last = min(blk * BQ + BQ, p.seq);
    for (var j0 = 0u; j0 < last; j0 += BK) {
        for (var e = lid; e < BK * HD4; e += BQ) {
            let j = j0 + e / HD4;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if j < p.seq {
                kv = k[kbase + j * kw + e % HD4];
                vv = v[kbase + j * kw + e % HD4];
            }
            ks[e] = kv;
            vs[e] = vv;
        }
        workgroupBarrier();
        var sc: array<vec4<f32>, 4>;
        var ok: array<vec4<bool>, 4>;
        var mx = m;
        for (var g = 0u; g < BK / 4u; g++) {
            let r = 4u * g * HD4;
            var s4 = vec4<f32>(0.0);
            for (var c = 0u; c < HD4; c++) {
                let qc = qv[c];
                s4 += vec4<f32>(
                    dot(qc, ks[r + c]),
                    dot(qc, ks[r + HD4 + c]),
                    dot(qc, ks[r + 2u * HD4 + c]),
                    dot(qc, ks[r + 3u * HD4 + c]),
                );
            }
            let jb = j0 + 4u * g;
            let valid = vec4<u32>(jb, jb + 1u, jb + 2u, jb + 3u) <= vec4<u32>(tq);
            let s = select(vec4<f32>(NEG), s4 * p.scale, valid);
            sc[g] = s;
            ok[g] = valid;
            mx = max(mx, max(max(s.x, s.y), max(s.z, s.w)));
        }
        let corr = exp(max(m - mx, -100.0));
        l = l * corr;
        for (var c = 0u; c < HD4; c++) {
            acc[c] = acc[c] * corr;
        }
        for (var g = 0u; g < BK / 4u; g++) {
            let r = 4u * g * HD4;
            let p4 = select(vec4<f32>(0.0), exp(max(sc[g] - mx, vec4<f32>(-100.0))), ok[g]);
            l = l + (p4.x + p4.y) + (p4.z + p4.w);
            for (var c = 0u; c < HD4; c++) {
                acc[c] = fma(vec4<f32>(p4.x), vs[r + c], acc[c]);
                acc[c] = fma(vec4<f32>(p4.y), vs[r + HD4 + c], acc[c]);
                acc[c] = fma(vec4<f32>(p4.z), vs[r + 2u * HD4 + c], acc[c]);
                acc[c] = fma(vec4<f32>(p4.w), vs[r + 3u * HD4 + c], acc[c]);
            }
        }
        m = mx;
        workgroupBarrier();
    }
    let inv = 1.0 / l;
    for (var c = 0u; c < HD4; c++) {
        acc[c] = acc[c] * inv;
    }
    if p.xsa != 0u {
        let vbase = (b * p.seq + tq) * kw + kvh * HD4;
        var n2 = 0.0;
        for (var c = 0u; c < HD4; c++) {
            let x = v[vbase + c];
            n2 = n2 + dot(x, x);
        }
        let nrm = max(sqrt(n2), 1e-12);
        var d = 0.0;
        for (var c = 0u; c < HD4; c++) {
            d = d + dot(acc[c], v[vbase + c] / nrm);
        }
        for (var c = 0u; c < HD4; c++) {
            acc[c] = acc[c] - d * (v[vbase + c] / nrm);
        }
    }
    if t < p.seq {
        let obase = (b * p.seq + t) * qw + h * HD4;
        for (var c = 0u; c < HD4; c++) {
            out[obase + c] = acc[c];
        }
    }
}
