//! The `score`, `inspect`, `generate`, `eval --mix hedge`, `eval --ttt-recipe` and `eval --text` commands
//! through the binary, each against the library computing the same thing another way (the
//! embedding API, the artifact reader, the mixer, the plain eval and the eval plan), on the
//! committed default model.

mod common;

use pgolf_rt::artifact::Artifact;
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::data::load_tokens;
use pgolf_rt::eval::mixer::{eval_mixed, MixerConfig};
use pgolf_rt::eval::EvalOptions;
use pgolf_rt::model::{ConfigOverrides, DeviceModel, ModelWeights};
use pgolf_rt::tokenizer::Tokenizer;
use std::io::Write;
use std::process::{Command, Stdio};

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/pg-tiny-4L128.int8.ptz"
);
const TOKENIZER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/pg_sp1024_bpe.model");
const TEXT: &str = "The quick brown fox jumps over the lazy dog.\nIt cost $1,234.56 — naïve café!";

/// Runs the binary; returns (exit code, stdout, stderr).
fn run(args: &[&str], stdin: Option<&str>) -> (Option<i32>, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgolf-rt"));
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("run pgolf-rt");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in:\n{stdout}"));
    serde_json::from_str(line).unwrap()
}

/// `pgolf-rt eval --backend cpu --json` of the test model on the first 4,096 targets of `val`
/// in windows of 256.
fn eval_cpu(val: &str) -> Vec<&str> {
    vec![
        "eval",
        "--backend",
        "cpu",
        "--json",
        "--seq-len",
        "256",
        "--max-tokens",
        "4097",
        "--artifact",
        MODEL,
        "--tokenizer",
        TOKENIZER,
        "--data",
        val,
    ]
}

/// `pgolf-rt score --backend cpu --json` on the test model with `extra` flags, `text` the text
/// argument (`-` reads `stdin`).
fn score_cpu(extra: &[&str], text: &str, stdin: Option<&str>) -> (Option<i32>, String, String) {
    let mut args = vec![
        "score",
        "--backend",
        "cpu",
        "--json",
        "--artifact",
        MODEL,
        "--tokenizer",
        TOKENIZER,
    ];
    args.extend_from_slice(extra);
    args.push(text);
    run(&args, stdin)
}

#[test]
fn score_matches_the_embedding_api_and_its_own_sums() {
    let (code, out, err) = score_cpu(&[], TEXT, None);
    assert_eq!(code, Some(0), "{err}");
    let j = last_json(&out);
    // The CLI's default is the float32 parity path; the API's is the fastest, so ask for f32.
    let model = pgolf_rt::Model::load_options(MODEL, TOKENIZER, &f32_options()).unwrap();
    let lib = model.score(TEXT).unwrap();
    let bpb = j["bits_per_byte"].as_f64().unwrap();
    assert!(
        (bpb - lib.bits_per_byte).abs() < 1e-9,
        "CLI {bpb} vs API {}",
        lib.bits_per_byte
    );
    // The tokens are the tokenizer's, and the total is the sum of the per-token log-probs
    // over the text's UTF-8 bytes.
    let toks = j["tokens"].as_array().unwrap();
    let ids: Vec<u32> = toks
        .iter()
        .map(|t| t["id"].as_u64().unwrap() as u32)
        .collect();
    let tok = Tokenizer::load(TOKENIZER).unwrap();
    assert_eq!(ids, tok.encode(TEXT));
    let bits: f64 = toks
        .iter()
        .map(|t| -t["logprob"].as_f64().unwrap() / std::f64::consts::LN_2)
        .sum();
    let bytes: u64 = toks.iter().map(|t| t["bytes"].as_u64().unwrap()).sum();
    assert_eq!(bytes, TEXT.len() as u64, "every UTF-8 byte counted once");
    assert_eq!(j["total_bytes"].as_u64().unwrap(), bytes);
    assert!((bits / bytes as f64 - bpb).abs() < 1e-9);
    assert!(toks.iter().all(|t| t["logprob"].as_f64().unwrap() < 0.0));
    // The table on stdout has one line per token; `-` reads the same text from stdin.
    let table = out
        .lines()
        .filter(|l| l.trim_start().starts_with(char::is_numeric));
    assert_eq!(table.count(), ids.len());
    let (code, out2, err) = score_cpu(&[], "-", Some(TEXT));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(last_json(&out2)["bits_per_byte"], j["bits_per_byte"]);
}

