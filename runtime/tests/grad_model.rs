//! Whole-model gradient checks on tiny random models (2 layers, d 16, 4 heads / 2 KV heads,
//! vocab 32): every base weight and every LoRA parameter against central differences, without
//! and with the optional modules (BigramHash, SmearGate, value embeddings).

mod common;

use common::tiny::{tiny, tiny_with_modules, D, V};
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::model::{ConfigOverrides, DeviceModel, ModelWeights};
use pgolf_rt::train::lora::SplitMix64;
use pgolf_rt::train::{Lora, LoraTargets, TrainModel};

fn mean_loss(
    w: &ModelWeights,
    lora: Option<&Lora>,
    ids: &[u32],
    tg: &[u32],
    rows: &[usize],
) -> f64 {
    let m = TrainModel::new(CpuBackend::new(), w).unwrap();
    let dl = lora.map(|l| m.upload_lora(l).unwrap());
    let tape = m.forward(ids, 2, ids.len() / 2, dl.as_ref()).unwrap();
    let nll = m.nll(&tape, rows, tg, dl.as_ref()).unwrap();
    nll.iter().map(|&v| v as f64).sum::<f64>() / rows.len() as f64
}

fn close(name: &str, num: f64, ana: f32) {
    let ana = ana as f64;
    assert!(
        (num - ana).abs() <= 1e-3 + 3e-2 * ana.abs().max(num.abs()),
        "{name}: numeric {num} vs analytic {ana}"
    );
}

fn setup() -> (Vec<u32>, Vec<u32>, Vec<usize>, Vec<u32>) {
    let mut r = SplitMix64(99);
    let ids: Vec<u32> = (0..14).map(|_| (r.next_u64() % V as u64) as u32).collect();
    let tgt: Vec<u32> = (0..14).map(|_| (r.next_u64() % V as u64) as u32).collect();
    let rows: Vec<usize> = vec![0, 2, 3, 5, 6, 7, 9, 12, 13];
    let t: Vec<u32> = rows.iter().map(|&r| tgt[r]).collect();
    (ids, tgt, rows, t)
}

