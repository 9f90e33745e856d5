//! `pgolf-rt devices`: what this build and this machine offer: the backends compiled in, the
//! CPU, and for CUDA the device, the library files actually loaded and their versions, the
//! precisions, and how the kernels were obtained (compiled, from the disk cache). The GPU
//! check's first stage.

use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Exit non-zero unless a CUDA device opens (also when `PGOLF_REQUIRE_CUDA=1`).
    #[arg(long)]
    require_cuda: bool,
}

/// The cargo features this binary was built with.
fn features() -> Vec<&'static str> {
    let mut f = vec!["cli"];
    if cfg!(feature = "parallel") {
        f.push("parallel");
    }
    if cfg!(feature = "cuda") {
        f.push("cuda");
    }
    if cfg!(feature = "cuda-emu") {
        f.push("cuda-emu");
    }
    if cfg!(feature = "wgpu") {
        f.push("wgpu");
    }
    f
}

fn cpu() -> Value {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_string(), |(_, v)| v.trim().to_string());
    #[cfg(target_arch = "x86_64")]
    let simd = if std::is_x86_feature_detected!("avx512f") {
        "avx512"
    } else if std::is_x86_feature_detected!("avx2") {
        "avx2"
    } else {
        "sse2"
    };
    #[cfg(not(target_arch = "x86_64"))]
    let simd = std::env::consts::ARCH;
    json!({
        "model": model,
        "threads": rayon::current_num_threads(),
        "simd": simd,
        "bf16_kernel": pgolf_rt::backend::cpu::bf16::Kernel::detect().map(|k| k.name()),
        "precisions": pgolf_rt::backend::cpu::CpuBackend::precisions()
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>(),
    })
}

#[cfg(feature = "cuda")]
fn cuda() -> Value {
    use pgolf_rt::backend::cuda::{libs, modules, reason, CudaBackend};
    let preload: Vec<Value> = libs::preload()
        .iter()
        .map(|p| match &p.outcome {
            Ok(how) => json!({"name": p.name, "found": how}),
            Err(why) => json!({"name": p.name, "missing": why}),
        })
        .collect();
    let opened = CudaBackend::new();
    let loaded: serde_json::Map<String, Value> = libs::resolved()
        .into_iter()
        .map(|(n, p)| {
            (
                n.to_string(),
                p.map_or(Value::Null, |p| json!(p.display().to_string())),
            )
        })
        .collect();
    let nvrtc = modules::nvrtc_version()
        .ok()
        .map(|(a, b)| format!("{a}.{b}"));
    let mut v = json!({
        "available": opened.is_ok(),
        "libraries": loaded,
        "search": preload,
        "nvrtc_version": nvrtc,
        "nccl_version": libs::nccl_version(),
        "kernel_cache": modules::cache_dir().map(|d| d.display().to_string()),
    });
    match opened {
        Ok(be) => {
            let g = be.gpu();
            let d = g.device();
            v["device"] = json!({
                "name": d.name,
                "compute_capability": format!("{}.{}", d.compute_capability.0, d.compute_capability.1),
                "memory_bytes": d.total_memory,
                "multiprocessors": d.multiprocessors,
            });
            v["driver_cuda_version"] = json!(format!(
                "{}.{}",
                d.driver_version / 1000,
                (d.driver_version % 1000) / 10
            ));
            v["cublas_version"] = json!(g.cublas_version());
            v["kernels"] = json!(g.kernel_report().to_string());
            v["precisions"] = json!(CudaBackend::<pgolf_rt::backend::cuda::CudaGpu>::PRECISIONS
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>());
            v["backend"] = json!(pgolf_rt::backend::Backend::name(&be));
        }
        Err(e) => v["error"] = json!(reason(&e)),
    }
    v
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Value {
    match pgolf_rt::backend::wgpu::WgpuBackend::new() {
        Ok(b) => {
            let i = b.adapter_info();
            json!({
                "available": true,
                "adapter": i.name,
                "driver": i.driver,
                "driver_info": i.driver_info,
                "api": format!("{:?}", i.backend),
                "device_type": format!("{:?}", i.device_type),
                "precisions": [pgolf_rt::backend::Precision::F32.name()],
            })
        }
        Err(e) => json!({"available": false, "error": e.to_string()}),
    }
}

pub fn run(a: DevicesArgs) -> Result<()> {
    #[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(unused_mut))]
    let mut report = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "features": features(),
        "cpu": cpu(),
    });
    #[cfg(feature = "cuda")]
    {
        report["cuda"] = cuda();
    }
    #[cfg(feature = "wgpu")]
    {
        report["wgpu"] = wgpu();
    }
    print_human(&report);
    if a.json {
        println!("{report}");
    }
    let require = a.require_cuda || std::env::var("PGOLF_REQUIRE_CUDA").is_ok_and(|v| v == "1");
    if require {
        let ok = report["cuda"]["available"].as_bool().unwrap_or(false);
        let why = report["cuda"]["error"]
            .as_str()
            .unwrap_or("this pgolf-rt was built without the `cuda` feature");
        anyhow::ensure!(ok, "CUDA is required but unavailable: {why}");
    }
    Ok(())
}

