//! The model: architecture inferred from an artifact, typed weights, and the forward pass
//! written once against the [`crate::backend::Backend`] trait (optionally with LoRA adapters and
//! recording the activations training needs).

pub(crate) mod adapters;
mod config;
mod forward;
mod weights;

pub use adapters::DeviceLora;
pub use config::{Activation, BigramConfig, ConfigOverrides, ModelConfig, ValueEmbedConfig};
pub(crate) use forward::{ln_scale, BlockTape, Forward};
pub use forward::{DeviceModel, Tape};
pub use weights::{BigramWeights, BlockWeights, Matrix, ModelWeights, Param, ValueEmbedWeights};
