//! The legality audit of test-time training on a tiny random model: LoRA TTT (one document at a
//! time and batched), with and without the Hedge mixer, the full-model TTT pass and every
//! published full-model recipe; deliberately illegal passes are caught: adapting on a chunk
//! before scoring it (`Fault::AdaptBeforeScore`, also through the CLI, which must exit
//! non-zero), and a score that reads a later token.

mod common;

use common::tiny::{tiny, V};
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::data::find_documents;
use pgolf_rt::data::BOS_ID;
use pgolf_rt::eval::audit::{AuditConfig, AuditReport};
use pgolf_rt::eval::audit_ttt::audit_ttt;
use pgolf_rt::eval::mixer::MixerConfig;
use pgolf_rt::eval::ttt::{lora_ttt_into, ttt_document_scored, Fault};
use pgolf_rt::eval::ttt_full::full_ttt_into;
use pgolf_rt::eval::{FullTttConfig, TttConfig};
use pgolf_rt::model::ConfigOverrides;
use pgolf_rt::tokenizer::ByteLut;
use pgolf_rt::train::lora::SplitMix64;
use pgolf_rt::train::TrainModel;

fn lut() -> ByteLut {
    common::tiny::tiny_lut()
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

fn lora_cfg(batch_docs: usize) -> TttConfig {
    let mut c = TttConfig {
        chunk: 8,
        window: 24,
        batch_docs,
        ..TttConfig::default()
    };
    c.optimizer.lr = 0.05;
    c
}

fn audit_cfg() -> AuditConfig {
    AuditConfig {
        positions: 6,
        ..AuditConfig::default()
    }
}

fn show(r: &AuditReport) {
    eprint!("{r}");
}

#[test]
fn lora_ttt_passes_the_audit_with_and_without_the_mixer() {
    let w = tiny(51, false, &ConfigOverrides::default());
    let m = TrainModel::new(CpuBackend::new(), &w).unwrap();
    let s = docs_stream(3, &[40, 9, 33, 25]);
    let lut = lut();
    let mix = MixerConfig::default();
    for batch in [1, 3] {
        for mx in [None, Some(&mix)] {
            let c = lora_cfg(batch);
            let r = audit_ttt(&s, &lut, V, mx, &audit_cfg(), s.len() - 1, &mut |sink| {
                lora_ttt_into(&m, sink.stream(), &c, sink, None)
            })
            .unwrap();
            show(&r);
            assert!(r.passed(), "batch {batch} mix {}", mx.is_some());
            for name in ["single-pass", "normalisation", "causality"] {
                assert!(r.check(name).is_some(), "{name}");
            }
        }
    }
}

#[test]
fn full_ttt_passes_the_audit() {
    let w = tiny(52, false, &ConfigOverrides::default());
    let s = docs_stream(4, &[20, 30, 15]);
    let s = &s[..3 * 16 + 1];
    let c = FullTttConfig {
        chunk: 16,
        seq_len: 16,
        batch: 2,
        train_batch: 2,
        epochs: 1,
        lr: 0.01,
        ..FullTttConfig::default()
    };
    let r = audit_full_ttt(&w, s, &c);
    show(&r);
    assert!(r.passed());
}

/// The audit of a full-TTT pass over `s` with the Hedge mixer on top.
fn audit_full_ttt(w: &pgolf_rt::model::ModelWeights, s: &[u32], c: &FullTttConfig) -> AuditReport {
    let mix = MixerConfig::default();
    audit_ttt(
        s,
        &lut(),
        V,
        Some(&mix),
        &audit_cfg(),
        s.len() - 1,
        &mut |sink| full_ttt_into(CpuBackend::new(), w, c, sink, None),
    )
    .unwrap()
}

/// The published full-model recipes (`--ttt-recipe`), made score-first, at the tiny model's
/// scale (their optimiser, learning rates, epochs, parameter choice, ramp and Polyak
/// averaging as published; chunks of one window): each passes the audit, mixer on top.
#[test]
fn every_published_full_ttt_recipe_passes_the_audit() {
    use pgolf_rt::eval::TttRecipe;
    let w = tiny(55, true, &ConfigOverrides::default());
    let s = docs_stream(7, &[20, 30, 15]);
    let s = &s[..4 * 16 + 1];
    let geometry = FullTttConfig {
        seq_len: 16,
        batch: 2,
        train_seq: Some(8),
        ..FullTttConfig::default()
    };
    for recipe in TttRecipe::ALL {
        let c = FullTttConfig {
            chunk: 16,
            train_batch: 2,
            ..recipe.config(&w.config, &geometry)
        };
        let r = audit_full_ttt(&w, s, &c);
        show(&r);
        assert!(r.passed(), "{recipe}: {c:?}");
    }
}

#[test]
fn a_score_depending_on_a_later_token_is_caught() {
    // Illegal on purpose: the legal TTT distribution of target t, with two entries swapped
    // according to the token *after* the target (still a normalised distribution).
    let w = tiny(53, false, &ConfigOverrides::default());
    let m = TrainModel::new(CpuBackend::new(), &w).unwrap();
    let s = docs_stream(5, &[40, 33]);
    let lut = lut();
    let c = lora_cfg(1);
    let r = audit_ttt(&s, &lut, V, None, &audit_cfg(), s.len() - 1, &mut |sink| {
        let stream = sink.stream();
        for (k, d) in find_documents(stream).iter().enumerate() {
            let doc = &stream[d.start..d.start + d.len];
            ttt_document_scored(&m, doc, &c, k, true, |sc| {
                let lps = sc.log_probs.unwrap();
                for r in 0..sc.nll.len() {
                    let t = d.start + sc.chunk.chunk_start + r;
                    let mut lp = lps[r * V..(r + 1) * V].to_vec();
                    let y = stream[t + 1] as usize;
                    if let Some(&f) = stream.get(t + 2) {
                        lp.swap(y, (y + 1 + f as usize) % V);
                    }
                    sink.score(t, -lp[y], Some(&lp))?;
                }
                Ok(())
            })?;
        }
        Ok(())
    })
    .unwrap();
    show(&r);
    assert!(!r.check("causality").unwrap().passed);
    assert!(r.check("normalisation").unwrap().passed);
}

/// The cheat the audit exists for: the adapters take a step on a chunk's own targets before
/// they score it. Then a token inside a chunk moves the scores of earlier targets of that chunk,
/// which the causality check sees; the same pass without the fault passes.
#[test]
fn adapting_on_a_chunk_before_scoring_it_is_caught() {
    let w = tiny(54, false, &ConfigOverrides::default());
    let m = TrainModel::new(CpuBackend::new(), &w).unwrap();
    let s = docs_stream(6, &[40, 33]);
    let lut = lut();
    for (fault, legal) in [(Fault::None, true), (Fault::AdaptBeforeScore, false)] {
        for batch in [1, 2] {
            let c = TttConfig {
                fault,
                ..lora_cfg(batch)
            };
            let r = audit_ttt(&s, &lut, V, None, &audit_cfg(), s.len() - 1, &mut |sink| {
                lora_ttt_into(&m, sink.stream(), &c, sink, None)
            })
            .unwrap();
            show(&r);
            assert_eq!(r.passed(), legal, "{fault:?} batch {batch}");
            assert_eq!(r.check("causality").unwrap().passed, legal, "{fault:?}");
            // Still one score per target, each a distribution: only causality is broken.
            assert!(r.check("single-pass").unwrap().passed);
            assert!(r.check("normalisation").unwrap().passed);
        }
    }
}

/// Through the binary: `PGOLF_AUDIT_FAULT=adapt-before-score eval --ttt lora --audit` exits
/// non-zero saying the audit failed; without `--audit` the fault is refused outright; without
/// the fault the same command passes.
#[test]
fn the_cli_exits_non_zero_when_the_audit_fails() {
    let Some(shared) = common::shared() else {
        return;
    };
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");
    let run = |fault: Option<&str>, audit: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_pgolf-rt"));
        c.args([
            "eval",
            "--backend",
            "cpu",
            "--ttt",
            "lora",
            "--ttt-max-docs",
            "2",
        ])
        .args([
            "--ttt-chunk",
            "32",
            "--ttt-window",
            "64",
            "--audit-docs",
            "2",
        ])
        .args(["--audit-positions", "3", "--max-tokens", "4096"])
        .arg("--artifact")
        .arg(format!("{models}/pg-tiny-4L128.int8.ptz"))
        .arg("--tokenizer")
        .arg(format!("{models}/pg_sp1024_bpe.model"))
        .arg("--data")
        .arg(common::val_shard(&shared));
        if audit {
            c.arg("--audit");
        }
        match fault {
            Some(f) => c.env("PGOLF_AUDIT_FAULT", f),
            None => c.env_remove("PGOLF_AUDIT_FAULT"),
        };
        let out = c.output().expect("run pgolf-rt");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = run(None, true);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("legality audit PASSED"), "{text}");
    let (code, text) = run(Some("adapt-before-score"), true);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("FAIL") && text.contains("causality"),
        "{text}"
    );
    assert!(text.contains("legality audit FAILED"), "{text}");
    assert!(
        !text.contains("val_bpb:"),
        "no score may be printed: {text}"
    );
    let (code, text) = run(Some("adapt-before-score"), false);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("PGOLF_AUDIT_FAULT") && text.contains("--audit"),
        "{text}"
    );
    assert!(!text.contains("val_bpb:"), "{text}");
}
