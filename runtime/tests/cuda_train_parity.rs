//! The CUDA backend's training ops ([`TrainBackend`]) against the CPU oracle: every backward op
//! on small shapes (the conformance suite's, `common/conformance/train.rs`), whole-model gradients of tiny models (base weights and LoRA adapters, with
//! every optional module), a few optimizer steps of the trainer, full-model TTT on a tiny model
//! (the same scores, and no weight upload per step), and LoRA test-time training on the first
//! documents of the val shard (the same bpb).
//!
//! Each check runs on a real GPU (`gpu::*`, skipped without one) and on the host emulator of
//! the kernels (`emu::*`, feature `cuda-emu`): see `common/devices.rs`.
#![cfg(feature = "cuda")]

mod common;

use common::conformance::{assert_close, AttnCase, AttnOp};
use common::devices::check_tensor_core_attention;
use common::tiny::{tiny, tiny_with_modules, V};
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::backend::cuda::gpu::Gpu;
use pgolf_rt::backend::cuda::CudaBackend;
use pgolf_rt::backend::train::TrainBackend;
use pgolf_rt::backend::Backend;
use pgolf_rt::model::{Activation, ConfigOverrides, ModelWeights};
use pgolf_rt::train::lora::SplitMix64;
use pgolf_rt::train::{Lora, LoraTargets, TrainModel};

/// `attention_backward` as an [`AttnOp`]: `(dq, dk, dv)`.
struct Backward;

impl AttnOp for Backward {
    fn outputs<B: TrainBackend>(&self, be: &B, c: &AttnCase) -> Vec<Vec<f32>> {
        let t = c.upload(be);
        let (dq, dk, dv) = be
            .attention_backward(&t[0], &t[1], &t[2], &t[3], &c.g, c.xsa)
            .unwrap();
        [dq, dk, dv]
            .iter()
            .map(|x| be.download(x).unwrap())
            .collect()
    }
}

/// The tensor-core backward (`cuda/attention_tc.cu`: TF32 stats forward, dQ and dK/dV) within
/// TF32 rounding of the oracle, relative to each gradient's scale.
fn attention_backward_on_tensor_cores<G: Gpu>(gpu: CudaBackend<G>) {
    let shapes = [
        (2, 100, 4, 2, 64),
        (1, 97, 4, 1, 32),
        (1, 1, 8, 4, 64),
        (1, 130, 2, 2, 64),
        (1, 40, 2, 1, 16),
    ];
    check_tensor_core_attention(gpu, &Backward, &shapes, 5e-3);
}

/// Every weight's gradient, flattened in `params_mut` order.
fn flat(w: &ModelWeights) -> Vec<(String, Vec<f32>)> {
    let mut w = w.clone();
    w.params_mut()
        .into_iter()
        .map(|p| (p.name, p.values.to_vec()))
        .collect()
}

