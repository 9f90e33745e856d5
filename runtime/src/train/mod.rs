//! Training machinery shared by `pgolf-rt train` and test-time training: a taped forward
//! ([`TrainModel::forward`]), the model backward ([`TrainModel::backward`]) for all weights or
//! LoRA adapters only, LoRA adapters ([`lora`]) and the Adam family of optimisers ([`adam`]).

pub mod adam;
mod backward;
mod head;
pub mod lora;
pub mod params;
pub mod sgd;
mod tape;

pub use adam::{Adam, AdamConfig, OptimizerKind};
pub use backward::Gradients;
pub use lora::{Adapter, Lora, LoraGrads, LoraTargets, Proj, Site};
pub use sgd::Sgd;
pub use tape::{DeviceLora, Tape, TrainModel};
