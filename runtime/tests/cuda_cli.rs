//! The CLI's CUDA selection, on the built `pgolf-rt` binary:
//! - where CUDA is unusable, `--backend cuda` exits non-zero with exactly one stderr line
//!   (`error: --backend cuda: CUDA unavailable: ...`), and `--backend auto` falls back to the
//!   CPU with one `note: not using CUDA (...)` line and succeeds;
//! - where CUDA works, `--backend cuda` succeeds and reports a cuda backend.
//!
//! Needs the reference data (`$PGOLF_SHARED` or `../shared`); skipped with a printed reason
//! otherwise.
#![cfg(all(feature = "cuda", feature = "cli"))]

mod common;

use common::shared;
use std::path::PathBuf;
use std::process::Command;

fn eval(s: &std::path::Path, backend: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pgolf-rt"))
        .args([
            "eval",
            "--backend",
            backend,
            "--max-tokens",
            "1025",
            "--batch",
            "1",
        ])
        .arg("--artifact")
        .arg(s.join("reference/baseline9L_int8_zlib.ptz"))
        .arg("--data")
        .arg(s.join("data/text_sp1024/fineweb_val_000000.bin"))
        .arg("--tokenizer")
        .arg(s.join("data/tokenizers/pg_sp1024_bpe.model"))
        .output()
        .expect("run pgolf-rt")
}

fn stderr_lines(o: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn backend_cuda_and_auto_selection() {
    let Some(s) = shared() else { return };
    let cuda_ok = pgolf_rt::backend::cuda::CudaBackend::new().is_ok();
    let o = eval(&s, "cuda");
    let lines = stderr_lines(&o);
    println!(
        "--backend cuda: status {:?}, stderr {lines:?}",
        o.status.code()
    );
    if cuda_ok {
        assert!(
            o.status.success(),
            "--backend cuda failed on a CUDA machine: {lines:?}"
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains("backend:cuda"));
    } else {
        assert!(!o.status.success(), "--backend cuda must fail without CUDA");
        assert_eq!(
            lines.len(),
            1,
            "exactly one stderr line expected: {lines:?}"
        );
        assert!(
            lines[0].starts_with("error: --backend cuda: CUDA unavailable: "),
            "{}",
            lines[0]
        );
        let o = eval(&s, "auto");
        let lines = stderr_lines(&o);
        println!(
            "--backend auto: status {:?}, stderr {lines:?}",
            o.status.code()
        );
        assert!(
            o.status.success(),
            "--backend auto must fall back to the CPU: {lines:?}"
        );
        assert_eq!(lines.len(), 1, "one note expected: {lines:?}");
        assert!(
            lines[0].starts_with("note: not using CUDA (CUDA unavailable: "),
            "{}",
            lines[0]
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains("backend:cpu"));
    }
}

fn last_json(o: &std::process::Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("no JSON last line ({e}): {out}"))
}

