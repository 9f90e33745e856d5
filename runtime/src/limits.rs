//! Resource limits of everything that reads user input: files, the decompressors, the pickle VM,
//! the zip reader, the tensor layer, forward windows and threads.
//!
//! Every reader stops at a named [`Limit`] instead of running out of memory or time: a hostile
//! or broken input fails with an error that names the limit and the environment variable that
//! raises it. Defaults sit far above anything the challenge produces (a 16 MB artifact, a
//! 100 M-token shard, an 8192-piece tokenizer) and well below what exhausts a small machine.
//!
//! A limit is read from its environment variable each time a reader starts (a plain decimal
//! number; an unparsable value keeps the default, and the error message says so).

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// One resource limit: a default and the environment variable that overrides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Environment variable that overrides the default (decimal).
    pub env: &'static str,
    /// Value used when the variable is unset.
    pub default: u64,
    /// Unit, for messages (`bytes`, `tokens`, ...).
    pub unit: &'static str,
}

/// Size of an artifact or checkpoint file (read in full before decoding).
pub const ARTIFACT_FILE_BYTES: Limit = Limit {
    env: "PGOLF_MAX_ARTIFACT_BYTES",
    default: 1 << 30,
    unit: "bytes",
};
/// Decompressed `torch.save` payload (the decompression-bomb guard of zlib, zstd and xz).
/// Reaching it costs at most 1.5x it (zlib, zstd: the last buffer growth) or 2x (xz), so a
/// bomb stays under 1.5 GB of memory.
pub const PAYLOAD_BYTES: Limit = Limit {
    env: "PGOLF_MAX_PAYLOAD_BYTES",
    default: 512 << 20,
    unit: "bytes",
};
/// Everything the pickle VM materialises: each value costs its node size plus its string or
/// bytes length, memo fetches included (a fetch copies its value).
pub const PICKLE_BYTES: Limit = Limit {
    env: "PGOLF_MAX_PICKLE_BYTES",
    default: 64 << 20,
    unit: "bytes",
};
/// Entries on the pickle VM's stack, MARKs included (torch's pickles need a few thousand).
pub const PICKLE_STACK: Limit = Limit {
    env: "PGOLF_MAX_PICKLE_STACK",
    default: 1 << 16,
    unit: "entries",
};
/// Entries of a zip archive (torch writes one per storage plus five).
pub const ZIP_ENTRIES: Limit = Limit {
    env: "PGOLF_MAX_ZIP_ENTRIES",
    default: 1 << 16,
    unit: "entries",
};
/// Tensors in one artifact (challenge models have a few hundred).
pub const TENSORS: Limit = Limit {
    env: "PGOLF_MAX_TENSORS",
    default: 1 << 16,
    unit: "tensors",
};
/// Size of a SentencePiece `.model` file (the 8192-piece tokenizer is 371 kB; a 256k-piece
/// one about 5 MB). Its pieces cost about 30x their bytes in memory once loaded.
pub const TOKENIZER_FILE_BYTES: Limit = Limit {
    env: "PGOLF_MAX_TOKENIZER_BYTES",
    default: 16 << 20,
    unit: "bytes",
};
/// Size of one data shard (the challenge's 100 M-token shards are 200 MB).
pub const SHARD_FILE_BYTES: Limit = Limit {
    env: "PGOLF_MAX_SHARD_BYTES",
    default: 1 << 30,
    unit: "bytes",
};
/// Text read by `pgolf-rt score` from standard input.
pub const TEXT_BYTES: Limit = Limit {
    env: "PGOLF_MAX_TEXT_BYTES",
    default: 64 << 20,
    unit: "bytes",
};
/// Length of one forward window (`--seq-len`, `--ttt-window`, `TRAIN_SEQ_LEN`, a scored text):
/// attention's time grows with its square (the challenge evaluates at 1024 to 4096).
pub const SEQ_LEN: Limit = Limit {
    env: "PGOLF_MAX_SEQ_LEN",
    default: 1 << 16,
    unit: "tokens",
};
/// Tokens in one forward pass (windows x window length): bounds `--batch` with `--seq-len`.
pub const FORWARD_TOKENS: Limit = Limit {
    env: "PGOLF_MAX_FORWARD_TOKENS",
    default: 1 << 20,
    unit: "tokens",
};
/// CPU worker threads (`--threads`).
pub const THREADS: Limit = Limit {
    env: "PGOLF_MAX_THREADS",
    default: 1024,
    unit: "threads",
};

/// Every limit, for documentation and tests.
pub const ALL: [Limit; 12] = [
    ARTIFACT_FILE_BYTES,
    PAYLOAD_BYTES,
    PICKLE_BYTES,
    PICKLE_STACK,
    ZIP_ENTRIES,
    TENSORS,
    TOKENIZER_FILE_BYTES,
    SHARD_FILE_BYTES,
    TEXT_BYTES,
    SEQ_LEN,
    FORWARD_TOKENS,
    THREADS,
];

impl Limit {
    /// The limit in force: the environment variable when it parses, else the default.
    pub fn get(&self) -> u64 {
        std::env::var(self.env)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(self.default)
    }

    /// [`Limit::get`] as a `usize` (saturating on 32-bit targets).
    pub fn get_usize(&self) -> usize {
        usize::try_from(self.get()).unwrap_or(usize::MAX)
    }

    /// `"<what> exceeds the limit of N <unit> (set ENV to raise it)"`.
    pub fn exceeded(&self, what: impl std::fmt::Display) -> String {
        self.exceeded_at(what, self.get())
    }