/// Loss and gradients of a tiny model (every optional module in one of the configurations,
/// and LoRA adapters on every target) agree with the CPU oracle.
fn whole_model_gradients<G: Gpu>(gpu: CudaBackend<G>) {
    let configs = [
        (
            "baseline",
            tiny(
                7,
                false,
                &ConfigOverrides {
                    logit_softcap: Some(5.0),
                    ..Default::default()
                },
            ),
        ),
        (
            "bigram+smear+ve+xsa+ln_scale+leaky+partial_rope+untied",
            tiny_with_modules(
                7,
                true,
                4,
                &ConfigOverrides {
                    logit_softcap: Some(5.0),
                    xsa_last: Some(1),
                    ln_scale: Some(true),
                    rope_dims: Some(2),
                    activation: Some(Activation::LeakyRelu2 { slope: 0.5 }),
                    ..Default::default()
                },
            ),
        ),
    ];
    let mut r = SplitMix64(99);
    let ids: Vec<u32> = (0..14).map(|_| (r.next_u64() % V as u64) as u32).collect();
    let rows: Vec<usize> = vec![0, 2, 3, 5, 6, 7, 9, 12, 13];
    let t: Vec<u32> = rows
        .iter()
        .map(|_| (r.next_u64() % V as u64) as u32)
        .collect();
    for (name, w) in configs {
        let all = LoraTargets {
            q: true,
            k: true,
            v: true,
            o: true,
            mlp: true,
            head: true,
        };
        let mut lora = Lora::new(&w.config, all, 3, 5).unwrap();
        lora.adapters.iter_mut().for_each(|a| {
            a.b.data.iter_mut().for_each(|v| *v = r.next_f32() - 0.5);
        });
        let mc = TrainModel::new(CpuBackend::new(), &w).unwrap();
        let mg = TrainModel::new(gpu.clone(), &w).unwrap();
        for with_lora in [false, true] {
            let (lc, lg) = (
                mc.upload_lora(&lora).unwrap(),
                mg.upload_lora(&lora).unwrap(),
            );
            let (lc, lg) = if with_lora {
                (Some(&lc), Some(&lg))
            } else {
                (None, None)
            };
            let (loss_c, gc) = mc.loss_and_grads(&ids, 2, 7, &rows, &t, lc, true).unwrap();
            let (loss_g, gg) = mg.loss_and_grads(&ids, 2, 7, &rows, &t, lg, true).unwrap();
            let what = format!("{name} lora={with_lora}");
            println!("{what}: loss cpu {loss_c:.7} cuda {loss_g:.7}");
            assert!((loss_c - loss_g).abs() < 1e-5, "{what}: loss");
            let (bc, bg) = (flat(&gc.base.unwrap()), flat(&gg.base.unwrap()));
            assert_eq!(bc.len(), bg.len());
            for ((n, c), (_, g)) in bc.iter().zip(&bg) {
                assert_close(&format!("{what}: d {n}"), g, c, 1e-3);
            }
            if with_lora {
                let (ac, ag) = (gc.lora.unwrap(), gg.lora.unwrap());
                for (i, (c, g)) in ac.slices().iter().zip(ag.slices()).enumerate() {
                    assert_close(&format!("{what}: d lora[{i}]"), g, c, 1e-3);
                }
            }
        }
    }
}

/// Four optimizer steps of a tiny model on the training shards (Muon + Adam groups, clipping,
/// EMA, late QAT, two accumulation micro-steps): the same losses and weights as on the CPU, and
/// every step within the device-residency budget: no weight or optimizer-state upload (at most
/// 16 bytes per token + 4 KiB host to device), at most 1 KiB back, at most two waits.
fn trainer_steps<G: Gpu>(gpu: CudaBackend<G>) {
    trainer_steps_against_f32(
        gpu,
        StepTol {
            loss: 1e-4,
            grad_norm: 1e-3,
            weights: 1e-3,
            weights_rms: 1e-3,
        },
    );
}

/// The same four steps in bf16 (every GEMM of the forward, the backward and Muon's
/// Newton-Schulz on bf16 operands) against the CPU's float32, with the same residency budget.
/// Bounds, with what the emulator gave (2026-12-07): losses within 1e-2 (1.3e-3), gradient
/// norms within 5% (0.1%); after four steps each weight within 0.1 of its scale (5.3e-2, the
/// tied embedding under Adam) and its RMS difference within 0.25 of its RMS (0.10, the
/// zero-initialised output projections, which are four Muon updates and nothing else; 4e-3
/// for the other matrices). And the losses are not float32's to the bit.
fn trainer_steps_bf16<G: Gpu>(gpu: CudaBackend<G>) {
    let gpu = gpu
        .with_precision(pgolf_rt::backend::Precision::Bf16)
        .unwrap();
    trainer_steps_against_f32(
        gpu,
        StepTol {
            loss: 1e-2,
            grad_norm: 5e-2,
            weights: 1e-1,
            weights_rms: 2.5e-1,
        },
    );
}

/// How far the CUDA trainer may be from the CPU's float32: absolute on the loss, relative on
/// the gradient norm; on the final weights, the largest difference relative to each tensor's
/// scale (its largest value, at least 1) and the RMS difference relative to its RMS.
struct StepTol {
    loss: f64,
    grad_norm: f64,
    weights: f32,
    weights_rms: f64,
}

