//! The seed submissions (issue 16): tiny models written by each public submission's own
//! `train_gpt.py`, quantizer and compressor (`scripts/seed_fixtures.py`, which imports the PR's
//! file from a path; nothing of it is in this repository), loaded by pgolf-rt and scored position
//! by position against the PR's own forward of its own round-tripped weights (float32, CPU).
//!
//! Each fixture also pins what the loader must infer or be told: a wrong layer count, a missing
//! SmearGate or a misplaced value embedding is a failure here, not a quietly different score.

mod common;

use pgolf_rt::artifact::{Artifact, Compression, ContainerFormat, QuantScheme};
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::model::{Activation, BigramConfig, ConfigOverrides, DeviceModel, ModelWeights};
use serde_json::Value;

/// Per-position NLL tolerance against the PR's float32 forward (nats).
const TOL_NLL: f64 = 1e-4;

/// What a fixture must load as.
struct Expect {
    stem: &'static str,
    /// What tensor names cannot say (the PR's hyperparameters of this configuration).
    overrides: ConfigOverrides,
    compression: Compression,
    format: ContainerFormat,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    mlp_hidden: usize,
    bigram: BigramConfig,
    /// Physical layers with XSA; value-embedding layers (`None`: no value embedding).
    xsa: Vec<usize>,
    ve_layers: Option<Vec<usize>>,
    /// Layers the shared sparse sidecar follows (`None`: no sidecar).
    sidecar_layers: Option<Vec<usize>>,
    /// Integer widths the artifact must hold (per-row schemes), e.g. [8] or [5, 6, 8].
    bits: Vec<u8>,
}

fn expectations() -> Vec<Expect> {
    let leaky = Some(Activation::LeakyRelu2 { slope: 0.5 });
    vec![
        // PR #489: relu^2, softcap 15, partial RoPE, BigramHash + SmearGate, no NTK, no LN scale.
        Expect {
            stem: "pr489_tiny",
            overrides: ConfigOverrides {
                rope_dims: Some(16),
                logit_softcap: Some(15.0),
                ..Default::default()
            },
            compression: Compression::Zlib,
            format: ContainerFormat::Int8CleanPerRowV1,
            layers: 4,
            heads: 2,
            kv_heads: 1,
            mlp_hidden: 192,
            bigram: BigramConfig {
                buckets: 512,
                dim: 32,
            },
            xsa: vec![],
            ve_layers: None,
            sidecar_layers: None,
            bits: vec![8],
        },
        // PR #687: LeakyReLU(0.5)^2, XSA on every layer, LN scale, VE on the last layers, the
        // NTK rule past 1024 tokens (its Rotary's train_seq_len), all-fp16 by its own size rule.
        Expect {
            stem: "pr687_tiny",
            overrides: ConfigOverrides {
                rope_dims: Some(8),
                logit_softcap: Some(30.0),
                activation: leaky,
                ln_scale: Some(true),
                xsa_last: Some(4),
                rope_ntk_train_len: Some(Some(1024)),
                ..Default::default()
            },
            compression: Compression::Zstd,
            format: ContainerFormat::MixedWm,
            layers: 4,
            heads: 2,
            kv_heads: 1,
            mlp_hidden: 112,
            bigram: BigramConfig {
                buckets: 256,
                dim: 16,
            },
            xsa: vec![0, 1, 2, 3],
            ve_layers: Some(vec![2, 3]),
            sidecar_layers: None,
            bits: vec![],
        },
        // PR #687 with a wide MLP, so its GPTQ runs: int5 (layer 0), int6 (layer 1), int8 tok_emb.
        Expect {
            stem: "pr687_int5",
            overrides: ConfigOverrides {
                rope_dims: Some(16),
                logit_softcap: Some(30.0),
                activation: leaky,
                ln_scale: Some(true),
                xsa_last: Some(2),
                rope_ntk_train_len: Some(Some(1024)),
                ..Default::default()
            },
            compression: Compression::Zstd,
            format: ContainerFormat::MixedWm,
            layers: 2,
            heads: 2,
            kv_heads: 1,
            mlp_hidden: 1044,
            bigram: BigramConfig {
                buckets: 128,
                dim: 16,
            },
            xsa: vec![0, 1],
            ve_layers: Some(vec![1]),
            sidecar_layers: None,
            bits: vec![5, 6, 8],
        },
        // PR #581 (#555's shared sparse sidecar, hidden 16) after layers 1-3: layer 1 is an
        // encoder layer, so its skip carries the sidecar's output. relu^2, partial RoPE, LN
        // scale, the NTK rule past 1024 tokens; all-fp16 by its own size rule.
        Expect {
            stem: "pr581_tiny",
            overrides: common::seeds::pr581_overrides(),
            compression: Compression::Zstd,
            format: ContainerFormat::MixedWm,
            layers: 4,
            heads: 2,
            kv_heads: 1,
            mlp_hidden: 192,
            bigram: BigramConfig {
                buckets: 512,
                dim: 32,
            },
            xsa: vec![],
            ve_layers: None,
            sidecar_layers: Some(vec![1, 2, 3]),
            bits: vec![],
        },
    ]
}

