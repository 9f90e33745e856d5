//! Legality audit (issue 5 item 4): empirical checks of the challenge's conditions on a sample of
//! the stream, for plain evaluation and for any [`OnlinePredictor`] (the Hedge mixer, or a
//! deliberately illegal scorer in a test).
//!
//! * **causality** (C1): for sampled stream positions `t`, the token at `t` is replaced (and,
//!   separately, a token at a random later position `u > t`), everything is re-run from scratch,
//!   and the probability each prediction of a position `≤ t` (resp. `≤ u`) gives to the
//!   *original* token must be unchanged (|Δ ln p| ≤ 1e-6). For plain evaluation the NLLs of the
//!   `run_windows` path (the code `eval_standard`/`eval_sliding` use) of positions `< t` are
//!   compared too.
//! * **normalisation** (C2): at sampled targets `Σ_y p(y)` over the whole vocabulary is computed
//!   explicitly, for the reported distribution and each of its components (experts), and must be
//!   1 within `tol` (1e-5); every probability must be finite and ≥ 0; and the probability behind
//!   each reported score must be the one the distribution gives the realised token
//!   (`|ln p(y) + nll| ≤ 1e-9`), at every target.
//! * **score before update** (C3): when target `t` is scored the predictor's adaptive state holds
//!   exactly the number of targets scored before it ([`crate::eval::mixer::ScoreRecord::state_tokens`]).
//!
//! Single pass (C4) is enforced structurally by [`mixer::check_single_pass`].

use super::mixer::{self, for_each_target, Mixer, MixerConfig, NeuralOnly, OnlinePredictor};
use super::{
    run_windows, sliding_windows, standard_windows, truncate_for_eval, EvalOptions, Window,
};
use crate::backend::Backend;
use crate::model::DeviceModel;
use crate::{Error, Result};

/// Audit settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditConfig {
    /// Perturbation positions sampled (each costs two re-runs of the sample).
    pub positions: usize,
    /// Targets at which full distributions are summed.
    pub sum_positions: usize,
    /// PRNG seed for the samples.
    pub seed: u64,
    /// Tolerance on `|Σ_y p(y) − 1|`.
    pub tol: f64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            positions: 3,
            sum_positions: 16,
            seed: 0x5eed,
            tol: 1e-5,
        }
    }
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditCheck {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// All checks of an audit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditReport {
    pub checks: Vec<AuditCheck>,
}

impl AuditReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The check called `name`.
    pub fn check(&self, name: &str) -> Option<&AuditCheck> {
        self.checks.iter().find(|c| c.name == name)
    }
}

impl std::fmt::Display for AuditReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            writeln!(
                f,
                "{} {}: {}",
                if c.passed { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            )?;
        }
        Ok(())
    }
}

/// A named way to build a fresh predictor (each run of the audit starts from a new one).
pub type PredictorFactory<'a> = (&'a str, &'a dyn Fn() -> Box<dyn OnlinePredictor>);

struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// What one run over the (possibly perturbed) stream records per predictor and target.
struct RunLog {
    /// `ln p(reference token)` per scored target index (NaN where not scored).
    ref_logp: Vec<f64>,
    worst_consistency: f64,
    state_violations: usize,
    first_state_violation: Option<(usize, u64, u64)>,
    stateless: bool,
    worst_sum: f64,
    worst_sum_at: Option<(usize, String)>,
    negative: usize,
}

#[allow(clippy::too_many_arguments)]
fn run_once<B: Backend>(
    model: &DeviceModel<B>,
    stream: &[u32],
    reference: &[u32],
    windows: &[Window],
    seq_len: usize,
    batch: usize,
    factories: &[PredictorFactory],
    sum_at: &[usize],
) -> Result<Vec<RunLog>> {
    let mut preds: Vec<Box<dyn OnlinePredictor>> = factories.iter().map(|(_, f)| f()).collect();
    let mut logs: Vec<RunLog> = factories
        .iter()
        .map(|_| RunLog {
            ref_logp: vec![f64::NAN; stream.len()],
            worst_consistency: 0.0,
            state_violations: 0,
            first_state_violation: None,
            stateless: false,
            worst_sum: 0.0,
            worst_sum_at: None,
            negative: 0,
        })
        .collect();
    let mut scored = 0u64;
    let opts = EvalOptions {
        seq_len,
        batch,
        progress: None,
    };
    for_each_target(model, stream, windows, opts, |t| {
        for (p, log) in preds.iter_mut().zip(&mut logs) {
            let r = reference[t.index + 1];
            log.ref_logp[t.index] = p.prob(t.neural, t.ctx, r).ln();
            let p_y = p.prob(t.neural, t.ctx, t.y);
            if sum_at.binary_search(&t.index).is_ok() {
                let mut dists = vec![("mixture".to_string(), p.distribution(t.neural, t.ctx))];
                dists.extend(p.components(t.neural, t.ctx));
                for (name, d) in dists {
                    log.negative += d.iter().filter(|x| !(x.is_finite() && **x >= 0.0)).count();
                    let s: f64 = d.iter().sum();
                    let err = if s.is_finite() {
                        (s - 1.0).abs()
                    } else {
                        f64::INFINITY
                    };
                    if log.worst_sum_at.is_none() || err > log.worst_sum {
                        log.worst_sum = err;
                        log.worst_sum_at = Some((t.index, format!("{name} sums to {s:.9}")));
                    }
                }
            }
            let rec = p.score_then_update(t.neural, t.ctx, t.y);
            let c = (p_y.ln() + rec.nll).abs();
            let c = if c.is_nan() { f64::INFINITY } else { c };
            log.worst_consistency = log.worst_consistency.max(c);
            match rec.state_tokens {
                None => log.stateless = true,
                Some(n) if n != scored => {
                    log.state_violations += 1;
                    log.first_state_violation
                        .get_or_insert((t.index, n, scored));
                }
                Some(_) => {}
            }
        }
        scored += 1;
        Ok(())
    })?;
    Ok(logs)
}

