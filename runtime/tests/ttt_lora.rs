//! Per-document LoRA TTT on a tiny random model: adaptation helps on a repetitive document,
//! adapters reset per document, scores never depend on later tokens, lr 0 is plain eval.

mod common;

use common::tiny::{tiny, V};
use pgolf_rt::backend::cpu::CpuBackend;
use pgolf_rt::data::{find_documents, BOS_ID};
use pgolf_rt::eval::ttt::{doc_chunks, score_document_plain, ttt_document, ttt_stream};
use pgolf_rt::eval::{eval_lora_ttt, eval_per_document, TttConfig};
use pgolf_rt::model::{ConfigOverrides, DeviceModel};
use pgolf_rt::tokenizer::ByteLut;
use pgolf_rt::train::lora::SplitMix64;
use pgolf_rt::train::TrainModel;

fn cfg(chunk: usize, window: usize, lr: f32) -> TttConfig {
    let mut c = TttConfig {
        chunk,
        window,
        ..TttConfig::default()
    };
    c.optimizer.lr = lr;
    c
}

fn lut() -> ByteLut {
    ByteLut {
        base_bytes: (0..V as u16).map(|i| 1 + i % 3).collect(),
        has_leading_space: (0..V).map(|i| i % 2 == 0).collect(),
        is_boundary: (0..V).map(|i| i == BOS_ID as usize).collect(),
    }
}

fn random_doc(r: &mut SplitMix64, len: usize) -> Vec<u32> {
    let mut d = vec![BOS_ID];
    d.extend((1..len).map(|_| 2 + (r.next_u64() % (V as u64 - 2)) as u32));
    d
}

fn models(seed: u64) -> (TrainModel<CpuBackend>, DeviceModel<CpuBackend>) {
    let w = tiny(seed, false, &ConfigOverrides::default());
    (
        TrainModel::new(CpuBackend::new(), &w).unwrap(),
        DeviceModel::new(CpuBackend::new(), &w).unwrap(),
    )
}

fn chunk_means(nll: &[f32], k: usize) -> Vec<f64> {
    nll.chunks(k)
        .map(|c| c.iter().map(|&v| v as f64).sum::<f64>() / c.len() as f64)
        .collect()
}

#[test]
fn loss_on_a_repetitive_document_decreases_across_chunks() {
    let (m, dm) = models(21);
    let mut r = SplitMix64(4);
    let pattern: Vec<u32> = (0..8).map(|_| 2 + (r.next_u64() % 30) as u32).collect();
    let mut doc = vec![BOS_ID];
    while doc.len() < 16 * 16 + 1 {
        doc.extend(&pattern);
    }
    doc.truncate(16 * 16 + 1);
    let c = cfg(16, 64, 0.01);
    let ttt = chunk_means(&ttt_document(&m, &doc, &c, 0).unwrap(), 16);
    let plain = chunk_means(&score_document_plain(&dm, &doc, 16, 64).unwrap(), 16);
    eprintln!("TTT per chunk:   {ttt:.3?}");
    eprintln!("plain per chunk: {plain:.3?}");
    assert_eq!(ttt[0], plain[0], "first chunk is scored before any update");
    let last: f64 = ttt[12..].iter().sum::<f64>() / 4.0;
    let plain_last: f64 = plain[12..].iter().sum::<f64>() / 4.0;
    assert!(
        last < ttt[0] - 0.5,
        "TTT loss fell from {} to {last}",
        ttt[0]
    );
    assert!(last < plain_last - 0.5, "TTT {last} vs plain {plain_last}");
    for w in ttt.windows(2).skip(1).take(6) {
        assert!(
            w[1] < w[0] + 0.05,
            "loss should keep falling early on: {ttt:?}"
        );
    }
}

#[test]
fn adapters_reset_per_document() {
    let (m, dm) = models(22);
    let mut r = SplitMix64(5);
    let mut stream = Vec::new();
    for len in [70, 33, 90, 5] {
        stream.extend(random_doc(&mut r, len));
    }
    let c = cfg(8, 32, 0.05);
    let docs = find_documents(&stream);
    let mut seen = 0;
    ttt_stream(&m, &stream, &c, |k, d, nll| {
        let dt = &stream[d.start..d.start + d.len];
        // Stream scores equal those of the document alone: no state crosses documents.
        assert_eq!(nll, ttt_document(&m, dt, &c, k).unwrap().as_slice());
        // The first chunk of every document scores exactly as the plain model.
        let plain = score_document_plain(&dm, dt, 8, 32).unwrap();
        let n0 = doc_chunks(dt.len(), 8, 32)[0].end;
        assert_eq!(&nll[..n0], &plain[..n0], "doc {k}");
        if dt.len() > 20 {
            assert_ne!(
                &nll[n0..],
                &plain[n0..],
                "doc {k} adapted after its first chunk"
            );
        }
        seen += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, docs.len());
}

#[test]
fn scores_never_depend_on_later_tokens() {
    let (m, _) = models(23);
    let mut r = SplitMix64(6);
    let doc = random_doc(&mut r, 100);
    let mut prev: Option<Vec<f32>> = None;
    for (epochs, replay) in [(1, false), (2, true)] {
        let mut c = cfg(8, 24, 0.05);
        c.epochs = epochs;
        c.replay_scored = replay;
        let full = ttt_document(&m, &doc, &c, 0).unwrap();
        for ch in doc_chunks(doc.len(), 8, 24).iter().take(10) {
            // Truncated right after the chunk's last target ...
            let cut = ttt_document(&m, &doc[..ch.end + 1], &c, 0).unwrap();
            assert_eq!(&cut[..ch.end], &full[..ch.end], "truncated at {}", ch.end);
            // ... or with every later token changed.
            let mut alt = doc.clone();
            for t in alt.iter_mut().skip(ch.end + 1) {
                *t = 2 + (*t + 7) % 30;
            }
            let altered = ttt_document(&m, &alt, &c, 0).unwrap();
            assert_eq!(
                &altered[..ch.end],
                &full[..ch.end],
                "altered after {}",
                ch.end
            );
        }
        if let Some(p) = &prev {
            assert_ne!(p, &full, "replaying scored chunks changes the adaptation");
        }
        prev = Some(full);
    }
}

#[test]
fn lr_zero_equals_plain_per_document_eval() {
    let (m, dm) = models(24);
    let mut r = SplitMix64(7);
    let mut stream = Vec::new();
    for len in [50, 17, 64, 2, 40] {
        stream.extend(random_doc(&mut r, len));
    }
    let lut = lut();
    let c = cfg(8, 16, 0.0);
    let ttt = eval_lora_ttt(&m, &stream, &lut, &c, None).unwrap();
    let plain = eval_per_document(&dm, &stream, &lut, 8, 16, None).unwrap();
    assert_eq!(ttt.tokens, (stream.len() - 1) as u64);
    assert_eq!((ttt.tokens, ttt.bytes), (plain.tokens, plain.bytes));
    assert_eq!(ttt.val_bpb, plain.val_bpb);
    let adapted = eval_lora_ttt(&m, &stream, &lut, &cfg(8, 16, 0.05), None).unwrap();
    assert_ne!(adapted.val_bpb, plain.val_bpb);
}

#[test]
fn short_documents_are_not_adapted() {
    let (m, dm) = models(25);
    let mut r = SplitMix64(8);
    let doc = random_doc(&mut r, 60);
    let mut c = cfg(8, 16, 0.05);
    c.min_doc_len = 61;
    assert_eq!(
        ttt_document(&m, &doc, &c, 0).unwrap(),
        score_document_plain(&dm, &doc, 8, 16).unwrap()
    );
}
