//! `pgolf-rt train` machinery on the CPU with a tiny model on the real training shards:
//! the loss falls, a checkpointed and resumed run follows the same loss curve, N data-parallel
//! ranks give the update of one rank accumulating the same global batch, micro-steps summed on
//! the backend equal host sums, and exports round-trip.

mod common;

use pgolf_rt::artifact::Artifact;
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::data::TokenStream;
use pgolf_rt::model::{ConfigOverrides, ModelWeights};
use pgolf_rt::train::{
    export_weights, init_weights, load_checkpoint, save_checkpoint, Architecture, ExportKind,
    InitConfig, OptimizerConfig, QatMode, Schedule, SidecarArch, TrainConfig, TrainModel, Trainer,
};
use std::path::{Path, PathBuf};

fn train_glob(shared: &Path) -> String {
    shared
        .join("data/text_sp1024/fineweb_train_*.bin")
        .to_string_lossy()
        .into_owned()
}

fn arch() -> Architecture {
    Architecture {
        vocab_size: 1024,
        num_layers: 2,
        model_dim: 32,
        num_heads: 2,
        num_kv_heads: 1,
        mlp_mult: 2.0,
        tie_embeddings: true,
        ..Architecture::baseline()
    }
}

/// [`arch`] with the 11-layer lineage's modules: BigramHash (projected), SmearGate, value
/// embeddings.
fn lineage_modules() -> Architecture {
    Architecture {
        bigram: Some((64, 16)),
        smear_gate: true,
        value_embed: Some((16, 1)),
        sidecar: None,
        ..arch()
    }
}

fn config(iterations: usize, world: usize, accum: usize) -> TrainConfig {
    TrainConfig {
        iterations,
        train_batch_tokens: 1024,
        train_seq_len: 64,
        world_size: world,
        grad_accum_steps: accum,
        warmup_steps: 0,
        schedule: Schedule {
            iterations,
            warmdown_iters: 3,
            max_wallclock_ms: None,
            muon_momentum: 0.95,
            muon_momentum_warmup_start: 0.85,
            muon_momentum_warmup_steps: 5,
        },
        optim: OptimizerConfig {
            grad_clip_norm: 1.0,
            ..OptimizerConfig::default()
        },
        ema_decay: Some(0.9),
        qat: QatMode::Late(0.5),
        val_loss_every: 0,
        train_log_every: 1,
    }
}

fn trainer(shared: &Path, cfg: TrainConfig) -> Trainer<CpuBackend> {
    trainer_for(shared, cfg, arch(), &ConfigOverrides::default())
}

fn trainer_for(
    shared: &Path,
    cfg: TrainConfig,
    arch: Architecture,
    ov: &ConfigOverrides,
) -> Trainer<CpuBackend> {
    let mcfg = arch.config(ov).unwrap();
    let w = init_weights(&mcfg, &InitConfig::default());
    let stream = TokenStream::open(&train_glob(shared)).unwrap();
    Trainer::new(cfg, CpuBackend::new(), w, stream).unwrap()
}

fn flat(w: &ModelWeights) -> Vec<f32> {
    let mut w = w.clone();
    w.params_mut()
        .into_iter()
        .flat_map(|p| p.values.to_vec())
        .collect()
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pgolf-train-{}-{name}", std::process::id()))
}

