//! SentencePiece tokenizer (BPE with byte fallback) read straight from a `.model` file, and the
//! challenge's byte accounting tables.
//!
//! CONTRACT (other modules rely on exactly these public items):
//! - `Tokenizer::load(path) -> Result<Tokenizer>`, `Tokenizer::from_bytes(&[u8]) -> Result<Tokenizer>`
//! - `Tokenizer::vocab_size(&self) -> usize`, `encode(&self, &str) -> Vec<u32>`,
//!   `decode(&self, &[u32]) -> String`, `piece(&self, id: u32) -> Option<&str>`,
//!   `bos_id(&self) -> u32`
//! - `Tokenizer::byte_lut(&self, vocab_size: usize) -> ByteLut`
//! - `ByteLut::bytes_for(&self, prev: u32, target: u32) -> u32` (spec section 2.2)
//!
//! Pipeline: [`proto`] parses the `ModelProto`; `normalize` applies the precompiled charsmap and
//! the whitespace rules; `bpe` merges by piece score and maps symbols to ids (byte fallback);
//! `decode` inverts it; [`bytes`] builds the bits-per-byte tables. Everything is pure Rust with
//! no dependencies (wasm32-friendly) and matches the `sentencepiece` library id for id (the tests
//! re-encode the whole val shard and a set of tricky strings against its recorded output).
//!
//! Why not the Hugging Face `tokenizers` crate: it cannot read SentencePiece `.model` files (HF
//! converts them in Python), and its BPE is driven by a ranked merge list, while SentencePiece BPE
//! merges the highest-scoring adjacent pair whose concatenation is any vocabulary piece; a merge
//! list would have to be synthesized from the scores, with no guarantee of identical ids on every
//! input. It would also add a large dependency tree (regex/onig, serde, rayon, plus
//! `spm_precompiled` for the charsmap) to a wasm32 build. SentencePiece's algorithm is small
//! (about 1,000 lines here, unit tests included), so it is implemented directly and tested
//! against the library.

mod bpe;
pub mod bytes;
mod decode;
mod normalize;
pub mod proto;
mod vocab;

use std::path::Path;

pub use bytes::ByteLut;
pub use proto::{ModelProto, ModelType, NormalizerSpec, PieceType, TrainerSpec};

use crate::{Error, Result};
use normalize::Normalizer;
use vocab::Vocab;

/// A loaded SentencePiece BPE model.
pub struct Tokenizer {
    vocab: Vocab,
    normalizer: Normalizer,
    trainer_spec: TrainerSpec,
    normalizer_spec: NormalizerSpec,
    bos_id: u32,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("model_type", &self.trainer_spec.model_type)
            .field("byte_fallback", &self.trainer_spec.byte_fallback)
            .field("normalizer", &self.normalizer_spec.name)
            .field("bos_id", &self.bos_id)
            .finish()
    }
}

