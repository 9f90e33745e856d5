//! `EvalPlan`, the library value behind `pgolf-rt eval`: each combination of windows,
//! adaptation, mixer and audit gives exactly the result of the pass it names, an adapting plan
//! is refused where the model cannot train, and a failed audit is an error that carries its
//! report.

mod common;

use common::tiny::{tiny, tiny_lut};
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::data::BOS_ID;
use pgolf_rt::eval::mixer::{eval_mixed, MixerConfig};
use pgolf_rt::eval::plan::{Adaptation, AuditPlan, EvalPlan, Progress};
use pgolf_rt::eval::ttt::Fault;
use pgolf_rt::eval::{
    eval_full_ttt, eval_lora_ttt_mixed, eval_sliding, eval_standard, EvalOptions, FullTttConfig,
    TttConfig, TttRecipe,
};
use pgolf_rt::model::{ConfigOverrides, DeviceModel};
use pgolf_rt::train::lora::SplitMix64;
use pgolf_rt::train::TrainModel;

/// Three documents of a repetitive stream, 4 windows of 16.
fn stream() -> Vec<u32> {
    let mut r = SplitMix64(9);
    (0..4 * 16 + 1)
        .map(|i| match i {
            0 | 20 | 45 => BOS_ID,
            _ if r.next_u64().is_multiple_of(4) => 2 + (r.next_u64() % 30) as u32,
            _ => [3, 9, 4, 17, 8, 25][i % 6],
        })
        .collect()
}

fn plan(adapt: Adaptation, stride: Option<usize>, mix: Option<MixerConfig>) -> EvalPlan {
    EvalPlan {
        seq_len: 16,
        stride,
        batch: 3,
        adapt,
        mix,
        audit: None,
    }
}

fn lora() -> TttConfig {
    let mut c = TttConfig {
        chunk: 8,
        window: 16,
        ..TttConfig::default()
    };
    c.optimizer.lr = 0.05;
    c
}

fn full() -> FullTttConfig {
    FullTttConfig {
        chunk: 16,
        train_seq: Some(8),
        train_batch: 2,
        epochs: 2,
        lr: 0.05,
        ..FullTttConfig::default()
    }
}

#[test]
fn each_plan_gives_the_result_of_the_pass_it_names() {
    let w = tiny(61, true, &ConfigOverrides::default());
    let s = stream();
    let lut = tiny_lut();
    let dm = DeviceModel::new(CpuBackend::new(), &w).unwrap();
    let opts = || EvalOptions {
        seq_len: 16,
        batch: 3,
        progress: None,
    };
    let mix = MixerConfig::default();
    let run = |p: &EvalPlan| p.run(CpuBackend::new(), &w, &s, &lut, None).unwrap();
    // No adaptation: standard, sliding, mixed; through `run` and `run_inference`.
    for (p, want) in [
        (
            plan(Adaptation::None, None, None),
            eval_standard(&dm, &s, &lut, opts()).unwrap(),
        ),
        (
            plan(Adaptation::None, Some(4), None),
            eval_sliding(&dm, &s, &lut, 4, opts()).unwrap(),
        ),
        (
            plan(Adaptation::None, Some(4), Some(mix.clone())),
            eval_mixed(&dm, &s, &lut, Some(4), &mix, opts())
                .unwrap()
                .result,
        ),
    ] {
        let got = run(&p);
        assert_eq!(got.result.val_bpb, want.val_bpb, "{p:?}");
        assert_eq!(got.mixed.is_some(), p.mix.is_some());
        let inf = p.run_inference(&dm, &s, &lut, None).unwrap();
        assert_eq!(inf.result.val_bpb, want.val_bpb);
    }
    // LoRA TTT, with the mixer.
    let tm = TrainModel::new(CpuBackend::new(), &w).unwrap();
    let (want, _) = eval_lora_ttt_mixed(&tm, &s, &lut, &lora(), Some(&mix), None).unwrap();
    let got = run(&plan(Adaptation::Lora(lora()), None, Some(mix.clone())));
    assert_eq!(got.result.val_bpb, want.val_bpb);
    // Full TTT takes the plan's windows: its own seq_len / stride / batch are replaced.
    let geometry = FullTttConfig {
        seq_len: 16,
        stride: Some(4),
        batch: 3,
        ..full()
    };
    let (want, _) = eval_full_ttt(CpuBackend::new(), &w, &s, &lut, &geometry, None, None).unwrap();
    let got = run(&plan(Adaptation::Full(full()), Some(4), None));
    assert_eq!(got.result.val_bpb, want.val_bpb);
    let untrained = run(&plan(Adaptation::None, Some(4), None));
    assert_ne!(got.result.val_bpb, untrained.result.val_bpb, "TTT trained");
}

