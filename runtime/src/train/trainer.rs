//! The training loop of `train_gpt.py` (spec 5.3) over any [`TrainBackend`]:
//!
//! ```text
//! per step: lr_mul, momentum ← schedule(step, elapsed)
//!           for each micro-step, for each rank: loss, ∇ on its span (fake-quantized weights under QAT)
//!           ∇ ← mean over micro-steps, all-reduce mean over ranks
//!           clip → Muon + Adam groups → EMA
//! ```
//! Everything runs on the backend, whose float32 oracles (`backend/cpu/optim.rs`) are the
//! host optimizers' own arithmetic: weights, gradients, optimizer state and EMA stay there for
//! the whole run, and a step reads back only its squared gradient norm and its loss.
//! Training time excludes validation, as the reference's timer does.

use super::base_grads::BaseGrads;
use super::collective::{DeviceCollective, InProcess};
use super::ema::Ema;
use super::groups::{optimizer_group, Group};
use super::muon::shape_scale;
use super::optimizers::{OptimizerConfig, Optimizers, ADAM_GROUPS};
use super::qat::QatMode;
use super::schedule::Schedule;
use super::sgd::clip_coef;
use super::tape::TrainModel;
use crate::backend::cpu::optim::AdamStep;
use crate::backend::train::TrainBackend;
use crate::data::TokenStream;
use crate::model::{DeviceModel, Matrix, ModelWeights, Params, Scalars};
use crate::{Error, Result};
use web_time::Instant;

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
    /// Kernel launches (and library calls) of each phase on a device backend: what fusion and
    /// CUDA graphs are to cut.
    pub launches: Option<PhaseLaunches>,
}

/// Kernel launches by phase of one optimizer step ([`crate::backend::Traffic::launches`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PhaseLaunches {
    /// Every micro-step's forward and backward (and QAT's weight quantization), on every rank.
    pub grads: u64,
    /// Forward-backward passes in `grads` (micro-steps × ranks).
    pub micro_steps: u64,
    pub reduce: u64,
    pub optim: u64,
    pub ema: u64,
}

impl PhaseLaunches {
    /// Launches per micro-step (forward + backward), the figure a fused step lowers.
    pub fn per_micro_step(&self) -> f64 {
        self.grads as f64 / self.micro_steps.max(1) as f64
    }
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

/// The optimizers' state on the backend: one Muon momentum buffer per matrix, Adam's two
/// moments per parameter of each group (zeros until the first step).
struct DeviceOptState<T> {
    muon: Vec<T>,
    adam: [(Vec<T>, Vec<T>); 3],
}

/// A run's state downloaded to the host: what checkpoints and warm-up save and restore.
pub struct HostState {
    pub weights: ModelWeights,
    pub opt: Optimizers,
    pub ema: Option<Ema>,
}

/// A run in progress. Weights, gradients, the optimizers' state and the EMA live on the
/// backend for the whole run: uploaded once ([`Trainer::new`], or a resume), downloaded only
/// for export and checkpoints ([`Trainer::weights`], [`Trainer::host_state`]). Per step the host
/// receives two small reads: the squared gradient norm (the clip factor needs it before the
/// update) and, after it, the loss with the scalar parameters the forward multiplies by.
pub struct Trainer<B: TrainBackend + Clone> {
    pub cfg: TrainConfig,
    backend: B,
    /// The live weights.
    model: TrainModel<B>,
    /// Hyper-parameters and step counts (the moments are in `dev`).
    pub(crate) opt: Optimizers,
    dev: DeviceOptState<B::Tensor>,
    /// Decay and shadow weights of the EMA.
    ema: Option<(f32, Params<B::Tensor>)>,
    /// Each parameter's optimizer group and its index in the group, in the tree's order.
    groups: Vec<(Group, usize)>,
    pub(crate) stream: TokenStream,
    /// Optimizer steps completed.
    pub step: usize,
    /// Training time accumulated over completed steps, in ms.
    pub elapsed_ms: f64,
}

/// The index in `ADAM_GROUPS` of an Adam group.
fn adam_slot(g: Group) -> usize {
    ADAM_GROUPS
        .iter()
        .position(|(x, _)| *x == g)
        .unwrap_or(ADAM_GROUPS.len() - 1)
}

impl<B: TrainBackend + Clone> Trainer<B> {
    /// A run from step 0 (uploads `weights` once).
    pub fn new(
        cfg: TrainConfig,
        backend: B,
        weights: ModelWeights,
        stream: TokenStream,
    ) -> Result<Self> {
        cfg.validate()?;
        let opt = Optimizers::new(cfg.optim, weights.config.tied_embeddings);
        let mut counts = [0usize; 4];
        let mut groups = Vec::new();
        let mut w = weights.clone();
        for p in w.params_mut() {
            let g = optimizer_group(&p.name, &p.shape, cfg.optim.muon_route);
            let k = match g {
                Group::Matrix => 3,
                g => adam_slot(g),
            };
            groups.push((g, counts[k]));
            counts[k] += 1;
        }
        let model = TrainModel::new(backend.clone(), &weights)?;
        let mut t = Trainer {
            dev: DeviceOptState {
                muon: Vec::new(),
                adam: Default::default(),
            },
            ema: None,
            cfg,
            backend,
            model,
            opt,
            groups,
            stream,
            step: 0,
            elapsed_ms: 0.0,
        };
        t.dev = t.zero_opt_state()?;
        t.ema = match t.cfg.ema_decay {
            Some(d) => Some((d, t.copy_params(t.model.params())?)),
            None => None,
        };
        Ok(t)
    }