#[test]
fn loss_falls_and_resume_follows_the_same_curve() {
    let Some(shared) = common::shared() else {
        return;
    };
    let n = 16;
    let mut a = trainer(&shared, config(n, 1, 1));
    let losses: Vec<f64> = (0..n).map(|_| a.train_step().unwrap().train_loss).collect();
    println!("losses {losses:?}");
    let (first, last) = (losses[0] + losses[1], losses[n - 2] + losses[n - 1]);
    assert!(
        last / 2.0 < first / 2.0 - 0.5,
        "loss did not fall: {losses:?}"
    );
    assert!(a.finished());

    // Same run, killed after 8 steps and resumed from its checkpoint in a fresh trainer.
    let ck = tmp("resume.pt");
    let mut b = trainer(&shared, config(n, 1, 1));
    for _ in 0..8 {
        b.train_step().unwrap();
    }
    save_checkpoint(&b, &ck).unwrap();
    drop(b);
    let mut c = trainer(&shared, config(n, 1, 1));
    load_checkpoint(&mut c, &ck).unwrap();
    assert_eq!(c.step, 8);
    let resumed: Vec<f64> = (8..n).map(|_| c.train_step().unwrap().train_loss).collect();
    for (i, (x, y)) in losses[8..].iter().zip(&resumed).enumerate() {
        assert!((x - y).abs() < 1e-9, "step {}: {x} vs resumed {y}", i + 9);
    }
    let (wa, wc) = (
        flat(&a.final_weights().unwrap()),
        flat(&c.final_weights().unwrap()),
    );
    let max = common::max_abs_diff(&wa, &wc);
    assert!(max < 1e-6, "resumed weights differ by {max}");

    // A checkpoint from another configuration is refused with a clear message.
    let mut other = trainer(&shared, config(n + 1, 1, 1));
    let e = load_checkpoint(&mut other, &ck).unwrap_err().to_string();
    assert!(e.contains("different configuration"), "{e}");
    std::fs::remove_file(&ck).unwrap();
}

#[test]
fn two_ranks_match_one_rank_accumulating_the_same_global_batch() {
    let Some(shared) = common::shared() else {
        return;
    };
    let mut dp = trainer(&shared, config(3, 2, 1));
    let mut acc = trainer(&shared, config(3, 1, 2));
    for _ in 0..3 {
        dp.train_step().unwrap();
        acc.train_step().unwrap();
    }
    let (x, y) = (flat(&dp.weights().unwrap()), flat(&acc.weights().unwrap()));
    let max = common::max_abs_diff(&x, &y);
    println!("max |w_dp - w_accum| = {max:e}");
    assert!(max < 1e-5, "data-parallel update differs by {max}");
    // And the ranks really saw different data: one rank alone gives another update.
    let mut single = trainer(&shared, config(3, 1, 1));
    for _ in 0..3 {
        single.train_step().unwrap();
    }
    let z = flat(&single.weights().unwrap());
    let diff = common::max_abs_diff(&x, &z);
    assert!(diff > 1e-4, "half the batch gave the same update ({diff})");
}

#[test]
fn exports_round_trip_through_the_loader() {
    let Some(shared) = common::shared() else {
        return;
    };
    let mut t = trainer(&shared, config(2, 1, 1));
    t.train_step().unwrap();
    t.train_step().unwrap();
    let w = t.final_weights().unwrap();
    for kind in [ExportKind::Int8Zlib, ExportKind::Int6Zstd] {
        let bytes = export_weights(&w, kind).unwrap();
        let art = Artifact::from_bytes(&bytes).unwrap();
        let back = ModelWeights::from_artifact(&art, &ConfigOverrides::default()).unwrap();
        assert_eq!(back.config, w.config);
        let (x, y) = (flat(&w), flat(&back));
        let max = common::max_abs_diff(&x, &y);
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        println!(
            "{kind:?}: {} bytes, max error {max:e} (max |w| {amax})",
            bytes.len()
        );
        assert!(max > 0.0, "{kind:?}: nothing was quantized");
        // Every row of a quantized matrix is within one step of its own scale (a half step
        // of rounding, plus the fp16 scale and the clip search's trim of the row's extreme
        // value); everything else (vectors, scalars) is stored as fp16 or exactly.
        let qmax = match kind {
            ExportKind::Int8Zlib => 127.0,
            ExportKind::Int6Zstd => 31.0,
        };
        let (mut a, mut b) = (w.clone(), back.clone());
        for (pa, pb) in a.params_mut().into_iter().zip(b.params_mut()) {
            assert_eq!((&pa.name, &pa.shape), (&pb.name, &pb.shape));
            let cols = if pa.shape.len() == 2 {
                pa.shape[1]
            } else {
                pa.values.len().max(1)
            };
            for (ra, rb) in pa.values.chunks(cols).zip(pb.values.chunks(cols)) {
                let row_max = ra.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let bound = if pa.shape.len() == 2 {
                    row_max / qmax
                } else {
                    row_max / 1024.0
                };
                let err = common::max_abs_diff(ra, rb);
                assert!(
                    err <= bound,
                    "{kind:?} {}: row error {err:e} over {bound:e} (row max {row_max})",
                    pa.name
                );
            }
        }
    }
}