fn fixture_path(file: &str) -> String {
    common::seeds::path(file)
}

fn check(e: &Expect) -> f64 {
    let stem = e.stem;
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_path(&format!("{stem}.json"))).expect("fixture json"),
    )
    .expect("json");
    let art = Artifact::load(fixture_path(&format!("{stem}.ptz"))).expect("artifact");
    assert_eq!(art.compression, e.compression, "{stem}");
    assert_eq!(art.format, e.format, "{stem}");
    assert_eq!(
        art.file_bytes as u64,
        fx["artifact_bytes"].as_u64().unwrap(),
        "{stem}"
    );
    let mut bits: Vec<u8> = art
        .tensors
        .iter()
        .filter_map(|t| match t.scheme {
            QuantScheme::PerRow { bits } => Some(bits),
            _ => None,
        })
        .collect();
    bits.sort_unstable();
    bits.dedup();
    assert_eq!(bits, e.bits, "{stem}: integer widths in the artifact");

    let w = ModelWeights::from_artifact(&art, &e.overrides).expect("weights");
    let c = &w.config;
    assert_eq!(
        (c.num_layers, c.num_heads, c.num_kv_heads, c.mlp_hidden),
        (e.layers, e.heads, e.kv_heads, e.mlp_hidden),
        "{stem}: layers, heads, KV heads, MLP width"
    );
    assert_eq!(c.bigram, Some(e.bigram), "{stem}: BigramHash");
    assert!(c.smear_gate, "{stem}: SmearGate");
    assert_eq!(c.xsa_layers, e.xsa, "{stem}: XSA layers");
    assert_eq!(
        c.value_embed.as_ref().map(|v| v.layers.clone()),
        e.ve_layers,
        "{stem}: value-embedding layers"
    );
    assert_eq!(
        c.sidecar.as_ref().map(|s| s.layers.clone()),
        e.sidecar_layers,
        "{stem}: sidecar layers"
    );
    if let Some(layers) = fx.get("sparse_layers").and_then(Value::as_array) {
        let want: Vec<usize> = layers
            .iter()
            .map(|l| l.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            c.sidecar.as_ref().unwrap().layers,
            want,
            "{stem}: the PR's sites"
        );
    }
    assert!(c.tied_embeddings, "{stem}: tied head");
    assert_eq!(c.num_skips, c.num_layers / 2, "{stem}: U-Net skips");
    let cfg = &fx["config"];
    assert_eq!(c.model_dim as u64, cfg["model_dim"].as_u64().unwrap());
    assert_eq!(c.rope_dims as u64, cfg["rope_dims"].as_u64().unwrap());
    assert_eq!(
        c.param_count() as u64,
        cfg["num_params"].as_u64().unwrap(),
        "{stem}: parameter count"
    );
    if let Some(layers) = cfg["ve_layers"].as_str() {
        let want: Vec<usize> = layers.split(',').map(|s| s.parse().unwrap()).collect();
        assert_eq!(c.value_embed.as_ref().unwrap().layers, want);
    }

    let model = DeviceModel::new(CpuBackend::new(), &w).expect("upload");
    let mut worst = 0.0f64;
    for win in fx["windows"].as_array().unwrap() {
        let toks: Vec<u32> = win["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        let want = floats(&win["nll_fp32_rope"]);
        let want_bf16_rope = floats(&win["nll"]);
        let n = toks.len() - 1;
        assert_eq!(want.len(), n);
        let got: Vec<f64> = model
            .nll(&toks[..n], &toks[1..], 1, n, None)
            .expect("nll")
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let diff = common_max_abs_diff(&got, &want);
        let diff_bf16_rope = common_max_abs_diff(&got, &want_bf16_rope);
        let mean = got.iter().sum::<f64>() / n as f64;
        let want_mean = win["mean_nll_fp32_rope"].as_f64().unwrap();
        eprintln!(
            "{stem} ({n} tokens): max |nll diff| {diff:.2e} (mean nll {mean:.6} vs PR {want_mean:.6}); \
             vs the PR's bf16-rounded inv_freq: {diff_bf16_rope:.2e}"
        );
        assert!(
            diff < TOL_NLL,
            "{stem} ({n} tokens): per-position NLL differs by {diff}"
        );
        // Known gap (README): pgolf-rt keeps RoPE's inverse frequencies in float32, the PR's
        // `.bfloat16()` eval model rounds them. Small at these lengths; bounded so it is seen.
        assert!(
            diff_bf16_rope < 2e-2,
            "{stem} ({n} tokens): {diff_bf16_rope} from the PR's own (bf16 inv_freq) forward"
        );
        worst = worst.max(diff);
    }
    worst
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// The largest `|a[i] - b[i]|`, failing on non-finite values.
fn common_max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| {
        assert!(x.is_finite() && y.is_finite(), "non-finite NLL: {x} vs {y}");
        m.max((x - y).abs())
    })
}