    /// Zeros of every moment buffer, on the backend.
    fn zero_opt_state(&self) -> Result<DeviceOptState<B::Tensor>> {
        let be = &self.backend;
        let mut st = DeviceOptState {
            muon: Vec::new(),
            adam: Default::default(),
        };
        for ((_, _, w), (g, _)) in self.model.params().leaves().into_iter().zip(&self.groups) {
            let (r, c) = be.shape(w);
            match g {
                Group::Matrix => st.muon.push(be.zeros(r, c)?),
                g => {
                    let slot = &mut st.adam[adam_slot(*g)];
                    slot.0.push(be.zeros(r, c)?);
                    slot.1.push(be.zeros(r, c)?);
                }
            }
        }
        Ok(st)
    }

    /// A device copy of every parameter of `p`.
    fn copy_params(&self, p: &Params<B::Tensor>) -> Result<Params<B::Tensor>> {
        p.try_map(|_, _, t| self.backend.copy(t))
    }

    /// The live weights, downloaded.
    pub fn weights(&self) -> Result<ModelWeights> {
        self.download(self.model.params())
    }

    fn download(&self, p: &Params<B::Tensor>) -> Result<ModelWeights> {
        Ok(ModelWeights {
            config: self.model.config().clone(),
            params: p.try_map(|_, _, t| {
                let (r, c) = self.backend.shape(t);
                Matrix::new(r, c, self.backend.download(t)?)
            })?,
        })
    }

    /// The weights to export, downloaded: the EMA when enabled, else the live weights.
    pub fn final_weights(&self) -> Result<ModelWeights> {
        match &self.ema {
            Some((_, e)) => self.download(e),
            None => self.weights(),
        }
    }

    /// The live model, to evaluate without copying its weights anywhere.
    pub fn model(&self) -> &DeviceModel<B> {
        self.model.model()
    }

    /// The model [`Trainer::final_weights`] describes, on the backend (the EMA's shadow copied on
    /// the device, or the live weights copied).
    pub fn final_model(&self) -> Result<DeviceModel<B>> {
        let src = self.ema.as_ref().map_or(self.model.params(), |(_, e)| e);
        let m = TrainModel::from_params(
            self.backend.clone(),
            self.model.config().clone(),
            self.copy_params(src)?,
            None,
        )?;
        Ok(m.model)
    }