#[test]
fn eleven_layer_lineage_modules_train() {
    let Some(shared) = common::shared() else {
        return;
    };
    // BigramHash (projected), SmearGate, value embeddings, XSA, LN-scale, partial RoPE, QAT.
    let a = lineage_modules();
    let ov = ConfigOverrides {
        rope_dims: Some(8),
        ln_scale: Some(true),
        xsa_last: Some(1),
        ..ConfigOverrides::default()
    };
    let mut cfg = config(12, 1, 1);
    cfg.qat = QatMode::On;
    let mut t = trainer_for(&shared, cfg, a, &ov);
    // Table and projection both start at zero (spec 4.2), which leaves the bigram path without
    // gradient until the orthogonal init of full-size models re-draws the projection; seed the
    // table here so the path trains.
    let mut w0 = t.weights().unwrap();
    let bg = w0.bigram.as_mut().unwrap();
    for (i, v) in bg.embed.data.iter_mut().enumerate() {
        *v = 0.01 * ((i * 37 % 17) as f32 - 8.0);
    }
    let proj0 = bg.proj.as_ref().unwrap().data.clone();
    t.set_weights(&w0).unwrap();
    let losses: Vec<f64> = (0..12)
        .map(|_| t.train_step().unwrap().train_loss)
        .collect();
    println!("lineage losses {losses:?}");
    assert!(
        losses[10] + losses[11] < losses[0] + losses[1] - 0.6,
        "{losses:?}"
    );
    // Every module received updates.
    let tw = t.weights().unwrap();
    let bg = tw.bigram.as_ref().unwrap();
    assert_ne!(bg.proj.as_ref().unwrap().data, proj0);
    assert!(bg.scale.value() != 0.05);
    assert!(tw
        .smear_gate
        .as_ref()
        .unwrap()
        .data
        .iter()
        .any(|&g| g != 0.0));
    let ve = tw.value_embed.as_ref().unwrap();
    assert!(ve.proj.data.iter().any(|&v| v != 0.0) && ve.scale.value() != 0.1);
    let bytes = export_weights(&t.final_weights().unwrap(), ExportKind::Int6Zstd).unwrap();
    let art = Artifact::from_bytes(&bytes).unwrap();
    let back = ModelWeights::from_artifact(&art, &ov).unwrap();
    assert_eq!(back.config, tw.config);
}

