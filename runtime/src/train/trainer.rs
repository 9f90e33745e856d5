//! The training loop of `train_gpt.py` (spec 5.3) over any [`TrainBackend`]:
//!
//! ```text
//! per step: lr_mul, momentum ← schedule(step, elapsed)
//!           for each micro-step, for each rank: loss, ∇ on its span (fake-quantized weights under QAT)
//!           ∇ ← mean over micro-steps, all-reduce mean over ranks
//!           clip → Muon + Adam groups → EMA
//! ```
//! The optimizer runs on host f32 weights (the oracle), except Muon's Newton-Schulz products,
//! which run on the backend with the forward/backward.
//! Training time excludes validation, as the reference's timer does.

use super::base_grads::BaseGrads;
use super::collective::{Collective, HostCollective};
use super::ema::Ema;
use super::muon::OnBackend;
use super::optimizers::{OptimizerConfig, Optimizers};
use super::qat::{fake_quantized, QatMode};
use super::schedule::Schedule;
use super::tape::TrainModel;
use crate::backend::train::TrainBackend;
use crate::data::{Batch, TokenStream};
use crate::model::ModelWeights;
use crate::{Error, Result};
use std::time::Instant;

/// Everything that defines a run besides the model and the data.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub iterations: usize,
    /// Tokens per optimizer step over all ranks and micro-steps (`TRAIN_BATCH_TOKENS`).
    pub train_batch_tokens: usize,
    pub train_seq_len: usize,
    /// Data-parallel ranks (one replica each).
    pub world_size: usize,
    /// Micro-steps per optimizer step on each rank.
    pub grad_accum_steps: usize,
    /// Steps run and then thrown away (weights, optimizers and data reset), as the reference
    /// does to warm up compilation; they only warm caches here.
    pub warmup_steps: usize,
    pub schedule: Schedule,
    pub optim: OptimizerConfig,
    /// EMA decay of the weights (spec 4.9), `None` for no EMA.
    pub ema_decay: Option<f32>,
    pub qat: QatMode,
    /// Validate every N steps (0: only at the end).
    pub val_loss_every: usize,
    /// Print the train loss every N steps (and on the first 10).
    pub train_log_every: usize,
}

impl TrainConfig {
    /// Checks the batch geometry.
    pub fn validate(&self) -> Result<()> {
        let per = self.world_size * self.grad_accum_steps;
        if self.world_size == 0 || self.grad_accum_steps == 0 || self.train_seq_len == 0 {
            return Err(Error::Usage(
                "world size, grad accumulation steps and TRAIN_SEQ_LEN must be positive".into(),
            ));
        }
        if !self
            .train_batch_tokens
            .is_multiple_of(per * self.train_seq_len)
            || self.train_batch_tokens == 0
        {
            return Err(Error::Usage(format!(
                "TRAIN_BATCH_TOKENS {} must be a positive multiple of world {} x accum {} x \
                 TRAIN_SEQ_LEN {}",
                self.train_batch_tokens, self.world_size, self.grad_accum_steps, self.train_seq_len
            )));
        }
        Ok(())
    }
}

/// Where one optimizer step spent its wall time, in ms. On an asynchronous device the
/// gradient phase ends when the gradients reach the host, so it includes the device's work.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepPhases {
    /// Weight upload (fake-quantized under QAT), forward and backward of every micro-step and
    /// rank, their sum on the backend, and one gradient download per rank.
    pub grads_ms: f64,
    /// The all-reduce of the ranks' gradients.
    pub reduce_ms: f64,
    /// Clipping, Muon (Newton-Schulz on the backend) and the Adam groups.
    pub optim_ms: f64,
    /// The EMA update.
    pub ema_ms: f64,
}

/// What one optimizer step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// 1-based step just completed.
    pub step: usize,
    /// Mean loss of rank 0 over its micro-steps (what `train_gpt.py` logs).
    pub train_loss: f64,
    pub grad_norm: f64,
    pub lr_mul: f32,
    pub qat: bool,
    /// Training time so far (validation excluded).
    pub train_time_ms: f64,
    /// This step's time by phase.
    pub phases: StepPhases,
    /// Host-device traffic of this step (device backends only).
    pub traffic: Option<crate::backend::Traffic>,
}

