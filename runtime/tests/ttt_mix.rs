//! The Hedge mixer on top of per-document LoRA TTT on a tiny random model: with the neural
//! expert alone it reproduces the TTT scores, the full mixture sums to 1 at every position, and
//! no score depends on later tokens.

mod common;

use common::tiny::{tiny, V};
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::data::{find_documents, BOS_ID};
use pgolf_rt::eval::mixer::MixerConfig;
use pgolf_rt::eval::ttt::{lora_ttt_into, ttt_document};
use pgolf_rt::eval::{eval_lora_ttt, eval_lora_ttt_mixed, StreamScorer, TttConfig};
use pgolf_rt::model::ConfigOverrides;
use pgolf_rt::tokenizer::ByteLut;
use pgolf_rt::train::lora::SplitMix64;
use pgolf_rt::train::TrainModel;

fn lut() -> ByteLut {
    ByteLut {
        base_bytes: (0..V as u16).map(|i| 1 + i % 3).collect(),
        has_leading_space: (0..V).map(|i| i % 2 == 0).collect(),
        is_boundary: (0..V).map(|i| i == BOS_ID as usize).collect(),
    }
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

fn cfg() -> TttConfig {
    let mut c = TttConfig {
        chunk: 8,
        window: 24,
        ..TttConfig::default()
    };
    c.optimizer.lr = 0.05;
    c
}

fn model(seed: u64) -> TrainModel<CpuBackend> {
    TrainModel::new(
        CpuBackend::new(),
        &tiny(seed, false, &ConfigOverrides::default()),
    )
    .unwrap()
}

fn neural_only() -> MixerConfig {
    MixerConfig {
        prior: [1.0, 0.0, 0.0, 0.0, 0.0],
        enabled: [true, false, false, false, false],
        ..MixerConfig::default()
    }
}

#[test]
fn neural_only_mixer_reproduces_lora_ttt_scores() {
    let m = model(41);
    let s = docs_stream(1, &[40, 9, 70, 25]);
    let lut = lut();
    let c = cfg();
    let mut sink = StreamScorer::new(&s, &lut, V, Some(&neural_only()))
        .unwrap()
        .recording();
    lora_ttt_into(&m, &s, &c, &mut sink, None).unwrap();
    let mut expect = Vec::new();
    for (k, d) in find_documents(&s).iter().enumerate() {
        let nll = ttt_document(&m, &s[d.start..d.start + d.len], &c, k).unwrap();
        expect.extend(nll.iter().enumerate().map(|(j, &v)| (d.start + j, v)));
    }
    let got = sink.recorded();
    assert_eq!(got.len(), expect.len());
    for (&(t, v), &(te, e)) in got.iter().zip(&expect) {
        assert_eq!(t, te);
        assert!(
            (v - e as f64).abs() < 1e-5,
            "target {t}: mixer {v} vs TTT {e}"
        );
    }
    let plain = eval_lora_ttt(&m, &s, &lut, &c, None).unwrap();
    let (mixed, stats) = eval_lora_ttt_mixed(&m, &s, &lut, &c, Some(&neural_only()), None).unwrap();
    assert_eq!(mixed.tokens, plain.tokens);
    assert!((mixed.val_bpb - plain.val_bpb).abs() < 1e-6);
    let stats = stats.unwrap();
    assert!((stats.neural().val_bpb - plain.val_bpb).abs() < 1e-6);
}

#[test]
fn full_mixture_on_lora_ttt_sums_to_one_and_helps_on_a_repetitive_stream() {
    let m = model(42);
    let s = docs_stream(2, &[60, 60, 60, 60]);
    let lut = lut();
    let c = cfg();
    let mut sink = StreamScorer::new(&s, &lut, V, Some(&MixerConfig::default()))
        .unwrap()
        .checking_normalisation();
    lora_ttt_into(&m, &s, &c, &mut sink, None).unwrap();
    let err = sink.max_sum_error().unwrap();
    assert!(err < 1e-9, "mixture sum off by {err}");
    let (r, mixed) = sink.finish();
    let mixed = mixed.unwrap();
    eprintln!(
        "LoRA TTT {:.4} bpb, + hedge {:.4}",
        mixed.neural().val_bpb,
        r.val_bpb
    );
    // Tokens drawn from 6 symbols: the count experts learn that quickly.
    assert!(r.val_bpb < mixed.neural().val_bpb);
}

#[test]
fn mixed_scores_never_depend_on_later_tokens() {
    let m = model(43);
    let s = docs_stream(3, &[30, 45, 20]);
    let lut = lut();
    let c = cfg();
    let run = |s: &[u32]| -> Vec<(usize, f64)> {
        let mut sink = StreamScorer::new(s, &lut, V, Some(&MixerConfig::default()))
            .unwrap()
            .recording();
        lora_ttt_into(&m, s, &c, &mut sink, None).unwrap();
        sink.recorded().to_vec()
    };
    let base = run(&s);
    for p in [3usize, 17, 29, 31, 50, 80] {
        let mut alt = s.clone();
        alt[p] = 2 + (alt[p] + 3) % 6; // stays a non-BOS token: same documents
        let a = run(&alt);
        let n = base.iter().take_while(|&&(t, _)| t + 1 < p).count();
        assert_eq!(
            &a[..n],
            &base[..n],
            "changing token {p} changed an earlier score"
        );
        assert_ne!(a[n], base[n]);
    }
}

#[test]
fn ablation_on_lora_ttt_equals_separate_ttt_runs_without_each_expert() {
    use pgolf_rt::eval::mixer::Expert;
    let m = model(43);
    let s = docs_stream(3, &[50, 30, 45]);
    let lut = lut();
    let c = cfg();
    let base = MixerConfig {
        ablate: true,
        ..MixerConfig::default()
    };
    let (_, mixed) = eval_lora_ttt_mixed(&m, &s, &lut, &c, Some(&base), None).unwrap();
    let mixed = mixed.unwrap();
    assert_eq!(mixed.ablation.len(), 5);
    for a in &mixed.ablation {
        let (alone, _) =
            eval_lora_ttt_mixed(&m, &s, &lut, &c, Some(&base.without(a.removed)), None).unwrap();
        assert_eq!(alone.val_loss, a.result.val_loss, "{:?}", a.removed);
        assert_eq!(alone.bytes, a.result.bytes);
    }
    // Each leave-one-out run really ran without its expert: its mixture differs from the full one.
    assert!(mixed
        .ablation
        .iter()
        .all(|a| a.result.val_loss != mixed.result.val_loss));
    assert!(mixed.ablation.iter().any(|a| a.removed == Expert::Neural));
}
