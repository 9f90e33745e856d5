//! Hostile and wrong inputs through the `pgolf-rt` binary (issue 14), one test per class:
//! every case must exit non-zero with a message naming the problem, never panic or die by a
//! signal, and the amplification cases must stay under 1.5 GB of memory and 10 s.
//!
//! The binary runs under `ulimit -v` (1.5 GB of address space: an allocation past it aborts
//! the process, which the harness reports) and a 10 s wall-clock deadline. glibc reserves
//! 64 MB of address space per malloc arena and rayon starts a thread per core, so the harness
//! pins both (`MALLOC_ARENA_MAX=2`, `RAYON_NUM_THREADS=2`) to keep the limit about the input
//! and not about the machine's core count; `limit_admits_real_work` shows that real work fits.
//! Linux only (`bash`, `ulimit`, `/dev/zero`).
#![cfg(target_os = "linux")]

#[path = "common/crafted.rs"]
mod crafted;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MEMORY_LIMIT_KB: u64 = 1_500_000;
const DEADLINE: Duration = Duration::from_secs(10);

/// What one run of the binary did.
#[derive(Debug)]
struct Outcome {
    /// Exit code, or `None` when a signal ended it.
    code: Option<i32>,
    stdout: String,
    stderr: String,
    seconds: f64,
}

impl Outcome {
    /// Asserts a clean refusal: non-zero exit (not a signal, not a panic), within the deadline,
    /// with every `needles` string in the message.
    fn refused(&self, needles: &[&str]) {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "expected a non-zero exit, got {self:?}"
        );
        self.no_panic();
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}: {self:?}");
        }
    }

    fn no_panic(&self) {
        assert!(self.code.is_some(), "killed by a signal: {self:?}");
        for bad in ["panicked", "memory allocation of", "RUST_BACKTRACE"] {
            assert!(!self.stderr.contains(bad), "{bad}: {self:?}");
        }
        assert!(
            self.seconds < DEADLINE.as_secs_f64(),
            "took {:.1} s: {self:?}",
            self.seconds
        );
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tiny_model() -> PathBuf {
    root().join("models/pg-tiny-4L128.int8.ptz")
}

fn tiny_tokenizer() -> PathBuf {
    root().join("models/pg_sp1024_bpe.model")
}

fn shared() -> Option<PathBuf> {
    let p = root().join("../shared");
    if p.join("reference").is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} is absent", p.display());
        None
    }
}

/// The binary under test: this build's, or `PGOLF_RT_BIN` (to show that an older build fails
/// these tests).
fn binary() -> String {
    std::env::var("PGOLF_RT_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_pgolf-rt").into())
}