#[test]
fn inspect_reports_the_architecture_tensors_and_budget() {
    let dir = std::env::temp_dir().join(format!("pgolf-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tsv = dir.join("summary.tsv");
    let (code, out, err) = run(
        &["inspect", MODEL, "--summary", tsv.to_str().unwrap()],
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    let art = Artifact::load(MODEL).unwrap();
    let w = ModelWeights::from_artifact(&art, &ConfigOverrides::default()).unwrap();
    let c = &w.config;
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no `{key}` line in:\n{out}"))
            .to_string()
    };
    assert!(line("layers").contains(&c.num_layers.to_string()));
    assert!(line("model dim").contains(&c.model_dim.to_string()));
    assert!(line("vocab").contains(&c.vocab_size.to_string()));
    let size = std::fs::metadata(MODEL).unwrap().len();
    assert!(
        line("budget").contains(&format!("{size} bytes file")),
        "{}",
        line("budget")
    );
    // Every tensor of the artifact, once, in the summary.
    let summary = std::fs::read_to_string(&tsv).unwrap();
    let rows: Vec<&str> = summary.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), art.tensors.len(), "{summary}");
    for t in &art.tensors {
        assert!(
            rows.iter()
                .any(|r| r.split('\t').next() == Some(t.name.as_str())),
            "{} missing from the summary",
            t.name
        );
        assert!(out.contains(&t.name), "{} missing from stdout", t.name);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let (code, _, err) = run(&["inspect", "/nonexistent/model.ptz"], None);
    assert_eq!(code, Some(1));
    assert!(err.contains("/nonexistent/model.ptz"), "{err}");
}

/// `pgolf-rt inspect A | head -1`: when the reader closes the pipe, the command ends as Unix
/// tools do (SIGPIPE or a clean exit), never with a Rust panic about a failed print.
#[test]
fn inspect_into_a_closed_pipe_ends_without_a_panic() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgolf-rt"))
        .args(["inspect", MODEL])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pgolf-rt");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here: the rest of the listing goes into a closed pipe.
    assert!(first.starts_with("artifact"), "{first}");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "a panic's exit code: {err}");
}