#[test]
fn seed_submissions_load_and_match_their_own_forward() {
    let mut worst = 0.0f64;
    for e in expectations() {
        worst = worst.max(check(&e));
    }
    eprintln!("seed submissions: max |nll diff| over all fixtures {worst:.2e}");
}

/// The overrides are needed: with the defaults (full RoPE, softcap 30, relu^2, no XSA) the same
/// #687 artifact loads but scores differently, so the test above really pins those settings.
#[test]
fn seed_687_defaults_would_mismatch() {
    let e = &expectations()[1];
    let art = Artifact::load(fixture_path(&format!("{}.ptz", e.stem))).unwrap();
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_path(&format!("{}.json", e.stem))).unwrap(),
    )
    .unwrap();
    let w = ModelWeights::from_artifact(&art, &ConfigOverrides::default()).unwrap();
    let model = DeviceModel::new(CpuBackend::new(), &w).unwrap();
    let win = &fx["windows"][0];
    let toks: Vec<u32> = win["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let n = toks.len() - 1;
    let got: Vec<f64> = model
        .nll(&toks[..n], &toks[1..], 1, n, None)
        .unwrap()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let want = floats(&win["nll_fp32_rope"]);
    assert!(common_max_abs_diff(&got, &want) > 1e-3);
}

/// The seed submissions' TTT recipes (`--ttt-recipe`), score-first, each on a model its own PR's
/// code wrote, over the first 8,192 targets of the val shard in chunks of 2,048: the audit passes and the
/// recipe scores below the same model without TTT. The published settings are kept but the
/// chunk size (32,768 would leave a single chunk here).
#[test]
fn seed_ttt_recipes_pass_the_audit_and_gain_on_their_fixtures() {
    use pgolf_rt::eval::plan::{Adaptation, AuditPlan, EvalPlan};
    use pgolf_rt::eval::{FullTttConfig, TttRecipe};
    let Some(shared) = common::shared() else {
        return;
    };
    let lut = common::sp1024(&shared).byte_lut(1024);
    let mut toks =
        pgolf_rt::data::load_tokens(common::val_shard(&shared).to_str().unwrap()).unwrap();
    toks.truncate(8193);
    let ex = expectations();
    let cases = [
        (&ex[0], TttRecipe::Pr489),
        (&ex[3], TttRecipe::Pr581),
        (&ex[1], TttRecipe::Pr687),
    ];
    for (e, recipe) in cases {
        let art = Artifact::load(fixture_path(&format!("{}.ptz", e.stem))).unwrap();
        let w = ModelWeights::from_artifact(&art, &e.overrides).unwrap();
        let plain = EvalPlan {
            seq_len: 256,
            ..EvalPlan::default()
        };
        let base = plain.run(CpuBackend::new(), &w, &toks, &lut, None).unwrap();
        let geometry = FullTttConfig {
            seq_len: 256,
            chunk: 2048,
            ..FullTttConfig::default()
        };
        let plan = EvalPlan {
            adapt: Adaptation::Full(recipe.config(&w.config, &geometry)),
            audit: Some(AuditPlan::default()),
            ..plain
        };
        let r = plan.run(CpuBackend::new(), &w, &toks, &lut, None).unwrap();
        let gain = r.result.val_bpb - base.result.val_bpb;
        eprintln!(
            "{recipe} on {}: {:.6} vs {:.6} without TTT ({gain:+.2e} bpb), audit passed",
            e.stem, r.result.val_bpb, base.result.val_bpb
        );
        assert!(r.audit.unwrap().passed());
        assert_eq!(r.result.tokens, base.result.tokens);
        assert!(gain < 0.0, "{recipe} on {}: {gain:+.6} bpb", e.stem);
    }
}