fn plain_nll<B: Backend>(
    model: &DeviceModel<B>,
    stream: &[u32],
    windows: &[Window],
    seq_len: usize,
    batch: usize,
) -> Result<Vec<f32>> {
    let mut out = vec![f32::NAN; stream.len()];
    let opts = EvalOptions {
        seq_len,
        batch,
        progress: None,
    };
    run_windows(model, stream, windows, opts, |t, nll| out[t] = nll)?;
    Ok(out)
}

/// Audits plain evaluation and each predictor on `stream` scored by `windows`.
#[allow(clippy::too_many_arguments)]
pub fn audit_windows<B: Backend>(
    model: &DeviceModel<B>,
    stream: &[u32],
    windows: &[Window],
    seq_len: usize,
    batch: usize,
    factories: &[PredictorFactory],
    cfg: &AuditConfig,
) -> Result<AuditReport> {
    let vocab = model.config.vocab_size;
    mixer::check_single_pass(stream.len(), seq_len, windows)?;
    let scored: Vec<usize> = windows
        .iter()
        .flat_map(|w| w.start + w.score_from..w.start + w.len)
        .collect();
    if scored.len() < 2 || vocab < 2 {
        return Err(Error::Usage(
            "audit: the sample has fewer than 2 targets".into(),
        ));
    }
    let mut rng = Rng(cfg.seed);
    let mut sum_at: Vec<usize> = (0..cfg.sum_positions)
        .map(|_| scored[rng.below(scored.len())])
        .chain([scored[0], *scored.last().unwrap()])
        .collect();
    sum_at.sort_unstable();
    sum_at.dedup();

    let base = run_once(
        model, stream, stream, windows, seq_len, batch, factories, &sum_at,
    )?;

    // Causality: plain NLLs (lag 1: target j is token j+1 itself) and each predictor's
    // probability of the reference token (lag 0).
    let mut names: Vec<(String, usize)> = vec![("plain".into(), 1)];
    names.extend(factories.iter().map(|(n, _)| (n.to_string(), 0)));
    let name_refs: Vec<(&str, usize)> = names.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    let mut checks = check_causality(
        stream,
        vocab,
        cfg.positions,
        cfg.seed ^ 0xc0ffee,
        &name_refs,
        |s| {
            let plain = plain_nll(model, s, windows, seq_len, batch)?;
            let mut out = vec![plain.iter().map(|&x| x as f64).collect::<Vec<f64>>()];
            let logs = run_once(model, s, stream, windows, seq_len, batch, factories, &[])?;
            out.extend(logs.into_iter().map(|l| l.ref_logp));
            Ok(out)
        },
    )?;

    for (k, (name, _)) in factories.iter().enumerate() {
        let b = &base[k];
        let sums_ok = b.worst_sum <= cfg.tol && b.negative == 0;
        checks.push(AuditCheck {
            name: format!("normalisation/{name}"),
            passed: sums_ok,
            detail: format!(
                "{} targets, every component: max |sum_y p(y) - 1| = {:.2e} (tol {:.0e}){}{}",
                sum_at.len(),
                b.worst_sum,
                cfg.tol,
                if b.negative > 0 {
                    format!(", {} negative or non-finite probabilities", b.negative)
                } else {
                    String::new()
                },
                match (&b.worst_sum_at, sums_ok) {
                    (Some((t, s)), false) => format!(", worst at target {t}: {s}"),
                    _ => String::new(),
                }
            ),
        });
        let cons_ok = b.worst_consistency <= 1e-9;
        checks.push(AuditCheck {
            name: format!("score-is-distribution/{name}"),
            passed: cons_ok,
            detail: format!(
                "{} targets: max |ln p(y) + reported nll| = {:.2e}",
                scored.len(),
                b.worst_consistency
            ),
        });
        checks.push(AuditCheck {
            name: format!("score-before-update/{name}"),
            passed: b.state_violations == 0,
            detail: match b.first_state_violation {
                None if b.stateless => "no adaptive state".to_string(),
                None => format!(
                    "{} targets: state held exactly the targets scored before each",
                    scored.len()
                ),
                Some((t, got, want)) => format!(
                    "{} targets violate; first: target {t} scored with {got} tokens in the state, {want} scored before it",
                    b.state_violations
                ),
            },
        });
    }
    Ok(AuditReport { checks })
}