fn print_human(r: &Value) {
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    println!(
        "pgolf-rt {} (features: {})",
        s(&r["version"]),
        r["features"]
            .as_array()
            .map(|f| f.iter().map(s).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    );
    let c = &r["cpu"];
    let list = |v: &Value| {
        v.as_array()
            .map(|p| p.iter().map(s).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    println!(
        "cpu: {}, {} threads, {}{}; precisions: {}",
        s(&c["model"]),
        c["threads"],
        s(&c["simd"]),
        match c["bf16_kernel"].as_str() {
            Some(k) => format!(", bf16 on {k}"),
            None => String::new(),
        },
        list(&c["precisions"])
    );
    let cu = &r["cuda"];
    if !cu.is_null() {
        if cu["available"].as_bool() == Some(true) {
            let d = &cu["device"];
            println!(
                "cuda: {} (sm {}, {:.1} GiB, {} SMs), driver CUDA {}, NVRTC {}, cuBLAS {}, NCCL {}; precisions: {}",
                s(&d["name"]),
                s(&d["compute_capability"]),
                d["memory_bytes"].as_f64().unwrap_or(0.0) / (1u64 << 30) as f64,
                d["multiprocessors"],
                s(&cu["driver_cuda_version"]),
                s(&cu["nvrtc_version"]),
                cu["cublas_version"],
                s(&cu["nccl_version"]),
                cu["precisions"]
                    .as_array()
                    .map(|p| p.iter().map(s).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            );
            println!("  kernels: {}", s(&cu["kernels"]));
        } else {
            println!(
                "cuda: unavailable: {} (NVRTC {})",
                s(&cu["error"]),
                s(&cu["nvrtc_version"])
            );
        }
        if let Some(libs) = cu["libraries"].as_object() {
            for (name, path) in libs {
                println!(
                    "  {name:<18} {}",
                    if path.is_null() {
                        "(not loaded)".into()
                    } else {
                        s(path)
                    }
                );
            }
        }
        println!(
            "  kernel cache: {}",
            if cu["kernel_cache"].is_null() {
                "off".into()
            } else {
                s(&cu["kernel_cache"])
            }
        );
    }
    let w = &r["wgpu"];
    if !w.is_null() {
        if w["available"].as_bool() == Some(true) {
            println!(
                "wgpu: {} ({}, {}, {}); precisions: f32",
                s(&w["adapter"]),
                s(&w["api"]),
                s(&w["device_type"]),
                s(&w["driver"])
            );
        } else {
            println!("wgpu: unavailable: {}", s(&w["error"]));
        }
    }
}