#[test]
fn eval_mix_hedge_matches_the_library_and_the_plain_eval() {
    let Some(shared) = common::shared() else {
        return;
    };
    let val = common::val_shard(&shared);
    let base = eval_cpu(val.to_str().unwrap());
    let (code, out, err) = run(&[&base[..], &["--mix", "hedge"]].concat(), None);
    assert_eq!(code, Some(0), "{err}");
    let j = last_json(&out);
    let mix = &j["mix"];
    assert_eq!(mix["kind"], "hedge");
    // The library's mixer on the same tokens and settings.
    let art = Artifact::load(MODEL).unwrap();
    let w = ModelWeights::from_artifact(&art, &ConfigOverrides::default()).unwrap();
    let model = DeviceModel::new(CpuBackend::new(), &w).unwrap();
    let mut toks = load_tokens(val.to_str().unwrap()).unwrap();
    toks.truncate(4097);
    let lut = Tokenizer::load(TOKENIZER).unwrap().byte_lut(1024);
    let opts = EvalOptions {
        seq_len: 256,
        batch: 8,
        progress: None,
    };
    let lib = eval_mixed(&model, &toks, &lut, None, &MixerConfig::default(), opts).unwrap();
    let got = mix["val_bpb"].as_f64().unwrap();
    assert!(
        (got - lib.result.val_bpb).abs() < 1e-12,
        "CLI {got} vs library {}",
        lib.result.val_bpb
    );
    assert_eq!(
        j["val_bpb"].as_f64().unwrap(),
        got,
        "the headline is the mixture"
    );
    // Its neural expert is the plain eval, run separately.
    let (code, out, err) = run(&base, None);
    assert_eq!(code, Some(0), "{err}");
    let plain = last_json(&out)["val_bpb"].as_f64().unwrap();
    let neural = mix["neural_val_bpb"].as_f64().unwrap();
    assert!(
        (neural - plain).abs() < 1e-6,
        "neural {neural} vs plain {plain}"
    );
    // Final weights of the enabled experts form a distribution.
    let wsum: f64 = mix["experts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["enabled"].as_bool().unwrap())
        .map(|e| e["final_weight"].as_f64().unwrap())
        .sum();
    assert!((wsum - 1.0).abs() < 1e-9, "weights sum to {wsum}");
    assert_eq!(j["tokens"].as_u64().unwrap(), 4096);
}

#[test]
fn generate_streams_deterministic_text_with_and_without_the_kv_cache() {
    let gen = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--artifact",
            MODEL,
            "--tokenizer",
            TOKENIZER,
            "--tokens",
            "24",
        ];
        args.extend_from_slice(extra);
        args.push("The quick brown fox");
        let (code, out, err) = run(&args, None);
        assert_eq!(code, Some(0), "{err}");
        assert!(
            err.contains("generated 24 tokens") && err.contains("tokens/s"),
            "{err}"
        );
        out
    };
    // Sampling: the same seed gives the same text, and it is the library's.
    let sampled = gen(&["--seed", "5", "--temperature", "0.9"]);
    assert_eq!(sampled, gen(&["--seed", "5", "--temperature", "0.9"]));
    let model = pgolf_rt::Model::load_options(MODEL, TOKENIZER, &f32_options()).unwrap();
    let s = pgolf_rt::Sampling {
        temperature: 0.9,
        top_k: 40,
        seed: 5,
    };
    let lib = model.generate("The quick brown fox", 24, &s).unwrap();
    assert_eq!(sampled, format!("{lib}\n"));
    // Greedy: the KV cache and the full recompute write the same text within the window.
    let greedy = gen(&["--temperature", "0"]);
    assert!(!greedy.trim().is_empty(), "{greedy:?}");
    assert_eq!(greedy, gen(&["--temperature", "0", "--no-kv-cache"]));
    // bf16 products (or float32 with a note where the CPU has no bf16 kernel): deterministic,
    // and the library's text at that precision.
    let bf16 = gen(&["--precision", "bf16", "--seed", "5", "--temperature", "0.9"]);
    assert!(!bf16.trim().is_empty(), "{bf16:?}");
    assert_eq!(
        bf16,
        gen(&["--precision", "bf16", "--seed", "5", "--temperature", "0.9"])
    );
    let fast = pgolf_rt::Model::load(MODEL, TOKENIZER).unwrap();
    assert_eq!(
        bf16,
        format!(
            "{}\n",
            fast.generate("The quick brown fox", 24, &s).unwrap()
        )
    );
    // Past a small window the cache restarts from its last half: still deterministic.
    let short = gen(&["--context", "12", "--seed", "2"]);
    assert_eq!(short, gen(&["--context", "12", "--seed", "2"]));
    // Bad flags are refused before anything is loaded.
    for bad in [
        ["--temperature", "-1"],
        ["--temperature", "NaN"],
        ["--tokens", "0"],
        ["--tokens", "1000000"],
        ["--context", "0"],
    ] {
        let mut args = vec!["generate", "--artifact", MODEL, "--tokenizer", TOKENIZER];
        args.extend_from_slice(&bad);
        args.push("x");
        let (code, _, err) = run(&args, None);
        assert_eq!(code, Some(2), "{bad:?} accepted: {err}");
        assert!(err.contains(bad[0]), "{bad:?}: {err}");
    }
}

