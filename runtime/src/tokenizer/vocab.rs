//! The piece table: id <-> piece lookups with SentencePiece's rules.
//!
//! As in `ModelInterface::InitializePieces`, NORMAL, USER_DEFINED and UNUSED pieces go to the
//! mergeable map and all other kinds (CONTROL, UNKNOWN, BYTE) to the reserved map; `piece_to_id`
//! looks in the reserved map first, then the mergeable one, and falls back to `<unk>`. Loading
//! rejects empty or duplicate pieces, a missing or repeated `<unk>`, malformed byte pieces and, with
//! `byte_fallback`, a byte table that is not complete.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::proto::{PieceProto, PieceType};
use crate::{Error, Result};

/// FNV-1a: deterministic (same on wasm32) and fast for short keys.
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Hash map keyed by byte strings with [`Fnv`].
pub(crate) type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// `<0xXX>` with upper-case hex, SentencePiece's `ByteToPiece`.
pub(crate) fn byte_piece(b: u8) -> String {
    format!("<0x{b:02X}>")
}

/// Inverse of [`byte_piece`]: only the exact upper-case spelling is accepted (`PieceToByte`).
pub(crate) fn piece_to_byte(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2
        || !hex
            .bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Length of the UTF-8 sequence announced by a lead byte (`string_util::OneCharLen`).
pub(crate) fn one_char_len(lead: u8) -> usize {
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4][usize::from(lead >> 4)]
}

/// Longest-prefix matcher over user-defined symbols (`normalizer::PrefixMatcher`).
#[derive(Default)]
pub(crate) struct PrefixMatcher {
    /// Symbols by their first byte, longest first.
    by_first: FnvMap<u8, Vec<Box<[u8]>>>,
}

impl PrefixMatcher {
    fn new(symbols: &[&str]) -> Self {
        let mut by_first: FnvMap<u8, Vec<Box<[u8]>>> = FnvMap::default();
        for s in symbols {
            if let Some(&first) = s.as_bytes().first() {
                by_first.entry(first).or_default().push(s.as_bytes().into());
            }
        }
        for list in by_first.values_mut() {
            list.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
        PrefixMatcher { by_first }
    }

    /// Length of the longest user-defined symbol at the start of `text`, if any.
    pub(crate) fn longest(&self, text: &[u8]) -> Option<usize> {
        let list = self.by_first.get(text.first()?)?;
        list.iter().find(|s| text.starts_with(s)).map(|s| s.len())
    }

    /// Length of the next symbol: a user-defined match (frozen = true) or one UTF-8 character.
    pub(crate) fn prefix_match(&self, text: &[u8]) -> (usize, bool) {
        match self.longest(text) {
            Some(n) => (n, true),
            None => (one_char_len(text[0]).min(text.len()), false),
        }
    }
}

/// Vocabulary with the lookup maps encoding needs.
pub(crate) struct Vocab {
    pub(crate) pieces: Vec<PieceProto>,
    mergeable: FnvMap<Box<[u8]>, u32>,
    reserved: FnvMap<Box<[u8]>, u32>,
    pub(crate) unk_id: u32,
    /// Id of `<0xXX>` for each byte, when byte fallback is on.
    pub(crate) byte_ids: Option<Box<[u32; 256]>>,
    pub(crate) user_defined: PrefixMatcher,
}

fn err(msg: impl Into<String>) -> Error {
    Error::Tokenizer(msg.into())
}

impl Vocab {
    pub(crate) fn new(pieces: Vec<PieceProto>, byte_fallback: bool) -> Result<Self> {
        if pieces.len() > u32::MAX as usize / 2 {
            return Err(err("too many pieces"));
        }
        let mut mergeable = FnvMap::default();
        let mut reserved = FnvMap::default();
        let mut unk_id = None;
        let mut byte_found = [None::<u32>; 256];
        let mut user_defined = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let id = i as u32;
            if p.piece.is_empty() {
                return Err(err(format!("piece {id} is empty")));
            }
            let normal = matches!(
                p.kind,
                PieceType::Normal | PieceType::UserDefined | PieceType::Unused
            );
            let map = if normal {
                &mut mergeable
            } else {
                &mut reserved
            };
            let key: Box<[u8]> = p.piece.as_bytes().into();
            if map.insert(key, id).is_some() {
                return Err(err(format!("piece {:?} is defined twice", p.piece)));
            }
            match p.kind {
                PieceType::UserDefined => user_defined.push(p.piece.as_str()),
                PieceType::Unknown => {
                    if unk_id.is_some() {
                        return Err(err("more than one <unk> piece"));
                    }
                    unk_id = Some(id);
                }
                PieceType::Byte => {
                    if !byte_fallback {
                        return Err(err(format!(
                            "byte piece {:?} found although byte_fallback is false",
                            p.piece
                        )));
                    }
                    let b = piece_to_byte(&p.piece)
                        .ok_or_else(|| err(format!("byte piece {:?} is invalid", p.piece)))?;
                    byte_found[usize::from(b)] = Some(id);
                }
                _ => {}
            }
        }
        let unk_id = unk_id.ok_or_else(|| err("no <unk> piece defined"))?;
        let byte_ids = if byte_fallback {
            let mut ids = Box::new([0u32; 256]);
            for (b, slot) in ids.iter_mut().enumerate() {
                // Encoding looks the byte piece up by name (reserved map first), as SentencePiece does.
                *slot = byte_found[b]
                    .and_then(|_| reserved.get(byte_piece(b as u8).as_bytes()).copied())
                    .ok_or_else(|| {
                        err("byte_fallback is true but the 256 byte pieces are incomplete")
                    })?;
            }
            Some(ids)
        } else {
            None
        };
        let user_defined = PrefixMatcher::new(&user_defined);
        Ok(Vocab {
            pieces,
            mergeable,
            reserved,
            unk_id,
            byte_ids,
            user_defined,
        })
    }

    /// Id of a mergeable (NORMAL/USER_DEFINED/UNUSED) piece.
    pub(crate) fn mergeable_id(&self, piece: &[u8]) -> Option<u32> {
        self.mergeable.get(piece).copied()
    }

    /// SentencePiece's `PieceToId`: reserved pieces, then mergeable ones, else `<unk>`.
    pub(crate) fn piece_to_id(&self, piece: &[u8]) -> u32 {
        self.reserved
            .get(piece)
            .or_else(|| self.mergeable.get(piece))
            .copied()
            .unwrap_or(self.unk_id)
    }

    /// Kind of an id; out-of-range ids are reported as `None`.
    pub(crate) fn kind(&self, id: u32) -> Option<PieceType> {
        self.pieces.get(id as usize).map(|p| p.kind)
    }

    pub(crate) fn score(&self, id: u32) -> f32 {
        self.pieces.get(id as usize).map_or(0.0, |p| p.score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_piece_names_round_trip() {
        for b in 0..=255u8 {
            assert_eq!(piece_to_byte(&byte_piece(b)), Some(b));
        }
        assert_eq!(piece_to_byte("<0xab>"), None);
        assert_eq!(piece_to_byte("<0x1>"), None);
        assert_eq!(piece_to_byte("<0x+1>"), None);
    }

    #[test]
    fn prefix_matcher_prefers_longest() {
        let m = PrefixMatcher::new(&["ab", "abc", "x"]);
        assert_eq!(m.prefix_match(b"abcd"), (3, true));
        assert_eq!(m.prefix_match(b"abd"), (2, true));
        assert_eq!(m.prefix_match("éa".as_bytes()), (2, false));
        assert_eq!(m.prefix_match(&[0xf0, b'a']), (2, false));
    }
}
