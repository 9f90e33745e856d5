//! A tiny random model (2 layers, d 16, 4 heads / 2 KV heads, vocab 32) for CPU tests of the
//! training and TTT paths: seeded, so every test sees the same weights for the same seed.

use pgolf_rt::data::BOS_ID;
use pgolf_rt::model::{ConfigOverrides, ModelWeights};
use pgolf_rt::tokenizer::ByteLut;
use pgolf_rt::train::lora::SplitMix64;

pub const V: usize = 32;
pub const D: usize = 16;
pub const KV: usize = 8;
pub const HID: usize = 32;

/// A byte table for the tiny vocabulary: 1-3 bytes per token, every other token with a leading
/// space, BOS the only boundary.
pub fn tiny_lut() -> ByteLut {
    ByteLut {
        base_bytes: (0..V as u16).map(|i| 1 + i % 3).collect(),
        has_leading_space: (0..V).map(|i| i % 2 == 0).collect(),
        is_boundary: (0..V).map(|i| i == BOS_ID as usize).collect(),
    }
}

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

/// Buckets of the tiny BigramHash table.
pub const BIGRAM_BUCKETS: usize = 8;
/// Width of the tiny value-embedding table.
pub const VE_DIM: usize = 4;

/// The optional modules on top of [`tiny_tensors`]: BigramHash ([`BIGRAM_BUCKETS`] buckets of
/// width `bigram_dim`, projected when that is not [`D`]), SmearGate, and value embeddings on
/// both layers. Every value is non-zero (unlike the spec's zero inits) so that each gradient
/// path carries signal.
pub fn tiny_module_tensors(seed: u64, bigram_dim: usize) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut r = SplitMix64(seed ^ 0x5eed);
    let mut u = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * r.next_f32()).collect()
    };
    let b = BIGRAM_BUCKETS;
    let mut t = vec![(
        "bigram.embed.weight".to_string(),
        vec![b, bigram_dim],
        u(b * bigram_dim, -1.0, 1.0),
    )];
    if bigram_dim != D {
        t.push((
            "bigram.proj.weight".into(),
            vec![D, bigram_dim],
            u(D * bigram_dim, -0.5, 0.5),
        ));
    }
    t.extend([
        ("bigram.scale".to_string(), vec![], u(1, 0.3, 0.7)),
        ("smear.gate".into(), vec![D], u(D, -1.5, 1.5)),
        (
            "ve_shared.embed.weight".into(),
            vec![V, VE_DIM],
            u(V * VE_DIM, -1.0, 1.0),
        ),
        (
            "ve_shared.proj.weight".into(),
            vec![KV, VE_DIM],
            u(KV * VE_DIM, -0.5, 0.5),
        ),
        ("ve_shared.scale".into(), vec![], u(1, 0.3, 0.7)),
        ("ve_layer_scales.0".into(), vec![1], u(1, 0.5, 1.5)),
        ("ve_layer_scales.1".into(), vec![1], u(1, 0.5, 1.5)),
    ]);
    t
}

/// [`tiny`] with the modules of [`tiny_module_tensors`].
pub fn tiny_with_modules(
    seed: u64,
    untied: bool,
    bigram_dim: usize,
    ov: &ConfigOverrides,
) -> ModelWeights {
    let mut t = tiny_tensors(seed, untied);
    t.extend(tiny_module_tensors(seed, bigram_dim));
    ModelWeights::from_tensors(t, ov).expect("tiny model with modules")
}
