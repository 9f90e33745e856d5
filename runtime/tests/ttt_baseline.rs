//! LoRA TTT on the baseline artifact: over the first documents of the val shard it must beat
//! plain per-document scoring of the same documents with the same chunks and windows.

mod common;

use pgolf_rt::artifact::Artifact;
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::data::load_tokens;
use pgolf_rt::eval::{eval_lora_ttt, eval_per_document, TttConfig};
use pgolf_rt::model::{ConfigOverrides, DeviceModel, ModelWeights};
use pgolf_rt::train::TrainModel;

#[test]
fn lora_ttt_improves_bpb_on_the_first_val_documents() {
    let Some(shared) = common::shared() else {
        return;
    };
    let art = Artifact::load(shared.join("reference/baseline9L_int8_zlib.ptz")).unwrap();
    let w = ModelWeights::from_artifact(&art, &ConfigOverrides::default()).unwrap();
    let lut = common::sp1024(&shared).byte_lut(w.config.vocab_size);
    let mut tokens = load_tokens(common::val_shard(&shared).to_str().unwrap()).unwrap();
    tokens.truncate(20_000);
    let cfg = TttConfig {
        max_docs: Some(5),
        ..TttConfig::default()
    };
    let t0 = std::time::Instant::now();
    let dm = DeviceModel::new(CpuBackend::new(), &w).unwrap();
    let plain = eval_per_document(&dm, &tokens, &lut, cfg.chunk, cfg.window, cfg.max_docs).unwrap();
    let m = TrainModel::new(CpuBackend::new(), &w).unwrap();
    let ttt = eval_lora_ttt(&m, &tokens, &lut, &cfg, None).unwrap();
    eprintln!(
        "first 5 docs ({} targets): plain {:.5} bpb, LoRA TTT {:.5} bpb ({:.1} s)",
        ttt.tokens,
        plain.val_bpb,
        ttt.val_bpb,
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(ttt.tokens, plain.tokens);
    assert!(
        ttt.val_bpb < plain.val_bpb - 1e-3,
        "TTT {} vs plain {}",
        ttt.val_bpb,
        plain.val_bpb
    );
}
