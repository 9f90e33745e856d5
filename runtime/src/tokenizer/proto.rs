//! Hand-written reader for SentencePiece's `ModelProto` (the `.model` file), protobuf wire format.
//!
//! Only the fields the tokenizer needs are decoded; every other field is skipped by wire type.
//! Semantics follow proto2 as used by the C++ library: the last occurrence of a scalar field wins,
//! repeated occurrences of an embedded message are merged, an enum value the schema does not know
//! leaves the field at its previous value, and a known field number with an unexpected wire type is
//! treated as an unknown field. Every length and offset is bounds-checked; malformed input yields
//! [`Error::Tokenizer`], never a panic.

use crate::{Error, Result};

/// Protobuf wire types (groups, 3 and 4, are not supported: SentencePiece never writes them).
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn err(msg: impl Into<String>) -> Error {
    Error::Tokenizer(msg.into())
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// One decoded field value, borrowed from the input.
enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| err("truncated varint in model proto"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(err("varint longer than 10 bytes in model proto"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| err("field runs past the end of the model proto"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Next `(field number, value)`, or `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(err(format!("invalid field number {field} in model proto")));
        }
        let value = match (key & 7) as u8 {
            VARINT => Value::Varint(self.varint()?),
            FIXED64 => {
                self.take(8)?;
                Value::Fixed64
            }
            LEN => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| err("field length overflows"))?;
                Value::Bytes(self.take(len)?)
            }
            FIXED32 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            w => {
                return Err(err(format!(
                    "unsupported protobuf wire type {w} (field {field}) in model proto"
                )))
            }
        };
        Ok(Some((field as u32, value)))
    }
}

/// Kind of a vocabulary entry (`ModelProto.SentencePiece.Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceType {
    /// An ordinary piece learned by the trainer.
    Normal,
    /// The unknown piece (`<unk>`).
    Unknown,
    /// A control symbol (`<s>`, `</s>`, `<pad>`): never produced by encoding, invisible in decode.
    Control,
    /// A user-defined symbol: matched before normalization and never split or merged.
    UserDefined,
    /// A byte-fallback piece `<0xXX>`.
    Byte,
    /// A piece that exists but is never emitted (resegmented into its parts).
    Unused,
}

impl PieceType {
    fn from_proto(v: u64) -> Option<Self> {
        Some(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }
}

/// One vocabulary entry.
#[derive(Clone, Debug)]
pub struct PieceProto {
    /// The piece text (`▁` U+2581 marks a space).
    pub piece: String,
    /// Merge priority for BPE (higher merges first).
    pub score: f32,
    /// The piece kind.
    pub kind: PieceType,
}

/// `TrainerSpec.ModelType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelType {
    /// Unigram language model (the proto default; not supported by this tokenizer).
    Unigram,
    /// Byte-pair encoding.
    Bpe,
    /// Whitespace-delimited words.
    Word,
    /// Characters.
    Char,
}

/// The `TrainerSpec` fields that matter for encoding and byte accounting.
#[derive(Clone, Debug)]
pub struct TrainerSpec {
    /// Model algorithm (field 3).
    pub model_type: ModelType,
    /// Requested vocabulary size (field 4).
    pub vocab_size: i32,
    /// Whether unknown characters fall back to `<0xXX>` byte pieces (field 35).
    pub byte_fallback: bool,
    /// Whether digits were split during training (field 25; no effect on encoding).
    pub split_digits: bool,
    /// Whether `▁` is a suffix rather than a prefix (field 24).
    pub treat_whitespace_as_suffix: bool,
    /// Special ids (fields 40-43; -1 = disabled).
    pub unk_id: i32,
    /// See `unk_id`.
    pub bos_id: i32,
    /// See `unk_id`.
    pub eos_id: i32,
    /// See `unk_id`.
    pub pad_id: i32,
    /// Special piece texts (fields 45-48).
    pub unk_piece: String,
    /// See `unk_piece`.
    pub bos_piece: String,
    /// See `unk_piece`.
    pub eos_piece: String,
    /// See `unk_piece`.
    pub pad_piece: String,
    /// What decoding prints for `<unk>` (field 44).
    pub unk_surface: String,
    /// Training file prefix (field 2; informational).
    pub model_prefix: String,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        TrainerSpec {
            model_type: ModelType::Unigram,
            vocab_size: 8000,
            byte_fallback: false,
            split_digits: false,
            treat_whitespace_as_suffix: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
            unk_piece: "<unk>".into(),
            bos_piece: "<s>".into(),
            eos_piece: "</s>".into(),
            pad_piece: "<pad>".into(),
            unk_surface: " \u{2047} ".into(),
            model_prefix: String::new(),
        }
    }
}

/// The `NormalizerSpec` fields.
#[derive(Clone, Debug)]
pub struct NormalizerSpec {
    /// Rule name, e.g. `nmt_nfkc` (field 1; informational).
    pub name: String,
    /// Compiled normalization rules: a Darts double-array trie plus replacement strings (field 2).
    pub precompiled_charsmap: Vec<u8>,
    /// Prepend `▁` to the text (field 3).
    pub add_dummy_prefix: bool,
    /// Drop leading/trailing whitespace and collapse runs (field 4).
    pub remove_extra_whitespaces: bool,
    /// Replace ' ' by `▁` (field 5).
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        NormalizerSpec {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// The decoded `.model` file.
#[derive(Clone, Debug, Default)]
pub struct ModelProto {
    /// Vocabulary, in id order (field 1).
    pub pieces: Vec<PieceProto>,
    /// Trainer options (field 2).
    pub trainer_spec: TrainerSpec,
    /// Normalization options (field 3).
    pub normalizer_spec: NormalizerSpec,
    /// Whether a `denormalizer_spec` (field 5) is present; it is not applied by this decoder.
    pub has_denormalizer: bool,
}

fn utf8(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| err(format!("{what} is not valid UTF-8")))
}

impl ModelProto {
    /// Parses a serialized `ModelProto`.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        let mut model = ModelProto::default();
        let mut r = Reader::new(buf);
        while let Some((field, value)) = r.next_field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => {
                    let index = model.pieces.len();
                    let piece = parse_piece(b, index)?;
                    // Refused here, not after millions of 2-byte records were stored.
                    if piece.piece.is_empty() {
                        return Err(err(format!("piece {index} is empty")));
                    }
                    model.pieces.push(piece);
                }
                (2, Value::Bytes(b)) => merge_trainer(&mut model.trainer_spec, b)?,
                (3, Value::Bytes(b)) => merge_normalizer(&mut model.normalizer_spec, b)?,
                (5, Value::Bytes(_)) => model.has_denormalizer = true,
                _ => {}
            }
        }
        Ok(model)
    }
}

fn parse_piece(buf: &[u8], index: usize) -> Result<PieceProto> {
    let mut piece = PieceProto {
        piece: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    let mut r = Reader::new(buf);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => piece.piece = utf8(b, &format!("piece {index}"))?,
            (2, Value::Fixed32(bits)) => piece.score = f32::from_bits(bits),
            (3, Value::Varint(v)) => {
                if let Some(kind) = PieceType::from_proto(v) {
                    piece.kind = kind;
                }
            }
            _ => {}
        }
    }
    Ok(piece)
}

fn merge_trainer(spec: &mut TrainerSpec, buf: &[u8]) -> Result<()> {
    let mut r = Reader::new(buf);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (2, Value::Bytes(b)) => spec.model_prefix = utf8(b, "trainer_spec.model_prefix")?,
            (3, Value::Varint(v)) => {
                spec.model_type = match v {
                    1 => ModelType::Unigram,
                    2 => ModelType::Bpe,
                    3 => ModelType::Word,
                    4 => ModelType::Char,
                    _ => spec.model_type,
                }
            }
            // int32 fields are sign-extended varints; truncation is what protobuf does.
            (4, Value::Varint(v)) => spec.vocab_size = v as i32,
            (24, Value::Varint(v)) => spec.treat_whitespace_as_suffix = v != 0,
            (25, Value::Varint(v)) => spec.split_digits = v != 0,
            (35, Value::Varint(v)) => spec.byte_fallback = v != 0,
            (40, Value::Varint(v)) => spec.unk_id = v as i32,
            (41, Value::Varint(v)) => spec.bos_id = v as i32,
            (42, Value::Varint(v)) => spec.eos_id = v as i32,
            (43, Value::Varint(v)) => spec.pad_id = v as i32,
            (44, Value::Bytes(b)) => spec.unk_surface = utf8(b, "trainer_spec.unk_surface")?,
            (45, Value::Bytes(b)) => spec.unk_piece = utf8(b, "trainer_spec.unk_piece")?,
            (46, Value::Bytes(b)) => spec.bos_piece = utf8(b, "trainer_spec.bos_piece")?,
            (47, Value::Bytes(b)) => spec.eos_piece = utf8(b, "trainer_spec.eos_piece")?,
            (48, Value::Bytes(b)) => spec.pad_piece = utf8(b, "trainer_spec.pad_piece")?,
            _ => {}
        }
    }
    Ok(())
}