    /// Replaces the live weights (uploaded; optimizer state and EMA unchanged).
    pub fn set_weights(&mut self, weights: &ModelWeights) -> Result<()> {
        self.model = TrainModel::new(self.backend.clone(), weights)?;
        Ok(())
    }

    /// The run's state on the host (weights, optimizer moments, EMA), for checkpoints.
    pub fn host_state(&self) -> Result<HostState> {
        let be = &self.backend;
        let mut opt = self.opt.clone();
        opt.muon.bufs = self
            .dev
            .muon
            .iter()
            .map(|t| be.download(t))
            .collect::<Result<_>>()?;
        for (k, (g, _)) in ADAM_GROUPS.iter().enumerate() {
            let (m, v) = &self.dev.adam[k];
            let a = opt.adam_mut(*g);
            a.m = m.iter().map(|t| be.download(t)).collect::<Result<_>>()?;
            a.v = v.iter().map(|t| be.download(t)).collect::<Result<_>>()?;
        }
        let ema = match &self.ema {
            Some((d, e)) => Some(Ema::from_shadow(*d, self.download(e)?)),
            None => None,
        };
        Ok(HostState {
            weights: self.weights()?,
            opt,
            ema,
        })
    }

    /// Uploads a state [`Trainer::host_state`] gave (or a checkpoint holds). Moment buffers a
    /// state does not have yet (no step taken) start at zero.
    pub fn set_host_state(&mut self, s: &HostState) -> Result<()> {
        let be = self.backend.clone();
        self.set_weights(&s.weights)?;
        let mut dev = self.zero_opt_state()?;
        let up = |dst: &mut Vec<B::Tensor>, src: &[Vec<f32>]| -> Result<()> {
            if src.is_empty() {
                return Ok(());
            }
            if src.len() != dst.len() {
                return Err(Error::Usage("optimizer state of another model".into()));
            }
            for (d, v) in dst.iter_mut().zip(src) {
                let (r, c) = be.shape(d);
                *d = be.upload(v, r, c)?;
            }
            Ok(())
        };
        up(&mut dev.muon, &s.opt.muon.bufs)?;
        for (k, (g, _)) in ADAM_GROUPS.iter().enumerate() {
            let a = match g {
                Group::Embed => &s.opt.embed,
                Group::Head => &s.opt.head,
                _ => &s.opt.scalar,
            };
            up(&mut dev.adam[k].0, &a.m)?;
            up(&mut dev.adam[k].1, &a.v)?;
        }
        self.dev = dev;
        // Hyper-parameters and step counts; the host buffers stay empty (the moments are on
        // the backend).
        let mut opt = s.opt.clone();
        opt.muon.bufs.clear();
        for (g, _) in ADAM_GROUPS {
            let a = opt.adam_mut(g);
            a.m.clear();
            a.v.clear();
        }
        self.opt = opt;
        self.ema = match (&s.ema, self.cfg.ema_decay) {
            (Some(e), Some(d)) => {
                let m = TrainModel::new(be.clone(), e.weights())?;
                Some((d, m.model.params))
            }
            (None, Some(d)) => Some((d, self.copy_params(self.model.params())?)),
            _ => None,
        };
        Ok(())
    }

    /// The backend the forward and backward run on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The model the forward sees this step: under QAT a copy whose block matrices are
    /// fake-quantized on the device (the gradient then flows to the live weights unchanged).
    fn quantized_model(&self) -> Result<TrainModel<B>> {
        let be = &self.backend;
        let mut i = 0;
        let groups = &self.groups;
        let params = self.model.params().try_map(|_, _, t| {
            let g = groups[i].0;
            i += 1;
            if g == Group::Matrix {
                be.fake_quant_rows(t)
            } else {
                be.copy(t)
            }
        })?;
        TrainModel::from_params(
            be.clone(),
            self.model.config().clone(),
            params,
            Some(self.model.scalars().clone()),
        )
    }

