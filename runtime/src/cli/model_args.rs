//! Flags shared by the commands that load a model: the artifact, the backend, and the
//! architecture details an artifact's shapes cannot tell.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use pgolf_rt::artifact::Artifact;
pub use pgolf_rt::backend::Precision;
use pgolf_rt::model::{Activation, ConfigOverrides, ModelWeights};
use std::path::PathBuf;

/// Compute backend choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The fastest backend available on this machine.
    Auto,
    /// Float32 CPU reference backend.
    Cpu,
    /// NVIDIA GPUs through CUDA (needs the `cuda` build feature).
    Cuda,
    /// Any GPU through wgpu (needs the `wgpu` build feature).
    Wgpu,
    /// The CUDA backend's code and kernels run on the CPU by its emulator (`cuda-emu` builds;
    /// for debugging the CUDA path without a GPU: slow).
    #[cfg(feature = "cuda-emu")]
    CudaEmu,
    /// The CUDA backend's code with no device at all (`cuda-emu` builds): every copy and
    /// launch counted, nothing computed; for `train --profile` traffic counts at full size.
    #[cfg(feature = "cuda-emu")]
    CudaNull,
}

/// What the artifact's shapes cannot tell.
#[derive(Args, Debug, Clone)]
pub struct ArchArgs {
    /// RoPE base.
    #[arg(long, default_value_t = 10000.0, value_parser = super::parse::finite_f32)]
    pub rope_base: f32,
    /// Rotated dims per head (partial RoPE); default: the whole head.
    #[arg(long)]
    pub rope_dims: Option<usize>,
    /// Apply the NTK RoPE rule for windows longer than this (11-layer records: 1024).
    #[arg(long)]
    pub ntk_train_len: Option<usize>,
    /// Logit soft-cap (0 disables it).
    #[arg(long, default_value_t = 30.0, value_parser = super::parse::finite_f32)]
    pub softcap: f32,
    /// MLP activation: relu2 or leaky_relu2.
    #[arg(long, default_value = "relu2")]
    pub activation: String,
    /// Scale block norms by 1/sqrt(layer+1) (LN-scale records).
    #[arg(long)]
    pub ln_scale: bool,
    /// Exclusive self-attention on the last N layers.
    #[arg(long, default_value_t = 0)]
    pub xsa_last: usize,
    /// Layers the shared sparse sidecar follows, one per site (`shared_sparse.*` artifacts,
    /// PR #555/#581); default: the last layers, as its `SPARSE_START_LAYER=8` on 11 layers.
    #[arg(long, value_delimiter = ',')]
    pub sidecar_layers: Option<Vec<usize>>,
}

impl ArchArgs {
    pub fn overrides(&self) -> Result<ConfigOverrides> {
        Ok(ConfigOverrides {
            rope_base: Some(self.rope_base),
            rope_dims: self.rope_dims,
            rope_ntk_train_len: Some(self.ntk_train_len),
            logit_softcap: Some(self.softcap),
            activation: Some(self.activation.parse::<Activation>()?),
            ln_scale: Some(self.ln_scale),
            xsa_last: Some(self.xsa_last),
            sidecar_layers: self.sidecar_layers.clone(),
        })
    }
}

/// Loads an artifact and builds its weights.
pub fn load_weights(path: &PathBuf, arch: &ArchArgs) -> Result<(Artifact, ModelWeights)> {
    let artifact = Artifact::load(path)?;
    let weights = ModelWeights::from_artifact(&artifact, &arch.overrides()?)
        .with_context(|| format!("{}: cannot build the model", path.display()))?;
    Ok((artifact, weights))
}

/// The precision a command runs in: `--precision` if given, else `PGOLF_PRECISION` (or the
/// older `PGOLF_CUDA_TF32=1`), else f32.
pub fn precision(flag: Option<Precision>) -> Result<Precision> {
    match flag {
        Some(p) => Ok(p),
        None => Ok(Precision::from_env()?),
    }
}

/// The CPU backend in precision `p`, for a command that trains (`trains`: `train`, `eval
/// --ttt`) or only runs forward passes. `f32` is the oracle; `bf16` multiplies in bf16 where the
/// CPU has AMX-BF16 or AVX512-BF16 and falls back to float32 with one line saying so where it
/// has neither. The CPU's backward is float32, so commands that train refuse `bf16` there.
pub fn cpu_backend(p: Precision, trains: bool) -> Result<pgolf_rt::backend::cpu::CpuBackend> {
    use pgolf_rt::backend::cpu::{bf16, CpuBackend};
    match p {
        Precision::Bf16 if trains => anyhow::bail!(
            "--precision bf16: the CPU backend trains in float32 only (use --precision f32)"
        ),
        Precision::Bf16 if bf16::Kernel::detect().is_none() => {
            eprintln!(
                "note: --precision bf16: {}; running in float32",
                bf16::unavailable_reason()
            );
            Ok(CpuBackend::new())
        }
        p => Ok(CpuBackend::with_precision(p)?),
    }
}