#[test]
fn progress_counts_targets_docs_or_chunks() {
    let w = tiny(62, false, &ConfigOverrides::default());
    let s = stream();
    let lut = tiny_lut();
    for (adapt, unit, last) in [
        (Adaptation::None, "targets", 64),
        (Adaptation::Lora(lora()), "docs", 3),
        (Adaptation::Full(full()), "chunks", 4),
    ] {
        let mut seen = Vec::new();
        let mut f = |p: &Progress| seen.push((p.unit, p.done, p.total, p.totals.is_some()));
        plan(adapt, None, None)
            .run(CpuBackend::new(), &w, &s, &lut, Some(&mut f))
            .unwrap();
        let &(u, done, total, totals) = seen.last().unwrap();
        assert_eq!((u, done, total), (unit, last, last), "{seen:?}");
        assert_eq!(totals, unit != "targets");
    }
}

#[test]
fn an_adapting_plan_needs_a_training_backend() {
    let w = tiny(63, false, &ConfigOverrides::default());
    let s = stream();
    let dm = DeviceModel::new(CpuBackend::new(), &w).unwrap();
    let e = plan(Adaptation::Full(full()), None, None)
        .run_inference(&dm, &s, &tiny_lut(), None)
        .unwrap_err();
    assert!(e.to_string().contains("training backend"), "{e}");
    for bad in [
        EvalPlan {
            stride: Some(17),
            ..plan(Adaptation::None, None, None)
        },
        EvalPlan {
            batch: 0,
            ..plan(Adaptation::None, None, None)
        },
    ] {
        assert!(bad
            .run(CpuBackend::new(), &w, &s, &tiny_lut(), None)
            .is_err());
    }
    // A stream for another vocabulary, on both entry points.
    let mut other = s.clone();
    other[5] = 32;
    let p = plan(Adaptation::None, None, None);
    for e in [
        p.run(CpuBackend::new(), &w, &other, &tiny_lut(), None)
            .unwrap_err(),
        p.run_inference(&dm, &other, &tiny_lut(), None).unwrap_err(),
    ] {
        let msg = e.to_string();
        assert!(
            msg.contains("outside the model's vocabulary of 32"),
            "{msg}"
        );
    }
}

#[test]
fn the_audit_runs_first_and_a_failed_one_is_an_error() {
    let w = tiny(64, true, &ConfigOverrides::default());
    let s = stream();
    let lut = tiny_lut();
    let audit = Some(AuditPlan {
        docs: 2,
        ..AuditPlan::default()
    });
    // Every recipe, audited, on the plan's windows.
    for recipe in TttRecipe::ALL {
        let c = FullTttConfig {
            chunk: 16,
            train_batch: 2,
            train_seq: Some(8),
            ..recipe.config(&w.config, &FullTttConfig::default())
        };
        let p = EvalPlan {
            audit: audit.clone(),
            ..plan(Adaptation::Full(c), Some(8), Some(MixerConfig::default()))
        };
        let r = p.run(CpuBackend::new(), &w, &s, &lut, None).unwrap();
        assert!(r.audit.unwrap().passed(), "{recipe}");
    }
    // The deliberately illegal LoRA pass: no score, an error with the failed check.
    let cheat = TttConfig {
        fault: Fault::AdaptBeforeScore,
        ..lora()
    };
    let p = EvalPlan {
        audit,
        ..plan(Adaptation::Lora(cheat), None, None)
    };
    let e = p.run(CpuBackend::new(), &w, &s, &lut, None).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("legality audit FAILED") && msg.contains("FAIL causality"),
        "{msg}"
    );
    // Without the audit the same plan runs (the fault is only visible to the audit).
    assert!(EvalPlan { audit: None, ..p }
        .run(CpuBackend::new(), &w, &s, &lut, None)
        .is_ok());
}
