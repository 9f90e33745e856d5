//! The model: architecture inferred from an artifact, typed weights, and the forward pass
//! written once against the [`crate::backend::Backend`] trait.

mod config;
mod forward;
mod weights;

pub use config::{Activation, BigramConfig, ConfigOverrides, ModelConfig, ValueEmbedConfig};
pub use forward::DeviceModel;
pub use weights::{BlockWeights, Matrix, ModelWeights, Param};