#[test]
fn whole_model_gradients_match_finite_differences() {
    let configs = [
        (
            "baseline",
            false,
            ConfigOverrides {
                logit_softcap: Some(5.0),
                ..Default::default()
            },
        ),
        (
            "xsa+ln_scale+leaky+partial_rope+untied",
            true,
            ConfigOverrides {
                logit_softcap: Some(5.0),
                xsa_last: Some(1),
                ln_scale: Some(true),
                rope_dims: Some(2),
                activation: Some(pgolf_rt::model::Activation::LeakyRelu2 { slope: 0.5 }),
                ..Default::default()
            },
        ),
    ];
    let (ids, _, rows, t) = setup();
    for (name, untied, ov) in configs {
        let mut w = tiny(7, untied, &ov);
        let m = TrainModel::new(CpuBackend::new(), &w).unwrap();
        let (loss, g) = m.loss_and_grads(&ids, 2, 7, &rows, &t, None, true).unwrap();
        let g = g.base.expect("base grads");
        assert!((loss - mean_loss(&w, None, &ids, &t, &rows)).abs() < 1e-6);
        let mut n = 0;
        // Each tensor: pick it by a closure so the check can mutate `w` in place.
        type Pick = fn(&mut ModelWeights) -> &mut Vec<f32>;
        let mut picks: Vec<(String, Pick, Vec<f32>)> = vec![
            (
                "tok_emb".into(),
                |w| &mut w.tok_emb.data,
                g.tok_emb.data.clone(),
            ),
            (
                "skip_weights".into(),
                |w| &mut w.skip_weights.as_mut().unwrap().data,
                g.skip_weights.as_ref().unwrap().data.clone(),
            ),
        ];
        if untied {
            picks.push((
                "lm_head".into(),
                |w| &mut w.lm_head.as_mut().unwrap().data,
                g.lm_head.as_ref().unwrap().data.clone(),
            ));
        }
        type BlockPick = fn(&mut ModelWeights, usize) -> &mut Vec<f32>;
        let block_picks: [(&str, BlockPick); 10] = [
            ("c_q", |w, i| &mut w.blocks[i].c_q.data),
            ("c_k", |w, i| &mut w.blocks[i].c_k.data),
            ("c_v", |w, i| &mut w.blocks[i].c_v.data),
            ("attn_proj", |w, i| &mut w.blocks[i].attn_proj.data),
            ("q_gain", |w, i| &mut w.blocks[i].q_gain.data),
            ("mlp_fc", |w, i| &mut w.blocks[i].mlp_fc.data),
            ("mlp_proj", |w, i| &mut w.blocks[i].mlp_proj.data),
            ("attn_scale", |w, i| &mut w.blocks[i].attn_scale.data),
            ("mlp_scale", |w, i| &mut w.blocks[i].mlp_scale.data),
            ("resid_mix", |w, i| &mut w.blocks[i].resid_mix.data),
        ];
        for (pname, get, grad) in picks.drain(..) {
            for (i, &gi) in grad.iter().enumerate() {
                let num = {
                    let old = get(&mut w)[i];
                    let h = 1e-2f32;
                    get(&mut w)[i] = old + h;
                    let p = mean_loss(&w, None, &ids, &t, &rows);
                    get(&mut w)[i] = old - h;
                    let mm = mean_loss(&w, None, &ids, &t, &rows);
                    get(&mut w)[i] = old;
                    (p - mm) / (2.0 * h as f64)
                };
                close(&format!("{name}: {pname}[{i}]"), num, gi);
                n += 1;
            }
        }
        for layer in 0..2 {
            for (pname, get) in block_picks {
                let mut gg = g.clone();
                let grad = get(&mut gg, layer).clone();
                for (i, &gi) in grad.iter().enumerate() {
                    let old = get(&mut w, layer)[i];
                    let h = 1e-2f32;
                    get(&mut w, layer)[i] = old + h;
                    let p = mean_loss(&w, None, &ids, &t, &rows);
                    get(&mut w, layer)[i] = old - h;
                    let mm = mean_loss(&w, None, &ids, &t, &rows);
                    get(&mut w, layer)[i] = old;
                    close(
                        &format!("{name}: blocks.{layer}.{pname}[{i}]"),
                        (p - mm) / (2.0 * h as f64),
                        gi,
                    );
                    n += 1;
                }
            }
        }
        eprintln!("{name}: {n} weights checked");
    }
}

#[test]
fn lora_gradients_match_finite_differences() {
    let ov = ConfigOverrides {
        logit_softcap: Some(5.0),
        xsa_last: Some(1),
        ..Default::default()
    };
    let w = tiny(11, false, &ov);
    let all = LoraTargets {
        q: true,
        k: true,
        v: true,
        o: true,
        mlp: true,
        head: true,
    };
    let mut lora = Lora::new(&w.config, all, 3, 5).unwrap();
    // Non-zero B so that A has a gradient too.
    let mut r = SplitMix64(3);
    for a in &mut lora.adapters {
        a.b.data.iter_mut().for_each(|v| *v = r.next_f32() - 0.5);
    }
    let (ids, _, rows, t) = setup();
    let m = TrainModel::new(CpuBackend::new(), &w).unwrap();
    let dl = m.upload_lora(&lora).unwrap();
    let (_, g_only) = m
        .loss_and_grads(&ids, 2, 7, &rows, &t, Some(&dl), false)
        .unwrap();
    let (_, g_all) = m
        .loss_and_grads(&ids, 2, 7, &rows, &t, Some(&dl), true)
        .unwrap();
    let g = g_only.lora.unwrap();
    assert!(g_only.base.is_none());
    assert_eq!(g, g_all.lora.unwrap(), "LoRA-only and full backward agree");
    let mut n = 0;
    for k in 0..lora.adapters.len() {
        for which in 0..2 {
            let len = if which == 0 {
                lora.adapters[k].a.data.len()
            } else {
                lora.adapters[k].b.data.len()
            };
            for i in 0..len {
                let ana = if which == 0 { g.0[k].0[i] } else { g.0[k].1[i] };
                let num = {
                    let f = |l: &mut Lora, v: f32| {
                        if which == 0 {
                            l.adapters[k].a.data[i] = v
                        } else {
                            l.adapters[k].b.data[i] = v
                        }
                    };
                    let old = if which == 0 {
                        lora.adapters[k].a.data[i]
                    } else {
                        lora.adapters[k].b.data[i]
                    };
                    let h = 1e-2f32;
                    f(&mut lora, old + h);
                    let p = mean_loss(&w, Some(&lora), &ids, &t, &rows);
                    f(&mut lora, old - h);
                    let mm = mean_loss(&w, Some(&lora), &ids, &t, &rows);
                    f(&mut lora, old);
                    (p - mm) / (2.0 * h as f64)
                };
                close(
                    &format!(
                        "lora {:?} {}[{i}]",
                        lora.adapters[k].site,
                        ["A", "B"][which]
                    ),
                    num,
                    ana,
                );
                n += 1;
            }
        }
    }
    eprintln!("{n} LoRA parameters checked");
}

