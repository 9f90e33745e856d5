//! Trained weights → a challenge artifact (spec 6): `int8` is the baseline's
//! `int8_clean_per_row_v1` + zlib, `int6` the 11-layer lineage's `{"w","m"}` int6 rows with the
//! clip search + zstd level 22. Dtypes recorded are those of the PyTorch model (embedding tables
//! bf16, everything else fp32), so the scripts dequantize exactly as for their own exports.

use crate::artifact::quant::template_dtype;
use crate::artifact::{export_artifact, Compression, ExportLayout, ExportOptions, ExportTensor};
use crate::model::ModelWeights;
use crate::{Error, Result};

/// Export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// `final_model.int8.ptz`: int8 rows + fp16 scales, zlib level 9.
    Int8Zlib,
    /// `final_model.int6.ptz`: int6 rows (clip search) + fp16 scales, zstd level 22.
    Int6Zstd,
}

impl std::str::FromStr for ExportKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "int8" | "int8-zlib" => Ok(ExportKind::Int8Zlib),
            "int6" | "int6-zstd" => Ok(ExportKind::Int6Zstd),
            _ => Err(Error::Usage(format!("unknown export {s:?} (int8, int6)"))),
        }
    }
}

impl ExportKind {
    /// The file name `train_gpt.py` gives this export.
    pub fn file_name(self) -> &'static str {
        match self {
            ExportKind::Int8Zlib => "final_model.int8.ptz",
            ExportKind::Int6Zstd => "final_model.int6.ptz",
        }
    }

    /// The label of its log lines (`final_int8_zlib_roundtrip ...`).
    pub fn label(self) -> &'static str {
        match self {
            ExportKind::Int8Zlib => "int8_zlib",
            ExportKind::Int6Zstd => "int6_zstd",
        }
    }
}

/// Quantizes, serializes and compresses `weights`.
pub fn export_weights(weights: &ModelWeights, kind: ExportKind) -> Result<Vec<u8>> {
    let mut w = weights.clone();
    let params = w.params_mut();
    let tensors: Vec<ExportTensor> = params
        .iter()
        .map(|p| ExportTensor {
            name: &p.name,
            shape: &p.shape,
            dtype: template_dtype(&p.name),
            values: p.values,
        })
        .collect();
    let (layout, compression) = match kind {
        ExportKind::Int8Zlib => (ExportLayout::Int8Clean, Compression::Zlib),
        ExportKind::Int6Zstd => (ExportLayout::Int6Wm, Compression::Zstd),
    };
    export_artifact(&tensors, layout, compression, &ExportOptions::default())
}