fn trainer_steps_against_f32<G: Gpu>(gpu: CudaBackend<G>, tol: StepTol) {
    let exact = gpu.precision() == pgolf_rt::backend::Precision::F32;
    let mut max_loss_diff = 0.0f64;
    use pgolf_rt::data::TokenStream;
    use pgolf_rt::train::{
        init_weights, Architecture, InitConfig, OptimizerConfig, QatMode, Schedule, TrainConfig,
        Trainer,
    };
    let Some(shared) = common::shared() else {
        return;
    };
    let glob = shared
        .join("data/text_sp1024/fineweb_train_*.bin")
        .to_string_lossy()
        .into_owned();
    let arch = Architecture {
        vocab_size: 1024,
        num_layers: 2,
        model_dim: 32,
        num_heads: 2,
        num_kv_heads: 1,
        mlp_mult: 2.0,
        tie_embeddings: true,
        ..Architecture::baseline()
    };
    let n = 4;
    let cfg = TrainConfig {
        iterations: n,
        train_batch_tokens: 512,
        train_seq_len: 64,
        world_size: 1,
        grad_accum_steps: 2,
        warmup_steps: 0,
        schedule: Schedule {
            iterations: n,
            warmdown_iters: 2,
            max_wallclock_ms: None,
            muon_momentum: 0.95,
            muon_momentum_warmup_start: 0.85,
            muon_momentum_warmup_steps: 2,
        },
        optim: OptimizerConfig {
            grad_clip_norm: 1.0,
            ..OptimizerConfig::default()
        },
        ema_decay: Some(0.9),
        qat: QatMode::Late(0.6),
        val_loss_every: 0,
        train_log_every: 1,
    };
    let w = init_weights(
        &arch.config(&ConfigOverrides::default()).unwrap(),
        &InitConfig::default(),
    );
    let stream = || TokenStream::open(&glob).unwrap();
    let cfg_tokens = cfg.train_batch_tokens;
    let mut c = Trainer::new(cfg.clone(), CpuBackend::new(), w.clone(), stream()).unwrap();
    let mut g = Trainer::new(cfg, gpu, w, stream()).unwrap();
    // What one step may move between host and device once the model is there: token ids,
    // targets and the index lists the ops need (16 bytes per token), plus 4 KiB; back, the
    // squared gradient norm, the loss and the scalar parameters (1 KiB); two waits.
    let tokens = cfg_tokens;
    let h2d_budget = 16 * tokens as u64 + 4096;
    for _ in 0..n {
        let (rc, rg) = (c.train_step().unwrap(), g.train_step().unwrap());
        let t = rg.traffic.expect("the CUDA backend counts traffic");
        println!(
            "step {}: train_loss cpu {:.7} cuda {:.7}, grad_norm cpu {:.6} cuda {:.6}, qat {}; \
             h2d {} B ({:.1}/token), d2h {} B, syncs {}, launches {}",
            rc.step,
            rc.train_loss,
            rg.train_loss,
            rc.grad_norm,
            rg.grad_norm,
            rc.qat,
            t.h2d_bytes,
            t.h2d_bytes as f64 / tokens as f64,
            t.d2h_bytes,
            t.syncs,
            t.launches
        );
        // Launches by phase: the micro-steps' share is what `--profile` reports per
        // micro-step; the CPU has no launches to count.
        let l = rg
            .phases
            .launches
            .expect("the CUDA backend counts launches by phase");
        assert_eq!(l.micro_steps, 2);
        assert!(l.grads > 0 && l.optim > 0, "{l:?}");
        assert!(
            l.grads + l.reduce + l.optim + l.ema <= t.launches,
            "{l:?} vs {t:?}"
        );
        assert!(rc.phases.launches.is_none());
        println!(
            "  launches per micro-step {:.0}, optimizer {}, ema {}",
            l.per_micro_step(),
            l.optim,
            l.ema
        );
        // The first step also pays for what is cached afterwards (RoPE tables).
        if rc.step > 1 {
            assert!(
                t.h2d_bytes <= h2d_budget,
                "h2d {} > {h2d_budget}",
                t.h2d_bytes
            );
            assert!(t.d2h_bytes <= 1024, "d2h {}", t.d2h_bytes);
            assert!(t.syncs <= 2, "syncs {}", t.syncs);
        }
        assert_eq!(rc.qat, rg.qat);
        let dl = (rc.train_loss - rg.train_loss).abs();
        max_loss_diff = max_loss_diff.max(dl);
        assert!(dl < tol.loss, "step {}: loss differs by {dl}", rc.step);
        assert!(
            (rc.grad_norm - rg.grad_norm).abs() < tol.grad_norm * rc.grad_norm.max(1.0),
            "step {}: grad norm",
            rc.step
        );
    }
    println!(
        "{}: largest loss difference {max_loss_diff:.3e}",
        g.backend().name()
    );
    if !exact {
        assert!(
            max_loss_diff > 0.0,
            "reduced precision gave float32's losses to the bit"
        );
    }
    for ((name, wc), (_, wg)) in flat(&c.final_weights().unwrap())
        .iter()
        .zip(&flat(&g.final_weights().unwrap()))
    {
        assert_close(&format!("after {n} steps: {name}"), wg, wc, tol.weights);
        let rms = |v: &mut dyn Iterator<Item = f64>| {
            let (s, k) = v.fold((0.0, 0usize), |(s, k), x| (s + x * x, k + 1));
            (s / k.max(1) as f64).sqrt()
        };
        let d = rms(&mut wg.iter().zip(wc).map(|(a, b)| (a - b) as f64));
        let r = rms(&mut wc.iter().map(|&a| a as f64)).max(1e-12);
        println!(
            "after {n} steps: {name}: rms diff {:.2e} of rms {r:.2e}",
            d / r
        );
        assert!(
            d / r < tol.weights_rms,
            "{name}: rms difference {:.2e} of its rms",
            d / r
        );
    }
}

