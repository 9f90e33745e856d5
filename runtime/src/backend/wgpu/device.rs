//! Adapter and device selection.
//!
//! - `WGPU_BACKEND` (comma list: vulkan, metal, dx12, gl) picks the instance's backends
//!   (`InstanceDescriptor::new_without_display_handle_from_env`); the instance flags
//!   (`WGPU_VALIDATION`, `WGPU_DEBUG`, ...) come from the environment the same way.
//! - `WGPU_ADAPTER_NAME` (case-insensitive substring) picks an adapter by name through
//!   `wgpu::util::initialize_adapter_from_env_or_default`; `WGPU_POWER_PREF` (low/high) steers
//!   the default choice. A name that matches nothing is an error here (wgpu's helper would panic).
//! - `PGOLF_WGPU_FALLBACK=1` forces the software adapter (`force_fallback_adapter`: lavapipe,
//!   WARP, llvmpipe-GL) even on a machine with a GPU.
//!
//! - `PGOLF_WGPU_F32=1` keeps weights in f32 even where the adapter offers `SHADER_F16`.
//!
//! No adapter is `Err(Error::Backend("no wgpu adapter: ..."))`, never a panic. The device is
//! requested with the adapter's own limits (large storage buffers for long batches) and one
//! optional feature: `SHADER_F16` when the adapter has it and f16 weights are wanted (weight
//! matrices are then stored as f16; activations and accumulation stay f32). wgpu's uncaptured errors are recorded and surface as `Err` at the next
//! host synchronisation instead of panicking.

use crate::{Error, Result};
use std::sync::{Arc, Mutex};

/// An open device with its queue and what we know about the adapter.
pub(crate) struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// The adapter's optional features (whether or not requested).
    pub adapter_features: wgpu::Features,
    /// Whether the device was opened with `SHADER_F16` (weights stored as f16).
    pub f16: bool,
    /// First error wgpu reported asynchronously (validation, out of memory), if any.
    pub error: Arc<Mutex<Option<String>>>,
}

/// What to check when no adapter comes.
#[cfg(not(target_arch = "wasm32"))]
const NO_ADAPTER_HINT: &str =
    "is a Vulkan/Metal/DX12 driver installed? on Linux without a GPU: mesa-vulkan-drivers";
#[cfg(target_arch = "wasm32")]
const NO_ADAPTER_HINT: &str =
    "this browser offers no WebGPU adapter here (navigator.gpu absent, or no GPU it may use)";

fn no_adapter(why: impl std::fmt::Display) -> Error {
    Error::Backend(format!("no wgpu adapter: {why}"))
}

/// Whether `PGOLF_WGPU_FALLBACK=1` asks for the software adapter.
pub fn fallback_requested() -> bool {
    std::env::var("PGOLF_WGPU_FALLBACK").is_ok_and(|v| v.trim() == "1")
}

async fn pick_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    if fallback_requested() {
        return instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::from_env().unwrap_or_default(),
                force_fallback_adapter: true,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                no_adapter(format!(
                    "PGOLF_WGPU_FALLBACK=1 but no software adapter ({e})"
                ))
            });
    }
    if let Ok(name) = std::env::var("WGPU_ADAPTER_NAME") {
        // `initialize_adapter_from_env` panics when nothing matches; check first.
        let want = name.to_lowercase();
        let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        if !adapters
            .iter()
            .any(|a| a.get_info().name.to_lowercase().contains(&want))
        {
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            return Err(no_adapter(format!(
                "WGPU_ADAPTER_NAME={name:?} matches none of {names:?}"
            )));
        }
    }
    wgpu::util::initialize_adapter_from_env_or_default(instance, None)
        .await
        .map_err(|e| no_adapter(format!("{e} ({})", NO_ADAPTER_HINT)))
}

/// Whether `PGOLF_WGPU_F32=1` asks for f32 weight storage.
pub fn f32_requested() -> bool {
    std::env::var("PGOLF_WGPU_F32").is_ok_and(|v| v.trim() == "1")
}

/// Opens the adapter chosen by the environment (see the module doc), with `SHADER_F16` when
/// `want_f16` and the adapter offers it. Natively it waits for the adapter and the device; in
/// WebAssembly it cannot (a browser answers with promises), so it is an error there: use
/// [`open_async`].
pub(crate) fn open(want_f16: bool) -> Result<Gpu> {
    #[cfg(target_arch = "wasm32")]
    {
        let _ = want_f16;
        Err(Error::Backend(
            "wgpu in WebAssembly: the browser's WebGPU answers asynchronously, so open the \
             backend with WgpuBackend::new_async"
                .into(),
        ))
    }
    #[cfg(not(target_arch = "wasm32"))]
    pollster::block_on(open_async(want_f16))
}

/// [`open`] as a future: what a browser awaits (its WebGPU adapter and device are promises).
pub(crate) async fn open_async(want_f16: bool) -> Result<Gpu> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pick_adapter(&instance).await?;
    let info = adapter.get_info();
    let limits = adapter.limits();
    let adapter_features = adapter.features();
    let f16 = want_f16 && adapter_features.contains(wgpu::Features::SHADER_F16);
    let required_features = if f16 {
        wgpu::Features::SHADER_F16
    } else {
        wgpu::Features::empty()
    };
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("pgolf-rt"),
            required_features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        })
        .await
        .map_err(|e| {
            Error::Backend(format!(
                "wgpu adapter {:?}: cannot open a device: {e}",
                info.name
            ))
        })?;
    let error = Arc::new(Mutex::new(None::<String>));
    let slot = error.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_none() {
            *s = Some(e.to_string());
        }
    }));
    Ok(Gpu {
        device,
        queue,
        info,
        limits,
        adapter_features,
        f16,
        error,
    })
}
