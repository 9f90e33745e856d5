//! Export a small model with the int8 and int6 writers, load it back, and check the values are
//! within the quantization error and the metadata says what the rules (spec 6.2 / 6.3) say.
//!
//! With `PGOLF_ARTIFACT_DUMP=<dir>` the written artifacts and a summary of what our loader
//! reports are left in `<dir>` for `scripts/check_torch_load.py` (compares against torch.load).

use pgolf_rt::artifact::{
    export_artifact, write_atomic, Artifact, Compression, ContainerFormat, DType, ExportLayout,
    ExportOptions, ExportTensor, QuantScheme,
};

struct Rng(u64);
impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

struct Model {
    specs: Vec<(String, Vec<usize>, DType)>,
    values: Vec<Vec<f32>>,
}

impl Model {
    fn new() -> Self {
        let specs: Vec<(String, Vec<usize>, DType)> = vec![
            ("tok_emb.weight".into(), vec![256, 288], DType::BF16), // 73,728 > 65,536: quantized
            ("skip_weights".into(), vec![2, 64], DType::F32),
            (
                "blocks.0.attn.c_q.weight".into(),
                vec![288, 256],
                DType::F32,
            ),
            ("blocks.0.attn.q_gain".into(), vec![4], DType::F32),
            ("blocks.0.attn_scale".into(), vec![64], DType::F32),
            ("blocks.0.mlp.fc.weight".into(), vec![320, 256], DType::F32),
            ("blocks.0.mlp.proj.weight".into(), vec![64, 128], DType::F32), // small: fp16 passthrough
            ("blocks.0.resid_mix".into(), vec![2, 64], DType::F32),
            ("bigram.scale_vec".into(), vec![70_000], DType::F32), // 1-D, large: per-tensor int8
        ];
        let mut rng = Rng(0xC0FFEE);
        let values = specs
            .iter()
            .enumerate()
            .map(|(k, (_, s, _))| {
                let n: usize = s.iter().product();
                (0..n)
                    .map(|i| rng.f32() * (0.5 + (k + i % 7) as f32 * 0.1))
                    .collect()
            })
            .collect();
        Model { specs, values }
    }
    fn tensors(&self) -> Vec<ExportTensor<'_>> {
        self.specs
            .iter()
            .zip(&self.values)
            .map(|((n, s, d), v)| ExportTensor {
                name: n,
                shape: s,
                dtype: *d,
                values: v,
            })
            .collect()
    }
}

fn rows(v: &[f32], shape: &[usize]) -> Vec<(usize, f32)> {
    // (row length, row max |w|) for each row of a 2-D tensor; whole tensor otherwise.
    if shape.len() == 2 {
        v.chunks(shape[1])
            .map(|r| (r.len(), r.iter().fold(0f32, |a, x| a.max(x.abs()))))
            .collect()
    } else {
        vec![(v.len(), v.iter().fold(0f32, |a, x| a.max(x.abs())))]
    }
}

/// Every value within one quantization step (rowmax / levels) plus the dtype's rounding.
fn assert_close(
    name: &str,
    orig: &[f32],
    got: &[f32],
    shape: &[usize],
    levels: f32,
    rel_dtype: f32,
) {
    assert_eq!(orig.len(), got.len(), "{name}");
    let mut i = 0;
    for (len, rmax) in rows(orig, shape) {
        let step = rmax / levels;
        for _ in 0..len {
            let (w, g) = (orig[i], got[i]);
            assert!(
                (w - g).abs() <= step * 1.001 + w.abs() * rel_dtype,
                "{name}[{i}]: {w} came back as {g} (step {step})"
            );
            i += 1;
        }
    }
}

fn dump(label: &str, bytes: &[u8], a: &Artifact) {
    let Ok(dir) = std::env::var("PGOLF_ARTIFACT_DUMP") else {
        return;
    };
    let path = std::path::Path::new(&dir).join(format!("{label}.ptz"));
    write_atomic(&path, bytes).unwrap();
    let s = a.summary_tsv();
    std::fs::write(std::path::Path::new(&dir).join(format!("{label}.tsv")), s).unwrap();
}

#[test]
fn int8_clean_round_trip() {
    let m = Model::new();
    let bytes = export_artifact(
        &m.tensors(),
        ExportLayout::Int8Clean,
        Compression::Zlib,
        &ExportOptions::default(),
    )
    .unwrap();
    let a = Artifact::from_bytes(&bytes).unwrap();
    dump("int8_zlib", &bytes, &a);
    assert_eq!(
        (a.compression, a.format.clone()),
        (Compression::Zlib, ContainerFormat::Int8CleanPerRowV1)
    );
    // Quantized tensors come first, then passthrough, each in input order.
    let names: Vec<&str> = a.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "tok_emb.weight",
            "blocks.0.attn.c_q.weight",
            "blocks.0.mlp.fc.weight",
            "bigram.scale_vec",
            "skip_weights",
            "blocks.0.attn.q_gain",
            "blocks.0.attn_scale",
            "blocks.0.mlp.proj.weight",
            "blocks.0.resid_mix",
        ]
    );
    for ((name, shape, dtype), orig) in m.specs.iter().zip(&m.values) {
        let t = a.get(name).unwrap();
        assert_eq!(&t.shape, shape, "{name}");
        assert_eq!(t.dtype, *dtype, "{name}: original dtype recorded");
        let numel: usize = shape.iter().product();
        match name.as_str() {
            "bigram.scale_vec" => {
                assert_eq!(t.scheme, QuantScheme::PerTensor { bits: 8 });
                assert_eq!(t.stored_bytes, numel + 4);
                assert_close(name, orig, &t.values, shape, 127.0, 0.0);
            }
            "skip_weights"
            | "blocks.0.attn.q_gain"
            | "blocks.0.attn_scale"
            | "blocks.0.resid_mix" => {
                // Control tensors: fp32 passthrough, exact.
                assert_eq!(t.scheme, QuantScheme::Passthrough { stored: DType::F32 });
                assert_eq!(&t.values, orig, "{name}");
            }
            "blocks.0.mlp.proj.weight" => {
                assert_eq!(t.scheme, QuantScheme::Passthrough { stored: DType::F16 });
                assert_eq!(t.stored_bytes, numel * 2);
                for (w, g) in orig.iter().zip(&t.values) {
                    assert_eq!(*g, half::f16::from_f32(*w).to_f32());
                }
            }
            _ => {
                assert_eq!(t.scheme, QuantScheme::PerRow { bits: 8 }, "{name}");
                assert_eq!(t.stored_bytes, numel + shape[0] * 2, "{name}");
                let rel = if *dtype == DType::BF16 {
                    1.0 / 256.0
                } else {
                    0.0
                };
                assert_close(name, orig, &t.values, shape, 127.0, rel);
            }
        }
        if *dtype == DType::BF16 {
            assert!(t
                .values
                .iter()
                .all(|&v| half::bf16::from_f32(v).to_f32() == v));
        }
    }
}