    /// Runs one optimizer step.
    pub fn train_step(&mut self) -> Result<StepReport> {
        let t0 = Instant::now();
        let traffic0 = self.backend.traffic();
        let be = self.backend.clone();
        let c = self.cfg.clone();
        let lr_mul = c.schedule.lr_mul(self.step, self.elapsed_ms);
        let qat = c.qat.active(lr_mul);
        let quantized = if qat {
            Some(self.quantized_model()?)
        } else {
            None
        };
        let model = quantized.as_ref().unwrap_or(&self.model);
        let (world, accum) = (c.world_size, c.grad_accum_steps);
        // Each rank's mean gradient over its micro-steps, summed on the backend, and rank 0's
        // mean loss (a [1, 1] tensor: nothing is read back per micro-step).
        let mut rank_sums: Vec<Option<BaseGrads<B::Tensor>>> = (0..world).map(|_| None).collect();
        let s = 1.0 / accum as f32;
        let mut loss0 = be.zeros(1, 1)?;
        for _ in 0..accum {
            let batches =
                self.stream
                    .next_batch(c.train_batch_tokens, c.train_seq_len, world, accum)?;
            for (r, b) in batches.iter().enumerate() {
                let rows: Vec<usize> = (0..b.inputs.len()).collect();
                let (loss, mut g) =
                    model.loss_sum_and_base_grads(&b.inputs, b.rows, b.seq, &rows, &b.targets)?;
                if r == 0 {
                    be.add_scalar_scaled(&mut loss0, &loss, s / rows.len().max(1) as f32)?;
                }
                match &mut rank_sums[r] {
                    Some(sum) => sum.add_scaled(&be, g, s)?,
                    None => {
                        g.scale(&be, s)?;
                        rank_sums[r] = Some(g);
                    }
                }
            }
        }
        drop(quantized);
        let mut ranks = rank_sums
            .into_iter()
            .map(|g| {
                g.map(|g| g.params)
                    .ok_or_else(|| Error::Backend("no micro-step ran".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        let grads_ms = ms(t0);
        let launches = || be.traffic().map(|t| t.launches);
        let l1 = launches();
        let t1 = Instant::now();
        InProcess { world }.all_reduce_mean(&be, &mut ranks)?;
        let reduce_ms = ms(t1);
        let l2 = launches();
        let t2 = Instant::now();
        let mut grads = ranks.swap_remove(0);
        let momentum = c.schedule.muon_momentum(self.step);
        let grad_norm = self.optimizer_step(&mut grads, lr_mul, momentum)?;
        let optim_ms = ms(t2);
        let l3 = launches();
        let t3 = Instant::now();
        if let Some((d, e)) = &mut self.ema {
            e.zip_mut(self.model.params(), |_, e, w| be.ema_update(e, w, *d))?;
        }
        let ema_ms = ms(t3);
        let l4 = launches();
        let phase_launches = match (traffic0, l1, l2, l3, l4) {
            (Some(t0), Some(l1), Some(l2), Some(l3), Some(l4)) => Some(PhaseLaunches {
                grads: l1 - t0.launches,
                micro_steps: (world * accum) as u64,
                reduce: l2 - l1,
                optim: l3 - l2,
                ema: l4 - l3,
            }),
            _ => None,
        };
        // The second read of the step: the loss and the scalar factors of the new weights.
        let mut read = vec![&loss0];
        read.extend(Scalars::tensors(self.model.params()));
        let vals = be.read_values(&read)?;
        let scalars = Scalars::from_values(self.model.params(), &vals[1..]);
        self.model.refresh(scalars)?;
        let loss = vals[0] as f64;
        if !loss.is_finite() {
            return Err(Error::Backend(format!(
                "step {}: train loss is {loss} (diverged)",
                self.step + 1
            )));
        }
        self.step += 1;
        self.elapsed_ms += ms(t0);
        Ok(StepReport {
            step: self.step,
            train_loss: loss,
            grad_norm,
            lr_mul,
            qat,
            train_time_ms: self.elapsed_ms,
            phases: StepPhases {
                grads_ms,
                reduce_ms,
                optim_ms,
                ema_ms,
                launches: phase_launches,
            },
            traffic: traffic0.and_then(|a| self.backend.traffic().map(|b| b.since(a))),
        })
    }

    /// Clipping, Muon and the Adam groups on the backend (as [`Optimizers::step_with`] does on
    /// the host, op by op). Returns the gradient norm before clipping.
    fn optimizer_step(
        &mut self,
        grads: &mut Params<B::Tensor>,
        lr_mul: f32,
        momentum: f32,
    ) -> Result<f64> {
        let be = self.backend.clone();
        let norm = be
            .sum_squares(
                &grads
                    .leaves()
                    .into_iter()
                    .map(|(_, _, g)| g)
                    .collect::<Vec<_>>(),
            )?
            .sqrt();
        let coef = clip_coef(norm, self.cfg.optim.grad_clip_norm);
        if coef < 1.0 {
            for g in grads.values_mut() {
                *g = be.scaled(g, coef)?;
            }
        }
        self.opt.set_schedule(lr_mul, momentum);
        let muon = self.opt.muon.cfg;
        // Each Adam group that has parameters counts one more step.
        let mut factors: [Option<AdamStep>; 3] = [None, None, None];
        for (k, (g, _)) in ADAM_GROUPS.iter().enumerate() {
            if self.groups.iter().any(|(x, _)| x == g) {
                let a = self.opt.adam_mut(*g);
                a.step += 1;
                factors[k] = Some(a.factors());
            }
        }
        let leaves = self.model.params_mut().leaves_mut();
        let gl = grads.leaves();
        // Muon: every matrix's momentum, then Newton-Schulz over all of them at once (a device
        // backend batches the matrices of one shape), then each update. Each parameter's
        // update reads only its own state, so the order is free.
        let mut us = Vec::new();
        for ((_, _, g), &(grp, idx)) in gl.iter().zip(&self.groups) {
            if grp == Group::Matrix {
                us.push(be.muon_momentum(
                    &mut self.dev.muon[idx],
                    g,
                    muon.momentum,
                    muon.nesterov,
                )?);
            }
        }
        let refs: Vec<&B::Tensor> = us.iter().collect();
        let mut orth = be
            .newton_schulz_many(&refs, muon.ns_steps, muon.bf16)?
            .into_iter();
        for (((_, _, w), (_, _, g)), &(grp, idx)) in leaves.into_iter().zip(gl).zip(&self.groups) {
            match grp {
                Group::Matrix => {
                    let (r, c) = be.shape(w);
                    let o = orth
                        .next()
                        .ok_or_else(|| Error::Backend("Newton-Schulz result missing".into()))?;
                    be.muon_apply(
                        w,
                        &o,
                        1.0 - muon.lr * muon.weight_decay,
                        muon.lr,
                        shape_scale(r, c),
                        muon.bf16,
                    )?;
                }
                g_ => {
                    let k = adam_slot(g_);
                    let f = factors[k]
                        .ok_or_else(|| Error::Backend("Adam group without factors".into()))?;
                    let (m, v) = &mut self.dev.adam[k];
                    be.adam_update(w, g, &mut m[idx], &mut v[idx], &f)?;
                }
            }
        }
        Ok(norm)
    }

    /// Runs and discards `cfg.warmup_steps` steps: afterwards weights, optimizers, EMA, data and
    /// clock are back where they started. `log` receives `warmup_step:i/N` lines.
    pub fn warm_up(&mut self, log: &mut dyn FnMut(&str)) -> Result<()> {
        let n = self.cfg.warmup_steps;
        if n == 0 {
            return Ok(());
        }
        let state = self.host_state()?;
        let pos = self.stream.position();
        let (step, elapsed) = (self.step, self.elapsed_ms);
        for i in 1..=n {
            self.train_step()?;
            log(&format!("warmup_step:{i}/{n}"));
        }
        self.set_host_state(&state)?;
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
        if let Some(l) = p.launches {
            s += &format!(
                " (per micro-step:{:.0} optim:{} ema:{})",
                l.per_micro_step(),
                l.optim,
                l.ema
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
