//! Robustness: corrupted or random `.model` files must load as an error or a working tokenizer,
//! never panic; encoding and decoding odd input must not panic. Deterministic (seeded PRNG).
//!
//! The mutation tests start from the shared models; without the shared folder they print
//! `SKIPPED: ...` (a failure under `PGOLF_REQUIRE_SHARED=1`, as in CI) and fall back to a small
//! model built here.

mod common;

use pgolf_rt::tokenizer::Tokenizer;

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Strings that stress normalization and merging.
fn odd_strings(rng: &mut Rng) -> Vec<String> {
    let mut out: Vec<String> = [
        "",
        " ",
        "\u{0}",
        "▁▁▁",
        "  a  ",
        "<0x41><s></s><unk>",
        "ﬁ① Ｆ e\u{301} 😀 日本 \u{feff}\u{200b}",
        "\u{10ffff}\u{fffd}\u{e000}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ranges: [(u32, u32); 8] = [
        (0x00, 0x80),
        (0x80, 0x800),
        (0x2000, 0x2100),
        (0x2460, 0x2500),
        (0x3000, 0x3100),
        (0xff00, 0xfff0),
        (0x1f300, 0x1f700),
        (0x0, 0x110000),
    ];
    for _ in 0..40 {
        let len = rng.below(200);
        let s: String = (0..len)
            .map(|_| {
                let (lo, hi) = ranges[rng.below(ranges.len())];
                char::from_u32(lo + rng.below((hi - lo) as usize) as u32).unwrap_or(' ')
            })
            .collect();
        out.push(s);
    }
    out
}

/// Exercises a tokenizer that loaded: nothing may panic and ids must be in range.
fn exercise(tok: &Tokenizer, rng: &mut Rng, n_strings: usize) {
    let n = tok.vocab_size();
    let lut = tok.byte_lut(n + 3);
    assert_eq!(lut.len(), n + 3);
    for s in odd_strings(rng).iter().take(n_strings) {
        let ids = tok.encode(s);
        assert!(ids.iter().all(|&id| (id as usize) < n), "id out of range");
        let _ = tok.decode(&ids);
        let _ = tok.normalize(s);
        let _ = lut.count_bytes(&ids);
    }
    let random_ids: Vec<u32> = (0..64)
        .map(|_| rng.next() as u32 % (n as u32 + 10))
        .collect();
    let _ = tok.decode(&random_ids);
    let _ = lut.count_bytes(&random_ids);
    let _ = tok.piece(u32::MAX);
}

