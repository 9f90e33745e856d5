//! SentencePiece text normalization (`normalizer::Normalizer`), byte for byte.
//!
//! The `precompiled_charsmap` is `u32 LE trie_size | trie (Darts-clone double array, u32 units) |
//! NUL-separated replacement strings`. At each position the longest rule matching a prefix of the
//! remaining input (a common-prefix search in the trie) replaces it; without a match, one UTF-8
//! character is copied (an invalid byte becomes U+FFFD). User-defined symbols are matched first and
//! copied verbatim. On top of the rules: `remove_extra_whitespaces` drops leading spaces, collapses
//! runs and drops trailing spaces; `escape_whitespaces` writes ' ' as `▁` (U+2581);
//! `add_dummy_prefix` prepends `▁` (appends it with `treat_whitespace_as_suffix`).
//!
//! The work is done on bytes: a malformed charsmap may yield non-UTF-8 output, which encoding
//! handles like SentencePiece does (byte fallback). Out-of-range trie or string offsets end the
//! match instead of reading out of bounds.

use super::proto::NormalizerSpec;
use super::vocab::{one_char_len, PrefixMatcher};
use crate::{Error, Result};

/// `▁` (U+2581), SentencePiece's visible space.
pub(crate) const SPACE_SYMBOL: &str = "\u{2581}";
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// A compiled normalizer.
pub(crate) struct Normalizer {
    /// Darts double-array units (empty = no rules).
    trie: Vec<u32>,
    /// Replacement strings, each ended by NUL.
    strings: Vec<u8>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    treat_whitespace_as_suffix: bool,
}

impl Normalizer {
    /// Builds the normalizer; a malformed charsmap header is an error, as in SentencePiece.
    pub(crate) fn new(spec: &NormalizerSpec, treat_whitespace_as_suffix: bool) -> Result<Self> {
        let (trie, strings) = decode_charsmap(&spec.precompiled_charsmap)?;
        Ok(Normalizer {
            trie,
            strings,
            add_dummy_prefix: spec.add_dummy_prefix,
            remove_extra_whitespaces: spec.remove_extra_whitespaces,
            escape_whitespaces: spec.escape_whitespaces,
            treat_whitespace_as_suffix,
        })
    }

    /// Longest rule matching a prefix of `input`: (match length, offset of its replacement).
    fn longest_rule(&self, input: &[u8]) -> Option<(usize, usize)> {
        let unit = |id: u32| self.trie.get(id as usize).copied();
        // Darts-clone unit layout.
        let has_leaf = |u: u32| (u >> 8) & 1 == 1;
        let value = |u: u32| u & ((1 << 31) - 1);
        let label = |u: u32| u & ((1 << 31) | 0xff);
        let offset = |u: u32| (u >> 10) << ((u & (1 << 9)) >> 6);

        let mut best = None;
        let mut id = offset(unit(0)?);
        for (i, &b) in input.iter().enumerate() {
            id ^= u32::from(b);
            let u = unit(id)?;
            if label(u) != u32::from(b) {
                break;
            }
            id ^= offset(u);
            if has_leaf(u) {
                match unit(id) {
                    Some(leaf) => best = Some((i + 1, value(leaf) as usize)),
                    None => break,
                }
            }
        }
        best
    }

