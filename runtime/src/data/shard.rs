//! Reader for `fineweb_{split}_{idx:06d}.bin` shards (spec section 1.1).
//!
//! Layout: 256 little-endian i32 header words (`magic = 20240520`, `version = 1`,
//! `num_tokens`), then `num_tokens` little-endian u16 ids. The file size must be exactly
//! `1024 + 2 * num_tokens`, as the reference loader demands.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Magic number in header word 0.
pub const SHARD_MAGIC: i32 = 20_240_520;
/// Format version in header word 1.
pub const SHARD_VERSION: i32 = 1;
const HEADER_BYTES: usize = 1024;

/// A validated shard, read into memory.
///
/// Shards are read, not memory-mapped: a mapped file that another process truncates kills the
/// reader with SIGBUS, while a read either gets the bytes or an error (a file that shrinks
/// while it is read fails the size check below). Reading is bounded by
/// [`crate::limits::SHARD_FILE_BYTES`]; the challenge's shards are at most 200 MB.
pub struct Shard {
    bytes: Vec<u8>,
    num_tokens: usize,
}

impl Shard {
    /// Opens and validates a shard file: the header must be valid before the rest is read,
    /// and the file must hold exactly the tokens it declares.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = crate::limits::read_file(
            path,
            &crate::limits::SHARD_FILE_BYTES,
            Error::Data,
            HEADER_BYTES,
            |head| check_header(head).map(|_| ()),
        )?;
        Self::validate(bytes).map_err(|e| match e {
            Error::Data(m) => Error::Data(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Validates a shard held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::validate(bytes)
    }

    fn validate(bytes: Vec<u8>) -> Result<Self> {
        let n = check_header(&bytes)?;
        let expected = n
            .checked_mul(2)
            .and_then(|b| b.checked_add(HEADER_BYTES))
            .ok_or_else(|| Error::Data(format!("token count {n} overflows")))?;
        if bytes.len() != expected {
            return Err(Error::Data(format!(
                "header says {n} tokens ({expected} bytes) but the file is {} bytes",
                bytes.len()
            )));
        }
        Ok(Shard {
            bytes,
            num_tokens: n,
        })
    }

    /// Number of tokens in the shard.
    pub fn len(&self) -> usize {
        self.num_tokens
    }

    /// True when the shard holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.num_tokens == 0
    }

    /// Token `i` (panics if out of range, like slice indexing).
    pub fn token(&self, i: usize) -> u32 {
        let b = &self.bytes[HEADER_BYTES + 2 * i..];
        u16::from_le_bytes([b[0], b[1]]) as u32
    }

    /// All tokens, decoded.
    pub fn tokens(&self) -> Vec<u32> {
        self.bytes[HEADER_BYTES..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
            .collect()
    }
}

/// Checks the 1024-byte header (magic, version, a non-negative count) and returns the count.
fn check_header(b: &[u8]) -> Result<usize> {
    if b.len() < HEADER_BYTES {
        return Err(Error::Data(format!(
            "file is {} bytes, shorter than the 1024-byte header",
            b.len()
        )));
    }
    let word = |i: usize| i32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    if word(0) != SHARD_MAGIC {
        return Err(Error::Data(format!(
            "bad magic {} (expected {SHARD_MAGIC}); not a challenge shard",
            word(0)
        )));
    }
    if word(1) != SHARD_VERSION {
        return Err(Error::Data(format!(
            "unsupported shard version {} (expected {SHARD_VERSION})",
            word(1)
        )));
    }
    usize::try_from(word(2)).map_err(|_| Error::Data(format!("negative token count {}", word(2))))
}

/// Expands a file path, a directory (all `*.bin` inside) or a glob pattern (`*` and `?` in the
/// file-name part) into a sorted list of shard paths.
pub fn resolve_data_paths(spec: &str) -> Result<Vec<PathBuf>> {
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let (dir, pattern) = if path.is_dir() {
        (path.to_path_buf(), "*.bin".to_string())
    } else {
        let name = path
            .file_name()
            .and_then(|s| s.to_str())
            .ok_or_else(|| Error::Data(format!("{spec}: no such file")))?;
        if !name.contains(['*', '?']) {
            return Err(Error::Data(format!("{spec}: no such file or directory")));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (dir, name.to_string())
    };
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|s| s.to_str())
                    .is_some_and(|n| glob_match(&pattern, n))
        })
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(Error::Data(format!("{spec}: matched no shard files")));
    }
    Ok(out)
}

/// Concatenates the tokens of all shards named by `spec` (see [`resolve_data_paths`]).
pub fn load_tokens(spec: &str) -> Result<Vec<u32>> {
    let mut all = Vec::new();
    for p in resolve_data_paths(spec)? {
        all.extend(Shard::open(&p)?.tokens());
    }
    Ok(all)
}

/// Minimal glob: `*` matches any run, `?` one character.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard_bytes(tokens: &[u16]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_BYTES];
        b[0..4].copy_from_slice(&SHARD_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&SHARD_VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&(tokens.len() as i32).to_le_bytes());
        for t in tokens {
            b.extend_from_slice(&t.to_le_bytes());
        }
        b
    }

    #[test]
    fn reads_tokens() {
        let s = Shard::from_bytes(shard_bytes(&[1, 500, 65535])).unwrap();
        assert_eq!(s.tokens(), vec![1, 500, 65535]);
        assert_eq!(s.token(1), 500);
    }

    #[test]
    fn rejects_bad_headers_and_sizes() {
        let good = shard_bytes(&[1, 2, 3]);
        let mut bad_magic = good.clone();
        bad_magic[0] ^= 1;
        assert!(Shard::from_bytes(bad_magic).is_err());
        let mut bad_version = good.clone();
        bad_version[4] = 2;
        assert!(Shard::from_bytes(bad_version).is_err());
        assert!(Shard::from_bytes(good[..good.len() - 1].to_vec()).is_err());
        let mut extra = good.clone();
        extra.push(0);
        assert!(Shard::from_bytes(extra).is_err());
        assert!(Shard::from_bytes(vec![0; 10]).is_err());
        let mut neg = good;
        neg[8..12].copy_from_slice(&(-5i32).to_le_bytes());
        assert!(Shard::from_bytes(neg).is_err());
    }

    #[test]
    fn a_shard_truncated_after_opening_stays_readable_and_reopening_fails() {
        let dir = std::env::temp_dir().join(format!("pgolf_shard_trunc_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.bin");
        std::fs::write(&p, shard_bytes(&[1, 2, 3, 4])).unwrap();
        let s = Shard::open(&p).unwrap();
        // Another process cuts the file: with a mapping, the next read would be SIGBUS.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(HEADER_BYTES as u64 + 2)
            .unwrap();
        assert_eq!(s.tokens(), vec![1, 2, 3, 4]);
        let e = Shard::open(&p).err().unwrap().to_string();
        assert!(e.contains("header says 4 tokens"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn glob() {
        assert!(glob_match("fineweb_val_*.bin", "fineweb_val_000000.bin"));
        assert!(!glob_match("fineweb_val_*.bin", "fineweb_train_000000.bin"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*", ""));
    }
}