/// A run in progress: weights, optimizer state, EMA, data position, step and clock.
pub struct Trainer<B: TrainBackend + Clone> {
    pub cfg: TrainConfig,
    backend: B,
    pub weights: ModelWeights,
    pub(crate) opt: Optimizers,
    pub(crate) ema: Option<Ema>,
    pub(crate) stream: TokenStream,
    /// Optimizer steps completed.
    pub step: usize,
    /// Training time accumulated over completed steps, in ms.
    pub elapsed_ms: f64,
}

impl<B: TrainBackend + Clone> Trainer<B> {
    /// A run from step 0.
    pub fn new(
        cfg: TrainConfig,
        backend: B,
        weights: ModelWeights,
        stream: TokenStream,
    ) -> Result<Self> {
        cfg.validate()?;
        let opt = Optimizers::new(cfg.optim, weights.config.tied_embeddings);
        let ema = cfg.ema_decay.map(|d| Ema::new(d, &weights));
        Ok(Trainer {
            cfg,
            backend,
            weights,
            opt,
            ema,
            stream,
            step: 0,
            elapsed_ms: 0.0,
        })
    }

    /// The weights to export: the EMA when enabled, else the live weights.
    pub fn final_weights(&self) -> &ModelWeights {
        self.ema.as_ref().map_or(&self.weights, |e| e.weights())
    }

    /// The backend the forward and backward run on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Loss and (backend-resident) gradients of one rank's micro-batch.
    fn rank_grads(model: &TrainModel<B>, b: &Batch) -> Result<(f64, BaseGrads<B::Tensor>)> {
        let rows: Vec<usize> = (0..b.inputs.len()).collect();
        model.loss_and_base_grads(&b.inputs, b.rows, b.seq, &rows, &b.targets)
    }

    /// Runs one optimizer step.
    pub fn train_step(&mut self) -> Result<StepReport> {
        let t0 = Instant::now();
        let traffic0 = self.backend.traffic();
        let c = &self.cfg;
        let lr_mul = c.schedule.lr_mul(self.step, self.elapsed_ms);
        let qat = c.qat.active(lr_mul);
        // The forward sees fake-quantized weights under QAT, the live weights otherwise.
        let model = if qat {
            TrainModel::new(self.backend.clone(), &fake_quantized(&self.weights))?
        } else {
            TrainModel::new(self.backend.clone(), &self.weights)?
        };
        let world = c.world_size;
        let accum = c.grad_accum_steps;
        // Each rank's mean gradient over its micro-steps, summed on the backend.
        let mut rank_sums: Vec<Option<BaseGrads<B::Tensor>>> = (0..world).map(|_| None).collect();
        let s = 1.0 / accum as f32;
        let mut loss0 = 0.0;
        for _ in 0..accum {
            let batches =
                self.stream
                    .next_batch(c.train_batch_tokens, c.train_seq_len, world, accum)?;
            for (r, b) in batches.iter().enumerate() {
                let (loss, mut g) = Self::rank_grads(&model, b)?;
                if !loss.is_finite() {
                    return Err(Error::Backend(format!(
                        "step {}: train loss is {loss} (diverged)",
                        self.step + 1
                    )));
                }
                if r == 0 {
                    loss0 += loss / accum as f64;
                }
                match &mut rank_sums[r] {
                    Some(sum) => sum.add_scaled(&self.backend, g, s)?,
                    None => {
                        g.scale(&self.backend, s)?;
                        rank_sums[r] = Some(g);
                    }
                }
            }
        }
        drop(model);
        let mut rank_grads = rank_sums
            .into_iter()
            .map(|g| {
                g.ok_or_else(|| Error::Backend("no micro-step ran".into()))?
                    .download(&self.backend)
            })
            .collect::<Result<Vec<ModelWeights>>>()?;
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        let grads_ms = ms(t0);
        let t1 = Instant::now();
        HostCollective { world }.all_reduce_mean(&mut rank_grads)?;
        let reduce_ms = ms(t1);
        let t2 = Instant::now();
        let mut grads = rank_grads.swap_remove(0);
        let momentum = c.schedule.muon_momentum(self.step);
        let grad_norm = self.opt.step_with(
            &OnBackend(&self.backend),
            &mut self.weights,
            &mut grads,
            lr_mul,
            momentum,
        )?;
        let optim_ms = ms(t2);
        let t3 = Instant::now();
        if let Some(e) = &mut self.ema {
            e.update(&mut self.weights);
        }
        let ema_ms = ms(t3);
        self.step += 1;
        self.elapsed_ms += ms(t0);
        Ok(StepReport {
            step: self.step,
            train_loss: loss0,
            grad_norm,
            lr_mul,
            qat,
            train_time_ms: self.elapsed_ms,
            phases: StepPhases {
                grads_ms,
                reduce_ms,
                optim_ms,
                ema_ms,
            },
            traffic: traffic0.and_then(|a| self.backend.traffic().map(|b| b.since(a))),
        })
    }

