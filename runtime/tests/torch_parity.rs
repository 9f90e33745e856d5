//! Position-by-position parity of the CPU engine with an independent PyTorch float32 model
//! (scripts/torch_model.py), on the first windows of the val shard. The fixtures are written by
//! scripts/torch_reference.py; both sides dequantize the same artifact independently.

mod common;

use pgolf_rt::data::load_tokens;
use pgolf_rt::eval::{run_windows, sliding_windows, truncate_for_eval, EvalOptions};
use serde_json::Value;

fn fixture(stem: &str) -> Value {
    let p = format!(
        "{}/tests/fixtures/torch/{stem}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(p).expect("fixture")).expect("json")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn check_artifact(artifact: &str) {
    let Some(s) = common::shared() else { return };
    let stem = artifact.trim_end_matches(".ptz");
    let fx = fixture(stem);
    let model = common::cpu_model(&s, artifact);
    assert_eq!(
        model.config.param_count() as u64,
        fx["config"]["num_params"].as_u64().unwrap()
    );
    let lut = common::sp1024(&s).byte_lut(1024);
    let toks = load_tokens(common::val_shard(&s).to_str().unwrap()).unwrap();

    // Standard windows 0 and 1: every position's NLL.
    let seq = 1024;
    let ids = &toks[..2 * seq];
    let tgt = &toks[1..2 * seq + 1];
    let nll = model.nll(ids, tgt, 2, seq, None).unwrap();
    let want: Vec<f64> = fx["standard"]["per_position_nll"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(floats)
        .collect();
    assert_eq!(want.len(), nll.len());
    let got: Vec<f64> = nll.iter().map(|&v| v as f64).collect();
    let max_err = common::max_abs_diff_f64(&got, &want);
    let sum: f64 = nll.iter().map(|&v| v as f64).sum();
    let want_sum = fx["standard"]["nll_sum"].as_f64().unwrap();
    eprintln!("{stem}: max |nll diff| {max_err:.2e}, nll sum {sum:.4} vs {want_sum:.4}");
    // Seen: 4.4e-5 (baseline9L) and 5.4e-5 (mlp3x11L) nats; README: ~5e-5.
    assert!(
        max_err < 1e-4,
        "{stem}: per-position NLL differs by {max_err}"
    );
    assert!(
        (sum - want_sum).abs() / want_sum < 1e-5,
        "{stem}: NLL sum {sum} vs {want_sum}"
    );
    let bytes: u64 = (0..2 * seq)
        .map(|t| lut.bytes_for(toks[t], toks[t + 1]) as u64)
        .sum();
    assert_eq!(bytes, fx["standard"]["bytes"].as_u64().unwrap());

    // Logits of window 0 at a few positions: compare differences (softmax-invariant).
    for pos in ["0", "1", "511", "1023"] {
        let p: usize = pos.parse().unwrap();
        let lp = model.log_probs(&toks[..seq], 1, seq, Some(&[p])).unwrap();
        let want = floats(&fx["standard"]["window0_logits_first8"][pos]);
        for i in 1..want.len() {
            let (g, w) = ((lp[i] - lp[0]) as f64, want[i] - want[0]);
            assert!(
                (g - w).abs() < 2e-3,
                "{stem} pos {pos} logit {i}: {g} vs {w}"
            );
        }
    }

    // First 4 sliding windows (stride 64): same targets, same summed NLL and bytes.
    let stream = truncate_for_eval(&toks, seq).unwrap();
    let windows = sliding_windows(stream.len(), seq, 64).unwrap();
    let (mut n, mut tot, mut b) = (0u64, 0f64, 0u64);
    let opts = EvalOptions {
        seq_len: seq,
        batch: 4,
        progress: None,
    };
    run_windows(&model, stream, &windows[..4], opts, |t, v| {
        n += 1;
        tot += v as f64;
        b += lut.bytes_for(stream[t], stream[t + 1]) as u64;
    })
    .unwrap();
    let sl = &fx["sliding"];
    assert_eq!(n, sl["tokens"].as_u64().unwrap());
    assert_eq!(b, sl["bytes"].as_u64().unwrap());
    let want = sl["nll_sum"].as_f64().unwrap();
    assert!(
        (tot - want).abs() / want < 1e-5,
        "{stem}: sliding NLL sum {tot} vs {want}"
    );
}

#[test]
fn baseline9l_matches_pytorch_float32_position_by_position() {
    check_artifact("baseline9L_int8_zlib.ptz");
}

#[test]
fn mlp3x11l_matches_pytorch_float32_position_by_position() {
    check_artifact("mlp3x11L_int6_zstd.ptz");
}
