//! Training: `pgolf-rt train` and test-time training share these pieces.
//!
//! - [`TrainModel`]: the inference forward of [`crate::model::DeviceModel`] recording its
//!   activations, and the model backward (all weights or LoRA only);
//! - optimizers: [`muon`] for block matrices, [`adam`] groups, wired together in
//!   [`optimizers`] with the LR [`schedule`], gradient clipping, [`ema`] and [`qat`];
//! - [`trainer`]: the step loop of `train_gpt.py` over data-parallel ranks ([`collective`]),
//!   with [`checkpoint`]s; [`init`] builds a fresh model; [`lora`] holds TTT adapters.

pub mod adam;
mod backward;
mod base_grads;
pub mod checkpoint;
pub mod collective;
pub mod ema;
pub mod export;
pub mod groups;
mod head;
pub mod init;
pub mod lora;
pub mod muon;
pub mod optimizers;
pub mod params;
pub mod qat;
pub mod schedule;
pub mod select;
pub mod sgd;
mod tape;
pub mod trainer;

pub use crate::model::{DeviceLora, Tape};
pub use adam::{Adam, AdamConfig, DeviceAdam, OptimizerKind};
pub use backward::Gradients;
pub use base_grads::BaseGrads;
pub use checkpoint::{load_checkpoint, save_checkpoint};
pub use collective::{Collective, DeviceCollective, HostCollective, InProcess};
pub use ema::Ema;
pub use export::{export_weights, ExportKind};
pub use groups::MuonRoute;
pub use init::{init_weights, Architecture, InitConfig, SidecarArch};
pub use lora::{Adapter, Lora, LoraGrads, LoraTargets, Proj, Site};
pub use muon::{Muon, MuonConfig};
pub use optimizers::{LearningRates, OptimizerConfig, Optimizers};
pub use qat::{fake_quantized, QatMode};
pub use schedule::Schedule;
pub use select::ParamSelect;
pub use sgd::Sgd;
pub use tape::TrainModel;
pub use trainer::{HostState, PhaseLaunches, StepPhases, StepReport, TrainConfig, Trainer};