/// Relative gradient tolerance against the PR's float32 autograd.
const TOL_GRAD: f64 = 1e-5;

/// pgolf-rt's gradients of each PR's own training loss (`model(x, y)`: the mean NLL over every
/// position) match PyTorch's autograd through the PR's own model, tensor by tensor
/// (`<stem>.grads.json` from `scripts/seed_fixtures.py --grads-only`): the loss to 1e-5, and per
/// tensor the whole gradient (small tensors) or its norm and its projection on a fixed
/// direction (large ones) to 1e-5 relative. A wrong sidecar tap, a skipped site or a
/// missing BigramHash term moves some tensor's gradient far past that.
#[test]
fn seed_gradients_match_pytorch() {
    use pgolf_rt::train::TrainModel;
    for e in expectations() {
        let Ok(text) = std::fs::read_to_string(fixture_path(&format!("{}.grads.json", e.stem)))
        else {
            continue; // fixtures without a gradient record (pr687_int5)
        };
        let fx: Value = serde_json::from_str(&text).unwrap();
        let art = Artifact::load(fixture_path(&format!("{}.ptz", e.stem))).unwrap();
        let w = ModelWeights::from_artifact(&art, &e.overrides).unwrap();
        let (batch, seq) = (
            fx["batch"].as_u64().unwrap() as usize,
            fx["seq"].as_u64().unwrap() as usize,
        );
        let toks: Vec<u32> = fx["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        let n = batch * seq;
        assert_eq!(toks.len(), n + 1);
        let model = TrainModel::new(CpuBackend::new(), &w).unwrap();
        let rows: Vec<usize> = (0..n).collect();
        let (loss, g) = model
            .loss_and_grads(&toks[..n], batch, seq, &rows, &toks[1..], None, true)
            .unwrap();
        let want_loss = fx["loss"].as_f64().unwrap();
        assert!(
            (loss - want_loss).abs() < 1e-5,
            "{}: loss {loss} vs PyTorch {want_loss}",
            e.stem
        );
        let mut base = g.base.expect("base gradients");
        let recs = &fx["tensors"];
        let got = fingerprint(
            base.params_mut()
                .into_iter()
                .map(|p| (p.name, p.values.to_vec())),
            recs,
        );
        assert_eq!(
            recs.as_array().unwrap().len(),
            got.len(),
            "{}: tensor count",
            e.stem
        );
        let worst = distance(recs, &got, Some("grad"));
        assert!(
            worst.0 < TOL_GRAD,
            "{}: gradient of {} off by {:.2e} relative",
            e.stem,
            worst.1,
            worst.0
        );
        eprintln!(
            "{}: loss {loss:.7} (PyTorch {want_loss:.7}); {} gradients within {:.2e} relative (worst: {})",
            e.stem,
            got.len(),
            worst.0,
            worst.1
        );
    }
}

/// Four training steps of each PR's model as its own `main()` trains it, against pgolf-rt's
/// optimizers set up the same way (`<stem>.steps.json` from `scripts/seed_fixtures.py
/// --steps-only`): every parameter in the PR's optimizer group (Muon, the token Adam, the scalar
/// Adam), Adam or AdamW with its decay, the momentum warm-up and clipping.
///
/// Two runs of the PR: with its Muon in float32 (`muon_in_fp32`), which pgolf-rt's float32
/// Muon must follow to 1e-5 in every loss and 1e-4 relative in every final weight; and with its
/// own bf16 Newton-Schulz and bf16 update (`MUON_BF16=1` here). The bf16 roundings make the PR's
/// own run move, from weights perturbed by 1e-7, by up to a few 1e-4 in the losses and the
/// weights' norms and projections in 4 steps (the fixture's third run measures that);
/// pgolf-rt's bf16 run must stay within 4 times that (floored, see below).
#[test]
fn seed_training_steps_match_the_prs_own() {
    for e in expectations() {
        let Ok(text) = std::fs::read_to_string(fixture_path(&format!("{}.steps.json", e.stem)))
        else {
            continue;
        };
        let fx: Value = serde_json::from_str(&text).unwrap();
        let runs = &fx["runs"];
        // The PR's own spread under a 1e-7 perturbation (bf16 Muon).
        let (bf, pert) = (&runs["bf16"], &runs["bf16_perturbed"]);
        let spread_loss = step_losses(bf)
            .iter()
            .zip(step_losses(pert))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let spread_w = distance(&bf["final"], &fingerprint_of(&pert["final"]), None).0;
        eprintln!(
            "{}: the PR's own bf16 run, weights perturbed by 1e-7: losses move {spread_loss:.2e}, \
             weights {spread_w:.2e} relative",
            e.stem
        );
        for (label, tol_loss, tol_w) in [
            ("fp32", 1e-5, 1e-4),
            // One perturbed run is one sample of a chaotic spread: floors of 1e-4 and 1e-3
            // (the PRs' spreads here: 4e-5 to 2e-4 in loss, 3e-4 to 1.3e-3 in weights).
            (
                "bf16",
                4.0 * spread_loss.max(1e-4),
                4.0 * spread_w.max(1e-3),
            ),
        ] {
            let (loss, w) = pgolf_steps(&e, &fx, &runs[label]);
            eprintln!(
                "{} ({label} Muon): losses within {loss:.2e} of the PR's (bound {tol_loss:.1e}), \
                 final weights within {w:.2e} relative (bound {tol_w:.1e})",
                e.stem
            );
            assert!(
                loss < tol_loss,
                "{} ({label}): loss off by {loss:.2e}",
                e.stem
            );
            assert!(w < tol_w, "{} ({label}): weights off by {w:.2e}", e.stem);
        }
    }
}

fn step_losses(run: &Value) -> Vec<f64> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["loss"].as_f64().unwrap())
        .collect()
}

