//! Byte accounting for bits per byte: the challenge's `build_sentencepiece_luts` (spec §2.2).
//!
//! Tables have length `max(pieces, requested vocab)`. Control, unknown and unused ids, and ids past
//! the piece list, are boundaries worth 0 bytes; a byte-fallback piece is worth 1; any other piece
//! its UTF-8 length after removing one leading `▁`, plus 1 for that `▁` unless the previous token is
//! a boundary. Lookups with ids outside the tables never panic: such a target is worth 0 bytes and
//! such a previous token counts as a boundary.

use super::normalize::SPACE_SYMBOL;
use super::proto::{PieceProto, PieceType};

/// Per-token byte tables (spec §2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByteLut {
    /// Bytes of the piece text without its leading `▁` (0 for boundaries, 1 for byte pieces).
    pub base_bytes: Vec<u16>,
    /// Whether the piece starts with `▁`.
    pub has_leading_space: Vec<bool>,
    /// Whether the id is a control/unknown/unused piece or lies past the piece list.
    pub is_boundary: Vec<bool>,
}

impl ByteLut {
    /// Builds the tables exactly as `build_sentencepiece_luts(sp, vocab_size)`.
    pub(crate) fn build(pieces: &[PieceProto], vocab_size: usize) -> Self {
        let n = pieces.len().max(vocab_size);
        let mut lut = ByteLut {
            base_bytes: vec![0; n],
            has_leading_space: vec![false; n],
            is_boundary: vec![true; n],
        };
        for (id, p) in pieces.iter().enumerate() {
            match p.kind {
                PieceType::Control | PieceType::Unknown | PieceType::Unused => continue,
                PieceType::Byte => {
                    lut.is_boundary[id] = false;
                    lut.base_bytes[id] = 1;
                }
                PieceType::Normal | PieceType::UserDefined => {
                    lut.is_boundary[id] = false;
                    let text = match p.piece.strip_prefix(SPACE_SYMBOL) {
                        Some(rest) => {
                            lut.has_leading_space[id] = true;
                            rest
                        }
                        None => p.piece.as_str(),
                    };
                    lut.base_bytes[id] = u16::try_from(text.len()).unwrap_or(u16::MAX);
                }
            }
        }
        lut
    }

    /// Table length.
    pub fn len(&self) -> usize {
        self.base_bytes.len()
    }

    /// Whether the tables are empty.
    pub fn is_empty(&self) -> bool {
        self.base_bytes.is_empty()
    }

    /// Bytes credited to predicting `target` after `prev`:
    /// `base_bytes[target] + (has_leading_space[target] && !is_boundary[prev])`.
    pub fn bytes_for(&self, prev: u32, target: u32) -> u32 {
        let t = target as usize;
        let Some(&base) = self.base_bytes.get(t) else {
            return 0;
        };
        let prev_is_boundary = self.is_boundary.get(prev as usize).copied().unwrap_or(true);
        u32::from(base) + u32::from(self.has_leading_space[t] && !prev_is_boundary)
    }

    /// Σ `bytes_for` over consecutive pairs of `ids` (the targets `ids[1..]`).
    pub fn count_bytes(&self, ids: &[u32]) -> u64 {
        ids.windows(2)
            .map(|w| u64::from(self.bytes_for(w[0], w[1])))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(piece: &str, kind: PieceType) -> PieceProto {
        PieceProto {
            piece: piece.into(),
            score: 0.0,
            kind,
        }
    }

    #[test]
    fn spec_rule() {
        let pieces = vec![
            piece("<s>", PieceType::Control),
            piece("<unk>", PieceType::Unknown),
            piece("<0x41>", PieceType::Byte),
            piece("▁", PieceType::Normal),
            piece("▁ab", PieceType::Normal),
            piece("é", PieceType::Normal),
            piece("x", PieceType::Unused),
        ];
        let lut = ByteLut::build(&pieces, 9);
        assert_eq!(lut.len(), 9);
        assert_eq!(lut.base_bytes, [0, 0, 1, 0, 2, 2, 0, 0, 0]);
        assert_eq!(
            lut.is_boundary,
            [true, true, false, false, false, false, true, true, true]
        );
        assert_eq!(lut.bytes_for(0, 4), 2);
        assert_eq!(lut.bytes_for(5, 4), 3);
        assert_eq!(lut.bytes_for(5, 3), 1);
        assert_eq!(lut.bytes_for(0, 3), 0);
        assert_eq!(lut.bytes_for(2, 2), 1);
        assert_eq!(lut.bytes_for(8, 4), 2);
        assert_eq!(lut.bytes_for(u32::MAX, 4), 2);
        assert_eq!(lut.bytes_for(5, u32::MAX), 0);
        assert_eq!(lut.count_bytes(&[0, 4, 3, 5]), 2 + 1 + 2);
    }
}