/// Runs `pgolf-rt args...` under the memory limit and the deadline (killed past it).
fn run(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("ulimit -v {MEMORY_LIMIT_KB}; exec \"$0\" \"$@\""))
        .arg(binary())
        .args(args)
        .env("MALLOC_ARENA_MAX", "2")
        .env("RAYON_NUM_THREADS", "2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("run bash");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > DEADLINE + Duration::from_secs(5) {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let seconds = start.elapsed().as_secs_f64();
    let _ = feeder.join();
    Outcome {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        seconds,
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A scratch folder, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

fn scratch(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("pgolf-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, bytes).unwrap();
    f
}

/// The harness must let real work through: the baseline artifact inspects and evaluates under
/// the same memory limit (else every refusal below would prove nothing).
#[test]
fn limit_admits_real_work() {
    let o = run(&["inspect", p(&tiny_model())], &[], b"");
    assert_eq!(o.code, Some(0), "{o:?}");
    let Some(s) = shared() else { return };
    let art = s.join("reference/baseline9L_int8_zlib.ptz");
    let o = run(&["inspect", p(&art)], &[], b"");
    assert_eq!(o.code, Some(0), "{o:?}");
    let o = run(
        &[
            "eval",
            "--artifact",
            p(&art),
            "--data",
            p(&s.join("data/text_sp1024/fineweb_val_000000.bin")),
            "--tokenizer",
            p(&s.join("data/tokenizers/pg_sp1024_bpe.model")),
            "--max-tokens",
            "2049",
        ],
        &[],
        b"",
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("val_bpb:1.44"), "{o:?}");
}

/// Class 1: memory blow-ups from small files (pickle memo copies, MARK floods, an xz of
/// zeros, many tensors over one storage).
#[test]
fn small_files_cannot_exhaust_memory() {
    let d = scratch("memory");
    // ~1 MB string fetched 50,000 times: 50 GB of copies from a few kB of zlib.
    let memo = crafted::zlib_artifact(&crafted::memo_string_pickle(1 << 20, 50_000), &[]);
    assert!(memo.len() < 60_000, "{}", memo.len());
    run(&["inspect", p(&write(&d, "memo.ptz", &memo))], &[], b"")
        .refused(&["pickle", "PGOLF_MAX_PICKLE_BYTES"]);
    // Ten million MARKs.
    let marks = crafted::zlib_artifact(&crafted::marks_pickle(10_000_000), &[]);
    run(&["inspect", p(&write(&d, "marks.ptz", &marks))], &[], b"")
        .refused(&["pickle", "PGOLF_MAX_PICKLE_STACK"]);
    // 2 GiB of zeros in 460 kB of xz (lzma-rs would buffer all of it).
    let xz = crafted::xz_of_zeros(2048);
    assert!(xz.len() < 500_000);
    run(&["inspect", p(&write(&d, "zeros.ptz", &xz))], &[], b"")
        .refused(&["decompression bomb", "PGOLF_MAX_PAYLOAD_BYTES"]);
    // Tokenizers: 64 MiB of empty pieces (refused by size), 16 MiB of them (refused at the
    // first), and 16 MiB of two million distinct 4-byte pieces (loads, then is not the model's).
    let m = tiny_model();
    let score = |tok: &Path| {
        run(
            &["score", "--artifact", p(&m), "--tokenizer", p(tok), "x"],
            &[],
            b"",
        )
    };
    score(&write(&d, "e64.model", &b"\x0a\x00".repeat(32 << 20)))
        .refused(&["PGOLF_MAX_TOKENIZER_BYTES"]);
    score(&write(&d, "e16.model", &b"\x0a\x00".repeat(8 << 20))).refused(&["piece 0 is empty"]);
    let mut many = Vec::with_capacity(16 << 20);
    for i in 0..(2u32 << 20) - 1 {
        many.extend_from_slice(&[0x0a, 0x06, 0x0a, 0x04]);
        many.extend((0..4).map(|k| 0x40 + ((i >> (6 * k)) & 63) as u8));
    }
    score(&write(&d, "many.model", &many)).refused(&["tokenizer"]);
    // 10,000 tensors viewing one 1 MB storage: 40 GB of floats.
    let shared = crafted::shared_storage_artifact(10_000, 1 << 20);
    run(&["inspect", p(&write(&d, "shared.ptz", &shared))], &[], b"")
        .refused(&["more than the archive's"]);
}

/// Decompression bombs (2 GiB of zeros from ~2 MB of zlib, a few kB of zstd frames, 460 kB of
/// xz) stop at the payload cap within the memory limit.
#[test]
fn decompression_bombs_stop_at_the_cap() {
    let d = scratch("bombs");
    let mut bombs = vec![
        ("zlib", crafted::zlib_of_zeros(2048)),
        ("xz", crafted::xz_of_zeros(2048)),
    ];
    if let Some(z) = crafted::zstd_of_zeros(2048) {
        bombs.push(("zstd", z));
    }
    for (kind, bytes) in bombs {
        assert!(bytes.len() < 3 << 20, "{kind}: {}", bytes.len());
        let f = write(&d, &format!("bomb.{kind}"), &bytes);
        let o = run(&["inspect", p(&f)], &[], b"");
        o.refused(&["decompression bomb", "PGOLF_MAX_PAYLOAD_BYTES"]);
    }
    // Just under the cap, zlib decodes and the zip layer refuses the zeros, in memory.
    let f = write(&d, "under.zlib", &crafted::zlib_of_zeros(511));
    run(&["inspect", p(&f)], &[], b"").refused(&["zip"]);
    let f = write(&d, "under.xz", &crafted::xz_of_zeros(511));
    run(&["inspect", p(&f)], &[], b"").refused(&["zip"]);
}

/// The crafted streams are real ones: small versions decode to their zeros.
#[test]
fn crafted_streams_are_valid() {
    use pgolf_rt::artifact::compress::{decompress, zlib_decompress};
    let z = crafted::zlib_of_zeros(4);
    let out = zlib_decompress(&z, 4 << 20).unwrap();
    assert!(out.len() == 4 << 20 && out.iter().all(|&b| b == 0));
    if let Some(z) = crafted::zstd_of_zeros(3) {
        let (_, out) = decompress(&z).unwrap();
        assert!(out.len() == 3 << 20 && out.iter().all(|&b| b == 0));
    }
}

/// The crafted xz is a real xz file: a small one decodes to its zeros.
#[test]
fn crafted_xz_is_valid() {
    let xz = crafted::xz_of_zeros(3);
    let (_, out) = pgolf_rt::artifact::compress::decompress(&xz).unwrap();
    assert_eq!(out.len(), 3 << 20);
    assert!(out.iter().all(|&b| b == 0));
    // Within the cap the size walk agrees with the decoder; past it, it refuses.
    let x = crafted::xz_of_zeros(4);
    assert_eq!(
        pgolf_rt::artifact::compress::xz_declared_size(&x, 4 << 20).unwrap(),
        4 << 20
    );
    assert!(pgolf_rt::artifact::compress::xz_declared_size(&x, (4 << 20) - 1).is_err());
}

/// Class 2: CPU amplification: one large stored entry listed thousands of times in the
/// central directory, inside `data/` and outside it (where names were not checked at all):
/// 10,000 CRC passes over 32 MiB would take well over the deadline.
#[test]
fn zip_entries_are_read_once() {
    use pgolf_rt::artifact::compress::compress;
    use pgolf_rt::artifact::zip::ZipWriter;
    let d = scratch("zip");
    let big = vec![7u8; 32 << 20];
    for name in ["archive/data/0", "archive/big"] {
        let mut w = ZipWriter::new();
        w.add("archive/data.pkl", b"\x80\x02}.", 64).unwrap();
        w.add(name, &big, 64).unwrap();
        let rep = crafted::repeat_central_record(&w.finish().unwrap(), name, 10_000);
        let file = compress(&rep, pgolf_rt::artifact::Compression::Zlib).unwrap();
        assert!(file.len() < 1 << 20, "{}", file.len());
        let o = run(&["inspect", p(&write(&d, "rep.ptz", &file))], &[], b"");
        o.refused(&["appears twice", name]);
        assert!(o.seconds < 5.0, "{o:?}");
    }
}

/// Class 3: silently wrong metrics: a tokenizer that is not the model's, non-finite weights,
/// scales and flags, an empty text.
#[test]
fn wrong_metrics_are_errors() {
    let d = scratch("metrics");
    let (m, t) = (tiny_model(), tiny_tokenizer());
    let text = "The quick brown fox jumps over the lazy dog.";
    // A tokenizer with one piece fewer (and, when present, the 8192-piece one).
    let t1023 = crafted::tokenizer_without_last_pieces(&std::fs::read(&t).unwrap(), 1);
    let t1023 = write(&d, "t1023.model", &t1023);
    run(
        &["score", "--artifact", p(&m), "--tokenizer", p(&t1023), text],
        &[],
        b"",
    )
    .refused(&["1023 pieces", "vocabulary is 1024"]);
    if let Some(s) = shared() {
        let shard = s.join("data/text_sp1024/fineweb_val_000000.bin");
        let t8192 = s.join("data/tokenizers/fineweb_8192_bpe.model");
        let args = [
            "eval",
            "--artifact",
            p(&m),
            "--data",
            p(&shard),
            "--tokenizer",
            p(&t8192),
        ];
        run(&[&args[..], &["--max-tokens", "2049"]].concat(), &[], b"")
            .refused(&["8192 pieces", "vocabulary is 1024"]);
    }
    // An infinite scale (and so infinite weights) is refused at load, naming the tensor.
    let inf = write(
        &d,
        "inf.ptz",
        &crafted::int8_artifact_with_scale(f32::INFINITY),
    );
    run(&["inspect", p(&inf)], &[], b"").refused(&["\"w\"", "non-finite"]);
    let nan = write(&d, "nan.ptz", &crafted::int8_artifact_with_scale(f32::NAN));
    run(&["inspect", p(&nan)], &[], b"").refused(&["\"w\"", "non-finite"]);
    // Non-finite flags.
    let base = ["score", "--artifact", p(&m), "--tokenizer", p(&t)];
    run(&[&base[..], &["--softcap", "inf", text]].concat(), &[], b"")
        .refused(&["--softcap", "not a finite number"]);
    let shard = write(&d, "s.bin", &shard_bytes(3000, 3000));
    let ev = [
        "eval",
        "--artifact",
        p(&m),
        "--tokenizer",
        p(&t),
        "--data",
        p(&shard),
    ];
    run(
        &[&ev[..], &["--ttt", "lora", "--ttt-lr", "NaN"]].concat(),
        &[],
        b"",
    )
    .refused(&["--ttt-lr", "not a finite number"]);
    // Nothing to score.
    run(&[&base[..], &[""]].concat(), &[], b"").refused(&["nothing to score"]);
    run(&[&base[..], &["-"]].concat(), &[], b"   ").refused(&["nothing to score"]);
}

/// A shard header claiming `claimed` tokens followed by `held` tokens (ids 1..).
fn shard_bytes(claimed: usize, held: usize) -> Vec<u8> {
    let mut b = vec![0u8; 1024];
    b[0..4].copy_from_slice(&20_240_520i32.to_le_bytes());
    b[4..8].copy_from_slice(&1i32.to_le_bytes());
    b[8..12].copy_from_slice(&(claimed as i32).to_le_bytes());
    for i in 0..held {
        b.extend_from_slice(&(1 + (i % 1000) as u16).to_le_bytes());
    }
    b
}

/// Class 4: panics and unbounded work from flags.
#[test]
fn flags_are_bounded_and_checked() {
    let (m, t) = (tiny_model(), tiny_tokenizer());
    let base = ["score", "--artifact", p(&m), "--tokenizer", p(&t)];
    let plain = run(&[&base[..], &["Hello world"]].concat(), &[], b"");
    assert_eq!(plain.code, Some(0), "{plain:?}");
    let last = |o: &Outcome| o.stdout.lines().last().unwrap_or("").to_string();
    // Huge windows over a short text: sized to the text, same score, fast.
    for seq in ["18446744073709551615", "10000000", "100000"] {
        let o = run(
            &[&base[..], &["--seq-len", seq, "Hello world"]].concat(),
            &[],
            b"",
        );
        o.no_panic();
        assert_eq!(o.code, Some(0), "{o:?}");
        assert_eq!(last(&o), last(&plain));
    }
    // A long text with a huge window: refused by the window limit, not an abort.
    let long = "word ".repeat(70_000);
    run(
        &[&base[..], &["--seq-len", "18446744073709551615", "-"]].concat(),
        &[],
        long.as_bytes(),
    )
    .refused(&["PGOLF_MAX_SEQ_LEN"]);
    let o = run(
        &[&["--threads", "100000"], &base[..], &["x"]].concat(),
        &[],
        b"",
    );
    o.refused(&["--threads 100000", "PGOLF_MAX_THREADS"]);
    assert!(o.seconds < 1.0, "{o:?}");
    run(&[&base[..], &["--stride", "2000", "x"]].concat(), &[], b"")
        .refused(&["--stride 2000", "--seq-len 1024"]);
    let d = scratch("flags");
    let shard = write(&d, "s.bin", &shard_bytes(3000, 3000));
    let ev = [
        "eval",
        "--artifact",
        p(&m),
        "--tokenizer",
        p(&t),
        "--data",
        p(&shard),
    ];
    run(&[&ev[..], &["--batch", "0"]].concat(), &[], b"").refused(&["--batch", "at least 1"]);
    run(&[&ev[..], &["--seq-len", "1048577"]].concat(), &[], b"").refused(&["PGOLF_MAX_SEQ_LEN"]);
    run(
        &[&ev[..], &["--batch", "1024", "--seq-len", "4096"]].concat(),
        &[],
        b"",
    )
    .refused(&["PGOLF_MAX_FORWARD_TOKENS"]);
    let tr = ["train", "--data-path", p(&d), "--tokenizer-path", p(&t)];
    run(&[&tr[..], &["--val-batch", "0"]].concat(), &[], b"")
        .refused(&["--val-batch", "at least 1"]);
    run(&tr, &[("TIE_EMBEDDINGS", "7")], b"").refused(&["tie-embeddings", "not 0 or 1"]);
    run(&tr, &[("MATRIX_LR", "nan")], b"").refused(&["matrix-lr", "not a finite number"]);
}

/// Class 5: work lost or files clobbered: outputs checked before training, truncated shards,
/// devices and oversized files as inputs.
#[test]
fn outputs_and_inputs_fail_before_work() {
    let d = scratch("files");
    let t = tiny_tokenizer();
    let tr = ["train", "--data-path", p(&d), "--tokenizer-path", p(&t)];
    let missing = d.join("no/such/folder/model.ptz");
    let o = run(&[&tr[..], &["--out", p(&missing)]].concat(), &[], b"");
    o.refused(&["--out", "does not exist"]);
    assert!(!o.stdout.contains("step:"), "{o:?}");
    run(&[&tr[..], &["--out", p(&d)]].concat(), &[], b"").refused(&["--out", "is a folder"]);
    run(
        &[&tr[..], &["--checkpoint", p(&missing)]].concat(),
        &[],
        b"",
    )
    .refused(&["--checkpoint", "does not exist"]);
    // A shard whose header claims more tokens than it holds.
    let (m, _) = (tiny_model(), ());
    let short = write(&d, "short.bin", &shard_bytes(5000, 100));
    let ev = [
        "eval",
        "--artifact",
        p(&m),
        "--tokenizer",
        p(&t),
        "--data",
        p(&short),
    ];
    run(&ev, &[], b"").refused(&["header says 5000 tokens"]);
    // Devices and oversized files.
    run(&["inspect", "/dev/zero"], &[], b"").refused(&["/dev/zero", "unrecognized file"]);
    run(
        &[
            "score",
            "--artifact",
            p(&m),
            "--tokenizer",
            "/dev/zero",
            "x",
        ],
        &[],
        b"",
    )
    .refused(&["/dev/zero", "PGOLF_MAX_TOKENIZER_BYTES"]);
    run(
        &["inspect", p(&m)],
        &[("PGOLF_MAX_ARTIFACT_BYTES", "1000")],
        b"",
    )
    .refused(&[
        "exceeds the limit of 1000 bytes",
        "PGOLF_MAX_ARTIFACT_BYTES",
    ]);
    let big_text = vec![b'a'; 2000];
    run(
        &["score", "--artifact", p(&m), "--tokenizer", p(&t), "-"],
        &[("PGOLF_MAX_TEXT_BYTES", "1000")],
        &big_text,
    )
    .refused(&["standard input", "PGOLF_MAX_TEXT_BYTES"]);
}

/// Class 6: the smaller ones: two pickles, a NUL in a storage key, an empty tokenizer.
#[test]
fn smaller_cases_are_named() {
    let d = scratch("small");
    let mut w = pgolf_rt::artifact::zip::ZipWriter::new();
    w.add("a/data.pkl", b"\x80\x02}.", 64).unwrap();
    w.add("b/data.pkl", b"\x80\x02}.", 64).unwrap();
    let two = write(&d, "two.ptz", &w.finish().unwrap());
    run(&["inspect", p(&two)], &[], b"").refused(&["two pickles", "\"a/data.pkl\""]);
    let nul = pgolf_rt::artifact::pickle::Value::Dict(vec![(
        pgolf_rt::artifact::pickle::Value::Str("w".into()),
        crafted::tensor_value("FloatStorage", "k\0\x1b[2J", 1),
    )]);
    let pkl = pgolf_rt::artifact::pickle::dump(&nul).unwrap();
    let nul = write(&d, "nul.ptz", &crafted::zlib_artifact(&pkl, &[]));
    let o = run(&["inspect", p(&nul)], &[], b"");
    o.refused(&[r#""archive/data/k\0\u{1b}[2J" is missing"#]);
    assert!(
        !o.stderr.contains('\0') && !o.stderr.contains('\x1b'),
        "{o:?}"
    );
    let empty = write(&d, "empty.model", b"");
    let m = tiny_model();
    run(
        &["score", "--artifact", p(&m), "--tokenizer", p(&empty), "x"],
        &[],
        b"",
    )
    .refused(&["empty", "not a SentencePiece model"]);
}
