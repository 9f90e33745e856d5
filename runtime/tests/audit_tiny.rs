//! The legality audit on a tiny random model: legal scoring passes; deliberately illegal
//! scorers (written only here) are caught.

#[path = "mixer_support.rs"]
mod support;

use pgolf_rt::eval::audit::{
    audit_eval, audit_windows, check_causality, AuditConfig, AuditReport, PredictorFactory,
};
use pgolf_rt::eval::mixer::{Expert, Mixer, MixerConfig, OnlinePredictor, ScoreRecord};
use pgolf_rt::eval::standard_windows;
use support::*;

fn report(r: &AuditReport) {
    eprint!("{r}");
}

#[test]
fn plain_eval_and_mixer_pass_the_audit() {
    let model = tiny_model(1);
    let tokens = random_stream(4 * 32 + 1, 2);
    for stride in [None, Some(8)] {
        let r = audit_eval(
            &model,
            &tokens,
            32,
            stride,
            2,
            4,
            Some(&MixerConfig::default()),
            &AuditConfig::default(),
        )
        .unwrap();
        report(&r);
        assert!(r.passed());
        for name in [
            "causality/plain",
            "causality/neural",
            "causality/hedge",
            "normalisation/hedge",
            "score-is-distribution/hedge",
            "score-before-update/hedge",
        ] {
            assert!(r.check(name).is_some_and(|c| c.passed), "{name}");
        }
    }
}

/// The published "entropy expert" (spec 7.7): `e^{-H}` of the neural softmax, independent of
/// the token, mixed as if it were a probability.
struct EntropyExpert(Mixer);

impl EntropyExpert {
    fn p(&self, neural: &[f32], ctx: &[u32], y: u32) -> f64 {
        let e = self.0.expert_distributions(neural, ctx);
        let w = self.0.weights();
        let h: f64 = -e[0].iter().map(|&p| p * p.ln()).sum::<f64>();
        (0..4).map(|k| w[k] * e[k][y as usize]).sum::<f64>() + w[4] * (-h).exp()
    }
}

impl OnlinePredictor for EntropyExpert {
    fn prob(&self, neural: &[f32], ctx: &[u32], y: u32) -> f64 {
        self.p(neural, ctx, y)
    }
    fn score_then_update(&mut self, neural: &[f32], ctx: &[u32], y: u32) -> ScoreRecord {
        let nll = -self.p(neural, ctx, y).ln();
        let state_tokens = self.0.tables().total();
        self.0.score(neural, ctx, y);
        ScoreRecord {
            nll,
            state_tokens: Some(state_tokens),
        }
    }
}

/// Reports a score that peeks at the realised token (half the mass on "whatever came next"),
/// while claiming the honest mixture as its distribution.
struct PeeksAtTarget(Mixer);

impl OnlinePredictor for PeeksAtTarget {
    fn prob(&self, neural: &[f32], ctx: &[u32], y: u32) -> f64 {
        self.0.prob(neural, ctx, y)
    }
    fn score_then_update(&mut self, neural: &[f32], ctx: &[u32], y: u32) -> ScoreRecord {
        let p = 0.5 * self.0.prob(neural, ctx, y) + 0.5;
        let state_tokens = self.0.tables().total();
        self.0.score(neural, ctx, y);
        ScoreRecord {
            nll: -p.ln(),
            state_tokens: Some(state_tokens),
        }
    }
}

/// Updates its counts and weights with the token before scoring it.
struct UpdateThenScore(Mixer);

impl OnlinePredictor for UpdateThenScore {
    fn prob(&self, neural: &[f32], ctx: &[u32], y: u32) -> f64 {
        self.0.prob(neural, ctx, y)
    }
    fn score_then_update(&mut self, neural: &[f32], ctx: &[u32], y: u32) -> ScoreRecord {
        self.0.score(neural, ctx, y);
        ScoreRecord {
            nll: -self.0.prob(neural, ctx, y).ln(),
            state_tokens: Some(self.0.tables().total()),
        }
    }
}

fn audit_with(name: &str, f: &dyn Fn() -> Box<dyn OnlinePredictor>) -> AuditReport {
    let model = tiny_model(2);
    let stream = repetitive_stream(3 * 32 + 1, 13, 4);
    let windows = standard_windows(stream.len(), 32);
    let factories: Vec<PredictorFactory> = vec![(name, f)];
    let r = audit_windows(
        &model,
        &stream,
        &windows,
        32,
        2,
        &factories,
        &AuditConfig::default(),
    )
    .unwrap();
    report(&r);
    r
}

fn mixer() -> Mixer {
    Mixer::new(&MixerConfig::default(), VOCAB).unwrap()
}

#[test]
fn unnormalised_entropy_expert_is_caught() {
    let f = || Box::new(EntropyExpert(mixer())) as Box<dyn OnlinePredictor>;
    let r = audit_with("entropy", &f);
    assert!(!r.passed());
    let c = r.check("normalisation/entropy").unwrap();
    assert!(!c.passed, "{}", c.detail);
    // It is causal and score-first: only normalisation fails.
    assert!(r.check("causality/entropy").unwrap().passed);
    assert!(r.check("score-before-update/entropy").unwrap().passed);
}

#[test]
fn score_that_peeks_at_the_target_is_caught() {
    let f = || Box::new(PeeksAtTarget(mixer())) as Box<dyn OnlinePredictor>;
    let r = audit_with("peek", &f);
    let c = r.check("score-is-distribution/peek").unwrap();
    assert!(!c.passed, "{}", c.detail);
}

#[test]
fn update_before_score_is_caught() {
    let f = || Box::new(UpdateThenScore(mixer())) as Box<dyn OnlinePredictor>;
    let r = audit_with("early", &f);
    let c = r.check("score-before-update/early").unwrap();
    assert!(!c.passed, "{}", c.detail);
    assert!(!r.check("score-is-distribution/early").unwrap().passed);
}

#[test]
fn a_disabled_expert_still_leaves_a_distribution() {
    let cfg = MixerConfig::default().without(Expert::Tempered);
    let f = move || Box::new(Mixer::new(&cfg, VOCAB).unwrap()) as Box<dyn OnlinePredictor>;
    assert!(audit_with("ablated", &f).passed());
}

#[test]
fn causality_check_catches_look_ahead() {
    // A scorer that "predicts" each token from a context window that includes the next tokens
    // (an off-by-one in window construction): ln p = f(stream[j+1], stream[j+2]).
    let stream = random_stream(120, 5);
    let leaky = |s: &[u32]| -> pgolf_rt::Result<Vec<Vec<f64>>> {
        let v = (0..s.len() - 1)
            .map(|j| {
                let nxt = s.get(j + 2).copied().unwrap_or(0);
                -(1.0 + f64::from(nxt) / 64.0)
            })
            .collect();
        Ok(vec![v])
    };
    let c = check_causality(&stream, VOCAB, 3, 1, &[("leaky", 0)], leaky).unwrap();
    assert!(!c[0].passed, "{}", c[0].detail);
    // And an honest one (depends on the prefix only) passes.
    let honest = |s: &[u32]| -> pgolf_rt::Result<Vec<Vec<f64>>> {
        let v = (0..s.len() - 1)
            .map(|j| -(1.0 + s[..=j].iter().map(|&x| f64::from(x)).sum::<f64>() / 1e4))
            .collect();
        Ok(vec![v])
    };
    let c = check_causality(&stream, VOCAB, 3, 1, &[("honest", 0)], honest).unwrap();
    assert!(c[0].passed, "{}", c[0].detail);
}
