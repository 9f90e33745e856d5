//! Helpers shared by integration tests: locating `../shared`, loading reference models, and
//! the skip policy ([`skip`]).
#![allow(dead_code)]

pub mod conformance;
#[cfg(feature = "cuda")]
pub mod devices;
pub mod seeds;
pub mod tiny;

use pgolf_rt::artifact::Artifact;
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::model::{ConfigOverrides, DeviceModel, ModelWeights};
use pgolf_rt::tokenizer::Tokenizer;
use std::path::PathBuf;

/// Prints `SKIPPED: {why}` so the caller can return early, unless the environment variable
/// `require` is `1`: then the missing prerequisite is a failure (panic). `.ci/run` sets
/// `PGOLF_REQUIRE_SHARED`, `PGOLF_REQUIRE_WGPU` and `PGOLF_REQUIRE_NVRTC`; the GPU check sets
/// `PGOLF_REQUIRE_CUDA`. Without them a test may skip, always saying why.
pub fn skip(require: &str, why: impl std::fmt::Display) {
    if std::env::var(require).is_ok_and(|v| v == "1") {
        panic!("required but missing: {why} ({require}=1 turns this skip into a failure)");
    }
    println!("SKIPPED: {why}");
}

/// The challenge's reference data: `$PGOLF_SHARED` if set (the GPU machine's bundle), else
/// `../shared` next to the repository; `None` after [`skip`] (`PGOLF_REQUIRE_SHARED`) when
/// it is absent.
pub fn shared() -> Option<PathBuf> {
    let p = std::env::var_os("PGOLF_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")));
    if p.join("reference").is_dir() && p.join("data").is_dir() {
        Some(p)
    } else {
        skip(
            "PGOLF_REQUIRE_SHARED",
            format_args!(
                "reference data not found at {} (the challenge's reference data; set PGOLF_SHARED)",
                p.display()
            ),
        );
        None
    }
}

/// The largest `|a[i] - b[i]|`. Every comparison of the suite goes through this (or
/// [`max_abs_diff_f64`]): a NaN or an infinity on either side is a failure with its index, never
/// a value a `fold(0.0, f32::max)` would silently drop; lengths must match.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared slices differ in length");
    let mut worst = 0.0f32;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.is_finite() && y.is_finite(),
            "non-finite value at {i}: {x} vs {y}"
        );
        worst = worst.max((x - y).abs());
    }
    worst
}

/// [`max_abs_diff`] for `f64`.
pub fn max_abs_diff_f64(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "compared slices differ in length");
    let mut worst = 0.0f64;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            x.is_finite() && y.is_finite(),
            "non-finite value at {i}: {x} vs {y}"
        );
        worst = worst.max((x - y).abs());
    }
    worst
}

pub fn val_shard(shared: &std::path::Path) -> PathBuf {
    shared.join("data/text_sp1024/fineweb_val_000000.bin")
}

pub fn sp1024(shared: &std::path::Path) -> Tokenizer {
    Tokenizer::load(shared.join("data/tokenizers/pg_sp1024_bpe.model")).expect("tokenizer")
}

pub fn cpu_model(shared: &std::path::Path, artifact: &str) -> DeviceModel<CpuBackend> {
    let art = Artifact::load(shared.join("reference").join(artifact)).expect("artifact");
    let w = ModelWeights::from_artifact(&art, &ConfigOverrides::default()).expect("weights");
    DeviceModel::new(CpuBackend::new(), &w).expect("upload")
}