#[test]
fn taped_forward_matches_inference_forward_exactly() {
    let w = tiny(5, false, &ConfigOverrides::default());
    let (ids, tgt, rows, t) = setup();
    let dm = DeviceModel::new(CpuBackend::new(), &w).unwrap();
    let want = dm.nll(&ids, &tgt, 2, 7, Some(&rows)).unwrap();
    let m = TrainModel::new(CpuBackend::new(), &w).unwrap();
    let tape = m.forward(&ids, 2, 7, None).unwrap();
    assert_eq!(m.nll(&tape, &rows, &t, None).unwrap(), want);
    // Fresh adapters (B = 0) on every target change nothing, bit for bit.
    let lora = Lora::new(&w.config, "q,k,v,o,mlp,head".parse().unwrap(), 4, 1).unwrap();
    let dl = m.upload_lora(&lora).unwrap();
    let tape = m.forward(&ids, 2, 7, Some(&dl)).unwrap();
    assert_eq!(m.nll(&tape, &rows, &t, Some(&dl)).unwrap(), want);
}

/// Names and shapes of every parameter, in [`ModelWeights::params_mut`] order.
fn layout(w: &mut ModelWeights) -> Vec<(String, Vec<usize>, usize)> {
    w.params_mut()
        .into_iter()
        .map(|p| (p.name, p.shape, p.values.len()))
        .collect()
}

/// Checks every parameter of `w` (by [`ModelWeights::params_mut`]) against central differences
/// of the mean loss; returns how many were checked.
fn check_every_param(name: &str, w: &mut ModelWeights) -> usize {
    let (ids, _, rows, t) = setup();
    let m = TrainModel::new(CpuBackend::new(), w).unwrap();
    let (loss, g) = m.loss_and_grads(&ids, 2, 7, &rows, &t, None, true).unwrap();
    drop(m);
    let mut g = g.base.expect("base grads");
    assert!((loss - mean_loss(w, None, &ids, &t, &rows)).abs() < 1e-6);
    assert_eq!(layout(&mut g), layout(w), "{name}: gradient layout");
    let grads: Vec<(String, Vec<f32>)> = g
        .params_mut()
        .into_iter()
        .map(|p| (p.name, p.values.to_vec()))
        .collect();
    let set = |w: &mut ModelWeights, k: usize, i: usize, v: f32| w.params_mut()[k].values[i] = v;
    let mut n = 0;
    for (k, (pname, grad)) in grads.iter().enumerate() {
        for (i, &gi) in grad.iter().enumerate() {
            let old = w.params_mut()[k].values[i];
            let h = 1e-2f32;
            set(w, k, i, old + h);
            let p = mean_loss(w, None, &ids, &t, &rows);
            set(w, k, i, old - h);
            let mm = mean_loss(w, None, &ids, &t, &rows);
            set(w, k, i, old);
            close(
                &format!("{name}: {pname}[{i}]"),
                (p - mm) / (2.0 * h as f64),
                gi,
            );
            n += 1;
        }
    }
    n
}

