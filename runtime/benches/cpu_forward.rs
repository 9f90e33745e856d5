//! CPU forward throughput (tokens/s) at seq 1024 on the baseline 9-layer reference artifact.
//!
//! Besides criterion's report it prints `rust_cpu_tokens_per_s <batch> <value>` (median of 5
//! timed runs after 2 warm-ups) so `scripts/bench-cpu.sh` can set it beside PyTorch's figure,
//! the same as `rust_cpu_bf16_tokens_per_s <batch> <value>` for `--precision bf16` where the
//! CPU has a bf16 kernel (else a line `rust_cpu_bf16_unavailable <why>`),
//! and per-op times at the same shapes (`rust_cpu_op_ms <op> <ms>`, `rust_cpu_bf16_op_ms` for
//! bf16; `PGOLF_BENCH_OPS_ONLY=1` prints only those, `PGOLF_BENCH_OPS_REPS=N` times each N times). Like the CLI, it first
//! tunes the allocator to keep freed memory ([`pgolf_rt::alloc::retain_freed_memory`]).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgolf_rt::artifact::Artifact;
use pgolf_rt::backend::cpu::{bf16, CpuBackend};
use pgolf_rt::backend::Precision;
use pgolf_rt::data::Shard;
use pgolf_rt::model::{ConfigOverrides, DeviceModel, ModelWeights};
use std::path::PathBuf;
use std::time::Instant;

const SEQ: usize = 1024;

fn shared() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared"));
    p.is_dir().then_some(p)
}