/// `eval`, `eval --ttt lora` and `train` through the binary on the emulated CUDA backend
/// (`--backend cuda-emu`): the CUDA code path end to end in CI, with the CPU's results.
#[cfg(feature = "cuda-emu")]
#[test]
fn cuda_emu_backend_gives_the_cpu_results_through_the_cli() {
    let Some(s) = shared() else { return };
    let models = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"));
    let run = |backend: &str, extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_pgolf-rt"))
            .args(["eval", "--backend", backend, "--json"])
            .args(extra)
            .arg("--artifact")
            .arg(models.join("pg-tiny-4L128.int8.ptz"))
            .arg("--tokenizer")
            .arg(models.join("pg_sp1024_bpe.model"))
            .arg("--data")
            .arg(s.join("data/text_sp1024/fineweb_val_000000.bin"))
            .output()
            .expect("run pgolf-rt");
        assert!(
            o.status.success(),
            "{backend} {extra:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        last_json(&o)
    };
    for extra in [
        &["--max-tokens", "2049", "--batch", "2"][..],
        &[
            "--ttt",
            "lora",
            "--ttt-max-docs",
            "2",
            "--ttt-chunk",
            "64",
            "--ttt-window",
            "256",
        ][..],
    ] {
        let (c, e) = (run("cpu", extra), run("cuda-emu", extra));
        let (bc, be) = (
            c["val_bpb"].as_f64().unwrap(),
            e["val_bpb"].as_f64().unwrap(),
        );
        println!("eval {extra:?}: val_bpb cpu {bc:.8} cuda-emu {be:.8}");
        assert_eq!(c["tokens"], e["tokens"]);
        assert!((bc - be).abs() < 1e-5, "{extra:?}: {bc} vs {be}");
    }

    let dir = std::env::temp_dir().join(format!("pgolf-cuda-emu-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let train = |backend: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_pgolf-rt"))
            .current_dir(&dir)
            .args(["train", "--backend", backend, "--out"])
            .arg(format!("{backend}.ptz"))
            .env("DATA_PATH", s.join("data/text_sp1024"))
            .env(
                "TOKENIZER_PATH",
                s.join("data/tokenizers/pg_sp1024_bpe.model"),
            )
            .env("ITERATIONS", "2")
            .env("WARMDOWN_ITERS", "1")
            .env("WARMUP_STEPS", "0")
            .env("TRAIN_BATCH_TOKENS", "1024")
            .env("TRAIN_SEQ_LEN", "128")
            .env("GRAD_ACCUM_STEPS", "1")
            .env("NUM_LAYERS", "2")
            .env("MODEL_DIM", "32")
            .env("NUM_HEADS", "2")
            .env("NUM_KV_HEADS", "1")
            .env("MAX_WALLCLOCK_SECONDS", "0")
            .env("VAL_LOSS_EVERY", "0")
            .env("TRAIN_LOG_EVERY", "1")
            .env("VAL_MAX_TOKENS", "2048")
            .output()
            .expect("run pgolf-rt");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "train {backend}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let (c, e) = (train("cpu"), train("cuda-emu"));
    assert!(e.contains("backend:cuda-emu"), "{e}");
    let losses = |log: &str| -> Vec<String> {
        log.lines()
            .filter_map(|l| l.split("train_loss:").nth(1))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    };
    println!("train_loss cpu {:?} cuda-emu {:?}", losses(&c), losses(&e));
    assert_eq!(losses(&c).len(), 2);
    assert_eq!(
        losses(&c),
        losses(&e),
        "the logged losses (4 decimals) agree"
    );
    let roundtrip = |log: &str| -> f64 {
        let l = log
            .lines()
            .find(|l| l.contains("roundtrip_exact"))
            .expect("round-trip line");
        l.split("val_bpb:").nth(1).unwrap().trim().parse().unwrap()
    };
    assert!((roundtrip(&c) - roundtrip(&e)).abs() < 1e-4);
    let wgpu = Command::new(env!("CARGO_BIN_EXE_pgolf-rt"))
        .current_dir(&dir)
        .args(["train", "--backend", "wgpu"])
        .env("DATA_PATH", s.join("data/text_sp1024"))
        .env(
            "TOKENIZER_PATH",
            s.join("data/tokenizers/pg_sp1024_bpe.model"),
        )
        .output()
        .expect("run pgolf-rt");
    let err = String::from_utf8_lossy(&wgpu.stderr);
    assert!(!wgpu.status.success());
    assert!(
        err.contains("needs backward ops") && !err.contains("panicked"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `pgolf-rt devices` on a machine without NVRTC or a driver (the loader path emptied) reports
/// CUDA as unavailable, with the missing libraries named, instead of panicking inside cudarc.
#[test]
fn devices_without_cuda_libraries_reports_instead_of_panicking() {
    let o = Command::new(env!("CARGO_BIN_EXE_pgolf-rt"))
        .args(["devices", "--json"])
        .env("LD_LIBRARY_PATH", "")
        .env("PGOLF_CUDA_LIB_DIRS", "/nonexistent")
        .env_remove("PGOLF_REQUIRE_CUDA")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "devices panicked: {err}");
    assert!(o.status.success(), "devices failed: {err}");
    let v = last_json(&o);
    println!("devices without libraries: cuda = {}", v["cuda"]);
    if v["cuda"]["nvrtc_version"].is_null() {
        assert_eq!(v["cuda"]["available"], false, "{}", v["cuda"]);
    }
}
