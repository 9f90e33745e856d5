//! CPU forward throughput (tokens/s) at seq 1024 on the baseline 9-layer reference artifact.
//!
//! Besides criterion's report it prints `rust_cpu_tokens_per_s <batch> <value>` (median of 5
//! timed runs after 2 warm-ups) so `scripts/bench-cpu.sh` can set it beside PyTorch's figure.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgolf_rt::artifact::Artifact;
use pgolf_rt::backend::cpu::CpuBackend;
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
    let Some(s) = shared() else {
        eprintln!("SKIPPED: ../shared is absent");
        return;
    };
    let art = Artifact::load(s.join("reference/baseline9L_int8_zlib.ptz")).expect("artifact");
    let w = ModelWeights::from_artifact(&art, &ConfigOverrides::default()).expect("weights");
    let model = DeviceModel::new(CpuBackend::new(), &w).expect("model");
    let shard = Shard::open(s.join("data/text_sp1024/fineweb_val_000000.bin")).expect("shard");
    let toks = shard.tokens();
    let mut group = c.benchmark_group("cpu_forward_baseline9L");
    group.sample_size(10);
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
        println!("rust_cpu_tokens_per_s {batch} {:.0}", n as f64 / times[2]);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("seq{SEQ}_batch{batch}"), |b| b.iter(run));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