/// `score --precision bf16` on the CPU: bf16 products where the CPU has a kernel (a score near
/// float32's but not equal to it), else float32 with one line saying so.
#[test]
fn score_in_bf16_on_the_cpu_is_near_float32_or_says_it_fell_back() {
    let score = |p: &str| {
        let (code, out, err) = score_cpu(&["--precision", p], TEXT, None);
        assert_eq!(code, Some(0), "--precision {p}: {err}");
        (last_json(&out)["bits_per_byte"].as_f64().unwrap(), err)
    };
    let (f, _) = score("f32");
    let (b, err) = score("bf16");
    // The API's default precision is the fastest the CPU has: bf16 where it has a kernel.
    let api = pgolf_rt::Model::load(MODEL, TOKENIZER).unwrap();
    let api_bpb = api.score(TEXT).unwrap().bits_per_byte;
    if pgolf_rt::backend::cpu::bf16::Kernel::detect().is_some() {
        assert!(b != f && (b - f).abs() < 2e-2, "bf16 {b} vs f32 {f}");
        assert_eq!(api.precision(), pgolf_rt::backend::Precision::Bf16);
    } else {
        assert!(err.contains("running in float32"), "{err}");
        assert_eq!(b, f);
        assert_eq!(api.precision(), pgolf_rt::backend::Precision::F32);
        // Asking the API for bf16 on such a CPU is an error, not a silent fallback.
        let bf16 = pgolf_rt::LoadOptions {
            precision: Some(pgolf_rt::backend::Precision::Bf16),
            ..Default::default()
        };
        assert!(pgolf_rt::Model::load_options(MODEL, TOKENIZER, &bf16).is_err());
    }
    assert!(
        (api_bpb - b).abs() < 1e-9,
        "API default {api_bpb} vs CLI bf16 {b}"
    );
}

/// The float32 parity path, what the CLI uses unless told otherwise.
fn f32_options() -> pgolf_rt::LoadOptions {
    pgolf_rt::LoadOptions {
        precision: Some(pgolf_rt::backend::Precision::F32),
        ..Default::default()
    }
}

/// `eval --ttt-recipe pr687 --audit` through the binary: the flags become the library's plan
/// (the same score as `EvalPlan::run` with `TttRecipe::Pr687`'s settings), the audit passes,
/// the cost line counts the recipe's training tokens, `--estimate` prints that cost without
/// running, and a parameter pattern that names nothing or a flag of the other optimizer is an
/// error.
#[test]
fn eval_ttt_recipe_is_the_library_plan_and_passes_the_audit() {
    use pgolf_rt::eval::plan::{Adaptation, EvalPlan};
    use pgolf_rt::eval::{FullTttConfig, TttRecipe};
    let Some(shared) = common::shared() else {
        return;
    };
    let val = common::val_shard(&shared);
    let base = [
        &eval_cpu(val.to_str().unwrap())[..],
        &["--ttt-recipe", "pr687", "--ttt-chunk", "1024"],
    ]
    .concat();
    let (code, out, err) = run(&[&base[..], &["--audit"]].concat(), None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("legality audit PASSED"), "{out}");
    let j = last_json(&out);
    assert_eq!(j["ttt_recipe"], "pr687");
    assert_eq!(j["ttt_optimizer"], "adamw");
    assert_eq!(j["ttt_params"], "blocks.2.*,blocks.3.*,*scale*");
    assert!((j["ttt_polyak"].as_f64().unwrap() - 0.998).abs() < 1e-6);
    assert_eq!(j["audit"]["passed"], true);
    // 4 chunks of 1,024 targets, 3 trained, 3 epochs each.
    assert_eq!(j["cost"]["train_tokens"], 3 * 3 * 1024);
    assert_eq!(j["cost"]["forward_tokens"], 4096);
    // The library's plan with the recipe's values.
    let art = Artifact::load(MODEL).unwrap();
    let w = ModelWeights::from_artifact(&art, &ConfigOverrides::default()).unwrap();
    let mut toks = load_tokens(val.to_str().unwrap()).unwrap();
    toks.truncate(4097);
    let lut = Tokenizer::load(TOKENIZER).unwrap().byte_lut(1024);
    let geometry = FullTttConfig {
        seq_len: 256,
        ..FullTttConfig::default()
    };
    let plan = EvalPlan {
        seq_len: 256,
        adapt: Adaptation::Full(FullTttConfig {
            chunk: 1024,
            ..TttRecipe::Pr687.config(&w.config, &geometry)
        }),
        ..EvalPlan::default()
    };
    let lib = plan.run(CpuBackend::new(), &w, &toks, &lut, None).unwrap();
    assert_eq!(j["val_bpb"].as_f64().unwrap(), lib.result.val_bpb);
    // --estimate: the same cost, nothing evaluated.
    let (code, out, err) = run(&[&base[..], &["--estimate"]].concat(), None);
    assert_eq!(code, Some(0), "{err}");
    let e = last_json(&out);
    assert_eq!(e["cost"], j["cost"]);
    assert!(e.get("val_bpb").is_none(), "{e}");
    // Mistakes are errors that say what is wrong.
    for (extra, want) in [
        (&["--ttt-params", "blocks.9.*"][..], "matches no parameter"),
        (&["--ttt-momentum", "0.9"][..], "SGD's"),
        (&["--ttt", "lora"][..], "full-model recipe"),
    ] {
        let (code, _, err) = run(&[&base[..], extra].concat(), None);
        assert_ne!(code, Some(0));
        assert!(err.contains(want), "{extra:?}: {err}");
    }
}

