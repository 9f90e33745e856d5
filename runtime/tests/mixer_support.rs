//! Shared by the mixer and audit tests (included with `#[path]`): a tiny random model and helpers.
#![allow(dead_code)]

use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::model::{ConfigOverrides, DeviceModel, ModelWeights};
use pgolf_rt::tokenizer::ByteLut;

pub const VOCAB: usize = 64;

/// splitmix64.
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-a, a).
    pub fn uniform(&mut self, a: f32) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// 2 layers, d = 32, 4 heads / 2 KV heads of 8, MLP 64, vocab 64, tied head; random weights.
pub fn tiny_model(seed: u64) -> DeviceModel<CpuBackend> {
    let (d, kv, hid, v, layers) = (32usize, 16usize, 64usize, VOCAB, 2usize);
    let mut rng = Rng(seed);
    let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut mat = |rng: &mut Rng, name: String, r: usize, c: usize, a: f32| {
        let data = (0..r * c).map(|_| rng.uniform(a)).collect();
        t.push((name, vec![r, c], data));
    };
    mat(&mut rng, "tok_emb.weight".into(), v, d, 0.6);
    for i in 0..layers {
        let p = format!("blocks.{i}.");
        let s = 1.0 / (d as f32).sqrt();
        mat(&mut rng, format!("{p}attn.c_q.weight"), d, d, 2.0 * s);
        mat(&mut rng, format!("{p}attn.c_k.weight"), kv, d, 2.0 * s);
        mat(&mut rng, format!("{p}attn.c_v.weight"), kv, d, 2.0 * s);
        mat(&mut rng, format!("{p}attn.proj.weight"), d, d, s);
        mat(&mut rng, format!("{p}mlp.fc.weight"), hid, d, s);
        mat(
            &mut rng,
            format!("{p}mlp.proj.weight"),
            d,
            hid,
            1.0 / (hid as f32).sqrt(),
        );
    }
    for i in 0..layers {
        let p = format!("blocks.{i}.");
        t.push((format!("{p}attn.q_gain"), vec![4], vec![1.5; 4]));
        t.push((format!("{p}attn_scale"), vec![d], vec![1.0; d]));
        t.push((format!("{p}mlp_scale"), vec![d], vec![1.0; d]));
        let mut rm = vec![1.0; d];
        rm.extend(vec![0.0; d]);
        t.push((format!("{p}resid_mix"), vec![2, d], rm));
    }
    t.push(("skip_weights".into(), vec![1, d], vec![1.0; d]));
    let w = ModelWeights::from_tensors(t, &ConfigOverrides::default()).expect("tiny weights");
    DeviceModel::new(CpuBackend::new(), &w).expect("upload")
}

/// Every token is one byte.
pub fn one_byte_lut() -> ByteLut {
    ByteLut {
        base_bytes: vec![1; VOCAB],
        has_leading_space: vec![false; VOCAB],
        is_boundary: vec![false; VOCAB],
    }
}

pub fn random_stream(n: usize, seed: u64) -> Vec<u32> {
    let mut r = Rng(seed);
    (0..n).map(|_| r.below(VOCAB) as u32).collect()
}

/// A random phrase of `period` tokens repeated to length `n`.
pub fn repetitive_stream(n: usize, period: usize, seed: u64) -> Vec<u32> {
    let phrase = random_stream(period, seed);
    (0..n).map(|i| phrase[i % period]).collect()
}

/// A stream in which every token has exactly one successor (a random cyclic permutation of the
/// vocabulary): the bigram expert becomes perfect after one cycle.
pub fn permutation_cycle_stream(n: usize, seed: u64) -> Vec<u32> {
    let mut r = Rng(seed);
    let mut order: Vec<u32> = (0..VOCAB as u32).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, r.below(i + 1));
    }
    (0..n).map(|i| order[i % VOCAB]).collect()
}
