//! The seed submissions' fixtures (`tests/fixtures/seeds/`, written by each PR's own code:
//! `seed_submissions.rs`), for the tests that run them on other backends and decoders.

use pgolf_rt::artifact::Artifact;
use pgolf_rt::model::{ConfigOverrides, ModelWeights};

/// A fixture file's path.
pub fn path(file: &str) -> String {
    format!("{}/tests/fixtures/seeds/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// What #581's tiny model's tensor names cannot say: its hyperparameters.
pub fn pr581_overrides() -> ConfigOverrides {
    ConfigOverrides {
        rope_dims: Some(16),
        logit_softcap: Some(30.0),
        ln_scale: Some(true),
        rope_ntk_train_len: Some(Some(1024)),
        ..Default::default()
    }
}

/// #581's tiny model (the shared sparse sidecar after layers 1-3), loaded.
pub fn pr581() -> ModelWeights {
    let art = Artifact::load(path("pr581_tiny.ptz")).expect("pr581_tiny.ptz");
    let w = ModelWeights::from_artifact(&art, &pr581_overrides()).expect("pr581 weights");
    assert!(
        w.config.sidecar.is_some(),
        "pr581_tiny loads without its sidecar"
    );
    w
}
