//! The sink of a single left-to-right scoring pass: test-time training schemes hand it each
//! target's score (and, for the mixer, the neural distribution computed by the model state that
//! scored it) in stream order; it accumulates plain NLLs or feeds an online [`Mixer`].
//!
//! Legality is enforced here as well as by the schemes: targets must arrive strictly in
//! increasing stream order (each scored once, C4), and the mixer scores target `t` from its
//! state before absorbing `y_t` ([`Mixer::score`]), so with a TTT scheme that scores a chunk
//! before training on it, neither the adapters/weights nor the mixer have seen a token when it
//! is scored.

use super::mixer::{
    add, Ablation, Expert, MixedEval, Mixer, MixerConfig, OnlinePredictor, NUM_EXPERTS,
};
use super::{BpbAccumulator, EvalResult};
use crate::tokenizer::ByteLut;
use crate::{Error, Result};

/// Accumulates the scores of one pass over `stream` (target `t` is `stream[t + 1]`).
pub struct StreamScorer<'a> {
    stream: &'a [u32],
    lut: &'a ByteLut,
    vocab: usize,
    acc: BpbAccumulator,
    mix: Option<(Mixer, [BpbAccumulator; NUM_EXPERTS])>,
    /// The leave-one-out mixers of an ablation ([`MixerConfig::ablate`]), fed the same targets.
    ablation: Vec<(Expert, Mixer, BpbAccumulator)>,
    /// The smallest target index that may be scored next.
    next: usize,
    start: web_time::Instant,
    /// `(target, nll)` of every scored target, when recording.
    record: Option<Vec<(usize, f64)>>,
    /// Largest `|Σ_y p_mix(y) − 1|` seen, when checking normalisation.
    sum_error: Option<f64>,
    /// What the TTT audit collects ([`StreamScorer::auditing`]).
    audit: Option<AuditLog>,
}

/// What an auditing [`StreamScorer`] collects at every scored target (from the model state and
/// mixer state that score it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditLog {
    /// Targets whose reported probability of a given token is recorded: `(target, token)`.
    pub probes: Vec<(usize, u32)>,
    /// `(target, ln p(token))` of the reported distribution (the mixture when mixing) at each
    /// probe, in scoring order.
    pub probed: Vec<(usize, f64)>,
    /// Largest `|Σ_y p_neural(y) − 1|` of the neural distribution (with adapters) seen.
    pub neural_sum_error: f64,
    /// Largest `|ln p_neural(y_t) + nll_t|`: the reported NLL is the distribution's.
    pub nll_mismatch: f64,
    /// Non-finite or negative probabilities seen.
    pub bad_values: usize,
}

impl<'a> StreamScorer<'a> {
    /// A sink over `stream`; with `mix`, every target goes through a fresh mixer over `vocab`.
    pub fn new(
        stream: &'a [u32],
        lut: &'a ByteLut,
        vocab: usize,
        mix: Option<&MixerConfig>,
    ) -> Result<Self> {
        let mix_cfg = mix;
        let mix = mix
            .map(|c| {
                Ok((
                    Mixer::new(c, vocab)?,
                    [BpbAccumulator::default(); NUM_EXPERTS],
                ))
            })
            .transpose()?;
        let ablation = mix_cfg
            .map(MixerConfig::ablation_configs)
            .unwrap_or_default()
            .into_iter()
            .map(|(e, c)| Ok((e, Mixer::new(&c, vocab)?, BpbAccumulator::default())))
            .collect::<Result<Vec<_>>>()?;
        Ok(StreamScorer {
            stream,
            lut,
            vocab,
            acc: BpbAccumulator::default(),
            mix,
            ablation,
            next: 0,
            start: web_time::Instant::now(),
            record: None,
            sum_error: None,
            audit: None,
        })
    }

    /// Also keep every target's score ([`StreamScorer::recorded`]).
    pub fn recording(mut self) -> Self {
        self.record = Some(Vec::new());
        self
    }

    /// Also sum the mixture over the whole vocabulary at every scored position, from the state
    /// that scores it ([`StreamScorer::max_sum_error`]; costs `V × experts` per target).
    pub fn checking_normalisation(mut self) -> Self {
        self.sum_error = Some(0.0);
        self
    }

    /// Audit mode: records every target's score, checks the normalisation of the neural and
    /// (when mixing) mixed distribution at every target, and records the reported log-probability
    /// of `probes` (`(target, token)`). Requires the full neural log-probabilities of every
    /// target ([`Self::wants_log_probs`]).
    pub fn auditing(mut self, probes: &[(usize, u32)]) -> Self {
        self.record = Some(Vec::new());
        self.sum_error = Some(0.0);
        self.audit = Some(AuditLog {
            probes: probes.to_vec(),
            ..AuditLog::default()
        });
        self
    }

