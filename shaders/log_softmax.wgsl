// Log-softmax of soft-capped logits (written by matmul.wgsl with its softcap epilogue), in place:
// logits[r, c] -= logsumexp(logits[r, :]).
// One 256-invocation workgroup per row (2-D dispatch, flattened): max reduction, then a
// sum-of-exp reduction in workgroup memory.

struct Params {
    rows: u32,
    vocab: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;

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
    let base = r * p.vocab;
    var mx = -3.4e38;
    for (var c = lid; c < p.vocab; c += WG) {
        mx = max(mx, logits[base + c]);
    }
    red[lid] = mx;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w = w / 2u) {
        if lid < w {
            red[lid] = max(red[lid], red[lid + w]);
        }
        workgroupBarrier();
    }
    let m = red[0];
    workgroupBarrier();
    var s = 0.0;
    for (var c = lid; c < p.vocab; c += WG) {
        s = s + exp(logits[base + c] - m);
    }
    red[lid] = s;
    workgroupBarrier();
    for (var w = WG / 2u; w > 0u; w = w / 2u) {
        if lid < w {
            red[lid] = red[lid] + red[lid + w];
        }
        workgroupBarrier();
    }
    let lse = m + log(red[0]);
    for (var c = lid; c < p.vocab; c += WG) {
        logits[base + c] = logits[base + c] - lse;
    }
}
