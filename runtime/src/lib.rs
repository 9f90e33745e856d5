//! pgolf-rt: a runtime for OpenAI "parameter golf" language models.
//!
//! Data flows through the modules in this order:
//!
//! ```text
//! artifact  (compressed torch.save file -> named, dequantized f32 tensors)
//!   -> model   (architecture inferred from names/shapes -> typed weights)
//!   -> backend (CPU oracle today; CUDA and wgpu implement the same trait)
//!   -> eval    (standard and sliding-window scoring, exact bits per byte)
//! ```
//!
//! `tokenizer` (SentencePiece, byte accounting) and `data` (challenge shards) feed `eval`.

pub mod alloc;
mod api;
pub mod artifact;
pub mod backend;
pub mod data;
pub mod error;
pub mod eval;
pub mod limits;
pub mod model;
pub mod tokenizer;
pub mod train;

pub use api::{
    Decoding, Generation, Generator, LoadOptions, Model, Sampling, ScorePass, ScoreProgress,
    TextScorer,
};
pub use error::{Error, Result};