    /// SentencePiece's `NormalizePrefix`: (replacement, bytes consumed), consumed >= 1.
    fn normalize_prefix<'a>(&'a self, input: &'a [u8], user: &PrefixMatcher) -> (&'a [u8], usize) {
        if let Some(n) = user.longest(input) {
            return (&input[..n], n);
        }
        if let Some((len, at)) = self.longest_rule(input) {
            let rest = self.strings.get(at..).unwrap_or(&[]);
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            return (&rest[..end], len);
        }
        let len = one_char_len(input[0]).min(input.len());
        match std::str::from_utf8(&input[..len]) {
            Ok(_) => (&input[..len], len),
            Err(_) => (REPLACEMENT, 1),
        }
    }

    /// Normalizes `input` (SentencePiece's `Normalizer::Normalize`).
    pub(crate) fn normalize(&self, mut input: &[u8], user: &PrefixMatcher) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + input.len() / 2 + 4);
        if input.is_empty() {
            return out;
        }
        if self.remove_extra_whitespaces {
            while !input.is_empty() {
                let (piece, n) = self.normalize_prefix(input, user);
                if piece != b" " {
                    break;
                }
                input = &input[n..];
            }
        }
        if input.is_empty() {
            return out;
        }
        let space: &[u8] = if self.escape_whitespaces {
            SPACE_SYMBOL.as_bytes()
        } else {
            b" "
        };
        if !self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.extend_from_slice(space);
        }
        let mut is_prev_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            let (mut piece, n) = self.normalize_prefix(input, user);
            if is_prev_space {
                while let Some(rest) = piece.strip_prefix(b" ") {
                    piece = rest;
                }
            }
            if !piece.is_empty() {
                for &b in piece {
                    if self.escape_whitespaces && b == b' ' {
                        out.extend_from_slice(SPACE_SYMBOL.as_bytes());
                    } else {
                        out.push(b);
                    }
                }
                is_prev_space = piece.ends_with(b" ");
            }
            input = &input[n..];
            if !self.remove_extra_whitespaces {
                is_prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        if self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.extend_from_slice(space);
        }
        out
    }
}

/// Splits a precompiled charsmap into trie units and the string blob
/// (`Normalizer::DecodePrecompiledCharsMap`). An empty charsmap means "no rules".
fn decode_charsmap(blob: &[u8]) -> Result<(Vec<u32>, Vec<u8>)> {
    if blob.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    if blob.len() <= 4 {
        return Err(Error::Tokenizer(
            "normalization rule blob (precompiled_charsmap) is broken".into(),
        ));
    }
    let trie_size = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
    if trie_size >= blob.len() {
        return Err(Error::Tokenizer(
            "precompiled_charsmap: trie size exceeds the blob size".into(),
        ));
    }
    let rest = &blob[4..];
    // trie_size < blob.len() = rest.len() + 4, so the slice may be short by up to 4 bytes, which
    // SentencePiece would read past the end; clamp instead.
    let trie_bytes = &rest[..trie_size.min(rest.len())];
    let trie = trie_bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let strings = rest.get(trie_size..).unwrap_or(&[]).to_vec();
    Ok((trie, strings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(add_dummy_prefix: bool, remove: bool, escape: bool) -> Normalizer {
        let spec = NormalizerSpec {
            add_dummy_prefix,
            remove_extra_whitespaces: remove,
            escape_whitespaces: escape,
            ..NormalizerSpec::default()
        };
        Normalizer::new(&spec, false).unwrap()
    }

    fn run(n: &Normalizer, s: &str) -> String {
        String::from_utf8(n.normalize(s.as_bytes(), &PrefixMatcher::default())).unwrap()
    }

    #[test]
    fn whitespace_rules() {
        let n = plain(false, true, true);
        assert_eq!(run(&n, "  a   b  "), "a▁b");
        assert_eq!(run(&n, "   "), "");
        assert_eq!(run(&n, ""), "");
        let n = plain(true, true, true);
        assert_eq!(run(&n, " a b"), "▁a▁b");
        let n = plain(false, false, true);
        assert_eq!(run(&n, " a  b "), "▁a▁▁b▁");
        let n = plain(false, true, false);
        assert_eq!(run(&n, " a  b "), "a b");
    }

    #[test]
    fn malformed_charsmaps() {
        let spec = |blob: Vec<u8>| NormalizerSpec {
            precompiled_charsmap: blob,
            ..NormalizerSpec::default()
        };
        assert!(Normalizer::new(&spec(vec![1, 0, 0]), false).is_err());
        assert!(Normalizer::new(&spec(vec![5, 0, 0, 0, 0]), false).is_err());
        // Trie size pointing past the data: clamped, and lookups stay in bounds.
        let n = Normalizer::new(&spec(vec![7, 0, 0, 0, 1, 2, 3, 4, 5, 6]), false).unwrap();
        let _ = n.normalize("abc ▁ é".as_bytes(), &PrefixMatcher::default());
    }
}