/// LoRA test-time training (score, then adapt, per document) on the first documents of the
/// val shard with the baseline artifact: the same scores as on the CPU. Short chunks and
/// windows keep the emulated run small; the GPU run of the published recipe is in
/// scripts/gpu-check.sh.
fn lora_ttt_first_documents<G: Gpu>(gpu: CudaBackend<G>) {
    use pgolf_rt::artifact::Artifact;
    use pgolf_rt::data::load_tokens;
    use pgolf_rt::eval::{eval_lora_ttt, TttConfig};
    let Some(shared) = common::shared() else {
        return;
    };
    let art = Artifact::load(shared.join("reference/baseline9L_int8_zlib.ptz")).unwrap();
    let w = ModelWeights::from_artifact(&art, &ConfigOverrides::default()).unwrap();
    let lut = common::sp1024(&shared).byte_lut(w.config.vocab_size);
    let mut tokens = load_tokens(common::val_shard(&shared).to_str().unwrap()).unwrap();
    tokens.truncate(3_000);
    let cfg = TttConfig {
        chunk: 64,
        window: 192,
        max_docs: Some(2),
        ..TttConfig::default()
    };
    let (mc, mg) = (
        TrainModel::new(CpuBackend::new(), &w).unwrap(),
        TrainModel::new(gpu, &w).unwrap(),
    );
    let c = eval_lora_ttt(&mc, &tokens, &lut, &cfg, None).unwrap();
    let g = eval_lora_ttt(&mg, &tokens, &lut, &cfg, None).unwrap();
    println!(
        "LoRA TTT, first 2 docs ({} targets): val_bpb cpu {:.8} cuda {:.8}",
        c.tokens, c.val_bpb, g.val_bpb
    );
    assert_eq!((c.tokens, c.bytes), (g.tokens, g.bytes));
    assert!(
        (c.val_bpb - g.val_bpb).abs() < 1e-5,
        "{} vs {}",
        c.val_bpb,
        g.val_bpb
    );
    // Both documents in one batched forward/backward (per-document adapters as segments).
    let batched = TttConfig {
        batch_docs: 2,
        ..cfg
    };
    let gb = eval_lora_ttt(&mg, &tokens, &lut, &batched, None).unwrap();
    println!(
        "LoRA TTT batched (2 documents together) on cuda: {:.8}",
        gb.val_bpb
    );
    assert_eq!(gb.tokens, c.tokens);
    assert!(
        (c.val_bpb - gb.val_bpb).abs() < 1e-5,
        "{} vs {}",
        c.val_bpb,
        gb.val_bpb
    );
}

