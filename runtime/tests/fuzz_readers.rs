//! Mutation fuzzing of the three readers of user files, on the stable toolchain: the artifact
//! reader (compression, zip, pickle, tensors, quantized layouts), the pickle VM (and the tensor
//! layer over it) and the SentencePiece reader.
//!
//! A deterministic loop (seeded PRNG) mutates seeds (the real reference artifacts and their
//! pickles, the tokenizer models, small synthetic artifacts and crafted pickles) with bit flips,
//! interesting integers, insertions, deletions, repeats, splices, truncations and pickle opcode
//! tokens, stacked 1 to 4 deep, and runs each input with the panic caught. A finding is a panic,
//! an input that takes more than [`SLOW`], or one that makes the process allocate more than
//! [`HEAVY`] bytes at once (measured by a counting global allocator). Inputs that end with a new
//! kind of error message join the corpus, so later mutations start from deeper states.
//!
//! `fuzz_readers_in_ci` runs a bounded number of executions in CI and fails on any finding.
//! The long run (`FUZZ_EXECS`, default 10 M; `FUZZ_SEED`; findings saved under the target
//! folder) is ignored by default:
//!
//! ```text
//! FUZZ_EXECS=10000000 cargo test --release -p pgolf-rt --test fuzz_readers -- --ignored --nocapture
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pgolf_rt::artifact::compress::decompress;
use pgolf_rt::artifact::zip::TorchArchive;
use pgolf_rt::artifact::{
    export_artifact, pickle, quant, Artifact, Compression, DType, ExportLayout, ExportOptions,
    ExportTensor,
};
use pgolf_rt::tokenizer::Tokenizer;

#[path = "common/crafted.rs"]
#[allow(dead_code)]
mod crafted;

/// An input slower than this is a finding (the real 10 MB artifacts load in about 0.4 s).
const SLOW: Duration = Duration::from_secs(2);
/// An input that raises the live heap by more than this is a finding.
const HEAVY: usize = 1 << 30;

/// The global allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwards to the system allocator with the caller's layout.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` was allocated by `alloc` above with layout `l`.
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: same contract as `GlobalAlloc::realloc`, forwarded.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                let now = LIVE.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Which reader an input goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Target {
    /// `Artifact::from_bytes` on a whole (compressed or bare) artifact file.
    Artifact,
    /// `pickle::load`, then the tensor layer against the seed's archive when it has one.
    Pickle,
    /// `Tokenizer::from_bytes`, then encoding, decoding and the byte tables.
    Tokenizer,
}

/// One seed: its bytes and, for pickles, the zip payload whose storages it references.
struct Seed {
    target: Target,
    name: String,
    bytes: Vec<u8>,
    archive: Option<std::sync::Arc<Vec<u8>>>,
    /// Relative chance of being picked.
    weight: u32,
}

/// Values that break size arithmetic.
const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0xFFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0x1_0000_0000,
    0x7FFF_FFFF_FFFF_FFFF,
    u64::MAX,
];

/// Pickle opcodes and short sequences spliced into pickles.
const PICKLE_TOKENS: [&[u8]; 16] = [
    b"(",
    b"h\x00",
    b"q\x00",
    b"j\x00\x00\x00\x00",
    b"r\x00\x00\x00\x00",
    b"0",
    b"t",
    b"l",
    b"d",
    b"e",
    b"u",
    b"R",
    b"b",
    b"Q",
    b"\x94",
    b"X\xff\xff\xff\x00",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8], target: Target) {
    let n = input.len();
    let at = rng.below(n + 1);
    match rng.below(10) {
        0 if n > 0 => input[at.min(n - 1)] ^= 1 << rng.below(8),
        1 if n > 0 => input[at.min(n - 1)] = INTERESTING[rng.below(5)] as u8,
        2 => {
            let v = INTERESTING[rng.below(INTERESTING.len())].wrapping_add(rng.below(3) as u64);
            let w = [2, 4, 8][rng.below(3)];
            let bytes = &v.to_le_bytes()[..w];
            let end = (at + w).min(n);
            input.splice(at..end, bytes.iter().copied());
        }
        3 => {
            let k = 1 + rng.below(16);
            let fill: Vec<u8> = (0..k).map(|_| rng.next() as u8).collect();
            input.splice(at..at, fill);
        }
        4 if n > 0 => {
            let end = (at + 1 + rng.below(64)).min(n);
            input.drain(at.min(n - 1)..end);
        }
        5 if n > 0 => {
            // Repeat a chunk a few times (amplification attempts).
            let start = at.min(n - 1);
            let end = (start + 1 + rng.below(32)).min(n);
            let chunk = input[start..end].to_vec();
            for _ in 0..1 + rng.below(8) {
                input.splice(end..end, chunk.iter().copied());
            }
        }
        6 if !other.is_empty() => {
            // Splice a range of another seed of the same reader.
            let s = rng.below(other.len());
            let e = (s + 1 + rng.below(256)).min(other.len());
            let end = (at + rng.below(256)).min(n);
            input.splice(at..end, other[s..e].iter().copied());
        }
        7 => input.truncate(at),
        8 if target == Target::Pickle => {
            let t = PICKLE_TOKENS[rng.below(PICKLE_TOKENS.len())];
            input.splice(at..at, t.iter().copied());
        }
        _ if n > 0 => input[at.min(n - 1)] = rng.next() as u8,
        _ => input.push(rng.next() as u8),
    }
}

