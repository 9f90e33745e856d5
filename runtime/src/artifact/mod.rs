//! Loading (and writing) the challenge's compressed `torch.save` artifacts.
//!
//! Pipeline: `compress` (zlib / zstd / xz / none, detected from magic bytes)
//! -> `zip` (PyTorch's zip container) -> `pickle` (the protocol-2 subset torch emits)
//! -> `torch` (tensor rebuild from persistent storages) -> `quant` (the challenge's quantized
//! dict layouts, dequantized to f32).
//!
//! CONTRACT (other modules rely on exactly these public items):
//! - [`Artifact::load`] / [`Artifact::from_bytes`] never panic; every malformed input is an
//!   [`crate::Error::Artifact`] naming what is wrong.
//! - [`ArtifactTensor::values`] holds the dequantized weights exactly as the PyTorch scripts
//!   hand them to the model: `q * scale` computed in f32, then rounded through the tensor's
//!   original dtype (bf16 / fp16 / f32) and widened back to f32.

pub mod compress;
pub mod pickle;
pub mod quant;
pub mod state;
pub mod torch;
pub mod write;
pub mod zip;

use std::path::Path;

pub use state::{load_state, StateValue};
pub use write::{
    check_writable, export_artifact, write_atomic, ExportLayout, ExportOptions, ExportTensor,
};

/// Shorthand for an [`crate::Error::Artifact`].
pub(crate) fn err(msg: impl Into<String>) -> crate::Error {
    crate::Error::Artifact(msg.into())
}

/// A name from the file, quoted and escaped (control characters, NUL, quotes) and cut to 80
/// characters, for error messages.
pub(crate) fn quoted(name: &str) -> String {
    const MAX: usize = 80;
    if name.chars().count() <= MAX {
        format!("{name:?}")
    } else {
        let head: String = name.chars().take(MAX).collect();
        format!("{head:?}... ({} bytes)", name.len())
    }
}

/// How the outer file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A bare zip archive (`torch.save` output, not compressed further).
    None,
    /// zlib stream (baseline: `zlib.compress(level=9)`).
    Zlib,
    /// zstd frame (int6 records: level 22).
    Zstd,
    /// xz container (Python `lzma.compress`).
    Xz,
}

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    I8,
    I32,
    I64,
    U8,
    Bool,
}

/// Which quantized dict layout the pickle holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerFormat {
    /// Baseline `{"__quant_format__": "int8_clean_per_row_v1", "quantized", "scales", ...}`.
    Int8CleanPerRowV1,
    /// 11-layer lineage `{"w": {...}, "m": {...}}` (int6 / int5 / int8 rows, fp16 passthrough).
    MixedWm,
    /// A plain `state_dict` of float tensors (no quantization).
    StateDict,
}

/// How one tensor was stored in the artifact.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantScheme {
    /// Integer rows with one fp16 scale per row. `bits` is 8, 6 or 5 (from the container's
    /// metadata, or from the value range when the container does not say).
    PerRow { bits: u8 },
    /// Integer values with a single scale for the whole tensor.
    PerTensor { bits: u8 },
    /// Stored as is, in `stored` dtype (fp16 passthrough, fp32 control tensors, ...).
    Passthrough { stored: DType },
}

/// One model tensor, dequantized.
#[derive(Debug, Clone)]
pub struct ArtifactTensor {
    /// State-dict name, e.g. `blocks.0.attn.c_q.weight`.
    pub name: String,
    /// Shape as in PyTorch (`nn.Linear` weights are `[out, in]`).
    pub shape: Vec<usize>,
    /// Storage scheme in the artifact.
    pub scheme: QuantScheme,
    /// The dtype the model uses for this tensor (the recorded original dtype).
    pub dtype: DType,
    /// Bytes this tensor occupies in the uncompressed payload (values + scales).
    pub stored_bytes: usize,
    /// Row-major dequantized values (see the module contract for rounding).
    pub values: Vec<f32>,
}

/// A loaded artifact.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub compression: Compression,
    pub format: ContainerFormat,
    /// Size of the file as handed in (what counts against the 16,000,000-byte cap).
    pub file_bytes: usize,
    /// Size of the decompressed `torch.save` zip.
    pub payload_bytes: usize,
    /// Tensors in the order the pickle lists them.
    pub tensors: Vec<ArtifactTensor>,
}

/// The challenge's artifact size cap, in bytes (decimal).
pub const SIZE_CAP_BYTES: usize = 16_000_000;

impl Artifact {
    /// Reads and decodes an artifact file (at most [`crate::limits::ARTIFACT_FILE_BYTES`]).
    pub fn load(path: impl AsRef<Path>) -> crate::Result<Self> {
        let path = path.as_ref();
        // The first bytes must name a known format before the rest is read.
        let bytes = crate::limits::read_file(
            path,
            &crate::limits::ARTIFACT_FILE_BYTES,
            crate::Error::Artifact,
            8,
            |head| compress::detect(head).map(|_| ()),
        )?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            crate::Error::Artifact(m) => crate::Error::Artifact(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Decodes an artifact held in memory.
    pub fn from_bytes(bytes: &[u8]) -> crate::Result<Self> {
        let (compression, payload) = compress::decompress(bytes)?;
        let archive = zip::TorchArchive::parse(&payload)?;
        let root = pickle::load(archive.pickle)?;
        let (format, tensors) = quant::interpret(&root, &archive)?;
        Ok(Artifact {
            compression,
            format,
            file_bytes: bytes.len(),
            payload_bytes: payload.len(),
            tensors,
        })
    }

    /// Total number of model parameters (elements over all tensors).
    pub fn num_params(&self) -> usize {
        self.tensors.iter().map(|t| t.values.len()).sum()
    }

    /// Sum of [`ArtifactTensor::stored_bytes`] (the uncompressed tensor payload).
    pub fn stored_bytes(&self) -> usize {
        self.tensors.iter().map(|t| t.stored_bytes).sum()
    }

    /// One line per tensor (`name, shape, dtype, sum, sum of squares, first 4 values`, tab
    /// separated): what `scripts/check_torch_load.py` compares against `torch.load`.
    pub fn summary_tsv(&self) -> String {
        let mut s = String::new();
        for t in &self.tensors {
            let sum: f64 = t.values.iter().map(|&v| f64::from(v)).sum();
            let sq: f64 = t.values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let head: Vec<String> = t.values.iter().take(4).map(|v| format!("{v:e}")).collect();
            s += &format!(
                "{}\t{:?}\t{:?}\t{sum:.17e}\t{sq:.17e}\t{}\n",
                t.name,
                t.shape,
                t.dtype,
                head.join(",")
            );
        }
        s
    }

    /// Looks a tensor up by name.
    pub fn get(&self, name: &str) -> Option<&ArtifactTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}
