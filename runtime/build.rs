//! Build script. Does nothing unless the `cuda-emu` feature is on; then it compiles the CUDA
//! kernels of `../cuda/*.cu` for the host, so tests run them on the CPU (cuda/emu/README.md):
//!
//! 1. each file goes through the host C++ preprocessor (macros such as `ATTENTION_ENTRY`
//!    expand, so every entry point is visible),
//! 2. every `__global__` function found is registered by name, and `extern "C"` is dropped so
//!    each file's kernels live in their own C++ namespace (no symbol can clash with the rest
//!    of the program),
//! 3. the files, the CUDA prelude (`cuda/emu/cuda_emu.h`) and the fiber scheduler
//!    (`cuda/emu/runtime.cpp`) are compiled into one static library.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "cuda-emu")]
    emu::build();
}

#[cfg(feature = "cuda-emu")]
mod emu {
    use std::fmt::Write as _;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    pub fn build() {
        let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
        let cuda = manifest.join("../cuda");
        let emu = cuda.join("emu");
        let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
        println!("cargo:rerun-if-changed={}", cuda.display());
        println!("cargo:rerun-if-changed={}", emu.display());

        let mut files: Vec<PathBuf> = std::fs::read_dir(&cuda)
            .unwrap_or_else(|e| panic!("cuda-emu: cannot read {}: {e}", cuda.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cu"))
            .collect();
        files.sort();
        // Kernels that test the emulator itself (never part of the GPU backend).
        files.push(emu.join("selftest.cu"));

        let compiler = cc::Build::new().cpp(true).get_compiler();
        let mut unit = String::from("#include \"cuda_emu.h\"\n#include \"registry.h\"\n");
        let mut entries = Vec::new();
        for f in &files {
            println!("cargo:rerun-if-changed={}", f.display());
            let stem = f.file_stem().unwrap().to_string_lossy().replace('-', "_");
            let expanded = preprocess(compiler.path(), f);
            let names = kernel_names(&expanded);
            assert!(
                !names.is_empty(),
                "cuda-emu: no __global__ function in {}",
                f.display()
            );
            let ns = format!("pgolf_emu_{stem}");
            writeln!(unit, "namespace {ns} {{").unwrap();
            unit.push_str(&expanded.replace("extern \"C\"", ""));
            writeln!(unit, "\n}}  // namespace {ns}").unwrap();
            entries.extend(names.into_iter().map(|n| (ns.clone(), n)));
        }
        unit.push_str("namespace pgolf_emu {\nconst Kernel KERNELS[] = {\n");
        for (ns, n) in &entries {
            writeln!(
                unit,
                "    {{\"{n}\", nargs_of(&::{ns}::{n}), sizes_of(&::{ns}::{n}), &call<&::{ns}::{n}>}},"
            )
            .unwrap();
        }
        writeln!(
            unit,
            "}};\nconst size_t NUM_KERNELS = {};\n}}  // namespace pgolf_emu",
            entries.len()
        )
        .unwrap();
        let generated = out.join("emu_kernels.cpp");
        std::fs::write(&generated, unit).unwrap();

        cc::Build::new()
            .cpp(true)
            .std("c++17")
            .include(&emu)
            .file(emu.join("runtime.cpp"))
            .file(&generated)
            .opt_level(2)
            .warnings(false)
            .flag_if_supported("-Wno-unknown-pragmas")
            // The device does not flush denormals here either (NVRTC --ftz=false).
            .flag_if_supported("-fno-fast-math")
            .compile("pgolf_cuda_emu");
    }

    /// The file after the host preprocessor (line markers kept, so compile errors name the
    /// `.cu` file and line).
    fn preprocess(cxx: &Path, file: &Path) -> String {
        let out = Command::new(cxx)
            .args(["-E", "-x", "c++"])
            .arg(file)
            .output()
            .unwrap_or_else(|e| panic!("cuda-emu: cannot run {}: {e}", cxx.display()));
        assert!(
            out.status.success(),
            "cuda-emu: preprocessing {} failed:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("preprocessed source is UTF-8")
    }

    /// Names of the `__global__` functions: `__global__ void [__launch_bounds__(...)] NAME(`.
    fn kernel_names(src: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = src;
        while let Some(i) = rest.find("__global__") {
            rest = &rest[i + "__global__".len()..];
            let mut s = rest.trim_start();
            s = s.strip_prefix("void").unwrap_or(s).trim_start();
            if let Some(lb) = s.strip_prefix("__launch_bounds__") {
                let close = lb.find(')').expect("__launch_bounds__(...) is closed");
                s = lb[close + 1..].trim_start();
            }
            let end = s
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            if end > 0 && s[end..].trim_start().starts_with('(') {
                names.push(s[..end].to_string());
            }
        }
        names
    }
}
