//! Ids back to text, as SentencePiece's `Decode` does.
//!
//! Control pieces vanish; `<unk>` prints the trainer's `unk_surface` (default " ⁇ "); runs of byte
//! pieces are reassembled into UTF-8, each byte that does not start a valid character becoming
//! U+FFFD; `▁` becomes ' '. While nothing has been written yet, one leading `▁` is dropped from each
//! piece when the model adds a dummy prefix or removes extra whitespace. Ids outside the vocabulary
//! are skipped (SentencePiece rejects the whole call). The `denormalizer_spec` is not applied.

use super::normalize::SPACE_SYMBOL;
use super::proto::PieceType;
use super::vocab::{one_char_len, piece_to_byte, Vocab};

/// Decoding options taken from the model.
pub(crate) struct DecodeOptions<'a> {
    pub(crate) unk_surface: &'a str,
    /// `add_dummy_prefix || remove_extra_whitespaces`.
    pub(crate) strip_leading_space: bool,
    /// `remove_extra_whitespaces`: strip from every piece until text appears.
    pub(crate) remove_extra_whitespaces: bool,
}

/// Appends byte-piece bytes as text: valid characters verbatim, other bytes as U+FFFD each.
fn flush_bytes(bytes: &mut Vec<u8>, text: &mut String) {
    let mut i = 0;
    while i < bytes.len() {
        let len = one_char_len(bytes[i]).min(bytes.len() - i);
        match std::str::from_utf8(&bytes[i..i + len]) {
            Ok(s) => {
                text.push_str(s);
                i += len;
            }
            Err(_) => {
                text.push('\u{FFFD}');
                i += 1;
            }
        }
    }
    bytes.clear();
}

pub(crate) fn decode(vocab: &Vocab, opts: &DecodeOptions<'_>, ids: &[u32]) -> String {
    let mut text = String::new();
    let mut bytes = Vec::new();
    let mut is_bos_ws = true;
    let mut bos_ws_seen = false;
    for &id in ids {
        let Some(p) = vocab.pieces.get(id as usize) else {
            continue;
        };
        let piece = p.piece.as_str();
        // SentencePiece re-derives the id from the piece text.
        let id = vocab.piece_to_id(piece.as_bytes());
        let kind = vocab.kind(id);
        if kind == Some(PieceType::Byte) {
            if let Some(b) = piece_to_byte(piece) {
                bytes.push(b);
            }
            continue;
        }
        flush_bytes(&mut bytes, &mut text);
        if bos_ws_seen || !text.is_empty() {
            is_bos_ws = false;
        }
        bos_ws_seen = false;
        match kind {
            Some(PieceType::Control) => {}
            Some(PieceType::Unknown) => {
                if vocab.pieces[id as usize].piece == piece {
                    text.push_str(opts.unk_surface);
                } else {
                    text.push_str(piece);
                }
            }
            _ => {
                let mut piece = piece;
                if is_bos_ws && opts.strip_leading_space {
                    if let Some(rest) = piece.strip_prefix(SPACE_SYMBOL) {
                        piece = rest;
                        bos_ws_seen = !opts.remove_extra_whitespaces;
                    }
                }
                text.push_str(&piece.replace(SPACE_SYMBOL, " "));
            }
        }
    }
    flush_bytes(&mut bytes, &mut text);
    text
}
