//! CPU forward throughput (tokens/s) at seq 1024 on the baseline 9-layer reference artifact.
//!
//! Besides criterion's report it prints `rust_cpu_tokens_per_s <batch> <value>` (median of 5
//! timed runs after 2 warm-ups) so `scripts/bench-cpu.sh` can set it beside PyTorch's figure,
//! the same as `rust_cpu_bf16_tokens_per_s <batch> <value>` for `--precision bf16` where the
//! CPU has a bf16 kernel (else a line `rust_cpu_bf16_unavailable <why>`),
//! and per-op times at the same shapes (`rust_cpu_op_ms <op> <ms>`). Like the CLI, it first
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
        let (tag, label) = match precision {
            Precision::Bf16 => ("rust_cpu_bf16_tokens_per_s", "_bf16"),
            _ => ("rust_cpu_tokens_per_s", ""),
        };
        for batch in [1usize, 4] {
            let n = batch * SEQ;
            let (ids, tgt) = (&toks[..n], &toks[1..n + 1]);
            let run = || model.nll(ids, tgt, batch, SEQ, None).expect("forward");
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
            if batch == 1 && precision == Precision::F32 {
                ops();
            }
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(format!("seq{SEQ}_batch{batch}{label}"), |b| b.iter(run));
        }
    }
    group.finish();
}

/// Per-op timings at the baseline9L shapes (one 1024-token window), printed as
/// `rust_cpu_op_ms <op> <ms>` (median of 5 after 1 warm-up).
fn ops() {
    use pgolf_rt::backend::{AttnGeometry, Backend};
    let be = CpuBackend::new();
    let (t, d, hd) = (SEQ, 512usize, 64usize);
    let f = |n: usize, s: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * s).sin()).collect() };
    let up = |n: usize, c: usize, s: f32| be.upload(&f(n * c, s), n, c).expect("upload");
    let time = |name: &str, run: &dyn Fn()| {
        run();
        let mut ms: Vec<f64> = (0..5)
            .map(|_| {
                let s = Instant::now();
                run();
                s.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        println!("rust_cpu_op_ms {name} {:.2}", ms[2]);
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
    let w = up(d, d, 0.07);
    time("linear_512x512", &|| {
        be.linear(&x, &w).expect("linear");
    });
    let w2 = up(2 * d, d, 0.05);
    time("linear_512x1024", &|| {
        be.linear(&x, &w2).expect("linear");
    });
    time("rms_norm", &|| {
        be.rms_norm(&x, 1e-6, 1.0).expect("rms_norm");
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