fn module_configs() -> Vec<(&'static str, ModelWeights)> {
    let ov = ConfigOverrides {
        logit_softcap: Some(5.0),
        ..Default::default()
    };
    let ov_11l = ConfigOverrides {
        logit_softcap: Some(5.0),
        xsa_last: Some(1),
        ln_scale: Some(true),
        rope_dims: Some(2),
        activation: Some(pgolf_rt::model::Activation::LeakyRelu2 { slope: 0.5 }),
        ..Default::default()
    };
    vec![
        // Bigram table narrower than the model: with `bigram.proj`.
        (
            "bigram(dim 4, proj)+smear+ve",
            tiny_with_modules(21, false, 4, &ov),
        ),
        // Bigram table as wide as the model: no projection.
        (
            "bigram(dim d, no proj)+smear+ve+11L+untied",
            tiny_with_modules(22, true, D, &ov_11l),
        ),
    ]
}

#[test]
fn module_gradients_match_finite_differences() {
    for (name, mut w) in module_configs() {
        let cfg = &w.config;
        assert!(cfg.bigram.is_some() && cfg.smear_gate);
        assert_eq!(cfg.value_embed.as_ref().unwrap().layers, vec![0, 1]);
        let proj = w.bigram.as_ref().unwrap().proj.is_some();
        assert_eq!(proj, cfg.bigram.unwrap().dim != D, "{name}");
        let n = check_every_param(name, &mut w);
        eprintln!("{name}: {n} weights checked");
    }
}

#[test]
fn gradient_layout_equals_weight_layout() {
    let (ids, _, rows, t) = setup();
    let mut all = module_configs();
    all.push(("baseline", tiny(7, false, &ConfigOverrides::default())));
    all.push(("untied", tiny(8, true, &ConfigOverrides::default())));
    for (name, mut w) in all {
        let m = TrainModel::new(CpuBackend::new(), &w).unwrap();
        let (_, g) = m.loss_and_grads(&ids, 2, 7, &rows, &t, None, true).unwrap();
        let mut g = g.base.expect("base grads");
        assert_eq!(layout(&mut g), layout(&mut w), "{name}");
        assert_eq!(g.config, w.config, "{name}");
    }
}

#[test]
fn modules_taped_forward_matches_inference_and_lora_only_backward_agrees() {
    let (ids, tgt, rows, t) = setup();
    for (name, w) in module_configs() {
        let dm = DeviceModel::new(CpuBackend::new(), &w).unwrap();
        let want = dm.nll(&ids, &tgt, 2, 7, Some(&rows)).unwrap();
        let m = TrainModel::new(CpuBackend::new(), &w).unwrap();
        let tape = m.forward(&ids, 2, 7, None).unwrap();
        assert_eq!(m.nll(&tape, &rows, &t, None).unwrap(), want, "{name}");
        let mut lora = Lora::new(&w.config, "q,k,v,o,mlp,head".parse().unwrap(), 2, 5).unwrap();
        let mut r = SplitMix64(4);
        for a in &mut lora.adapters {
            a.b.data.iter_mut().for_each(|v| *v = r.next_f32() - 0.5);
        }
        let dl = m.upload_lora(&lora).unwrap();
        let (_, g_only) = m
            .loss_and_grads(&ids, 2, 7, &rows, &t, Some(&dl), false)
            .unwrap();
        let (_, g_all) = m
            .loss_and_grads(&ids, 2, 7, &rows, &t, Some(&dl), true)
            .unwrap();
        assert!(g_only.base.is_none());
        assert_eq!(
            g_only.lora, g_all.lora,
            "{name}: LoRA-only and full backward agree"
        );
    }
}