/// `eval --text FILE` (and `--text -`, standard input): the text as one document, BOS first,
/// under a plan with sliding windows, #461's full TTT and the mixer: the same numbers as
/// `Model::evaluate` of `Model::text_tokens` with that plan; `--data` with `--text`, or neither,
/// is refused.
#[test]
fn eval_text_is_the_embedding_api_plan_on_the_text() {
    use pgolf_rt::eval::plan::{Adaptation, EvalPlan};
    use pgolf_rt::eval::{FullTttConfig, TttRecipe};
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/web/fixed_text.txt"
    );
    let text = std::fs::read_to_string(file).unwrap();
    let flags = [
        "eval",
        "--backend",
        "cpu",
        "--json",
        "--seq-len",
        "128",
        "--stride",
        "64",
        "--ttt-recipe",
        "pr461",
        "--ttt-chunk",
        "128",
        "--mix",
        "hedge",
        "--artifact",
        MODEL,
        "--tokenizer",
        TOKENIZER,
    ];
    let (code, out, err) = run(&[&flags[..], &["--text", file]].concat(), None);
    assert_eq!(code, Some(0), "{err}");
    let j = last_json(&out);
    let (code, out, err) = run(&[&flags[..], &["--text", "-"]].concat(), Some(&text));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        last_json(&out)["val_bpb"],
        j["val_bpb"],
        "stdin and the file"
    );

    let model = pgolf_rt::Model::load_options(MODEL, TOKENIZER, &f32_options()).unwrap();
    let tokens = model.text_tokens(&text).unwrap();
    assert_eq!(tokens[0], model.tokenizer().bos_id());
    let geometry = FullTttConfig {
        seq_len: 128,
        stride: Some(64),
        chunk: 128,
        ..FullTttConfig::default()
    };
    let plan = EvalPlan {
        seq_len: 128,
        stride: Some(64),
        adapt: Adaptation::Full(TttRecipe::Pr461.config(model.config(), &geometry)),
        mix: Some(MixerConfig::default()),
        ..EvalPlan::default()
    };
    let lib = model.evaluate(&plan, &tokens).unwrap();
    // Whole windows of 128 targets only, as the challenge scores a stream.
    let whole = (tokens.len() - 1) / 128 * 128;
    assert_eq!(j["tokens"].as_u64().unwrap() as usize, whole);
    assert_eq!(lib.result.tokens as usize, whole);
    assert_eq!(j["val_bpb"].as_f64().unwrap(), lib.result.val_bpb);
    let neural = lib.mixed.as_ref().unwrap().neural().val_bpb;
    assert_eq!(j["mix"]["neural_val_bpb"].as_f64().unwrap(), neural);

    for (extra, want) in [
        (&["--text", file, "--data", file][..], "cannot be used with"),
        (&[][..], "--data"),
    ] {
        let (code, _, err) = run(&[&flags[..], extra].concat(), None);
        assert_ne!(code, Some(0));
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    assert!(model.text_tokens("").is_err());
}
