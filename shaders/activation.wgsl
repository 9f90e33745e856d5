// MLP activation, element-wise: a = relu(v) (kind 0) or leaky_relu(v, slope) (kind 1); out = a².
// One invocation per element; 2-D dispatch, flattened.

struct Params {
    n: u32,
    kind: u32,
    slope: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    if i >= p.n {
        return;
    }
    let v = h[i];
    var a = max(v, 0.0);
    if p.kind == 1u {
        a = select(p.slope * v, v, v >= 0.0);
    }
    out[i] = a * a;
}