/// #581's shared sparse sidecar trains (its site rows and scales start at zero and get
/// gradients through the scale), its 2-D matrices through Muon and the rest through Adam, and
/// the export reads back with its sites.
#[test]
fn sparse_sidecar_trains_and_exports() {
    let Some(shared) = common::shared() else {
        return;
    };
    let a = Architecture {
        bigram: Some((64, 16)),
        smear_gate: true,
        num_layers: 3,
        sidecar: Some(SidecarArch {
            hidden: 8,
            start_layer: 0,
            end_layer: None,
            every: 2,
            max_sites: 0,
        }),
        ..arch()
    };
    let ov = ConfigOverrides {
        ln_scale: Some(true),
        ..ConfigOverrides::default()
    };
    let cfg_model = a.config(&ov).unwrap();
    // Layers 0 and 2: #581's rule with SPARSE_EVERY=2; layer 0 is the encoder's (its skip
    // carries the sidecar's output).
    assert_eq!(cfg_model.sidecar.as_ref().unwrap().layers, vec![0, 2]);
    let mut t = trainer_for(&shared, config(10, 1, 1), a, &ov);
    let w0 = t.weights().unwrap();
    let sc0 = w0.sidecar.clone().unwrap();
    assert!(sc0.scale.data.iter().all(|&v| v == 0.0));
    assert!(sc0.local.data.iter().all(|v| v.abs() <= 1.0 / 3f32.sqrt()));
    let losses: Vec<f64> = (0..10)
        .map(|_| t.train_step().unwrap().train_loss)
        .collect();
    println!("sidecar losses {losses:?}");
    assert!(
        losses[8] + losses[9] < losses[0] + losses[1] - 0.4,
        "{losses:?}"
    );
    let tw = t.weights().unwrap();
    let sc = tw.sidecar.as_ref().unwrap();
    for (name, a, b) in [
        ("gate", &sc.gate, &sc0.gate),
        ("value", &sc.value, &sc0.value),
        ("local", &sc.local, &sc0.local),
        ("proj", &sc.proj, &sc0.proj),
        ("site_gate", &sc.site_gate, &sc0.site_gate),
        ("scale", &sc.scale, &sc0.scale),
    ] {
        assert_ne!(a.data, b.data, "sidecar {name} did not train");
    }
    // Shapes tell the sites' count, not their layers: the reader is told (--sidecar-layers);
    // by default it would put them on the last layers.
    let told = ConfigOverrides {
        sidecar_layers: Some(vec![0, 2]),
        ..ov.clone()
    };
    for kind in [ExportKind::Int6Zstd, ExportKind::Int8Zlib] {
        let bytes = export_weights(&t.final_weights().unwrap(), kind).unwrap();
        let art = Artifact::from_bytes(&bytes).unwrap();
        let back = ModelWeights::from_artifact(&art, &told).unwrap();
        assert_eq!(back.config, tw.config, "{kind:?}");
        let guessed = ModelWeights::from_artifact(&art, &ov).unwrap();
        assert_eq!(guessed.config.sidecar.unwrap().layers, vec![1, 2]);
    }
}