/// Perturbation test of causality (C1) for any scorer. `score(stream)` returns, per named
/// scorer, one number per target index `j` (the prediction of token `j + 1`; NaN where not
/// scored). For a sampled position `t` the token there is replaced (and separately one at a
/// random later position `u > t`) and the numbers of every `j` with `j + lag < t` (resp. `u`)
/// must be unchanged (within 1e-6): with `lag = 0` the number must describe the prediction of
/// the *reference* token (e.g. `ln p(reference)`), so positions `<= t` are checked; with
/// `lag = 1` it may depend on the target itself (a plain NLL), so positions `< t` are.
pub fn check_causality(
    stream: &[u32],
    vocab: usize,
    positions: usize,
    seed: u64,
    names: &[(&str, usize)],
    mut score: impl FnMut(&[u32]) -> Result<Vec<Vec<f64>>>,
) -> Result<Vec<AuditCheck>> {
    if stream.len() < 2 || vocab < 2 {
        return Err(Error::Usage("causality check: stream too short".into()));
    }
    let n = stream.len() - 1; // stream positions 1..=n are predicted
    let mut rng = Rng(seed);
    let base = score(stream)?;
    let mut picks = vec![1usize, n, n / 2 + 1];
    while picks.len() < positions.max(1) {
        picks.push(1 + rng.below(n));
    }
    picks.truncate(positions.max(1));
    let mut perturb: Vec<usize> = Vec::new();
    for &t in &picks {
        perturb.push(t);
        if t < n {
            perturb.push(t + 1 + rng.below(n - t));
        }
    }
    let mut bad: Vec<Option<String>> = vec![None; names.len()];
    let mut worst = vec![0f64; names.len()];
    for &u in &perturb {
        let mut s = stream.to_vec();
        s[u] = (s[u] + 1 + rng.below(vocab - 1) as u32) % vocab as u32;
        let got = score(&s)?;
        for (k, &(_, lag)) in names.iter().enumerate() {
            for j in 0..u.saturating_sub(lag) {
                let (a, b) = (base[k][j], got[k][j]);
                if a.is_nan() && b.is_nan() {
                    continue;
                }
                let d = (a - b).abs();
                let d = if d.is_nan() { f64::INFINITY } else { d };
                worst[k] = worst[k].max(d);
                if d > 1e-6 && bad[k].is_none() {
                    bad[k] = Some(format!(
                        "changing the token at {u} changed the score of position {} ({a:.9} -> {b:.9})",
                        j + 1
                    ));
                }
            }
        }
    }
    Ok(names
        .iter()
        .enumerate()
        .map(|(k, (name, _))| AuditCheck {
            name: format!("causality/{name}"),
            passed: bad[k].is_none(),
            detail: bad[k].clone().unwrap_or_else(|| {
                format!(
                    "{} perturbations at {perturb:?}: no earlier score changed (max diff {:.1e})",
                    perturb.len(),
                    worst[k]
                )
            }),
        })
        .collect())
}

/// The audit the CLI runs: the first `max_windows` windows of the eval scheme (standard, or
/// sliding with `stride`) over `tokens`, for plain eval, the neural expert and (when given) the
/// Hedge mixer.
#[allow(clippy::too_many_arguments)]
pub fn audit_eval<B: Backend>(
    model: &DeviceModel<B>,
    tokens: &[u32],
    seq_len: usize,
    stride: Option<usize>,
    batch: usize,
    max_windows: usize,
    mix: Option<&MixerConfig>,
    cfg: &AuditConfig,
) -> Result<AuditReport> {
    let stream = truncate_for_eval(tokens, seq_len)?;
    let mut windows = match stride {
        Some(s) => sliding_windows(stream.len(), seq_len, s)?,
        None => standard_windows(stream.len(), seq_len),
    };
    windows.truncate(max_windows.max(1));
    let last = windows.last().expect("at least one window");
    let stream = &stream[..last.start + last.len + 1];
    let vocab = model.config.vocab_size;
    let neural = || Box::new(NeuralOnly) as Box<dyn OnlinePredictor>;
    let mixed = mix.cloned();
    let hedge = move || {
        Box::new(Mixer::new(mixed.as_ref().expect("mixer config"), vocab).expect("valid mixer"))
            as Box<dyn OnlinePredictor>
    };
    let mut factories: Vec<PredictorFactory> = vec![("neural", &neural)];
    if let Some(m) = mix {
        m.validate()?;
        factories.push(("hedge", &hedge));
    }
    audit_windows(model, stream, &windows, seq_len, batch, &factories, cfg)
}