fn shared_models() -> Vec<Vec<u8>> {
    let Some(shared) = common::shared() else {
        return vec![tiny_model()];
    };
    ["pg_sp1024_bpe", "fineweb_8192_bpe"]
        .iter()
        .map(|name| {
            let path = shared.join(format!("data/tokenizers/{name}.model"));
            std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

/// A small valid BPE model: specials, 256 byte pieces, a few merges, a 1-rule charsmap-less
/// normalizer.
fn tiny_model() -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field(no: u64, payload: &[u8], out: &mut Vec<u8>) {
        varint(no << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }
    fn piece(text: &str, score: f32, kind: u64, out: &mut Vec<u8>) {
        let mut p = Vec::new();
        field(1, text.as_bytes(), &mut p);
        p.push(2 << 3 | 5);
        p.extend_from_slice(&score.to_le_bytes());
        p.push(3 << 3);
        varint(kind, &mut p);
        field(1, &p, out);
    }
    let mut m = Vec::new();
    piece("<pad>", 0.0, 3, &mut m);
    piece("<s>", 0.0, 3, &mut m);
    piece("</s>", 0.0, 3, &mut m);
    piece("<unk>", 0.0, 2, &mut m);
    for b in 0..=255u8 {
        piece(&format!("<0x{b:02X}>"), 0.0, 6, &mut m);
    }
    for (i, p) in [
        "▁t", "he", "▁the", "a", "b", "e", "h", "t", "▁", "ab", "abab",
    ]
    .iter()
    .enumerate()
    {
        piece(p, -(i as f32), 1, &mut m);
    }
    let mut trainer = vec![3 << 3, 2]; // BPE
    varint(35 << 3, &mut trainer);
    trainer.push(1); // byte_fallback
    field(2, &trainer, &mut m);
    let mut norm = Vec::new();
    field(1, b"identity", &mut norm);
    norm.extend_from_slice(&[3 << 3, 0]);
    field(3, &norm, &mut m);
    m
}

#[test]
fn tiny_model_works() {
    let tok = Tokenizer::from_bytes(&tiny_model()).expect("tiny model");
    // Ids: 260 ▁t, 261 he, 262 ▁the, 263 a, 264 b, 265 e, 266 h, 267 t, 268 ▁, 269 ab, 270 abab.
    let ids = tok.encode("the abab");
    assert_eq!(ids, [267, 261, 268, 270]);
    assert_eq!(tok.encode(" the"), [267, 261]);
    assert_eq!(tok.encode("a the"), [263, 262]);
    assert_eq!(tok.decode(&ids), "the abab");
    assert_eq!(tok.decode(&tok.encode("q")), "q"); // byte fallback
}

#[test]
fn truncated_models_never_panic() {
    let mut rng = Rng(1);
    for model in shared_models() {
        let mut cuts: Vec<usize> = (0..600.min(model.len())).collect();
        cuts.extend((0..300).map(|_| rng.below(model.len())));
        cuts.extend(model.len().saturating_sub(64)..model.len());
        for cut in cuts {
            if let Ok(tok) = Tokenizer::from_bytes(&model[..cut]) {
                exercise(&tok, &mut rng, 4);
            }
        }
        // The untouched model loads.
        let tok = Tokenizer::from_bytes(&model).expect("intact model");
        exercise(&tok, &mut rng, 48);
    }
}

#[test]
fn bit_flipped_models_never_panic() {
    let mut rng = Rng(2);
    let mut loaded = 0;
    let mut rejected = 0;
    for model in shared_models() {
        for round in 0..300 {
            let mut m = model.clone();
            let flips = 1 + round % 4;
            for _ in 0..flips {
                // Half the flips land in the first 4 KiB, where the structure is densest.
                let at = if rng.below(2) == 0 {
                    rng.below(m.len().min(4096))
                } else {
                    rng.below(m.len())
                };
                m[at] ^= 1 << rng.below(8);
            }
            match Tokenizer::from_bytes(&m) {
                Ok(tok) => {
                    loaded += 1;
                    exercise(&tok, &mut rng, 6);
                }
                Err(e) => {
                    rejected += 1;
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }
    eprintln!("bit flips: {loaded} loaded, {rejected} rejected");
    assert!(
        loaded > 0,
        "every flip was rejected: the fuzzer is not reaching encode"
    );
}

#[test]
fn random_byte_models_never_panic() {
    let mut rng = Rng(3);
    for i in 0..3000 {
        let len = rng.below(if i % 10 == 0 { 65536 } else { 512 });
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if let Ok(tok) = Tokenizer::from_bytes(&bytes) {
            exercise(&tok, &mut rng, 4);
        }
    }
    // Splices of real model fragments.
    let models = shared_models();
    for _ in 0..300 {
        let a = &models[rng.below(models.len())];
        let b = &models[rng.below(models.len())];
        let (i, j) = (rng.below(a.len()), rng.below(b.len()));
        let mut m = a[..i].to_vec();
        m.extend_from_slice(&b[j..]);
        if let Ok(tok) = Tokenizer::from_bytes(&m) {
            exercise(&tok, &mut rng, 4);
        }
    }
}

#[test]
fn odd_text_never_panics() {
    let mut rng = Rng(4);
    for model in shared_models() {
        let tok = Tokenizer::from_bytes(&model).expect("intact model");
        for _ in 0..10 {
            exercise(&tok, &mut rng, 48);
        }
        // Long inputs: one word, one space run, alternating pieces.
        for s in [
            "a".repeat(100_000),
            " ".repeat(50_000),
            "ab ".repeat(30_000),
        ] {
            let ids = tok.encode(&s);
            assert!(!ids.is_empty() || s.trim().is_empty());
        }
    }
}
