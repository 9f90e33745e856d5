//! `--ttt-batch-docs`: documents advancing together in one batched forward/backward give the
//! same per-target scores as one document at a time, padding after a window's real tokens
//! changes nothing, and the mixer still receives every target once, in stream order.

mod common;

use common::tiny::{tiny, V};
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::data::BOS_ID;
use pgolf_rt::eval::mixer::MixerConfig;
use pgolf_rt::eval::ttt::lora_ttt_into;
use pgolf_rt::eval::{eval_lora_ttt_mixed, StreamScorer, TttConfig};
use pgolf_rt::model::ConfigOverrides;
use pgolf_rt::tokenizer::ByteLut;
use pgolf_rt::train::lora::SplitMix64;
use pgolf_rt::train::{Lora, LoraTargets, TrainModel};

fn lut() -> ByteLut {
    common::tiny::tiny_lut()
}

fn docs_stream(seed: u64, lens: &[usize]) -> Vec<u32> {
    let mut r = SplitMix64(seed);
    let mut s = Vec::new();
    for &len in lens {
        s.push(BOS_ID);
        s.extend((1..len).map(|_| 2 + (r.next_u64() % 6) as u32));
    }
    s
}

fn model(seed: u64) -> TrainModel<CpuBackend> {
    TrainModel::new(
        CpuBackend::new(),
        &tiny(seed, false, &ConfigOverrides::default()),
    )
    .unwrap()
}

fn cfg(batch_docs: usize) -> TttConfig {
    let mut c = TttConfig {
        chunk: 8,
        window: 24,
        batch_docs,
        ..TttConfig::default()
    };
    c.optimizer.lr = 0.05;
    c
}

fn recorded(m: &TrainModel<CpuBackend>, s: &[u32], c: &TttConfig) -> Vec<(usize, f64)> {
    let lut = lut();
    let mut sink = StreamScorer::new(s, &lut, V, None).unwrap().recording();
    lora_ttt_into(m, s, c, &mut sink, None).unwrap();
    sink.recorded().to_vec()
}

fn assert_same(a: &[(usize, f64)], b: &[(usize, f64)]) {
    assert_close(a, b, 1e-5)
}

fn assert_close(a: &[(usize, f64)], b: &[(usize, f64)], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (&(t, x), &(u, y)) in a.iter().zip(b) {
        assert_eq!(t, u);
        assert!((x - y).abs() < tol, "target {t}: {x} vs {y}");
    }
}

const LENS: [usize; 7] = [40, 9, 70, 25, 2, 57, 33];

#[test]
fn batch_of_four_matches_one_at_a_time() {
    let m = model(41);
    let s = docs_stream(1, &LENS);
    let one = recorded(&m, &s, &cfg(1));
    // Documents span to the next BOS inclusive (spec 1.3): every token but the first is a target.
    assert_eq!(one.len(), LENS.iter().sum::<usize>() - 1);
    let four = recorded(&m, &s, &cfg(4));
    assert_same(&one, &four);
    // Adaptation did happen: the scores differ from lr 0.
    let mut frozen = cfg(1);
    frozen.optimizer.lr = 0.0;
    let plain = recorded(&m, &s, &frozen);
    assert!(one
        .iter()
        .zip(&plain)
        .any(|(a, b)| (a.1 - b.1).abs() > 1e-3));
}

#[test]
fn batched_replay_epochs_and_min_length_match() {
    let m = model(42);
    let s = docs_stream(2, &LENS);
    let mut c1 = cfg(1);
    c1.epochs = 2;
    c1.replay_scored = true;
    c1.min_doc_len = 30;
    c1.optimizer.lr = 0.01;
    let mut c3 = c1.clone();
    c3.batch_docs = 3;
    // The differently shaped forward rounds differently (~1e-6 before any step); two epochs of
    // Adam replay over every scored chunk amplify that a little.
    assert_close(&recorded(&m, &s, &c1), &recorded(&m, &s, &c3), 1e-4);
}

#[test]
fn mixer_gets_batched_targets_in_stream_order() {
    let m = model(43);
    let s = docs_stream(3, &LENS);
    let lut = lut();
    let mix = MixerConfig::default();
    let run = |c: &TttConfig| {
        let mut sink = StreamScorer::new(&s, &lut, V, Some(&mix))
            .unwrap()
            .recording()
            .checking_normalisation();
        // The scorer refuses a target out of order or twice.
        lora_ttt_into(&m, &s, c, &mut sink, None).unwrap();
        let rec = sink.recorded().to_vec();
        assert!(rec.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(sink.max_sum_error().unwrap() < 1e-5);
        rec
    };
    assert_same(&run(&cfg(1)), &run(&cfg(4)));
    let (r1, m1) = eval_lora_ttt_mixed(&m, &s, &lut, &cfg(1), Some(&mix), None).unwrap();
    let (r4, m4) = eval_lora_ttt_mixed(&m, &s, &lut, &cfg(4), Some(&mix), None).unwrap();
    assert!((r1.val_bpb - r4.val_bpb).abs() < 1e-6);
    let (m1, m4) = (m1.unwrap(), m4.unwrap());
    assert!((m1.result.val_bpb - m4.result.val_bpb).abs() < 1e-6);
}

#[test]
fn padding_after_a_window_does_not_change_its_scores() {
    let m = model(44);
    let cfgm = m.config().clone();
    let mut r = SplitMix64(9);
    let mut adapted = |seed| {
        let mut l = Lora::new(&cfgm, LoraTargets::default(), 4, seed).unwrap();
        for p in l.params_mut() {
            for v in p.iter_mut() {
                *v += 0.05 * (2.0 * r.next_f32() - 1.0);
            }
        }
        l
    };
    let (la, lb) = (adapted(1), adapted(2));
    let short: Vec<u32> = docs_stream(5, &[10]);
    let long: Vec<u32> = docs_stream(6, &[16]);
    let rows: Vec<usize> = (0..9).collect();
    let tgt = &short[1..10];
    // Alone, unpadded.
    let dev = m.upload_lora(&la).unwrap();
    let tape = m.forward(&short[..9], 1, 9, Some(&dev)).unwrap();
    let alone = m.nll(&tape, &rows, tgt, Some(&dev)).unwrap();
    // Second row of a batch of 2 windows of 16, padded with arbitrary tokens.
    for pad in [0u32, 7] {
        let mut ids = long.clone();
        ids.extend_from_slice(&short[..9]);
        ids.extend(std::iter::repeat_n(pad, 7));
        let dev = m.upload_lora_batched(&[&lb, &la], 16).unwrap();
        let tape = m.forward(&ids, 2, 16, Some(&dev)).unwrap();
        let brows: Vec<usize> = rows.iter().map(|r| 16 + r).collect();
        let batched = m.nll(&tape, &brows, tgt, Some(&dev)).unwrap();
        for (a, b) in alone.iter().zip(&batched) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // And the other document's adapters do not leak in: with `la` on both rows the first
        // row's scores change.
        let own = m
            .nll(
                &tape,
                &(0..15).collect::<Vec<_>>(),
                &long[1..16],
                Some(&dev),
            )
            .unwrap();
        let dev2 = m.upload_lora_batched(&[&la, &la], 16).unwrap();
        let tape2 = m.forward(&ids, 2, 16, Some(&dev2)).unwrap();
        let other = m
            .nll(
                &tape2,
                &(0..15).collect::<Vec<_>>(),
                &long[1..16],
                Some(&dev2),
            )
            .unwrap();
        assert!(own.iter().zip(&other).any(|(a, b)| (a - b).abs() > 1e-4));
    }
}
