//! Training machinery shared by `pgolf-rt train` and test-time training: the taped forward
//! ([`TrainModel::forward`], the inference forward of [`crate::model::DeviceModel`] recording
//! its activations), the model backward ([`TrainModel::backward`]) for all weights or
//! LoRA adapters only, LoRA adapters ([`lora`]) and the Adam family of optimisers ([`adam`]).

pub mod adam;
mod backward;
pub mod lora;
mod tape;

pub use crate::model::{DeviceLora, Tape};
pub use adam::{Adam, AdamConfig, OptimizerKind};
pub use backward::Gradients;
pub use lora::{Adapter, Lora, LoraGrads, LoraTargets, Proj, Site};
pub use tape::TrainModel;
