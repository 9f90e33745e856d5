// Row gather: out[i, :] = table[ids[i], :]. Ids are range-checked on the host.
// One invocation per output element; 2-D dispatch, flattened (x fastest).
// `Weight` is f32 here; the backend builds an f16-table variant (embeddings stored as f16) by
// rewriting the alias line and prepending `enable f16;`. The output is always f32.

alias Weight = f32;

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<Weight>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    if i >= p.rows * p.cols {
        return;
    }
    let r = i / p.cols;
    let c = i % p.cols;
    out[i] = f32(table[ids[r] * p.cols + c]);
}