    /// [`Limit::exceeded`] for a limit value `value` handed in explicitly.
    pub fn exceeded_at(&self, what: impl std::fmt::Display, value: u64) -> String {
        let bad = match std::env::var(self.env) {
            Ok(v) if v.trim().parse::<u64>().is_err() => {
                format!("; its value {v:?} is not a number, so the default applies")
            }
            _ => String::new(),
        };
        format!(
            "{what} exceeds the limit of {value} {} (set {} to raise it{bad})",
            self.unit, self.env
        )
    }

    /// `Ok(())` when `n` is within the limit, else `Err(make(message))`.
    pub fn check(
        &self,
        n: u64,
        what: impl std::fmt::Display,
        make: fn(String) -> Error,
    ) -> Result<()> {
        if n > self.get() {
            return Err(make(self.exceeded(what)));
        }
        Ok(())
    }
}

/// Appends what `r` yields to `out` until the end (`Ok(true)`) or until `out` would pass
/// `limit` bytes (`Ok(false)`). The buffer doubles but never past `limit + 1` bytes, so reaching
/// the cap holds at most 1.5x it (`read_to_end` would double to the next power of two: 3x).
pub(crate) fn read_bounded(
    r: &mut impl Read,
    out: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if out.len() + n > limit {
            return Ok(false);
        }
        if out.capacity() - out.len() < n {
            let grow = out
                .len()
                .max(1 << 16)
                .min(limit.saturating_add(1) - out.len())
                .max(n);
            out.reserve_exact(grow);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Reads a whole file, failing once it holds more than `limit` bytes: a regular file is checked
/// by its size before any byte is read; a device or pipe (`/dev/zero`) is read up to the limit.
/// `head` sees the first bytes (up to `head_len`) before the rest is read, so a file of the
/// wrong kind fails at once. Errors other than I/O are built by `make` with the path in front.
pub(crate) fn read_file(
    path: &Path,
    limit: &Limit,
    make: fn(String) -> Error,
    head_len: usize,
    head: impl FnOnce(&[u8]) -> Result<()>,
) -> Result<Vec<u8>> {
    let max = limit.get();
    let named = |m: String| make(format!("{}: {m}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(named("is a directory, not a file".into()));
    }
    if meta.is_file() && meta.len() > max {
        return Err(named(
            limit.exceeded(format!("the file's size ({} bytes)", meta.len())),
        ));
    }
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let expect = if meta.is_file() { meta.len() } else { 0 };
    let mut out = Vec::with_capacity(usize::try_from(expect).unwrap_or(0));
    let mut file = file;
    (&mut file)
        .take(head_len as u64)
        .read_to_end(&mut out)
        .map_err(|e| Error::io(path, e))?;
    head(&out).map_err(|e| match e {
        Error::Io { .. } => e,
        other => named(strip_kind(other)),
    })?;
    if !read_bounded(&mut file, &mut out, max).map_err(|e| Error::io(path, e))? {
        return Err(named(limit.exceeded("the file")));
    }
    Ok(out)
}

/// Reads `r` to the end, failing once it yields more than `limit` allows.
pub fn read_capped(mut r: impl Read, limit: &Limit, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if !read_bounded(&mut r, &mut out, limit.get_usize()).map_err(|e| Error::io(what, e))? {
        return Err(Error::Usage(limit.exceeded(what)));
    }
    Ok(out)
}

/// The message of an error without its kind prefix (`artifact: `, ...).
fn strip_kind(e: Error) -> String {
    match e {
        Error::Artifact(m)
        | Error::Tokenizer(m)
        | Error::Data(m)
        | Error::Config(m)
        | Error::Backend(m)
        | Error::Usage(m)
        | Error::Numeric(m) => m,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_messages() {
        // A private variable, so that tests running in parallel do not see it.
        let l = Limit {
            env: "PGOLF_TEST_LIMIT_ONLY_HERE",
            default: 10,
            unit: "bytes",
        };
        assert_eq!(l.get(), 10);
        std::env::set_var(l.env, "25");
        assert_eq!(l.get(), 25);
        assert!(l.check(25, "x", Error::Usage).is_ok());
        let e = l
            .check(26, "the file", Error::Usage)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the file exceeds the limit of 25 bytes")
                && e.contains("PGOLF_TEST_LIMIT_ONLY_HERE"),
            "{e}"
        );
        std::env::set_var(l.env, "2G");
        assert_eq!(l.get(), 10);
        assert!(l.exceeded("x").contains("not a number"));
        std::env::remove_var(l.env);
    }

    #[test]
    fn limits_have_distinct_variables() {
        let mut names: Vec<_> = ALL.iter().map(|l| l.env).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(ALL.iter().all(|l| l.env.starts_with("PGOLF_MAX_")));
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_read_up_to_the_limit_only() {
        let l = Limit {
            env: "PGOLF_TEST_LIMIT_DEV_ZERO",
            default: 1 << 20,
            unit: "bytes",
        };
        let e = read_file(Path::new("/dev/zero"), &l, Error::Data, 4, |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/dev/zero") && e.contains("exceeds the limit"),
            "{e}"
        );
        let e = read_file(Path::new("/dev/zero"), &l, Error::Data, 4, |h| {
            Err(Error::Data(format!("bad head {h:?}")))
        })
        .unwrap_err()
        .to_string();
        assert_eq!(e, "data: /dev/zero: bad head [0, 0, 0, 0]");
        let dir = std::env::temp_dir();
        assert!(read_file(&dir, &l, Error::Data, 4, |_| Ok(()))
            .unwrap_err()
            .to_string()
            .contains("directory"));
    }
}
