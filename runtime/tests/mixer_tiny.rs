//! Hedge mixer on a tiny random model (CPU, fast): normalisation, score-before-update counts,
//! Hedge weight dynamics, and gains on predictable streams.

#[path = "mixer_support.rs"]
mod support;

use pgolf_rt::eval::mixer::{
    eval_mixed, for_each_target, run_mixed, Expert, HedgeLoss, Mixer, MixerConfig, OnlinePredictor,
};
use pgolf_rt::eval::{eval_standard, sliding_windows, EvalOptions};
use support::*;

fn opts(seq: usize) -> EvalOptions<'static> {
    EvalOptions {
        seq_len: seq,
        batch: 4,
        progress: None,
    }
}

#[test]
fn mixture_and_every_expert_sum_to_one_at_every_checked_position() {
    let model = tiny_model(1);
    let stream = random_stream(4 * 32 + 1, 7);
    let windows = pgolf_rt::eval::standard_windows(stream.len(), 32);
    let mut m = Mixer::new(&MixerConfig::default(), VOCAB).unwrap();
    let mut checked = 0;
    for_each_target(&model, &stream, &windows, opts(32), |t| {
        if t.index % 5 == 0 {
            let d = m.distribution(t.neural, t.ctx);
            assert_eq!(d.len(), VOCAB);
            let s: f64 = d.iter().sum();
            assert!((s - 1.0).abs() < 1e-9, "mixture sums to {s} at {}", t.index);
            for (name, c) in m.components(t.neural, t.ctx) {
                let s: f64 = c.iter().sum();
                assert!((s - 1.0).abs() < 1e-9, "{name} sums to {s} at {}", t.index);
                assert!(c.iter().all(|&p| p > 0.0 && p.is_finite()));
            }
            let p = m.prob(t.neural, t.ctx, t.y);
            let r = m.score(t.neural, t.ctx, t.y);
            assert!((p.ln() + r.nll).abs() < 1e-12);
            assert!((r.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            checked += 1;
        } else {
            m.score(t.neural, t.ctx, t.y);
        }
        Ok(())
    })
    .unwrap();
    assert!(checked > 20);
}

#[test]
fn counts_contain_exactly_the_targets_scored_before() {
    // Sliding windows, so the stream order of scoring is exercised across overlapping windows.
    let model = tiny_model(2);
    let stream = random_stream(200, 3);
    let windows = sliding_windows(stream.len(), 32, 8).unwrap();
    let cfg = MixerConfig::default();
    let (a, a3, v) = (cfg.alpha, cfg.trigram_alpha, VOCAB as f64);
    let mut m = Mixer::new(&cfg, VOCAB).unwrap();
    let mut seen = 0usize;
    for_each_target(&model, &stream, &windows, opts(32), |t| {
        assert_eq!(t.index, seen, "targets come strictly in stream order");
        let j = t.index;
        let (prev, y) = (stream[j], stream[j + 1]);
        // Independent recount over the targets scored before j (tokens 1..=j).
        let uni = (1..=j).filter(|&i| stream[i] == y).count() as f64;
        let row = (0..j).filter(|&i| stream[i] == prev).count() as f64;
        let cell = (0..j)
            .filter(|&i| stream[i] == prev && stream[i + 1] == y)
            .count() as f64;
        let h = |i: usize| {
            pgolf_rt::eval::mixer::trigram_bucket(
                i.checked_sub(1).map(|k| stream[k]),
                stream[i],
                cfg.trigram_buckets,
            )
        };
        let hj = h(j);
        let trow = (0..j).filter(|&i| h(i) == hj).count() as f64;
        let tcell = (0..j).filter(|&i| h(i) == hj && stream[i + 1] == y).count() as f64;
        let r = m.score(t.neural, t.ctx, t.y);
        assert_eq!(r.state_tokens, j as u64);
        let p = |k: Expert| (-r.expert_nll[k as usize]).exp();
        assert!((p(Expert::Unigram) - (uni + a) / (j as f64 + a * v)).abs() < 1e-12);
        assert!((p(Expert::Bigram) - (cell + a) / (row + a * v)).abs() < 1e-12);
        assert!((p(Expert::Trigram) - (tcell + a3) / (trow + a3 * v)).abs() < 1e-12);
        seen += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, 199);
    assert_eq!(m.tables().total(), 199);
}

#[test]
fn hedge_moves_weight_to_a_perfect_bigram() {
    let model = tiny_model(3);
    let lut = one_byte_lut();
    // Every token has one successor: the bigram expert becomes perfect. (The hashed trigram is
    // perfect too and, with its smaller alpha, learns faster; it is left out here so that the
    // bigram is the best expert, and checked with all five below.)
    let stream = permutation_cycle_stream(64 * 40 + 1, 11);
    let cfg = MixerConfig::default().without(Expert::Trigram);
    let start = Mixer::new(&cfg, VOCAB).unwrap().weights();
    let r = eval_mixed(&model, &stream, &lut, None, &cfg, opts(64)).unwrap();
    let w = |e: Expert| r.experts[e as usize].final_weight;
    let bpb = |e: Expert| r.experts[e as usize].result.val_bpb;
    eprintln!(
        "weights start {start:?} end {:?}; bpb neural {:.4} bigram {:.4} mix {:.4}",
        r.experts.iter().map(|e| e.final_weight).collect::<Vec<_>>(),
        bpb(Expert::Neural),
        bpb(Expert::Bigram),
        r.result.val_bpb
    );
    assert!(start[Expert::Bigram as usize] < 0.1);
    assert!(
        w(Expert::Bigram) > 0.9,
        "bigram weight {}",
        w(Expert::Bigram)
    );
    assert!(bpb(Expert::Bigram) < bpb(Expert::Neural));
    assert!(r.result.val_bpb < bpb(Expert::Neural) - 1.0);
    // With all five, the weight goes to the two perfect n-gram experts.
    let all = eval_mixed(
        &model,
        &stream,
        &lut,
        None,
        &MixerConfig::default(),
        opts(64),
    )
    .unwrap();
    let wa = |e: Expert| all.experts[e as usize].final_weight;
    assert!(wa(Expert::Bigram) + wa(Expert::Trigram) > 0.99);
    // Eta 0 without Fixed Share freezes the prior.
    let frozen = MixerConfig {
        eta: 0.0,
        share: 0.0,
        ..cfg.clone()
    };
    let f = eval_mixed(&model, &stream, &lut, None, &frozen, opts(64)).unwrap();
    for (e, s) in f.experts.iter().zip(start) {
        assert!((e.final_weight - s).abs() < 1e-12);
    }
    // The gradient (EG) variant moves the same way.
    let eg = MixerConfig {
        loss: HedgeLoss::Gradient,
        ..cfg
    };
    let g = eval_mixed(&model, &stream, &lut, None, &eg, opts(64)).unwrap();
    let wg = g.experts[Expert::Bigram as usize].final_weight;
    assert!(wg > 0.5, "EG bigram weight {wg}");
}

#[test]
fn mixer_beats_the_neural_expert_on_a_repetitive_stream() {
    let model = tiny_model(4);
    let lut = one_byte_lut();
    let stream = repetitive_stream(64 * 24 + 1, 37, 5);
    for stride in [None, Some(16)] {
        let r = eval_mixed(
            &model,
            &stream,
            &lut,
            stride,
            &MixerConfig::default(),
            opts(64),
        )
        .unwrap();
        eprintln!(
            "stride {stride:?}: neural {:.4} bpb, mixed {:.4} bpb",
            r.neural().val_bpb,
            r.result.val_bpb
        );
        assert_eq!(r.result.tokens, 64 * 24);
        assert!(r.result.val_bpb < r.neural().val_bpb - 1.0);
    }
}

#[test]
fn neural_expert_equals_plain_eval_and_ablation_runs_share_the_forward() {
    let model = tiny_model(5);
    let lut = one_byte_lut();
    let stream = random_stream(3 * 32 + 1, 9);
    let plain = eval_standard(&model, &stream, &lut, opts(32)).unwrap();
    let cfg = MixerConfig::default();
    let r = eval_mixed(&model, &stream, &lut, None, &cfg, opts(32)).unwrap();
    assert!(
        (r.neural().val_bpb - plain.val_bpb).abs() < 1e-5,
        "{} vs {}",
        r.neural().val_bpb,
        plain.val_bpb
    );
    assert_eq!(r.result.tokens, plain.tokens);
    assert_eq!(r.result.bytes, plain.bytes);
    let windows = pgolf_rt::eval::standard_windows(stream.len(), 32);
    let cfgs = vec![cfg.clone(), cfg.without(Expert::Bigram)];
    let multi = run_mixed(&model, &stream, &lut, &windows, &cfgs, opts(32)).unwrap();
    assert!((multi[0].result.val_bpb - r.result.val_bpb).abs() < 1e-12);
    assert!(!multi[1].experts[Expert::Bigram as usize].enabled);
    assert_eq!(multi[1].experts[Expert::Bigram as usize].final_weight, 0.0);
    assert!(multi[1].result.val_bpb != r.result.val_bpb);
}

#[test]
fn invalid_settings_are_refused() {
    let bad = [
        MixerConfig {
            alpha: 0.0,
            ..MixerConfig::default()
        },
        MixerConfig {
            eta: f64::NAN,
            ..MixerConfig::default()
        },
        MixerConfig {
            enabled: [false; 5],
            ..MixerConfig::default()
        },
        MixerConfig {
            share: 1.0,
            ..MixerConfig::default()
        },
    ];
    for c in bad {
        assert!(Mixer::new(&c, VOCAB).is_err(), "{c:?}");
    }
}

#[test]
fn in_pass_ablation_equals_separate_runs_without_each_expert() {
    let model = tiny_model(6);
    let lut = one_byte_lut();
    let stream = random_stream(3 * 32 + 1, 11);
    let cfg = MixerConfig {
        ablate: true,
        enabled: [true, true, false, true, true],
        ..MixerConfig::default()
    };
    let r = eval_mixed(&model, &stream, &lut, Some(16), &cfg, opts(32)).unwrap();
    let removed: Vec<Expert> = r.ablation.iter().map(|a| a.removed).collect();
    assert_eq!(
        removed,
        [
            Expert::Neural,
            Expert::Unigram,
            Expert::Trigram,
            Expert::Tempered
        ]
    );
    let plain = MixerConfig {
        ablate: false,
        ..cfg.clone()
    };
    let main = eval_mixed(&model, &stream, &lut, Some(16), &plain, opts(32)).unwrap();
    assert_eq!(main.result.val_bpb, r.result.val_bpb);
    assert!(main.ablation.is_empty());
    for a in &r.ablation {
        let alone = eval_mixed(
            &model,
            &stream,
            &lut,
            Some(16),
            &cfg.without(a.removed),
            opts(32),
        )
        .unwrap();
        // Same arithmetic in the same order: equal to the last bit.
        assert_eq!(alone.result.val_loss, a.result.val_loss, "{:?}", a.removed);
        assert_eq!(alone.result.tokens, a.result.tokens);
        assert!(alone.result.val_bpb != r.result.val_bpb);
    }
}