    /// What [`Self::auditing`] collected.
    pub fn audit_log(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// `(target, nll)` of every scored target, in order (empty unless [`Self::recording`]).
    pub fn recorded(&self) -> &[(usize, f64)] {
        self.record.as_deref().unwrap_or(&[])
    }

    /// Largest `|Σ_y p_mix(y) − 1|` over the scored positions (with
    /// [`Self::checking_normalisation`] and a mixer; `None` otherwise).
    pub fn max_sum_error(&self) -> Option<f64> {
        self.sum_error.filter(|_| self.mix.is_some())
    }

    /// Whether [`StreamScorer::score`] needs the full log-probabilities (a mixer is attached,
    /// or auditing).
    pub fn wants_log_probs(&self) -> bool {
        self.mix.is_some() || self.audit.is_some()
    }

    /// Scores target `t` given the neural model's NLL of it and, when a mixer is attached, its
    /// log-probabilities over the vocabulary (from the same model state). Targets must come in
    /// strictly increasing order.
    pub fn score(&mut self, t: usize, nll: f32, log_probs: Option<&[f32]>) -> Result<()> {
        if t < self.next || t + 1 >= self.stream.len() {
            return Err(Error::Usage(format!(
                "target {t} scored out of order or outside the stream (next allowed {}, {} tokens)",
                self.next,
                self.stream.len()
            )));
        }
        self.next = t + 1;
        let (x, y) = (self.stream[t], self.stream[t + 1]);
        let bytes = self.lut.bytes_for(x, y);
        if let Some(log) = self.audit.as_mut() {
            let lp = log_probs.filter(|l| l.len() == self.vocab).ok_or_else(|| {
                Error::Backend(format!("audit: target {t} needs {} log-probs", self.vocab))
            })?;
            let total: f64 = lp.iter().map(|&v| f64::from(v).exp()).sum();
            log.neural_sum_error = log.neural_sum_error.max((total - 1.0).abs());
            log.bad_values += lp.iter().filter(|v| v.is_nan() || **v > 0.0).count();
            let mism = (f64::from(lp[y as usize]) + f64::from(nll)).abs();
            log.nll_mismatch = log.nll_mismatch.max(mism);
            for &(pt, tok) in log.probes.iter().filter(|p| p.0 == t) {
                let v = match &self.mix {
                    None => f64::from(lp[tok as usize]),
                    Some((m, _)) => {
                        let dist = m.distribution(lp, &self.stream[..=t]);
                        log.bad_values +=
                            dist.iter().filter(|p| !p.is_finite() || **p < 0.0).count();
                        dist[tok as usize].ln()
                    }
                };
                log.probed.push((pt, v));
            }
        }
        let scored = match &mut self.mix {
            None => {
                self.acc.add(nll, bytes);
                f64::from(nll)
            }
            Some((mixer, experts)) => {
                let lp = log_probs.filter(|l| l.len() == self.vocab).ok_or_else(|| {
                    Error::Backend(format!(
                        "mixer: target {t} needs {} neural log-probs",
                        self.vocab
                    ))
                })?;
                let ctx = &self.stream[..=t];
                if let Some(err) = self.sum_error.as_mut() {
                    let total: f64 = mixer.distribution(lp, ctx).iter().sum();
                    *err = err.max((total - 1.0).abs());
                }
                let s = mixer.score(lp, ctx, y);
                add(&mut self.acc, s.nll, bytes);
                for (a, &e) in experts.iter_mut().zip(&s.expert_nll) {
                    add(a, e, bytes);
                }
                for (_, m, a) in &mut self.ablation {
                    add(a, m.score(lp, ctx, y).nll, bytes);
                }
                s.nll
            }
        };
        if let Some(r) = self.record.as_mut() {
            r.push((t, scored));
        }
        Ok(())
    }

    /// The stream being scored.
    pub fn stream(&self) -> &'a [u32] {
        self.stream
    }

    /// The running totals (of the mixture when mixing).
    pub fn totals(&self) -> &BpbAccumulator {
        &self.acc
    }

    /// The mixer, when one is attached.
    pub fn mixer(&self) -> Option<&Mixer> {
        self.mix.as_ref().map(|(m, _)| m)
    }

    /// The result of the pass and, when mixing, each expert's.
    pub fn finish(self) -> (EvalResult, Option<MixedEval>) {
        let secs = self.start.elapsed().as_secs_f64();
        let result = self.acc.result(secs);
        let ablation = self
            .ablation
            .iter()
            .map(|(e, _, a)| Ablation {
                removed: *e,
                result: a.result(secs),
            })
            .collect();
        let mixed = self.mix.map(|(m, eacc)| MixedEval {
            result,
            experts: m.expert_stats(&eacc, secs),
            ablation,
        });
        (result, mixed)
    }
}