/// Strings every loaded tokenizer encodes.
const TEXTS: [&str; 4] = [
    "",
    "The quick brown fox.",
    "  ﬁ① é😀\u{0}日本 ",
    "<s><unk>▁▁",
];

/// Runs one input; `Ok` or the error message. Panics escape to the caller.
fn execute(target: Target, input: &[u8], archive: Option<&[u8]>) -> Result<(), String> {
    match target {
        Target::Artifact => Artifact::from_bytes(input)
            .map(|a| {
                let _ = a.summary_tsv().len();
            })
            .map_err(|e| e.to_string()),
        Target::Pickle => {
            let root = pickle::load(input).map_err(|e| e.to_string())?;
            if let Some(payload) = archive {
                let ar = TorchArchive::parse(payload).map_err(|e| e.to_string())?;
                quant::interpret(&root, &ar).map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Target::Tokenizer => {
            let tok = Tokenizer::from_bytes(input).map_err(|e| e.to_string())?;
            for t in TEXTS {
                let ids = tok.encode(t);
                let _ = tok.decode(&ids);
            }
            let _ = tok.byte_lut_for_model(tok.vocab_size());
            Ok(())
        }
    }
}

/// The error's kind, for corpus novelty: its text without digits, cut short.
fn signature(r: &Result<(), String>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => e.chars().filter(|c| !c.is_ascii_digit()).take(48).collect(),
    }
}

fn shared_dir() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared"));
    p.join("reference").is_dir().then_some(p)
}

