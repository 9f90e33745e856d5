//! Helpers shared by integration tests: locating `../shared` and loading reference models.
#![allow(dead_code)]

#[cfg(feature = "cuda")]
pub mod devices;
pub mod tiny;

use pgolf_rt::artifact::Artifact;
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::model::{ConfigOverrides, DeviceModel, ModelWeights};
use pgolf_rt::tokenizer::Tokenizer;
use std::path::PathBuf;

/// `../shared` next to the repository, or `None` (with a printed reason) when it is absent.
pub fn shared() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared"));
    if p.join("reference").is_dir() && p.join("data").is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} is absent (the challenge's reference data)",
            p.display()
        );
        None
    }
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
