// In place on one [rows, heads * hd] activation (q or k): per-head RMSNorm (no weight), RoPE at
// position row % seq on the first 2 * half dims (pairs (i, i + half), angle table from the host:
// cos/sin [seq, half]), then times gain[head] when use_gain != 0.
// out = [x1·cos + x2·sin, −x1·sin + x2·cos] (the challenge's sign convention).
// One 64-invocation workgroup per (row, head) (2-D dispatch, flattened); hd <= 256.

struct Params {
    rows: u32,
    heads: u32,
    hd: u32,
    seq: u32,
    half: u32,
    use_gain: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> t: array<f32>;
@group(0) @binding(2) var<storage, read> cos_t: array<f32>;
@group(0) @binding(3) var<storage, read> sin_t: array<f32>;
@group(0) @binding(4) var<storage, read> gain: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;
var<workgroup> buf: array<f32, 256>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let idx = wid.y * nwg.x + wid.x;
    if idx >= p.rows * p.heads {
        return;
    }
    let row = idx / p.heads;
    let h = idx % p.heads;
    let base = idx * p.hd;
    var s = 0.0;
    for (var i = lid; i < p.hd; i += WG) {
        let v = t[base + i];
        s = fma(v, v, s);
    }
    red[lid] = s;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w = w / 2u) {
        if lid < w {
            red[lid] = red[lid] + red[lid + w];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(red[0] / f32(p.hd) + p.eps);
    for (var i = lid; i < p.hd; i += WG) {
        buf[i] = t[base + i] * inv;
    }
    workgroupBarrier();
    let pos = row % p.seq;
    var g = 1.0;
    if p.use_gain != 0u {
        g = gain[h];
    }
    for (var i = lid; i < p.hd; i += WG) {
        var v = buf[i];
        if i < p.half {
            let c = cos_t[pos * p.half + i];
            let sn = sin_t[pos * p.half + i];
            v = buf[i] * c + buf[i + p.half] * sn;
        } else if i < 2u * p.half {
            let j = i - p.half;
            let c = cos_t[pos * p.half + j];
            let sn = sin_t[pos * p.half + j];
            v = -buf[j] * sn + buf[i] * c;
        }
        t[base + i] = v * g;
    }
}