/// The CUDA backend on device 0 in precision `p`.
#[cfg(feature = "cuda")]
pub fn cuda_backend(
    p: Precision,
) -> std::result::Result<pgolf_rt::backend::cuda::CudaBackend, pgolf_rt::Error> {
    pgolf_rt::backend::cuda::CudaBackend::new()?.with_precision(p)
}

/// Runs `$body` with `$be` bound to a backend that trains (`TrainBackend + Clone`), in
/// precision `$prec`: what `train` and `eval --ttt` need. `auto` is CUDA when a device opens,
/// else the CPU; wgpu has no backward ops, so asking for it is an error naming `$what`.
macro_rules! with_train_backend {
    ($choice:expr, $prec:expr, $what:expr, |$be:ident| $body:expr) => {
        $crate::cli::model_args::with_train_backend!(@trains true, $choice, $prec, $what, |$be| $body)
    };
    (@trains $trains:expr, $choice:expr, $prec:expr, $what:expr, |$be:ident| $body:expr) => {{
        use $crate::cli::model_args::{cpu_backend, BackendChoice};
        let prec: pgolf_rt::backend::Precision = $prec;
        match $choice {
            #[cfg(feature = "cuda")]
            BackendChoice::Auto => match $crate::cli::model_args::cuda_backend(prec) {
                Ok($be) => $body,
                Err(e) => {
                    eprintln!(
                        "note: not using CUDA ({}); running on the CPU",
                        pgolf_rt::backend::cuda::reason(&e)
                    );
                    let $be = cpu_backend(prec, $trains)?;
                    $body
                }
            },
            #[cfg(not(feature = "cuda"))]
            BackendChoice::Auto => {
                let $be = cpu_backend(prec, $trains)?;
                $body
            }
            BackendChoice::Cpu => {
                let $be = cpu_backend(prec, $trains)?;
                $body
            }
            #[cfg(feature = "cuda")]
            BackendChoice::Cuda => {
                let $be = $crate::cli::model_args::cuda_backend(prec).map_err(|e| {
                    anyhow::anyhow!("--backend cuda: {}", pgolf_rt::backend::cuda::reason(&e))
                })?;
                $body
            }
            #[cfg(not(feature = "cuda"))]
            BackendChoice::Cuda => anyhow::bail!(
                "--backend cuda: this pgolf-rt was built without the `cuda` feature (rebuild with `--features cuda`)"
            ),
            #[cfg(feature = "cuda-emu")]
            BackendChoice::CudaEmu => {
                let $be = pgolf_rt::backend::cuda::emu::EmuGpu::backend()?.with_precision(prec)?;
                $body
            }
            #[cfg(feature = "cuda-emu")]
            BackendChoice::CudaNull => {
                let $be = pgolf_rt::backend::cuda::null::NullGpu::backend()?.with_precision(prec)?;
                $body
            }
            BackendChoice::Wgpu => anyhow::bail!(
                "--backend wgpu: {} needs backward ops, which the wgpu backend does not have yet; \
                 use --backend cpu or cuda",
                $what
            ),
        }
    }};
}
pub(crate) use with_train_backend;

/// Runs `$body` with `$model` bound to a `DeviceModel` on the chosen backend in precision
/// `$prec`, so commands are written once, generically. `auto` picks the fastest backend
/// compiled in and available. An explicit request for a backend that is not compiled in is
/// an error, never a fallback. The backends that train are chosen as in
/// [`with_train_backend`]; wgpu is added here.
macro_rules! with_model {
    ($choice:expr, $prec:expr, $weights:expr, |$model:ident| $body:expr) => {{
        use $crate::cli::model_args::BackendChoice;
        let prec: pgolf_rt::backend::Precision = $prec;
        match $choice {
            // `auto` stays off wgpu: on a software adapter (CI) it is slower than the CPU.
            #[cfg(feature = "wgpu")]
            BackendChoice::Wgpu => {
                anyhow::ensure!(
                    prec == pgolf_rt::backend::Precision::F32,
                    "--precision {prec}: the wgpu backend computes in float32 (use --precision f32)"
                );
                let $model = pgolf_rt::model::DeviceModel::new(
                    pgolf_rt::backend::wgpu::WgpuBackend::new()?,
                    $weights,
                )?;
                $body
            }
            #[cfg(not(feature = "wgpu"))]
            BackendChoice::Wgpu => anyhow::bail!(
                "--backend wgpu: this pgolf-rt was built without the `wgpu` feature (rebuild with `--features wgpu`)"
            ),
            other => $crate::cli::model_args::with_train_backend!(@trains false, other, prec, "this command", |be| {
                let $model = pgolf_rt::model::DeviceModel::new(be, $weights)?;
                $body
            }),
        }
    }};
}
pub(crate) use with_model;
