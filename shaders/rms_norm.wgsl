// Parameter-free RMSNorm per row: out = x / sqrt(mean(x²) + eps) * scale.
// One 256-invocation workgroup per row (2-D dispatch, flattened); tree reduction in
// workgroup memory.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = wid.y * nwg.x + wid.x;
    if r >= p.rows {
        return;
    }
    let base = r * p.cols;
    var s = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        let v = x[base + c];
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
    let inv = p.scale / sqrt(red[0] / f32(max(p.cols, 1u)) + p.eps);
    for (var c = lid; c < p.cols; c += WG) {
        out[base + c] = x[base + c] * inv;
    }
}
