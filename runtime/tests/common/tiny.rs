//! A tiny random model (2 layers, d 16, 4 heads / 2 KV heads, vocab 32) for CPU tests of the
//! training and TTT paths: seeded, so every test sees the same weights for the same seed.

use pgolf_rt::model::{ConfigOverrides, ModelWeights};
use pgolf_rt::train::lora::SplitMix64;

pub const V: usize = 32;
pub const D: usize = 16;
pub const KV: usize = 8;
pub const HID: usize = 32;

pub fn tiny_tensors(seed: u64, untied: bool) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut r = SplitMix64(seed);
    let mut u = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * r.next_f32()).collect()
    };
    let mut t = vec![
        (
            "tok_emb.weight".to_string(),
            vec![V, D],
            u(V * D, -1.0, 1.0),
        ),
        ("skip_weights".to_string(), vec![1, D], u(D, 0.5, 1.5)),
    ];
    if untied {
        t.push(("lm_head.weight".into(), vec![V, D], u(V * D, -1.0, 1.0)));
    }
    for i in 0..2 {
        let p = format!("blocks.{i}.");
        let mut mix = u(D, 0.5, 1.5);
        mix.extend(u(D, -0.5, 0.5));
        t.extend([
            (
                format!("{p}attn.c_q.weight"),
                vec![D, D],
                u(D * D, -0.5, 0.5),
            ),
            (
                format!("{p}attn.c_k.weight"),
                vec![KV, D],
                u(KV * D, -0.5, 0.5),
            ),
            (
                format!("{p}attn.c_v.weight"),
                vec![KV, D],
                u(KV * D, -0.5, 0.5),
            ),
            (
                format!("{p}attn.proj.weight"),
                vec![D, D],
                u(D * D, -0.3, 0.3),
            ),
            (format!("{p}attn.q_gain"), vec![4], u(4, 1.0, 2.0)),
            (
                format!("{p}mlp.fc.weight"),
                vec![HID, D],
                u(HID * D, -0.5, 0.5),
            ),
            (
                format!("{p}mlp.proj.weight"),
                vec![D, HID],
                u(D * HID, -0.3, 0.3),
            ),
            (format!("{p}attn_scale"), vec![D], u(D, 0.5, 1.5)),
            (format!("{p}mlp_scale"), vec![D], u(D, 0.5, 1.5)),
            (format!("{p}resid_mix"), vec![2, D], mix),
        ]);
    }
    t
}

pub fn tiny(seed: u64, untied: bool, ov: &ConfigOverrides) -> ModelWeights {
    ModelWeights::from_tensors(tiny_tensors(seed, untied), ov).expect("tiny model")
}
