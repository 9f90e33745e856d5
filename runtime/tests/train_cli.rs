//! `pgolf-rt train` end to end through the binary: train_gpt.py's environment variables are
//! read, its log lines come out, the artifact is written and re-evaluated, a checkpoint resumes,
//! and bad settings are one-line errors.

mod common;

use std::path::Path;
use std::process::Command;

fn train(dir: &Path, shared: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pgolf-rt"))
        .current_dir(dir)
        .arg("train")
        .args(extra)
        .env("DATA_PATH", shared.join("data/text_sp1024"))
        .env(
            "TOKENIZER_PATH",
            shared.join("data/tokenizers/pg_sp1024_bpe.model"),
        )
        .env("ITERATIONS", "3")
        .env("WARMDOWN_ITERS", "2")
        .env("WARMUP_STEPS", "1")
        .env("TRAIN_BATCH_TOKENS", "2048")
        .env("TRAIN_SEQ_LEN", "128")
        .env("GRAD_ACCUM_STEPS", "2")
        .env("NUM_LAYERS", "2")
        .env("MODEL_DIM", "32")
        .env("NUM_HEADS", "2")
        .env("NUM_KV_HEADS", "1")
        .env("MAX_WALLCLOCK_SECONDS", "0")
        .env("VAL_LOSS_EVERY", "2")
        .env("TRAIN_LOG_EVERY", "1")
        .env("VAL_MAX_TOKENS", "4096")
        .output()
        .expect("run pgolf-rt")
}

#[test]
fn env_vars_log_lines_artifact_and_resume() {
    let Some(shared) = common::shared() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("pgolf-train-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = train(
        &dir,
        &shared,
        &[
            "--checkpoint",
            "ck.pt",
            "--checkpoint-every",
            "2",
            "--profile",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    for want in [
        "model_params:",
        "world_size:1 grad_accum_steps:2",
        "warmup_step:1/1",
        "step:0/3 val_loss:",
        "step:1/3 train_loss:",
        "profile step:1 grads:",
        "step:2/3 val_loss:",
        "step:3/3 val_loss:",
        "Serialized model int8+zlib:",
        "final_int8_zlib_roundtrip_exact val_loss:",
    ] {
        assert!(stdout.contains(want), "missing `{want}`");
    }
    let art = pgolf_rt::artifact::Artifact::load(dir.join("final_model.int8.ptz")).unwrap();
    // tok_emb + 1 skip row + 2 blocks (q, proj, k, v, fc, proj, q_gain, scales, resid_mix).
    assert_eq!(
        art.num_params(),
        1024 * 32 + 32 + 2 * (32 * 32 * 2 + 2 * 16 * 32 + 2 * 64 * 32 + 2 + 4 * 32)
    );
    assert!(dir.join("ck.pt").is_file());

    // Resuming the finished run: no step is repeated, the export happens again.
    let again = train(&dir, &shared, &["--checkpoint", "ck.pt", "--resume"]);
    let s = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{s}");
    assert!(s.contains("resumed:ck.pt step:3"), "{s}");
    assert!(!s.contains("train_loss:"), "{s}");
    assert!(s.contains("final_int8_zlib_roundtrip_exact"), "{s}");

    // A resume under other settings is refused, in one line, non-zero.
    let bad = train(
        &dir,
        &shared,
        &["--checkpoint", "ck.pt", "--resume", "--matrix-lr", "0.1"],
    );
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(e.contains("different configuration"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The CPU's backward is float32, so `train --precision bf16` on the CPU is a one-line error.
#[test]
fn bf16_training_on_the_cpu_is_refused() {
    let Some(shared) = common::shared() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("pgolf-train-bf16-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = train(&dir, &shared, &["--backend", "cpu", "--precision", "bf16"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("trains in float32 only"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
