// SmearGate: out_t = (1 - g) * x_t + g * x_{t-1} per window of `seq` rows, g = sigmoid(gate[c]),
// x_{-1} = 0 at the first row of each window. One invocation per element; 2-D dispatch.

struct Params {
    n: u32,
    cols: u32,
    seq: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gate: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

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
    let r = i / p.cols;
    let c = i % p.cols;
    let g = 1.0 / (1.0 + exp(-gate[c]));
    var v = (1.0 - g) * x[i];
    if r % p.seq != 0u {
        v = v + g * x[i - p.cols];
    }
    out[i] = v;
}