    /// Runs and discards `cfg.warmup_steps` steps: afterwards weights, optimizers, EMA, data and
    /// clock are back where they started. `log` receives `warmup_step:i/N` lines.
    pub fn warm_up(&mut self, log: &mut dyn FnMut(&str)) -> Result<()> {
        let n = self.cfg.warmup_steps;
        if n == 0 {
            return Ok(());
        }
        let weights = self.weights.clone();
        let opt = self.opt.clone();
        let ema = self.ema.clone();
        let pos = self.stream.position();
        let (step, elapsed) = (self.step, self.elapsed_ms);
        for i in 1..=n {
            self.train_step()?;
            log(&format!("warmup_step:{i}/{n}"));
        }
        self.weights = weights;
        self.opt = opt;
        self.ema = ema;
        self.stream.seek(pos)?;
        self.step = step;
        self.elapsed_ms = elapsed;
        Ok(())
    }

    /// Whether the run is over (iterations reached or wall clock spent).
    pub fn finished(&self) -> bool {
        self.step >= self.cfg.iterations
            || self
                .cfg
                .schedule
                .max_wallclock_ms
                .is_some_and(|cap| self.elapsed_ms >= cap)
    }

    /// Whether step `self.step` should be followed by a validation.
    pub fn should_validate(&self) -> bool {
        self.finished()
            || (self.cfg.val_loss_every > 0 && self.step.is_multiple_of(self.cfg.val_loss_every))
    }

    /// Whether the report of step `r.step` gets a log line (`train_gpt.py`'s rule).
    pub fn should_log(&self, step: usize) -> bool {
        let every = self.cfg.train_log_every;
        every > 0 && (step <= 10 || step.is_multiple_of(every) || self.finished())
    }

    /// The log line of a step, in `train_gpt.py`'s format.
    pub fn step_line(&self, r: &StepReport) -> String {
        format!(
            "step:{}/{} train_loss:{:.4} train_time:{:.0}ms step_avg:{:.2}ms",
            r.step,
            self.cfg.iterations,
            r.train_loss,
            r.train_time_ms,
            r.train_time_ms / r.step.max(1) as f64
        )
    }

    /// The `--profile` line of a step: its time by phase, and on a device backend what crossed
    /// between host and device.
    pub fn profile_line(&self, r: &StepReport) -> String {
        let p = r.phases;
        let mut s = format!(
            "profile step:{} grads:{:.1}ms reduce:{:.1}ms optim:{:.1}ms ema:{:.1}ms",
            r.step, p.grads_ms, p.reduce_ms, p.optim_ms, p.ema_ms
        );
        if let Some(t) = r.traffic {
            s += &format!(
                " h2d:{}B d2h:{}B syncs:{} launches:{}",
                t.h2d_bytes, t.d2h_bytes, t.syncs, t.launches
            );
        }
        s
    }

    /// The validation log line at the current step.
    pub fn val_line(&self, val_loss: f64, val_bpb: f64) -> String {
        format!(
            "step:{}/{} val_loss:{:.4} val_bpb:{:.4} train_time:{:.0}ms step_avg:{:.2}ms",
            self.step,
            self.cfg.iterations,
            val_loss,
            val_bpb,
            self.elapsed_ms,
            self.elapsed_ms / self.step.max(1) as f64
        )
    }
}