impl Tokenizer {
    /// Reads and parses a `.model` file (at most [`crate::limits::TOKENIZER_FILE_BYTES`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = crate::limits::read_file(
            path,
            &crate::limits::TOKENIZER_FILE_BYTES,
            Error::Tokenizer,
            0,
            |_| Ok(()),
        )?;
        Self::from_bytes(&bytes)
            .map_err(|e| Error::Tokenizer(format!("{}: {}", path.display(), strip_prefix(e))))
    }

    /// Parses a serialized `ModelProto`. Only BPE models are supported.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Err(Error::Tokenizer(
                "the file is empty (0 bytes): not a SentencePiece model".into(),
            ));
        }
        let model = ModelProto::parse(bytes)?;
        if model.pieces.is_empty() {
            return Err(Error::Tokenizer(
                "no vocabulary pieces: not a SentencePiece model".into(),
            ));
        }
        let trainer_spec = model.trainer_spec;
        if trainer_spec.model_type != ModelType::Bpe {
            return Err(Error::Tokenizer(format!(
                "model_type {:?} is not supported (only BPE)",
                trainer_spec.model_type
            )));
        }
        let normalizer_spec = model.normalizer_spec;
        let normalizer =
            Normalizer::new(&normalizer_spec, trainer_spec.treat_whitespace_as_suffix)?;
        let vocab = Vocab::new(model.pieces, trainer_spec.byte_fallback)?;
        // As SentencePieceProcessor::Load: the BOS id is that of the control piece named bos_piece.
        let bos_id = vocab.piece_to_id(trainer_spec.bos_piece.as_bytes());
        if vocab.kind(bos_id) != Some(PieceType::Control) {
            return Err(Error::Tokenizer(format!(
                "no control piece {:?} (BOS) in the vocabulary",
                trainer_spec.bos_piece
            )));
        }
        Ok(Tokenizer {
            vocab,
            normalizer,
            trainer_spec,
            normalizer_spec,
            bos_id,
        })
    }

    /// Number of pieces in the model.
    pub fn vocab_size(&self) -> usize {
        self.vocab.pieces.len()
    }

    /// Normalizes `text` as the model does before encoding (`▁` for spaces). Lossy only if the
    /// model's charsmap produces invalid UTF-8.
    pub fn normalize(&self, text: &str) -> String {
        let bytes = self
            .normalizer
            .normalize(text.as_bytes(), &self.vocab.user_defined);
        String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
    }

    /// Encodes text to ids, like `sp.encode(text, out_type=int)` (no BOS/EOS added).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let normalized = self
            .normalizer
            .normalize(text.as_bytes(), &self.vocab.user_defined);
        let mut out = Vec::with_capacity(normalized.len() / 2 + 1);
        bpe::encode(&self.vocab, &normalized, &mut out);
        out
    }

    /// Decodes ids to text, like `sp.decode(ids)`; ids outside the vocabulary are skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let opts = decode::DecodeOptions {
            unk_surface: &self.trainer_spec.unk_surface,
            strip_leading_space: self.normalizer_spec.add_dummy_prefix
                || self.normalizer_spec.remove_extra_whitespaces,
            remove_extra_whitespaces: self.normalizer_spec.remove_extra_whitespaces,
        };
        decode::decode(&self.vocab, &opts, ids)
    }

    /// The piece text of an id (`▁` marks a space), or `None` if out of range.
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.vocab.pieces.get(id as usize).map(|p| p.piece.as_str())
    }

    /// The kind of an id, or `None` if out of range.
    pub fn piece_type(&self, id: u32) -> Option<PieceType> {
        self.vocab.kind(id)
    }

    /// The BPE score of an id, or `None` if out of range.
    pub fn score(&self, id: u32) -> Option<f32> {
        self.vocab.pieces.get(id as usize).map(|p| p.score)
    }

    /// Id of a piece text, if it is in the vocabulary.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        let id = self.vocab.piece_to_id(piece.as_bytes());
        (self.piece(id) == Some(piece)).then_some(id)
    }

    /// The beginning-of-document id (control piece `<s>`; 1 in the challenge's tokenizers).
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// The unknown-piece id.
    pub fn unk_id(&self) -> u32 {
        self.vocab.unk_id
    }

    /// Byte accounting tables of length `max(vocab_size(), vocab_size)` (spec §2.2).
    pub fn byte_lut(&self, vocab_size: usize) -> ByteLut {
        ByteLut::build(&self.vocab.pieces, vocab_size)
    }

    /// The byte tables for a model with `vocab_size` outputs, after checking that this is the
    /// model's tokenizer: as many pieces as the model has outputs (another tokenizer gives a
    /// plausible but wrong bits per byte, not an error), and tables that can credit bytes (not
    /// every piece a control piece).
    pub fn byte_lut_for_model(&self, vocab_size: usize) -> Result<ByteLut> {
        if self.vocab_size() != vocab_size {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has {} pieces but the model's vocabulary is {vocab_size}: it is \
                 not this model's tokenizer (its bits per byte would be wrong)",
                self.vocab_size()
            )));
        }
        let lut = self.byte_lut(vocab_size);
        // (Empty pieces, which would be scored without bytes, are refused when loading.)
        if lut.is_boundary.iter().all(|&b| b) {
            return Err(Error::Tokenizer(
                "every piece is a control piece: no token would be worth a byte".into(),
            ));
        }
        Ok(lut)
    }

    /// Trainer options read from the model.
    pub fn trainer_spec(&self) -> &TrainerSpec {
        &self.trainer_spec
    }

    /// Normalizer options read from the model.
    pub fn normalizer_spec(&self) -> &NormalizerSpec {
        &self.normalizer_spec
    }
}

/// The message of a tokenizer error without its variant, to prefix a path.
fn strip_prefix(e: Error) -> String {
    match e {
        Error::Tokenizer(m) => m,
        other => other.to_string(),
    }
}