fn bench(c: &mut Criterion) {
    // As the CLI does (`PGOLF_RETAIN_MEMORY=0` measures without it).
    let retain = std::env::var("PGOLF_RETAIN_MEMORY").map_or(true, |v| v != "0")
        && pgolf_rt::alloc::retain_freed_memory();
    eprintln!("rust_cpu_retain_freed_memory {retain}");
    let ops_only = std::env::var_os("PGOLF_BENCH_OPS_ONLY").is_some();
    let Some(s) = shared() else {
        eprintln!("SKIPPED: ../shared is absent");
        return;
    };
    let art = Artifact::load(s.join("reference/baseline9L_int8_zlib.ptz")).expect("artifact");
    let w = ModelWeights::from_artifact(&art, &ConfigOverrides::default()).expect("weights");
    let shard = Shard::open(s.join("data/text_sp1024/fineweb_val_000000.bin")).expect("shard");
    let toks = shard.tokens();
    let mut group = c.benchmark_group("cpu_forward_baseline9L");
    group.sample_size(10);
    let mut precisions = vec![Precision::F32];
    match bf16::Kernel::detect() {
        Some(_) => precisions.push(Precision::Bf16),
        None => println!("rust_cpu_bf16_unavailable {}", bf16::unavailable_reason()),
    }
    for precision in precisions {
        let be = CpuBackend::with_precision(precision).expect("backend");
        eprintln!("rust_cpu_backend {}", pgolf_rt::backend::Backend::name(&be));
        let model = DeviceModel::new(be, &w).expect("model");
        let (tag, op_tag, label) = match precision {
            Precision::Bf16 => ("rust_cpu_bf16_tokens_per_s", "rust_cpu_bf16_op_ms", "_bf16"),
            _ => ("rust_cpu_tokens_per_s", "rust_cpu_op_ms", ""),
        };
        for batch in [1usize, 4] {
            let n = batch * SEQ;
            let (ids, tgt) = (&toks[..n], &toks[1..n + 1]);
            let run = || model.nll(ids, tgt, batch, SEQ, None).expect("forward");
            if ops_only {
                if batch == 1 {
                    ops(model.backend(), op_tag);
                }
                continue;
            }
            for _ in 0..2 {
                run();
            }
            let mut times: Vec<f64> = (0..5)
                .map(|_| {
                    let t = Instant::now();
                    run();
                    t.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(|a, b| a.total_cmp(b));
            println!("{tag} {batch} {:.0}", n as f64 / times[2]);
            if batch == 1 {
                ops(model.backend(), op_tag);
            }
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(format!("seq{SEQ}_batch{batch}{label}"), |b| b.iter(run));
        }
    }
    group.finish();
}

/// Per-op timings at the baseline9L shapes (one 1024-token window), printed as
/// `rust_cpu_op_ms <op> <ms>` (median of 5 after 1 warm-up).
fn ops(be: &CpuBackend, tag: &str) {
    use pgolf_rt::backend::{AttnGeometry, Backend};
    let (t, d, hd) = (SEQ, 512usize, 64usize);
    let f = |n: usize, s: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * s).sin()).collect() };
    let up = |n: usize, c: usize, s: f32| be.upload(&f(n * c, s), n, c).expect("upload");
    // Weights as the model uploads them (packed once in bf16 mode).
    let weight = |n: usize, c: usize, s: f32| be.upload_weight(&f(n * c, s), n, c).expect("upload");
    // `PGOLF_BENCH_OPS_REPS` timed runs per op (default 5): the median, and the minimum.
    let reps = std::env::var("PGOLF_BENCH_OPS_REPS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(5)
        .max(1);
    let time = |name: &str, run: &dyn Fn()| {
        run();
        let mut ms: Vec<f64> = (0..reps)
            .map(|_| {
                let s = Instant::now();
                run();
                s.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        println!("{tag} {name} {:.2} (min {:.2})", ms[reps / 2], ms[0]);
    };
    let g = AttnGeometry {
        batch: 1,
        seq: t,
        heads: 8,
        kv_heads: 4,
        head_dim: hd,
    };
    let (q, k, v) = (up(t, d, 0.37), up(t, 256, 0.91), up(t, 256, 0.13));
    time("attention", &|| {
        be.attention(&q, &k, &v, &g, false).expect("attention");
    });
    let x = up(t, d, 0.11);
    let w = weight(d, d, 0.07);
    time("linear_512x512", &|| {
        be.linear(&x, &w).expect("linear");
    });
    let w2 = weight(2 * d, d, 0.05);
    time("linear_512x1024", &|| {
        be.linear(&x, &w2).expect("linear");
    });
    time("rms_norm", &|| {
        be.rms_norm(&x, 1e-6, 1.0).expect("rms_norm");
    });
    let h = up(t, 2 * d, 0.03);
    let w3 = weight(d, 2 * d, 0.02);
    time("linear_1024x512", &|| {
        be.linear(&h, &w3).expect("linear");
    });
    time("activation_relu2_1024", &|| {
        be.activation(&h, pgolf_rt::model::Activation::Relu2)
            .expect("activation");
    });
    let x0 = up(t, d, 0.19);
    let mix = up(2, d, 0.23);
    time("resid_mix", &|| {
        be.resid_mix(&x, &x0, &mix).expect("resid_mix");
    });
    let scale = up(1, d, 0.29);
    time("add_scaled", &|| {
        let mut y = be.copy(&x).expect("copy");
        be.add_scaled(&mut y, &x0, &scale).expect("add_scaled");
    });
    time("copy", &|| {
        be.copy(&x).expect("copy");
    });
    let gain = up(1, 8, 0.31);
    let rope = pgolf_rt::backend::RopeSpec {
        base: 10000.0,
        dims: hd,
    };
    time("qk_norm_rope", &|| {
        let (mut q2, mut k2) = (be.copy(&q).expect("copy"), be.copy(&k).expect("copy"));
        be.qk_norm_rope(&mut q2, &mut k2, &g, &rope, &gain, 1e-6)
            .expect("qk_norm_rope");
    });
    let head = weight(1024, d, 0.017);
    let targets: Vec<u32> = (0..t as u32).map(|i| i * 7 % 1024).collect();
    time("nll_head_1024", &|| {
        be.nll(&x, &head, &targets, 30.0).expect("nll");
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
