//! The CLI's CUDA selection, on the built `pgolf-rt` binary:
//! - where CUDA is unusable, `--backend cuda` exits non-zero with exactly one stderr line
//!   (`error: --backend cuda: CUDA unavailable: ...`), and `--backend auto` falls back to the
//!   CPU with one `note: not using CUDA (...)` line and succeeds;
//! - where CUDA works, `--backend cuda` succeeds and reports a cuda backend.
//!
//! Needs the reference data (`$PGOLF_SHARED` or `../shared`); skipped with a printed reason
//! otherwise.
#![cfg(all(feature = "cuda", feature = "cli"))]

use std::path::PathBuf;
use std::process::Command;

fn shared() -> Option<PathBuf> {
    let p = std::env::var_os("PGOLF_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")));
    if p.join("reference").is_dir() && p.join("data").is_dir() {
        Some(p)
    } else {
        println!(
            "SKIPPED: reference data not found at {} (set PGOLF_SHARED)",
            p.display()
        );
        None
    }
}

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
