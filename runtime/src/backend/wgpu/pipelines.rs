//! Pipeline cache: the WGSL sources (one kernel per file in the top-level `shaders/` folder,
//! compiled in with `include_str!`) and their compute pipelines, built on first use.
//!
//! Every kernel has a `main` entry point, a uniform parameter block at binding 0 and its storage
//! buffers at bindings 1.. in declaration order; layouts are derived by wgpu. `attention.wgsl`
//! is specialised per head size by rewriting its `const HD` line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The kernels, one per shader file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    Embedding,
    Matmul,
    RmsNorm,
    ResidMix,
    AddScaled,
    Axpy,
    Smear,
    QkNormRope,
    Attention,
    Activation,
    Nll,
    LogSoftmax,
}

/// `(file name, source)` of every shader.
pub(crate) const SOURCES: &[(&str, &str)] = &[
    (
        "embedding.wgsl",
        include_str!("../../../../shaders/embedding.wgsl"),
    ),
    (
        "matmul.wgsl",
        include_str!("../../../../shaders/matmul.wgsl"),
    ),
    (
        "rms_norm.wgsl",
        include_str!("../../../../shaders/rms_norm.wgsl"),
    ),
    (
        "resid_mix.wgsl",
        include_str!("../../../../shaders/resid_mix.wgsl"),
    ),
    (
        "add_scaled.wgsl",
        include_str!("../../../../shaders/add_scaled.wgsl"),
    ),
    ("axpy.wgsl", include_str!("../../../../shaders/axpy.wgsl")),
    ("smear.wgsl", include_str!("../../../../shaders/smear.wgsl")),
    (
        "qk_norm_rope.wgsl",
        include_str!("../../../../shaders/qk_norm_rope.wgsl"),
    ),
    (
        "attention.wgsl",
        include_str!("../../../../shaders/attention.wgsl"),
    ),
    (
        "activation.wgsl",
        include_str!("../../../../shaders/activation.wgsl"),
    ),
    ("nll.wgsl", include_str!("../../../../shaders/nll.wgsl")),
    (
        "log_softmax.wgsl",
        include_str!("../../../../shaders/log_softmax.wgsl"),
    ),
];

/// The line of `attention.wgsl` that fixes the head size.
pub(crate) const ATTN_HD_LINE: &str = "const HD: u32 = 64u;";

/// The line of `matmul.wgsl` and `embedding.wgsl` that fixes the weight storage type.
pub(crate) const WEIGHT_TYPE_LINE: &str = "alias Weight = f32;";

/// `variant` of [`Kernel::Matmul`] and [`Kernel::Embedding`] reading f16 weights.
pub(crate) const F16_WEIGHTS: u32 = 1;

impl Kernel {
    fn file(self) -> &'static str {
        match self {
            Kernel::Embedding => "embedding.wgsl",
            Kernel::Matmul => "matmul.wgsl",
            Kernel::RmsNorm => "rms_norm.wgsl",
            Kernel::ResidMix => "resid_mix.wgsl",
            Kernel::AddScaled => "add_scaled.wgsl",
            Kernel::Axpy => "axpy.wgsl",
            Kernel::Smear => "smear.wgsl",
            Kernel::QkNormRope => "qk_norm_rope.wgsl",
            Kernel::Attention => "attention.wgsl",
            Kernel::Activation => "activation.wgsl",
            Kernel::Nll => "nll.wgsl",
            Kernel::LogSoftmax => "log_softmax.wgsl",
        }
    }

    /// The WGSL source, specialised by `variant` where the kernel has one (attention: head size;
    /// matmul and embedding: [`F16_WEIGHTS`] for f16 weight storage, which needs the device
    /// feature `SHADER_F16`).
    pub fn source(self, variant: u32) -> String {
        let src = SOURCES
            .iter()
            .find(|(f, _)| *f == self.file())
            .map(|(_, s)| *s)
            .unwrap_or_default();
        match self {
            Kernel::Attention => src.replace(ATTN_HD_LINE, &format!("const HD: u32 = {variant}u;")),
            Kernel::Matmul | Kernel::Embedding if variant == F16_WEIGHTS => format!(
                "enable f16;\n{}",
                src.replace(WEIGHT_TYPE_LINE, "alias Weight = f16;")
            ),
            _ => src.to_string(),
        }
    }
}

