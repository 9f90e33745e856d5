//! Legality audit of test-time training (`pgolf-rt eval --audit --ttt lora|full`, with or
//! without `--mix hedge`), on a short sample stream. The TTT pass is run as a black box into an
//! auditing [`StreamScorer`] ([`StreamScorer::auditing`]):
//!
//! * **causality under perturbation**: for sampled stream positions `p`, the token at `p` is
//!   replaced by another (never by or from BOS: document boundaries are part of the data
//!   format, spec 1.3), the whole TTT pass is re-run from scratch, and every target predicting
//!   a position `< p` must get the same score, and the prediction *of* position `p` must give
//!   the original token the same probability (|Δ ln p| ≤ 1e-6);
//! * **normalisation**: at every target the neural distribution (with the adapters or weights
//!   of that moment) and, when mixing, the mixture sum to 1 within `tol`, with no negative or
//!   non-finite probability, and the reported NLL is the distribution's;
//! * **single pass**: every target of the sample is scored exactly once, in stream order (the
//!   scorer refuses anything else; here the count is checked too).

use super::audit::{AuditCheck, AuditConfig, AuditReport};
use super::mixer::MixerConfig;
use super::StreamScorer;
use crate::data::BOS_ID;
use crate::tokenizer::ByteLut;
use crate::train::lora::SplitMix64;
use crate::{Error, Result};

/// A TTT pass over the sink's stream (a fresh model state each call).
pub type TttPass<'a> = dyn FnMut(&mut StreamScorer) -> Result<()> + 'a;

/// One run of the pass on `stream` with `probes`: `(recorded scores, probed values)`.
#[allow(clippy::type_complexity)]
fn run_once(
    stream: &[u32],
    lut: &ByteLut,
    vocab: usize,
    mix: Option<&MixerConfig>,
    probes: &[(usize, u32)],
    pass: &mut TttPass,
) -> Result<(Vec<(usize, f64)>, super::stream::AuditLog, Option<f64>)> {
    let mut sink = StreamScorer::new(stream, lut, vocab, mix)?.auditing(probes);
    pass(&mut sink)?;
    let log = sink
        .audit_log()
        .cloned()
        .ok_or_else(|| Error::Backend("audit: no log".into()))?;
    Ok((sink.recorded().to_vec(), log, sink.max_sum_error()))
}

/// Audits a TTT pass on `stream` (a short sample). `expected_targets` is the number of targets
/// the pass must score.
pub fn audit_ttt(
    stream: &[u32],
    lut: &ByteLut,
    vocab: usize,
    mix: Option<&MixerConfig>,
    cfg: &AuditConfig,
    expected_targets: usize,
    pass: &mut TttPass,
) -> Result<AuditReport> {
    if vocab < 3 || stream.len() < 3 {
        return Err(Error::Usage("audit: sample too short".into()));
    }
    let mut report = AuditReport::default();
    // Positions to perturb (never BOS), chosen up front so one unperturbed run probes them all.
    let mut rng = SplitMix64(cfg.seed);
    let candidates: Vec<usize> = (1..stream.len()).filter(|&p| stream[p] != BOS_ID).collect();
    let mut positions: Vec<usize> = (0..cfg.positions.min(candidates.len()))
        .map(|_| candidates[(rng.next_u64() % candidates.len() as u64) as usize])
        .collect();
    positions.sort_unstable();
    positions.dedup();
    let probes: Vec<(usize, u32)> = positions.iter().map(|&p| (p - 1, stream[p])).collect();
    let (base, log, mix_err) = run_once(stream, lut, vocab, mix, &probes, pass)?;

    // Single pass.
    let ordered = base.windows(2).all(|w| w[0].0 < w[1].0);
    report.checks.push(AuditCheck {
        name: "single-pass".into(),
        passed: ordered && base.len() == expected_targets,
        detail: format!(
            "{} targets scored (expected {expected_targets}), strictly in stream order: {ordered}",
            base.len()
        ),
    });

    // Normalisation.
    let mut detail = format!(
        "neural max |sum-1| {:.2e}, max |ln p(y)+nll| {:.2e}",
        log.neural_sum_error, log.nll_mismatch
    );
    let mut ok = log.neural_sum_error <= cfg.tol && log.nll_mismatch <= 1e-4;
    if let Some(e) = mix_err {
        detail += &format!(", mixture max |sum-1| {e:.2e}");
        ok &= e <= cfg.tol;
    }
    detail += &format!(
        " over {} targets, bad values {}",
        base.len(),
        log.bad_values
    );
    ok &= log.bad_values == 0;
    report.checks.push(AuditCheck {
        name: "normalisation".into(),
        passed: ok,
        detail,
    });

    // Causality under perturbation: target p-1 predicts position p, so for it the probability
    // of the original token is compared; targets before it are compared by score.
    let (mut worst, mut tested, mut changed_later, mut failures) = (0.0f64, 0, 0usize, Vec::new());
    for &p in &positions {
        let orig = stream[p];
        let mut new = orig;
        while new == orig || new == BOS_ID {
            new = (rng.next_u64() % vocab as u64) as u32;
        }
        let mut pert = stream.to_vec();
        pert[p] = new;
        let probe = [(p - 1, orig)];
        let (b, lb, _) = run_once(&pert, lut, vocab, mix, &probe, pass)?;
        let mut dmax = 0.0f64;
        if base.len() != b.len() {
            failures.push(format!("p={p}: {} vs {} targets", base.len(), b.len()));
        }
        for (&(t, x), &(u, y)) in base.iter().zip(&b) {
            if t != u {
                failures.push(format!("p={p}: target lists differ ({t} vs {u})"));
                break;
            }
            if t + 1 < p {
                dmax = dmax.max((x - y).abs());
            } else if t + 1 > p && (x - y).abs() > 1e-6 {
                changed_later += 1;
            }
        }
        let before = log.probed.iter().find(|q| q.0 == p - 1);
        match (before, lb.probed.first()) {
            (Some(x), Some(y)) => dmax = dmax.max((x.1 - y.1).abs()),
            _ => failures.push(format!(
                "p={p}: the prediction of position {p} was not scored"
            )),
        }
        if dmax > 1e-6 {
            failures.push(format!(
                "p={p}: a score at or before it moved by {dmax:.2e}"
            ));
        }
        worst = worst.max(dmax);
        tested += 1;
    }
    report.checks.push(AuditCheck {
        name: "causality".into(),
        passed: failures.is_empty() && tested > 0,
        detail: if failures.is_empty() {
            format!(
                "{tested} perturbed positions: max |Δ| at or before them {worst:.2e}; \
                 {changed_later} later scores changed (expected)"
            )
        } else {
            failures.join("; ")
        },
    });
    Ok(report)
}
