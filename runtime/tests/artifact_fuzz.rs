//! Malformed artifacts must be rejected with an error, never a panic, and never load silently
//! with different values: truncations, bit flips (in the compressed file and inside the
//! decompressed payload, recompressed), random bytes, empty input.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use pgolf_rt::artifact::compress::{compress, decompress};
use pgolf_rt::artifact::{
    export_artifact, Artifact, Compression, DType, ExportLayout, ExportOptions, ExportTensor,
};

/// xorshift64*: tiny deterministic PRNG.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Loads without letting a panic escape; returns Ok/Err, panics only with the case name.
fn try_load(bytes: &[u8], case: &str) -> Result<Artifact, String> {
    match catch_unwind(AssertUnwindSafe(|| Artifact::from_bytes(bytes))) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => panic!("loader panicked on {case}"),
    }
}

fn same(a: &Artifact, b: &Artifact) -> bool {
    a.format == b.format
        && a.tensors.len() == b.tensors.len()
        && a.tensors.iter().zip(&b.tensors).all(|(x, y)| {
            x.name == y.name
                && x.shape == y.shape
                && x.dtype == y.dtype
                && x.scheme == y.scheme
                && x.values.len() == y.values.len()
                && x.values
                    .iter()
                    .zip(&y.values)
                    .all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

/// A small model; `passthrough_max_numel` is lowered so every storage path is exercised.
fn synthetic(layout: ExportLayout, compression: Compression) -> Vec<u8> {
    let mut rng = Rng(7);
    let specs: [(&str, Vec<usize>, DType); 6] = [
        ("tok_emb.weight", vec![8, 4], DType::BF16),
        ("blocks.0.attn.c_q.weight", vec![4, 4], DType::F32),
        ("blocks.0.mlp.fc.weight", vec![6, 4], DType::F32),
        ("blocks.0.attn_scale", vec![4], DType::F32),
        ("blocks.0.resid_mix", vec![2, 12], DType::F32),
        ("blocks.0.mlp.gain", vec![20], DType::F32),
    ];
    let vals: Vec<Vec<f32>> = specs
        .iter()
        .map(|(_, s, _)| (0..s.iter().product()).map(|_| rng.f32()).collect())
        .collect();
    let tensors: Vec<ExportTensor> = specs
        .iter()
        .zip(&vals)
        .map(|((n, s, d), v)| ExportTensor {
            name: n,
            shape: s,
            dtype: *d,
            values: v,
        })
        .collect();
    let opts = ExportOptions {
        passthrough_max_numel: 8,
        fp16_embed: false,
    };
    export_artifact(&tensors, layout, compression, &opts).unwrap()
}

fn synthetic_set() -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        (
            "int8/zlib".to_string(),
            synthetic(ExportLayout::Int8Clean, Compression::Zlib),
        ),
        (
            "int6/xz".to_string(),
            synthetic(ExportLayout::Int6Wm, Compression::Xz),
        ),
        (
            "int6/none".to_string(),
            synthetic(ExportLayout::Int6Wm, Compression::None),
        ),
    ];
    if cfg!(feature = "zstd-native") {
        v.push((
            "int6/zstd".to_string(),
            synthetic(ExportLayout::Int6Wm, Compression::Zstd),
        ));
    }
    v
}

#[test]
fn every_prefix_of_small_artifacts_is_rejected() {
    for (label, file) in synthetic_set() {
        try_load(&file, &label).unwrap_or_else(|e| panic!("{label}: intact file fails: {e}"));
        for cut in 0..file.len() {
            let r = try_load(&file[..cut], &format!("{label} prefix {cut}"));
            assert!(
                r.is_err(),
                "{label}: prefix of {cut}/{} bytes loaded",
                file.len()
            );
        }
        // Truncating the decompressed payload and recompressing must fail too.
        let (kind, payload) = decompress(&file).unwrap();
        for cut in (0..payload.len()).step_by(7) {
            let re = compress(&payload[..cut], kind).unwrap();
            assert!(
                try_load(&re, &format!("{label} payload prefix {cut}")).is_err(),
                "{label}: payload prefix {cut}"
            );
        }
    }
}

#[test]
fn bit_flips_error_or_load_identical() {
    let mut rng = Rng(0x5eed);
    for (label, file) in synthetic_set() {
        let good = try_load(&file, &label).unwrap();
        let (kind, payload) = decompress(&file).unwrap();
        let payload = payload.into_owned();
        let (mut errs, mut benign) = (0, 0);
        for i in 0..300 {
            // Alternate between the compressed file and the payload (recompressed).
            let in_payload = i % 2 == 1;
            let mut buf = if in_payload {
                payload.clone()
            } else {
                file.clone()
            };
            let flips = 1 + rng.below(3);
            for _ in 0..flips {
                let at = rng.below(buf.len());
                buf[at] ^= 1 << rng.below(8);
            }
            let bytes = if in_payload {
                compress(&buf, kind).unwrap()
            } else {
                buf
            };
            let case = format!("{label} flip #{i} (payload: {in_payload})");
            match try_load(&bytes, &case) {
                Err(_) => errs += 1,
                Ok(a) => {
                    assert!(same(&a, &good), "{case}: loaded with different contents");
                    benign += 1;
                }
            }
        }
        eprintln!(
            "{label}: {errs} flips rejected, {benign} benign (zip metadata) loaded identical"
        );
        assert!(errs > 200, "{label}: only {errs} of 300 flips detected");
    }
}

#[test]
fn random_and_empty_inputs_are_rejected() {
    let mut rng = Rng(99);
    assert!(try_load(&[], "empty").is_err());
    let magics: [&[u8]; 5] = [
        b"",
        &[0x78, 0xDA],
        &[0x28, 0xB5, 0x2F, 0xFD],
        &[0xFD, b'7', b'z', b'X', b'Z', 0],
        b"PK\x03\x04",
    ];
    for i in 0..400 {
        let len = rng.below(2000);
        let mut b: Vec<u8> = magics[i % magics.len()].to_vec();
        b.extend((0..len).map(|_| rng.next() as u8));
        assert!(
            try_load(&b, &format!("random #{i}")).is_err(),
            "random #{i} loaded"
        );
    }
}

#[test]
fn real_artifact_prefixes_and_flips() {
    let Some(shared) = common::shared() else {
        return;
    };
    let path = shared.join("reference/baseline9L_int8_zlib.ptz");
    let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rng = Rng(2024);
    for i in 0..12 {
        let cut = if i == 0 {
            file.len() - 1
        } else {
            rng.below(file.len())
        };
        assert!(
            try_load(&file[..cut], &format!("real prefix {cut}")).is_err(),
            "real prefix {cut}"
        );
    }
    let good = try_load(&file, "real").unwrap();
    for i in 0..8 {
        let mut b = file.clone();
        let at = rng.below(b.len());
        b[at] ^= 1 << rng.below(8);
        match try_load(&b, &format!("real flip {i} at {at}")) {
            Err(_) => {}
            Ok(a) => assert!(same(&a, &good), "real flip {i} at {at}: loaded different"),
        }
    }
}