/// A compiled kernel and its bind group layout.
pub(crate) struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// Pipelines by `(kernel, variant)`, created on first use.
pub(crate) struct PipelineCache {
    device: wgpu::Device,
    map: Mutex<HashMap<(Kernel, u32), Arc<Pipeline>>>,
}

impl PipelineCache {
    pub fn new(device: wgpu::Device) -> Self {
        PipelineCache {
            device,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, kernel: Kernel, variant: u32) -> Arc<Pipeline> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((kernel, variant))
            .or_insert_with(|| {
                let label = kernel.file();
                let module = self
                    .device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(label),
                        source: wgpu::ShaderSource::Wgsl(kernel.source(variant).into()),
                    });
                let pipeline =
                    self.device
                        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                            label: Some(label),
                            layout: None,
                            module: &module,
                            entry_point: Some("main"),
                            compilation_options: Default::default(),
                            cache: None,
                        });
                let layout = pipeline.get_bind_group_layout(0);
                Arc::new(Pipeline { pipeline, layout })
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(name: &str, src: &str) -> Result<(), String> {
        validate_with(name, src, naga::valid::Capabilities::empty())
    }

    fn validate_with(name: &str, src: &str, caps: naga::valid::Capabilities) -> Result<(), String> {
        let module = naga::front::wgsl::parse_str(src)
            .map_err(|e| format!("{name}: parse error:\n{}", e.emit_to_string(src)))?;
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .validate(&module)
            .map_err(|e| format!("{name}: validation error:\n{}", e.emit_to_string(src)))?;
        if !module.entry_points.iter().any(|e| e.name == "main") {
            return Err(format!("{name}: no `main` entry point"));
        }
        Ok(())
    }

    /// Every `.wgsl` file in `shaders/` parses and validates with naga, and is compiled in.
    #[test]
    fn shaders_parse_and_validate() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shaders"));
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("shaders/ folder")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
            .collect();
        files.sort();
        assert!(
            files.len() >= SOURCES.len(),
            "shaders/ holds {} .wgsl files",
            files.len()
        );
        let mut errors = Vec::new();
        for path in &files {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let src = std::fs::read_to_string(path).expect("read shader");
            if let Err(e) = validate(&name, &src) {
                errors.push(e);
            }
            if !SOURCES.iter().any(|(f, s)| *f == name && *s == src) {
                errors.push(format!(
                    "{name} differs from the copy compiled into the backend (SOURCES; rebuild?)"
                ));
            }
        }
        // The head-size variants the backend builds for attention.
        for hd in [16u32, 32, 64, 128] {
            let src = Kernel::Attention.source(hd);
            assert!(src.contains(&format!("const HD: u32 = {hd}u;")));
            if let Err(e) = validate(&format!("attention.wgsl (HD={hd})"), &src) {
                errors.push(e);
            }
        }
        // The f16-weight variants: valid with the f16 capability (what `SHADER_F16` grants),
        // rejected without it.
        for kernel in [Kernel::Matmul, Kernel::Embedding] {
            let src = kernel.source(F16_WEIGHTS);
            assert!(src.starts_with("enable f16;") && src.contains("alias Weight = f16;"));
            let name = format!("{} (f16 weights)", kernel.file());
            if let Err(e) = validate_with(&name, &src, naga::valid::Capabilities::SHADER_FLOAT16) {
                errors.push(e);
            }
            assert!(
                validate(&name, &src).is_err(),
                "{name} validates without the f16 capability"
            );
        }
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }

    /// The validator catches a broken kernel (so the test above can fail).
    #[test]
    fn validator_rejects_a_broken_shader() {
        let bad = "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }";
        assert!(validate("bad", bad).is_err());
        let store_to_read_only = "@group(0) @binding(0) var<storage, read> a: array<f32>;\n\
            @compute @workgroup_size(64) fn main(@builtin(local_invocation_index) i: u32) {\n\
            a[i] = 1.0; }";
        assert!(validate("bad2", store_to_read_only).is_err());
        let no_main = "@compute @workgroup_size(1) fn other() {}";
        assert!(validate("bad3", no_main).is_err());
    }
}