#[test]
fn int6_wm_round_trip() {
    let m = Model::new();
    let compression = if cfg!(feature = "zstd-native") {
        Compression::Zstd
    } else {
        Compression::Xz
    };
    let bytes = export_artifact(
        &m.tensors(),
        ExportLayout::Int6Wm,
        compression,
        &ExportOptions::default(),
    )
    .unwrap();
    let a = Artifact::from_bytes(&bytes).unwrap();
    dump("int6_wm", &bytes, &a);
    assert_eq!(
        (a.compression, a.format.clone()),
        (compression, ContainerFormat::MixedWm)
    );
    let names: Vec<&str> = a.tensors.iter().map(|t| t.name.as_str()).collect();
    let expect: Vec<&str> = m.specs.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, expect, "m lists tensors in model order");
    for ((name, shape, _), orig) in m.specs.iter().zip(&m.values) {
        let t = a.get(name).unwrap();
        assert_eq!(&t.shape, shape);
        match name.as_str() {
            "blocks.0.attn.c_q.weight" | "blocks.0.mlp.fc.weight" => {
                assert_eq!(t.scheme, QuantScheme::PerRow { bits: 6 });
                assert_eq!(t.dtype, DType::F32);
                // GPTQ-lite may clip a row's outlier just under the max: allow 1.5 steps.
                assert_close(name, orig, &t.values, shape, 31.0 / 1.5, 0.0);
            }
            "tok_emb.weight" => {
                // "embed" category: int8 rows; template dtype bf16.
                assert_eq!(
                    (t.scheme.clone(), t.dtype),
                    (QuantScheme::PerRow { bits: 8 }, DType::BF16)
                );
                assert_close(name, orig, &t.values, shape, 127.0, 1.0 / 256.0);
            }
            "bigram.scale_vec" => {
                // "other" category, 1-D: per-tensor int8.
                assert_eq!(t.scheme, QuantScheme::PerTensor { bits: 8 });
                assert_close(name, orig, &t.values, shape, 127.0, 0.0);
            }
            _ => {
                // numel <= 65,536: fp16 copy (control tensors too), cast back to fp32.
                assert_eq!(
                    (t.scheme.clone(), t.dtype),
                    (QuantScheme::Passthrough { stored: DType::F16 }, DType::F32)
                );
                for (w, g) in orig.iter().zip(&t.values) {
                    assert_eq!(*g, half::f16::from_f32(*w).to_f32(), "{name}");
                }
            }
        }
    }
    // fp16 embedding export keeps tok_emb as passthrough.
    let opts = ExportOptions {
        fp16_embed: true,
        ..ExportOptions::default()
    };
    let b2 = export_artifact(&m.tensors(), ExportLayout::Int6Wm, Compression::Xz, &opts).unwrap();
    let a2 = Artifact::from_bytes(&b2).unwrap();
    let e = a2.get("tok_emb.weight").unwrap();
    assert_eq!(
        (e.scheme.clone(), e.dtype),
        (QuantScheme::Passthrough { stored: DType::F16 }, DType::BF16)
    );
    // The fp16 copy is rounded back through bf16 (the template dtype) on load.
    let orig = &m.values[0];
    let mut changed = 0;
    for (w, g) in orig.iter().zip(&e.values) {
        let f = half::f16::from_f32(*w).to_f32();
        assert_eq!(*g, half::bf16::from_f32(f).to_f32());
        changed += usize::from(*g != f);
    }
    assert!(changed > orig.len() / 2, "bf16 rounding was not exercised");
}

#[test]
fn state_dict_round_trip() {
    let m = Model::new();
    let bytes = export_artifact(
        &m.tensors(),
        ExportLayout::StateDict,
        Compression::None,
        &ExportOptions::default(),
    )
    .unwrap();
    let a = Artifact::from_bytes(&bytes).unwrap();
    assert_eq!(
        (a.compression, a.format.clone()),
        (Compression::None, ContainerFormat::StateDict)
    );
    for ((name, _, dtype), orig) in m.specs.iter().zip(&m.values) {
        let t = a.get(name).unwrap();
        assert_eq!(t.scheme, QuantScheme::Passthrough { stored: *dtype });
        for (w, g) in orig.iter().zip(&t.values) {
            assert_eq!(*g, dtype.round_f32(*w));
        }
    }
}