/// LoRA TTT of one document on a tiny model keeps its adapters and their Adam moments on the
/// device: the same scores as on the CPU, and a run with more epochs moves at most the window's
/// ids, rows, targets and weights (16 B/token + 4 KiB) up and 1 KiB back per extra step, in at
/// most 2 waits; one download and upload of the rank-16 adapters (~10 KB each way), as the host
/// Adam did, would exceed both.
fn lora_ttt_adapters_stay_on_the_device<G: Gpu>(gpu: CudaBackend<G>) {
    use pgolf_rt::data::BOS_ID;
    use pgolf_rt::eval::ttt::ttt_document;
    use pgolf_rt::eval::TttConfig;
    use pgolf_rt::train::Lora;
    let w = tiny(21, true, &ConfigOverrides::default());
    let mut r = SplitMix64(9);
    let doc: Vec<u32> = (0..4 * 32 + 1)
        .map(|i| match i {
            0 => BOS_ID,
            _ if r.next_u64().is_multiple_of(4) => 2 + (r.next_u64() % 30) as u32,
            _ => [3, 9, 4, 17, 8, 25][i % 6],
        })
        .collect();
    let window = 64usize;
    let cfg = |epochs| TttConfig {
        rank: 16,
        chunk: 32,
        window,
        epochs,
        ..TttConfig::default()
    };
    let (mc, mg) = (
        TrainModel::new(CpuBackend::new(), &w).unwrap(),
        TrainModel::new(gpu.clone(), &w).unwrap(),
    );
    let on_cpu = ttt_document(&mc, &doc, &cfg(2), 0).unwrap();
    let on_gpu = ttt_document(&mg, &doc, &cfg(2), 0).unwrap();
    let d = common::max_abs_diff(&on_cpu, &on_gpu);
    println!("LoRA TTT, tiny model, 2 epochs: max |ΔNLL| cuda vs cpu {d:.2e}");
    assert!(d < 1e-4, "LoRA TTT scores differ from the CPU by {d}");
    let plain = ttt_document(&mc, &doc, &cfg(0), 0).unwrap();
    assert_ne!(on_cpu, plain, "the adapters must have trained");
    let mut traffic = Vec::new();
    for epochs in [1, 3] {
        let t0 = gpu.traffic().expect("the CUDA backend counts traffic");
        ttt_document(&mg, &doc, &cfg(epochs), 0).unwrap();
        traffic.push(gpu.traffic().unwrap().since(t0));
    }
    // 3 trained chunks, one step each per epoch: 6 more steps with 3 epochs than with 1.
    let extra_steps = 6u64;
    let lora = Lora::new(&w.config, cfg(1).targets, 16, 0).unwrap();
    assert_adapters_stay(
        "LoRA TTT",
        &traffic,
        extra_steps,
        adapter_bytes(&lora),
        16 * window,
    );
}

/// Bytes of a LoRA's adapters (`A` and `B` of every site, f32).
fn adapter_bytes(lora: &Lora) -> u64 {
    lora.adapters
        .iter()
        .map(|a| 4 * (a.a.data.len() + a.b.data.len()) as u64)
        .sum()
}

/// The traffic of a TTT run with more epochs (`traffic[1]`) against one with fewer
/// (`traffic[0]`), per extra step: at most `tokens_bytes` + 4 KiB up (the windows' data; the
/// adapters, `adapters` bytes, must exceed that bound for the check to mean anything), 1 KiB
/// down, 2 waits.
fn assert_adapters_stay(
    what: &str,
    traffic: &[pgolf_rt::backend::Traffic],
    extra_steps: u64,
    adapters: u64,
    tokens_bytes: usize,
) {
    let (a, b) = (&traffic[0], &traffic[1]);
    let h2d = (b.h2d_bytes - a.h2d_bytes) as f64 / extra_steps as f64;
    let d2h = (b.d2h_bytes - a.d2h_bytes) as f64 / extra_steps as f64;
    let syncs = (b.syncs - a.syncs) as f64 / extra_steps as f64;
    let launches = (b.launches - a.launches) as f64 / extra_steps as f64;
    println!(
        "{what} per extra step: h2d {h2d:.0} B, d2h {d2h:.0} B, syncs {syncs:.1}, \
         launches {launches:.0} (adapters {adapters} B)"
    );
    let h2d_bound = (tokens_bytes + 4096) as f64;
    assert!(
        adapters as f64 > h2d_bound,
        "the check needs adapters larger than its bound"
    );
    assert!(
        h2d <= h2d_bound,
        "h2d per step {h2d} B (adapters {adapters} B)"
    );
    assert!(d2h <= 1024.0, "d2h per step {d2h} B");
    assert!(syncs <= 2.0, "syncs per step {syncs}");
}

