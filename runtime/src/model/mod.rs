//! The model: architecture inferred from an artifact, its parameters as one generic tree
//! ([`Params`]: host weights, device weights, gradients and optimizer state alike), and the
//! forward pass written once against the [`crate::backend::Backend`] trait (optionally with
//! LoRA adapters and recording the activations training needs); [`Decoder`] runs it one new
//! token at a time over a KV cache.

pub(crate) mod adapters;
mod config;
mod decode;
mod forward;
pub mod params;
mod weights;

pub use adapters::DeviceLora;
pub use config::{
    Activation, BigramConfig, ConfigOverrides, ModelConfig, SidecarConfig, ValueEmbedConfig,
};
pub use decode::Decoder;
pub(crate) use forward::{ln_scale, BlockTape, Forward, RowViews, Scalars, SidecarTape};
pub use forward::{DeviceModel, LayerSteps, Tape};
pub use params::{BigramParams, BlockParams, Dims, Params, SidecarParams, ValueEmbedParams};
pub use weights::{BigramWeights, BlockWeights, Matrix, ModelWeights, Param, ValueEmbedWeights};