fn merge_normalizer(spec: &mut NormalizerSpec, buf: &[u8]) -> Result<()> {
    let mut r = Reader::new(buf);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => spec.name = utf8(b, "normalizer_spec.name")?,
            (2, Value::Bytes(b)) => spec.precompiled_charsmap = b.to_vec(),
            (3, Value::Varint(v)) => spec.add_dummy_prefix = v != 0,
            (4, Value::Varint(v)) => spec.remove_extra_whitespaces = v != 0,
            (5, Value::Varint(v)) => spec.escape_whitespaces = v != 0,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(field: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    #[test]
    fn parses_pieces_specs_and_skips_unknown_fields() {
        let mut piece = Vec::new();
        bytes_field(1, "▁a".as_bytes(), &mut piece);
        piece.push(2 << 3 | 5);
        piece.extend_from_slice(&(-1.5f32).to_le_bytes());
        piece.extend_from_slice(&[3 << 3, 4]); // USER_DEFINED
        piece.extend_from_slice(&[9 << 3 | 1, 0, 0, 0, 0, 0, 0, 0, 0]); // unknown fixed64
        let mut trainer = Vec::new();
        trainer.extend_from_slice(&[3 << 3, 2]); // BPE
        varint(35 << 3, &mut trainer);
        trainer.push(1);
        varint(43 << 3, &mut trainer);
        varint(u64::MAX, &mut trainer); // pad_id = -1 as 10-byte varint
        let mut normalizer = Vec::new();
        bytes_field(1, b"nmt_nfkc", &mut normalizer);
        normalizer.extend_from_slice(&[3 << 3, 0]);
        let mut model = Vec::new();
        bytes_field(1, &piece, &mut model);
        bytes_field(2, &trainer, &mut model);
        bytes_field(3, &normalizer, &mut model);
        bytes_field(77, b"ignored", &mut model);

        let m = ModelProto::parse(&model).unwrap();
        assert_eq!(m.pieces.len(), 1);
        assert_eq!(m.pieces[0].piece, "▁a");
        assert_eq!(m.pieces[0].score, -1.5);
        assert_eq!(m.pieces[0].kind, PieceType::UserDefined);
        assert_eq!(m.trainer_spec.model_type, ModelType::Bpe);
        assert!(m.trainer_spec.byte_fallback);
        assert_eq!(m.trainer_spec.pad_id, -1);
        assert_eq!(m.trainer_spec.bos_id, 1);
        assert_eq!(m.normalizer_spec.name, "nmt_nfkc");
        assert!(!m.normalizer_spec.add_dummy_prefix);
        assert!(m.normalizer_spec.remove_extra_whitespaces);
    }

    #[test]
    fn truncated_input_is_an_error() {
        let mut model = Vec::new();
        bytes_field(1, &[10, 1, b'a'], &mut model);
        for cut in 1..model.len() {
            assert!(ModelProto::parse(&model[..cut]).is_err(), "cut {cut}");
        }
        assert!(ModelProto::parse(&[0x80; 11]).is_err());
        assert!(ModelProto::parse(&[3 << 3 | 3]).is_err());
    }
}