/// Batched LoRA TTT (`--ttt-batch-docs`: three documents of different lengths advancing
/// together, each with its own adapters and Adam state) keeps every document's adapters and
/// moments on the device: the same scores as on the CPU, and a run with more epochs moves at
/// most the batch's ids, rows, targets and weights (16 B per token of the batch + 4 KiB) up and
/// 1 KiB back per extra step, in at most 2 waits; stacking the batch's adapters on the host, as
/// before, uploaded all of them (~30 KB) every forward.
fn batched_lora_ttt_adapters_stay_on_the_device<G: Gpu>(gpu: CudaBackend<G>) {
    use pgolf_rt::data::BOS_ID;
    use pgolf_rt::eval::ttt_batch::ttt_documents_batched;
    use pgolf_rt::eval::TttConfig;
    let w = tiny(23, true, &ConfigOverrides::default());
    let mut r = SplitMix64(11);
    let docs: Vec<Vec<u32>> = [4 * 32 + 1, 3 * 32 + 9, 4 * 32 + 1]
        .iter()
        .map(|&n| {
            (0..n)
                .map(|i| match i {
                    0 => BOS_ID,
                    _ if r.next_u64().is_multiple_of(4) => 2 + (r.next_u64() % 30) as u32,
                    _ => [3, 9, 4, 17, 8, 25][i % 6],
                })
                .collect()
        })
        .collect();
    let batch: Vec<(&[u32], usize)> = docs.iter().enumerate().map(|(k, d)| (&d[..], k)).collect();
    let window = 64usize;
    let cfg = |epochs| TttConfig {
        rank: 16,
        chunk: 32,
        window,
        epochs,
        ..TttConfig::default()
    };
    fn scores<B: TrainBackend>(
        m: &TrainModel<B>,
        batch: &[(&[u32], usize)],
        cfg: &TttConfig,
    ) -> Vec<f32> {
        let mut nll: Vec<Vec<f32>> = vec![Vec::new(); batch.len()];
        ttt_documents_batched(m, batch, cfg, false, |d, c| {
            nll[d].extend_from_slice(c.nll);
            Ok(())
        })
        .unwrap();
        nll.concat()
    }
    let run = |m: &dyn Fn(&TttConfig) -> Vec<f32>, epochs| m(&cfg(epochs));
    let (mc, mg) = (
        TrainModel::new(CpuBackend::new(), &w).unwrap(),
        TrainModel::new(gpu.clone(), &w).unwrap(),
    );
    let cpu = |c: &TttConfig| scores(&mc, &batch, c);
    let dev = |c: &TttConfig| scores(&mg, &batch, c);
    let on_cpu = run(&cpu, 2);
    let on_gpu = run(&dev, 2);
    let d = common::max_abs_diff(&on_cpu, &on_gpu);
    println!("batched LoRA TTT, 3 documents, 2 epochs: max |ΔNLL| cuda vs cpu {d:.2e}");
    assert!(
        d < 1e-4,
        "batched LoRA TTT scores differ from the CPU by {d}"
    );
    assert_ne!(on_cpu, run(&cpu, 0), "the adapters must have trained");
    let mut traffic = Vec::new();
    for epochs in [1, 3] {
        let t0 = gpu.traffic().expect("the CUDA backend counts traffic");
        run(&dev, epochs);
        traffic.push(gpu.traffic().unwrap().since(t0));
    }
    // Trained chunks: 3 at most per document, the batch's chunk steps training together: the
    // longest documents have 3 training chunk steps; 2 more epochs add 6 batched steps.
    let extra_steps = 6u64;
    let lora = Lora::new(&w.config, cfg(1).targets, 16, 0).unwrap();
    assert_adapters_stay(
        "batched LoRA TTT (the batch's adapters)",
        &traffic,
        extra_steps,
        docs.len() as u64 * adapter_bytes(&lora),
        16 * window * docs.len(),
    );
}