/// Spec 4.2: `bigram.proj` is optimized by Muon in the 1.1271 record and by the scalar Adam
/// group in the LeakyReLU record. Only that tensor's first update differs between the two, and
/// a Muon-mode checkpoint resumes onto the same weights.
#[test]
fn bigram_projection_trains_with_muon_or_adam() {
    let Some(shared) = common::shared() else {
        return;
    };
    let a = Architecture {
        bigram: Some((64, 16)),
        ..arch()
    };
    let make = |muon: bool| {
        let mut cfg = config(4, 1, 1);
        cfg.qat = QatMode::Off;
        cfg.optim.muon_route.bigram_proj = muon;
        let mut t = trainer_for(&shared, cfg, a, &ConfigOverrides::default());
        let mut w = t.weights().unwrap();
        let bg = w.bigram.as_mut().unwrap();
        for (i, v) in bg.embed.data.iter_mut().enumerate() {
            *v = 0.01 * ((i * 37 % 17) as f32 - 8.0);
        }
        t.set_weights(&w).unwrap();
        t
    };
    let params = |t: &Trainer<CpuBackend>| {
        let mut w = t.weights().unwrap();
        w.params_mut()
            .into_iter()
            .map(|p| (p.name, p.values.to_vec()))
            .collect::<Vec<_>>()
    };
    let (mut adam, mut muon) = (make(false), make(true));
    let before = params(&adam);
    adam.train_step().unwrap();
    muon.train_step().unwrap();
    let norm = |after: &[f32], b: &[f32]| {
        after
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let mut proj_steps = None;
    for (((name, pa), (_, pm)), (_, p0)) in params(&adam).iter().zip(&params(&muon)).zip(&before) {
        if name == "bigram.proj.weight" {
            proj_steps = Some((norm(pa, p0), norm(pm, p0)));
        } else {
            assert_eq!(
                pa, pm,
                "{name} should not depend on the projection's optimizer"
            );
        }
    }
    // Adam's first step moves every element by ~lr (norm ~lr·sqrt(32·16) ≈ 0.9); Muon's
    // orthogonalised step has norm ~lr·sqrt(2)·sqrt(16) ≈ 0.23.
    let (sa, sm) = proj_steps.expect("the model has bigram.proj");
    assert!(sa > 0.0 && sm > 0.0 && sm < 0.5 * sa, "adam {sa} muon {sm}");

    let ck = tmp("bigram-muon.pt");
    save_checkpoint(&muon, &ck).unwrap();
    let mut resumed = make(true);
    load_checkpoint(&mut resumed, &ck).unwrap();
    std::fs::remove_file(&ck).unwrap();
    muon.train_step().unwrap();
    resumed.train_step().unwrap();
    assert_eq!(params(&muon), params(&resumed));
}

/// The trainer sums micro-steps on the backend ([`BaseGrads`]) and downloads once per step.
/// That sum must equal, bit for bit, the host sum of the downloaded gradients it replaced, for
/// every kind of parameter (device matrices and vectors, host-side BigramHash, SmearGate, skip
/// and value-embedding pieces), and gradients of another model are refused.
#[test]
fn micro_step_sums_on_the_backend_equal_host_sums() {
    let Some(shared) = common::shared() else {
        return;
    };
    let a = Architecture {
        tie_embeddings: false,
        num_layers: 4,
        ..lineage_modules()
    };
    let ov = ConfigOverrides::default();
    let mut w = init_weights(&a.config(&ov).unwrap(), &InitConfig::default());
    // Non-zero bigram table and skip weights, so their gradients are not all zero.
    for (i, v) in w.bigram.as_mut().unwrap().embed.data.iter_mut().enumerate() {
        *v = 0.01 * ((i * 37 % 17) as f32 - 8.0);
    }
    let be = CpuBackend::new();
    let model = TrainModel::new(be, &w).unwrap();
    let mut stream = TokenStream::open(&train_glob(&shared)).unwrap();
    let batches = stream.next_batch(1024, 64, 1, 2).unwrap();
    let b1 = &batches[0];
    let b2 = &stream.next_batch(1024, 64, 1, 2).unwrap()[0];
    let rows: Vec<usize> = (0..b1.inputs.len()).collect();
    let dev = |b: &pgolf_rt::data::Batch| {
        model
            .loss_and_base_grads(&b.inputs, b.rows, b.seq, &rows, &b.targets)
            .unwrap()
    };
    let host = |b: &pgolf_rt::data::Batch| {
        let (l, g) = model
            .loss_and_grads(&b.inputs, b.rows, b.seq, &rows, &b.targets, None, true)
            .unwrap();
        (l, g.base.unwrap())
    };
    let ((l1, g1), (h1l, h1)) = (dev(b1), host(b1));
    assert_eq!(l1, h1l);
    assert_eq!(flat(&g1.download(&be).unwrap()), flat(&h1));

    let s = 0.5f32;
    let (mut sum, (_, g2)) = (dev(b1).1, dev(b2));
    sum.scale(&be, s).unwrap();
    sum.add_scaled(&be, g2, s).unwrap();
    let sum = flat(&sum.download(&be).unwrap());
    let mut want = vec![0.0f32; sum.len()];
    for g in [&h1, &host(b2).1] {
        want.iter_mut().zip(flat(g)).for_each(|(a, g)| *a += s * g);
    }
    assert_eq!(sum, want);
    assert!(sum.iter().all(|v| v.is_finite()) && sum.iter().any(|&v| v != 0.0));

    // Gradients of a model of another shape are an error, not a panic or a silent mix.
    let small = init_weights(&arch().config(&ov).unwrap(), &InitConfig::default());
    let other = TrainModel::new(be, &small).unwrap();
    let (_, g_other) = other
        .loss_and_base_grads(&b1.inputs, b1.rows, b1.seq, &rows, &b1.targets)
        .unwrap();
    let mut g = dev(b1).1;
    let e = g.add_scaled(&be, g_other, 1.0).unwrap_err().to_string();
    assert!(e.contains("different models"), "{e}");
}

/// The trainer keeps every tensor on its backend and steps with the backend's optimizer ops;
/// on the CPU those are the host optimizers' own oracles. So a run equals, weight for weight,
/// the host loop it replaced: per step a model built from the host weights (fake-quantized
/// under QAT), loss and gradients of each micro-step summed on the host, then
/// `Optimizers::step` (clipping, Muon, Adam groups) and the host EMA. With the lineage's
/// modules, two micro-steps, late QAT, clipping and EMA.
#[test]
fn device_resident_trainer_equals_the_host_loop() {
    use pgolf_rt::train::{fake_quantized, Ema, Optimizers};
    let Some(shared) = common::shared() else {
        return;
    };
    let a = lineage_modules();
    let mut cfg = config(5, 1, 2);
    cfg.qat = QatMode::Late(0.9);
    let ov = ConfigOverrides::default();
    let mcfg = a.config(&ov).unwrap();
    let w0 = init_weights(&mcfg, &InitConfig::default());
    let mut t = trainer_for(&shared, cfg.clone(), a, &ov);

    let mut w = w0.clone();
    let mut opt = Optimizers::new(cfg.optim, mcfg.tied_embeddings);
    let mut ema = Ema::new(0.9, &w);
    let mut stream = TokenStream::open(&train_glob(&shared)).unwrap();
    let mut elapsed = 0.0;
    for step in 0..5 {
        let r = t.train_step().unwrap();
        let lr_mul = cfg.schedule.lr_mul(step, elapsed);
        elapsed = r.train_time_ms;
        let seen = if cfg.qat.active(lr_mul) {
            fake_quantized(&w)
        } else {
            w.clone()
        };
        let m = TrainModel::new(CpuBackend::new(), &seen).unwrap();
        let mut sum = ModelWeights::zeros(&mcfg);
        let mut loss = 0.0;
        for _ in 0..2 {
            let b = &stream.next_batch(1024, 64, 1, 2).unwrap()[0];
            let rows: Vec<usize> = (0..b.inputs.len()).collect();
            let (l, g) = m
                .loss_and_grads(&b.inputs, b.rows, b.seq, &rows, &b.targets, None, true)
                .unwrap();
            loss += l / 2.0;
            let mut g = g.base.unwrap();
            for (s, x) in sum.params_mut().into_iter().zip(g.params_mut()) {
                s.values
                    .iter_mut()
                    .zip(x.values.iter())
                    .for_each(|(s, &x)| *s += 0.5 * x);
            }
        }
        let norm = opt
            .step(&mut w, &mut sum, lr_mul, cfg.schedule.muon_momentum(step))
            .unwrap();
        ema.update(&mut w);
        assert!(
            (r.train_loss - loss).abs() < 1e-6,
            "step {step}: loss {} vs host {loss}",
            r.train_loss
        );
        assert!(
            (r.grad_norm - norm).abs() < 1e-5 * norm,
            "step {step}: norm {} vs host {norm}",
            r.grad_norm
        );
    }
    let live = common::max_abs_diff(&flat(&t.weights().unwrap()), &flat(&w));
    let avg = common::max_abs_diff(&flat(&t.final_weights().unwrap()), &flat(ema.weights()));
    println!("after 5 steps: weights differ by {live:.2e}, EMA by {avg:.2e}");
    assert!(live < 1e-6 && avg < 1e-6, "{live} {avg}");
}
