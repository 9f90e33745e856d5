//! Scoring with the scores left on the device until the caller reads them
//! (`TextScorer::start_pass` / `finish_pass`): what the browser demo runs on WebGPU, where nothing
//! may wait for the GPU. On the committed tiny model and a text of several windows:
//!   * on the CPU, passes give `Model::score` bit for bit, and a stale pass or values of the
//!     wrong length are refused;
//!   * on wgpu, passes read back through `WgpuBackend::start_download` (the asynchronous
//!     download a browser uses) give the blocking steps' scores bit for bit, and the CPU's
//!     within 1e-4 bits per byte (f32 weights).

mod common;

use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::backend::Backend;
use pgolf_rt::model::ConfigOverrides;
use pgolf_rt::{Model, TextScorer};

fn file(rel: &str) -> Vec<u8> {
    let p = format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn tiny_on<B: Backend>(backend: B) -> Model<B> {
    let (a, t) = (
        file("models/pg-tiny-4L128.int8.ptz"),
        file("models/pg_sp1024_bpe.model"),
    );
    let mut m = Model::from_bytes_on(backend, &a, &t, &ConfigOverrides::default()).expect("model");
    m.context = 256; // several windows of a ~1 KB text, each short enough for any adapter
    m
}

fn text() -> String {
    String::from_utf8(file("examples/web/fixed_text.txt"))
        .unwrap()
        .repeat(2)
}

/// Scores with passes, downloading each pass's values with `download`.
fn score_by_passes<B: Backend>(
    mut job: TextScorer<'_, B>,
    download: impl Fn(&B::Tensor) -> Vec<f32>,
) -> pgolf_rt::eval::TextScore {
    let mut passes = 0;
    while let Some(p) = job.start_pass().expect("start pass") {
        let v = download(p.nll());
        assert_eq!(v.len(), p.targets());
        job.finish_pass(p, &v).expect("finish pass");
        passes += 1;
    }
    assert!(passes > 1, "the text must take several passes");
    job.finish().expect("score")
}

#[test]
fn passes_score_as_the_steps_do_on_the_cpu() {
    let m = tiny_on(CpuBackend::new());
    let text = text();
    let want = m.score(&text).unwrap();
    let got = score_by_passes(m.scorer(&text).unwrap(), |t| {
        m.backend().download(t).unwrap()
    });
    assert_eq!(got, want);

    // Mixed with layer steps: a layer-stepped group is finished by the pass.
    let mut job = m.scorer(&text).unwrap().with_batch(1);
    job.step_layers(1).unwrap();
    let p = job.start_pass().unwrap().unwrap();
    let v = m.backend().download(p.nll()).unwrap();
    job.finish_pass(p, &v).unwrap();
    job.step(usize::MAX).unwrap();
    let mut one = m.scorer(&text).unwrap().with_batch(1);
    one.step(usize::MAX).unwrap();
    assert_eq!(job.finish().unwrap(), one.finish().unwrap());

    // A stale pass (its windows were scored by a step since) and wrong lengths are refused.
    let mut job = m.scorer(&text).unwrap();
    let stale = job.start_pass().unwrap().unwrap();
    let v = m.backend().download(stale.nll()).unwrap();
    job.step(1).unwrap();
    let e = job.finish_pass(stale, &v).unwrap_err().to_string();
    assert!(e.contains("scorer is at window"), "{e}");
    let p = job.start_pass().unwrap().unwrap();
    let e = job.finish_pass(p, &v[1..]).unwrap_err().to_string();
    assert!(e.contains("values came"), "{e}");
    // A dropped pass changes nothing: the next one scores the same windows.
    drop(job.start_pass().unwrap());
    let p = job.start_pass().unwrap().unwrap();
    let v = m.backend().download(p.nll()).unwrap();
    job.finish_pass(p, &v).unwrap();
    job.step(usize::MAX).unwrap();
    assert_eq!(job.finish().unwrap(), want);
}

#[cfg(feature = "wgpu")]
#[test]
fn passes_read_back_asynchronously_on_wgpu_match_the_blocking_steps() {
    use pgolf_rt::backend::wgpu::WgpuBackend;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let gpu = match WgpuBackend::with_f16_weights(false) {
        Ok(g) => g,
        Err(e) => return common::skip("PGOLF_REQUIRE_WGPU", e),
    };
    eprintln!("{}", gpu.name());
    let m = tiny_on(gpu);
    let text = text();
    let blocking = m.score(&text).unwrap();
    let be = m.backend();
    let got = score_by_passes(m.scorer(&text).unwrap(), |t| {
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let d = be
            .start_download(t, move || flag.store(true, Ordering::SeqCst))
            .unwrap();
        if !d.is_ready() {
            // Not arrived: taking it now is an error, never a wait.
            let early = be
                .start_download(t, || {})
                .and_then(|e| be.finish_download(e));
            assert!(early.is_err(), "a download taken before it arrived");
        }
        be.synchronize().unwrap(); // natively the device poll runs the callback
        assert!(ready.load(Ordering::SeqCst) && d.is_ready());
        be.finish_download(d).unwrap()
    });
    assert_eq!(
        got, blocking,
        "passes and blocking steps on the same adapter"
    );

    let cpu = tiny_on(CpuBackend::new()).score(&text).unwrap();
    let diff = (got.bits_per_byte - cpu.bits_per_byte).abs();
    eprintln!(
        "wgpu {:.6} cpu {:.6} bits per byte (diff {diff:.2e})",
        got.bits_per_byte, cpu.bits_per_byte
    );
    assert!(
        diff < 1e-4,
        "wgpu and CPU differ by {diff:.2e} bits per byte"
    );
}