/// Per tensor `(norm, dot, values)` of a fingerprint record list, by name.
type Fingerprint = std::collections::HashMap<String, (f64, f64, Option<Vec<f64>>)>;

fn fingerprint_of(recs: &Value) -> Fingerprint {
    recs.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let vals = r
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().map(|x| x.as_f64().unwrap()).collect());
            (
                r["name"].as_str().unwrap().to_string(),
                (
                    r["norm"].as_f64().unwrap(),
                    r["dot"].as_f64().unwrap(),
                    vals,
                ),
            )
        })
        .collect()
}

/// pgolf-rt's tensors as fingerprint records: norm, and projection of tensor `k` (its index in
/// `order`, the PR's parameter order) on `sin(0.37 i + k)`, as `scripts/seed_fixtures.py`
/// records them; the values kept. A tensor the PR does not have is a failure.
fn fingerprint(tensors: impl Iterator<Item = (String, Vec<f32>)>, order: &Value) -> Fingerprint {
    let index: std::collections::HashMap<&str, usize> = order
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(k, r)| (r["name"].as_str().unwrap(), k))
        .collect();
    tensors
        .map(|(name, vals)| {
            let k = *index
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{name}: not among the PR's tensors"));
            let v: Vec<f64> = vals.iter().map(|&x| x as f64).collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let dot = v
                .iter()
                .enumerate()
                .map(|(i, x)| x * (0.37 * i as f64 + k as f64).sin())
                .sum();
            (name, (norm, dot, Some(v)))
        })
        .collect()
}

/// The largest relative difference, over tensors, between the fingerprint records `want` (the
/// PR's) and `got`, and the tensor where it is: in norm, in projection (relative to
/// `norm · |r|`), and in values (`|Δ| / norm`) where the record has the field `values` and
/// `got` has them.
fn distance(want: &Value, got: &Fingerprint, values: Option<&str>) -> (f64, String) {
    let mut worst = (0.0f64, String::new());
    for rec in want.as_array().unwrap() {
        let name = rec["name"].as_str().unwrap();
        let (gn, gd, gv) = got
            .get(name)
            .unwrap_or_else(|| panic!("no tensor {name} on pgolf-rt's side"));
        let norm = rec["norm"].as_f64().unwrap().max(1e-12);
        let dn = rec["dir_norm"].as_f64().unwrap();
        let mut err = (gn - norm).abs() / norm;
        err = err.max((gd - rec["dot"].as_f64().unwrap()).abs() / (norm * dn));
        let want_values = values.and_then(|k| rec.get(k)).and_then(Value::as_array);
        if let (Some(w), Some(g)) = (want_values, gv.as_ref()) {
            assert_eq!(w.len(), g.len(), "{name}: size");
            let d2: f64 = w
                .iter()
                .zip(g)
                .map(|(a, b)| (a.as_f64().unwrap() - b).powi(2))
                .sum();
            err = err.max(d2.sqrt() / norm);
        }
        if err > worst.0 {
            worst = (err, name.to_string());
        }
    }
    worst
}

