//! The precision of a run: how matrix products round their operands. A property of the run
//! (`--precision`, or `PGOLF_PRECISION`), offered per backend: the CPU backend offers `f32` (the
//! oracle) and, on CPUs with AMX-BF16 or AVX512-BF16, `bf16`; the CUDA backend offers `f32` (the
//! parity path), `tf32` and `bf16`.

use crate::{Error, Result};

/// How matrix products (and attention's products) round their operands; accumulation, norms,
/// softmax and the loss stay float32 in every precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Precision {
    /// True float32 multiply-adds: the parity path, matched against the CPU oracle.
    #[default]
    F32,
    /// Operands rounded to TF32 (10-bit mantissa) on tensor cores, fp32 accumulation.
    Tf32,
    /// Operands rounded to bfloat16 (8-bit significand, nearest even), fp32 accumulation: what
    /// PyTorch's bf16 autocast does to `F.linear`. On the CPU the linear, head and attention
    /// products are bf16 (forward only); on CUDA every GEMM, forward and backward, with
    /// attention on the TF32 tensor-core kernels.
    Bf16,
}

impl Precision {
    /// Every precision any backend offers, by name.
    pub const ALL: &'static [Precision] = &[Precision::F32, Precision::Tf32, Precision::Bf16];

    /// Its name as `--precision` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }

    /// `PGOLF_PRECISION` (`f32`, `tf32` or `bf16`) if set, else `tf32` when the older
    /// `PGOLF_CUDA_TF32=1` is set, else `f32`. A value that names no precision is an error.
    pub fn from_env() -> Result<Precision> {
        match std::env::var("PGOLF_PRECISION") {
            Ok(v) if !v.is_empty() => v
                .parse()
                .map_err(|e: Error| Error::Backend(format!("PGOLF_PRECISION: {e}"))),
            _ => Ok(
                if std::env::var("PGOLF_CUDA_TF32").is_ok_and(|v| v == "1") {
                    Precision::Tf32
                } else {
                    Precision::F32
                },
            ),
        }
    }

    /// `"f32, tf32"` for messages.
    pub fn list(ps: &[Precision]) -> String {
        ps.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Precision> {
        Precision::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                Error::Backend(format!(
                    "unknown precision {s:?} (one of {})",
                    Precision::list(Precision::ALL)
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for &p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!("TF32".parse::<Precision>().unwrap(), Precision::Tf32);
        let e = "bf17".parse::<Precision>().unwrap_err().to_string();
        assert!(
            e.contains("unknown precision \"bf17\"") && e.contains("f32, tf32"),
            "{e}"
        );
    }
}