/// A small model in every layout and compression (the exporter's own output).
fn synthetic(layout: ExportLayout, compression: Compression) -> Vec<u8> {
    let mut rng = Rng(7);
    let specs: [(&str, Vec<usize>, DType); 5] = [
        ("tok_emb.weight", vec![8, 4], DType::BF16),
        ("blocks.0.attn.c_q.weight", vec![4, 4], DType::F32),
        ("blocks.0.mlp.fc.weight", vec![6, 4], DType::F32),
        ("blocks.0.attn_scale", vec![4], DType::F32),
        ("blocks.0.resid_mix", vec![2, 4], DType::F32),
    ];
    let vals: Vec<Vec<f32>> = specs
        .iter()
        .map(|(_, s, _)| {
            (0..s.iter().product())
                .map(|_| (rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                .collect()
        })
        .collect();
    let tensors: Vec<ExportTensor> = specs
        .iter()
        .zip(&vals)
        .map(|((n, s, d), v)| ExportTensor {
            name: n,
            shape: s,
            dtype: *d,
            values: v,
        })
        .collect();
    let opts = ExportOptions {
        passthrough_max_numel: 8,
        fp16_embed: false,
    };
    export_artifact(&tensors, layout, compression, &opts).unwrap()
}

/// The 1024-piece model reduced to its first `keep` pieces, without its normalization charsmap
/// (a small, fast seed; the full models are seeds too).
fn small_tokenizer(model: &[u8], keep: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pieces = 0;
    for (key, start, body, end) in crafted::proto_fields(model) {
        match key >> 3 {
            1 => {
                pieces += 1;
                if pieces <= keep {
                    out.extend_from_slice(&model[start..end]);
                }
            }
            3 => {
                // normalizer_spec without precompiled_charsmap (its field 2); the body
                // starts after the length varint.
                let mut p = body;
                while model[p] & 0x80 != 0 {
                    p += 1;
                }
                let inner = &model[p + 1..end];
                let mut kept = Vec::new();
                for (k, s, _, e) in crafted::proto_fields(inner) {
                    if k >> 3 != 2 {
                        kept.extend_from_slice(&inner[s..e]);
                    }
                }
                crafted::put_varint(key, &mut out);
                crafted::put_varint(kept.len() as u64, &mut out);
                out.extend_from_slice(&kept);
            }
            _ => out.extend_from_slice(&model[start..end]),
        }
    }
    out
}

fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target, name: &str, bytes: Vec<u8>, archive, weight| {
        out.push(Seed {
            target,
            name: name.to_string(),
            bytes,
            archive,
            weight,
        })
    };
    let layouts = [
        ("int8", ExportLayout::Int8Clean),
        ("int6", ExportLayout::Int6Wm),
        ("state", ExportLayout::StateDict),
    ];
    let mut comps = vec![
        ("zlib", Compression::Zlib),
        ("xz", Compression::Xz),
        ("none", Compression::None),
    ];
    if cfg!(feature = "zstd-native") {
        comps.push(("zstd", Compression::Zstd));
    }
    for (ln, l) in layouts {
        for (cn, c) in &comps {
            let file = synthetic(l, *c);
            add(Target::Artifact, &format!("{ln}/{cn}"), file, None, 40);
        }
        let payload = synthetic(l, Compression::None);
        let pkl = TorchArchive::parse(&payload).unwrap().pickle.to_vec();
        let arc = Some(std::sync::Arc::new(payload));
        add(Target::Pickle, &format!("{ln}/data.pkl"), pkl, arc, 60);
    }
    add(
        Target::Pickle,
        "memo-bomb",
        crafted::memo_string_pickle(1 << 12, 64),
        None,
        10,
    );
    add(Target::Pickle, "marks", crafted::marks_pickle(64), None, 5);
    add(
        Target::Artifact,
        "xz-zeros",
        crafted::xz_of_zeros(2),
        None,
        5,
    );
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let tiny = std::fs::read(root.join("models/pg-tiny-4L128.int8.ptz")).unwrap();
    let sp = std::fs::read(root.join("models/pg_sp1024_bpe.model")).unwrap();
    add(
        Target::Tokenizer,
        "sp1024-small",
        small_tokenizer(&sp, 300),
        None,
        80,
    );
    add(Target::Tokenizer, "sp1024", sp, None, 3);
    let (_, payload) = decompress(&tiny).unwrap();
    let pkl = TorchArchive::parse(&payload).unwrap().pickle.to_vec();
    add(Target::Pickle, "tiny/data.pkl", pkl, None, 20);
    add(Target::Artifact, "tiny", tiny, None, 1);
    if let Some(s) = shared_dir() {
        for a in ["baseline9L_int8_zlib.ptz", "mlp3x11L_int6_zstd.ptz"] {
            let file = std::fs::read(s.join("reference").join(a)).unwrap();
            let (_, payload) = decompress(&file).unwrap();
            let pkl = TorchArchive::parse(&payload).unwrap().pickle.to_vec();
            add(Target::Pickle, &format!("{a}/data.pkl"), pkl, None, 10);
            // Whole real artifacts are slow to load (0.1-0.4 s): rarely picked.
            add(Target::Artifact, a, file, None, 0);
        }
        let t = std::fs::read(s.join("data/tokenizers/fineweb_8192_bpe.model")).unwrap();
        add(Target::Tokenizer, "sp8192", t, None, 1);
    }
    out
}

/// What a run found.
struct Report {
    execs: u64,
    seconds: f64,
    findings: Vec<String>,
    per_target: Vec<(Target, u64, u64)>, // (target, execs, accepted)
    corpus: usize,
}

/// Runs `execs` mutated inputs (or until `budget` elapses); real artifacts get one execution
/// in `real_every`. Saves findings to `save` when given.
fn fuzz(seed: u64, execs: u64, budget: Duration, real_every: u64, save: Option<PathBuf>) -> Report {
    let seeds = seeds();
    let mut rng = Rng(seed | 1);
    // The corpus starts as the seeds; inputs with a new error kind join it (bounded).
    let mut corpus: Vec<(usize, Vec<u8>)> = (0..seeds.len())
        .map(|i| (i, seeds[i].bytes.clone()))
        .collect();
    let mut seen: HashSet<(Target, String)> = HashSet::new();
    let weights: Vec<u64> = seeds.iter().map(|s| u64::from(s.weight)).collect();
    let total_weight: u64 = weights.iter().sum();
    let real: Vec<usize> = (0..seeds.len()).filter(|&i| seeds[i].weight == 0).collect();
    let mut findings = Vec::new();
    let mut stats: Vec<(Target, u64, u64)> = [Target::Artifact, Target::Pickle, Target::Tokenizer]
        .iter()
        .map(|&t| (t, 0, 0))
        .collect();
    let start = Instant::now();
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut n = 0u64;
    while n < execs && start.elapsed() < budget {
        n += 1;
        // Pick a seed by weight (or a real artifact now and then), then a corpus entry of it.
        let s = if !real.is_empty() && real_every > 0 && n.is_multiple_of(real_every) {
            real[rng.below(real.len())]
        } else {
            let mut r = rng.next() % total_weight;
            let mut i = 0;
            while r >= weights[i] {
                r -= weights[i];
                i += 1;
            }
            i
        };
        let target = seeds[s].target;
        let entries: Vec<usize> = (0..corpus.len()).filter(|&c| corpus[c].0 == s).collect();
        let mut input = corpus[entries[rng.below(entries.len())]].1.clone();
        let other = &seeds[(s + 1 + rng.below(seeds.len())) % seeds.len()];
        let other = if other.target == target {
            other.bytes.as_slice()
        } else {
            &[]
        };
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut input, other, target);
        }
        let archive = seeds[s].archive.clone();
        let live = LIVE.load(Ordering::Relaxed);
        PEAK.store(live, Ordering::Relaxed);
        let t0 = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| {
            execute(target, &input, archive.as_deref().map(|a| a.as_slice()))
        }));
        let took = t0.elapsed();
        let heap = PEAK.load(Ordering::Relaxed).saturating_sub(live);
        let st = stats.iter_mut().find(|x| x.0 == target).unwrap();
        st.1 += 1;
        let problem = match &r {
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Some(format!("panic: {msg}"))
            }
            Ok(_) if took > SLOW => Some(format!("slow: {:.2} s", took.as_secs_f64())),
            Ok(_) if heap > HEAVY => Some(format!("heavy: {} MB", heap >> 20)),
            Ok(_) => None,
        };
        if let Some(p) = problem {
            let what = format!(
                "{target:?} from seed {} (exec {n}, {} bytes): {p}",
                seeds[s].name,
                input.len()
            );
            eprintln!("FINDING {what}");
            if let Some(dir) = &save {
                let _ = std::fs::create_dir_all(dir);
                let _ = std::fs::write(dir.join(format!("finding-{n}.bin")), &input);
            }
            findings.push(what);
            continue;
        }
        if let Ok(res) = r {
            if res.is_ok() {
                st.2 += 1;
            }
            if seen.insert((target, signature(&res))) && corpus.len() < 4096 {
                corpus.push((s, input));
            }
        }
    }
    std::panic::set_hook(quiet);
    Report {
        execs: n,
        seconds: start.elapsed().as_secs_f64(),
        findings,
        per_target: stats,
        corpus: corpus.len(),
    }
}