/// Full-model score-first TTT (`--ttt full`) of a tiny model with every optional module: the
/// same per-target scores as on the CPU, and the weights stay on the device: a pass with more
/// training steps moves at most a step's batch (16 B/token + 4 KiB) and 1 KiB back per extra
/// step, in 2 waits (one upload of the tiny model's weights, ~20 KB, would exceed that).
fn full_ttt_tiny<G: Gpu>(gpu: CudaBackend<G>) {
    use pgolf_rt::data::BOS_ID;
    use pgolf_rt::eval::ttt_full::full_ttt_into;
    use pgolf_rt::eval::{FullTttConfig, StreamScorer};
    let w = tiny_with_modules(
        11,
        true,
        4,
        &ConfigOverrides {
            xsa_last: Some(1),
            rope_dims: Some(2),
            ..Default::default()
        },
    );
    let lut = common::tiny::tiny_lut();
    let mut r = SplitMix64(5);
    let s: Vec<u32> = (0..4 * 32 + 1)
        .map(|i| match i {
            0 => BOS_ID,
            _ if r.next_u64().is_multiple_of(4) => 2 + (r.next_u64() % 30) as u32,
            _ => [3, 9, 4, 17, 8, 25][i % 6],
        })
        .collect();
    let cfg = |epochs| FullTttConfig {
        chunk: 32,
        seq_len: 16,
        stride: Some(8),
        batch: 3,
        train_seq: Some(8),
        train_batch: 2,
        epochs,
        lr: 0.05,
        lr_min: 0.005,
        warmup_steps: 2,
        weight_decay: 0.01,
        grad_clip: 1.0,
        freeze_blocks: 1,
        ..FullTttConfig::default()
    };
    let run = |be: &dyn Fn(&mut StreamScorer, &FullTttConfig), c: &FullTttConfig| {
        let mut sink = StreamScorer::new(&s, &lut, V, None).unwrap().recording();
        be(&mut sink, c);
        sink.recorded()
            .iter()
            .map(|&(_, v)| v)
            .collect::<Vec<f64>>()
    };
    let c2 = cfg(2);
    let on_cpu = run(
        &|sink, c| full_ttt_into(CpuBackend::new(), &w, c, sink, None).unwrap(),
        &c2,
    );
    let mut traffic = Vec::new();
    for epochs in [1, 3] {
        let t0 = gpu.traffic().expect("the CUDA backend counts traffic");
        run(
            &|sink, c| full_ttt_into(gpu.clone(), &w, c, sink, None).unwrap(),
            &cfg(epochs),
        );
        traffic.push(gpu.traffic().unwrap().since(t0));
    }
    let on_gpu = run(
        &|sink, c| full_ttt_into(gpu.clone(), &w, c, sink, None).unwrap(),
        &c2,
    );
    let d = on_cpu
        .iter()
        .zip(&on_gpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f64, |m, x| if x.is_nan() { f64::NAN } else { m.max(x) });
    println!("full TTT, tiny model with modules, 2 epochs: max |ΔNLL| cuda vs cpu {d:.2e}");
    assert_eq!(on_cpu.len(), on_gpu.len());
    assert!(d < 1e-4, "full TTT scores differ from the CPU by {d}");
    // 3 trained chunks × 2 steps per epoch: 12 more steps with 3 epochs than with 1.
    let extra_steps = 12u64;
    let tokens_per_step = 2 * 8u64;
    let weights_bytes: u64 = w
        .leaves()
        .iter()
        .map(|(_, _, m)| 4 * m.data.len() as u64)
        .sum();
    let (a, b) = (&traffic[0], &traffic[1]);
    let per_step = (b.h2d_bytes - a.h2d_bytes) as f64 / extra_steps as f64;
    let d2h_per_step = (b.d2h_bytes - a.d2h_bytes) as f64 / extra_steps as f64;
    let syncs_per_step = (b.syncs - a.syncs) as f64 / extra_steps as f64;
    println!(
        "full TTT per extra training step: h2d {per_step:.0} B, d2h {d2h_per_step:.0} B, \
         syncs {syncs_per_step:.1} (weights {weights_bytes} B)"
    );
    assert!(
        per_step <= (16 * tokens_per_step + 4096) as f64,
        "h2d per training step {per_step} B (the weights are {weights_bytes} B)"
    );
    assert!(
        d2h_per_step <= 1024.0,
        "d2h per training step {d2h_per_step} B"
    );
    assert!(
        syncs_per_step <= 2.0,
        "syncs per training step {syncs_per_step}"
    );
}

// Every training op against the CPU oracle: the conformance suite's training half.
conformance_on_both_devices!(conformance_train_ops);

on_both_devices!(
    ops: ;
    backends: attention_backward_on_tensor_cores,
        whole_model_gradients,
        trainer_steps,
        trainer_steps_bf16,
        full_ttt_tiny,
        lora_ttt_adapters_stay_on_the_device,
        batched_lora_ttt_adapters_stay_on_the_device,
        lora_ttt_first_documents,
);