/// pgolf-rt's 4 steps from the fixture's weights with `run`'s settings: the largest loss
/// difference and the final weights' distance ([`final_distance`]) from the PR's run.
fn pgolf_steps(e: &Expect, fx: &Value, run: &Value) -> (f64, f64) {
    use pgolf_rt::train::groups::{optimizer_group, Group};
    use pgolf_rt::train::{
        LearningRates, MuonConfig, MuonRoute, OptimizerConfig, Optimizers, TrainModel,
    };
    let art = Artifact::load(fixture_path(&format!("{}.ptz", e.stem))).unwrap();
    let mut w = ModelWeights::from_artifact(&art, &e.overrides).unwrap();
    let st = &run["settings"];
    let f = |k: &str| st[k].as_f64().unwrap() as f32;
    let route = MuonRoute {
        bigram_proj: true,
        bigram_embed: e.stem.starts_with("pr489"),
        ve_proj: e.stem.starts_with("pr687"),
    };
    // pgolf-rt puts every parameter where the PR does.
    let groups = fx["groups"].as_object().unwrap();
    for p in w.clone().params_mut() {
        let want = match groups[&p.name].as_str().unwrap() {
            "matrix" => Group::Matrix,
            "embed" => Group::Embed,
            "head" => Group::Head,
            _ => Group::Scalar,
        };
        let got = optimizer_group(&p.name, &p.shape, route);
        assert_eq!(got, want, "{}: optimizer of {}", e.stem, p.name);
    }
    let mut opt = Optimizers::new(
        OptimizerConfig {
            lrs: LearningRates {
                embed: f("tied_embed_lr"),
                tied_embed: f("tied_embed_lr"),
                head: f("head_lr"),
                matrix: f("matrix_lr"),
                scalar: f("scalar_lr"),
            },
            beta1: f("beta1"),
            beta2: f("beta2"),
            adam_eps: f("adam_eps"),
            adam_weight_decay: f("adam_wd"),
            muon: MuonConfig {
                ns_steps: st["muon_backend_steps"].as_u64().unwrap() as usize,
                nesterov: true,
                weight_decay: f("muon_wd"),
                bf16: st["muon_bf16"].as_bool().unwrap(),
                ..MuonConfig::default()
            },
            grad_clip_norm: f("grad_clip_norm"),
            muon_route: route,
        },
        w.config.tied_embeddings,
    );
    let (batch, seq) = (
        fx["batch"].as_u64().unwrap() as usize,
        fx["seq"].as_u64().unwrap() as usize,
    );
    let n = batch * seq;
    let rows: Vec<usize> = (0..n).collect();
    let mut worst_loss = 0.0f64;
    for (i, s) in run["steps"].as_array().unwrap().iter().enumerate() {
        let toks: Vec<u32> = s["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        let model = TrainModel::new(CpuBackend::new(), &w).unwrap();
        let (loss, g) = model
            .loss_and_grads(&toks[..n], batch, seq, &rows, &toks[1..], None, true)
            .unwrap();
        let mut g = g.base.unwrap();
        let mu = s["momentum"].as_f64().unwrap() as f32;
        let norm = opt.step(&mut w, &mut g, f("lr_mul"), mu).unwrap();
        let want_norm = s["grad_norm"].as_f64().unwrap();
        worst_loss = worst_loss.max((loss - s["loss"].as_f64().unwrap()).abs());
        if i == 0 {
            // The first step starts from the same weights: forward, backward and clipping.
            assert!(
                (norm - want_norm).abs() < 1e-5 * want_norm,
                "{}: gradient norm {norm} vs the PR's {want_norm}",
                e.stem
            );
        }
    }
    let got = fingerprint(
        w.params_mut()
            .into_iter()
            .map(|p| (p.name, p.values.to_vec())),
        &run["final"],
    );
    // bf16: norms and projections only, as the PR's own spread is measured.
    let values = (!st["muon_bf16"].as_bool().unwrap()).then_some("values");
    (worst_loss, distance(&run["final"], &got, values).0)
}