fn print(r: &Report) {
    println!(
        "fuzz_readers: {} executions in {:.1} s ({:.0}/s), {} findings, corpus {} (seeds + new \
         error kinds)",
        r.execs,
        r.seconds,
        r.execs as f64 / r.seconds.max(1e-9),
        r.findings.len(),
        r.corpus
    );
    for (t, n, ok) in &r.per_target {
        println!("  {t:?}: {n} executions, {ok} accepted");
    }
    for f in &r.findings {
        println!("  finding: {f}");
    }
}

/// CI: a bounded run (about 20 s on a 2-core machine) that must find nothing.
#[test]
fn fuzz_readers_in_ci() {
    let r = fuzz(0x5eed_2026, 300_000, Duration::from_secs(30), 50_000, None);
    print(&r);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert!(r.execs > 1_000, "only {} executions", r.execs);
    // Every reader ran and accepted some mutants (mutations are not all fatal).
    assert!(r.per_target.iter().all(|(_, n, ok)| *n > 100 && *ok > 0));
}

/// The long run: `FUZZ_EXECS` executions (default 10 M), `FUZZ_SEED`, `FUZZ_SECONDS`.
#[test]
#[ignore]
fn fuzz_readers_long() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let save = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings");
    let r = fuzz(
        env("FUZZ_SEED", 0x5eed_2026),
        env("FUZZ_EXECS", 10_000_000),
        Duration::from_secs(env("FUZZ_SECONDS", u64::MAX / 4)),
        env("FUZZ_REAL_EVERY", 20_000),
        Some(save.clone()),
    );
    print(&r);
    if !r.findings.is_empty() {
        println!("findings saved in {}", save.display());
    }
    assert!(r.findings.is_empty());
}
