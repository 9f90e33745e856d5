//! Loads the two real reference artifacts and checks them against
//! `fixtures/artifact_reference.json`, written by `fixtures/make_artifact_fixture.py` (numpy +
//! zstandard, an implementation independent of ours), plus facts from the spec.

use std::collections::BTreeMap;

mod common;

use pgolf_rt::artifact::{
    Artifact, Compression, ContainerFormat, DType, QuantScheme, SIZE_CAP_BYTES,
};
const FIXTURE: &str = include_str!("fixtures/artifact_reference.json");

// ---- a minimal JSON reader (no dev-dependency needed) ----
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool,
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn get(&self, k: &str) -> &J {
        match self {
            J::Obj(o) => {
                &o.iter()
                    .find(|(key, _)| key == k)
                    .unwrap_or_else(|| panic!("no key {k}"))
                    .1
            }
            _ => panic!("not an object"),
        }
    }
    fn has(&self, k: &str) -> bool {
        matches!(self, J::Obj(o) if o.iter().any(|(key, _)| key == k))
    }
    fn num(&self) -> f64 {
        match self {
            J::Num(n) => *n,
            _ => panic!("not a number: {self:?}"),
        }
    }
    fn str(&self) -> &str {
        match self {
            J::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }
    fn arr(&self) -> &[J] {
        match self {
            J::Arr(a) => a,
            _ => panic!("not an array: {self:?}"),
        }
    }
    fn obj(&self) -> &[(String, J)] {
        match self {
            J::Obj(o) => o,
            _ => panic!("not an object"),
        }
    }
}

fn parse_json(s: &str) -> J {
    fn ws(b: &[u8], i: &mut usize) {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    }
    fn val(b: &[u8], i: &mut usize) -> J {
        ws(b, i);
        match b[*i] {
            b'{' => {
                *i += 1;
                let mut o = Vec::new();
                loop {
                    ws(b, i);
                    if b[*i] == b'}' {
                        *i += 1;
                        return J::Obj(o);
                    }
                    let J::Str(k) = val(b, i) else { panic!("key") };
                    ws(b, i);
                    assert_eq!(b[*i], b':');
                    *i += 1;
                    o.push((k, val(b, i)));
                    ws(b, i);
                    if b[*i] == b',' {
                        *i += 1;
                    }
                }
            }
            b'[' => {
                *i += 1;
                let mut a = Vec::new();
                loop {
                    ws(b, i);
                    if b[*i] == b']' {
                        *i += 1;
                        return J::Arr(a);
                    }
                    a.push(val(b, i));
                    ws(b, i);
                    if b[*i] == b',' {
                        *i += 1;
                    }
                }
            }
            b'"' => {
                *i += 1;
                let mut s = String::new();
                while b[*i] != b'"' {
                    if b[*i] == b'\\' {
                        *i += 1;
                        s.push(match b[*i] {
                            b'n' => '\n',
                            b't' => '\t',
                            c => c as char,
                        });
                    } else {
                        s.push(b[*i] as char);
                    }
                    *i += 1;
                }
                *i += 1;
                J::Str(s)
            }
            b't' => {
                *i += 4;
                J::Bool
            }
            b'f' => {
                *i += 5;
                J::Bool
            }
            b'n' => {
                *i += 4;
                J::Null
            }
            _ => {
                let st = *i;
                while *i < b.len()
                    && matches!(b[*i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    *i += 1;
                }
                J::Num(std::str::from_utf8(&b[st..*i]).unwrap().parse().unwrap())
            }
        }
    }
    let mut i = 0;
    val(s.as_bytes(), &mut i)
}

fn load(file: &str) -> Option<Artifact> {
    let path = common::shared()?.join("reference").join(file);
    Some(Artifact::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn dtype_of(s: &str) -> DType {
    match s {
        "float32" => DType::F32,
        "bfloat16" => DType::BF16,
        "float16" => DType::F16,
        other => panic!("fixture dtype {other}"),
    }
}

/// Compares everything the fixture records for one artifact.
fn check_against_fixture(a: &Artifact, fx: &J) {
    assert_eq!(a.file_bytes as f64, fx.get("file_bytes").num());
    assert_eq!(a.payload_bytes as f64, fx.get("payload_bytes").num());
    assert_eq!(a.num_params() as f64, fx.get("num_params").num());
    let expected = fx.get("tensors").arr();
    assert_eq!(a.tensors.len(), expected.len());
    for (t, e) in a.tensors.iter().zip(expected) {
        assert_eq!(t.name, e.get("name").str(), "tensor order");
        let shape: Vec<usize> = e
            .get("shape")
            .arr()
            .iter()
            .map(|d| d.num() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{}", t.name);
        assert_eq!(
            t.values.len(),
            shape.iter().product::<usize>(),
            "{}",
            t.name
        );
        assert_eq!(t.dtype, dtype_of(e.get("dtype").str()), "{}", t.name);
        assert_eq!(
            t.stored_bytes as f64,
            e.get("stored_bytes").num(),
            "{}",
            t.name
        );
        match e.get("kind").str() {
            "per_row" => {
                let bits = e.get("bits").num() as u8;
                assert_eq!(t.scheme, QuantScheme::PerRow { bits }, "{}", t.name);
            }
            "passthrough_FloatStorage" => {
                assert_eq!(
                    t.scheme,
                    QuantScheme::Passthrough { stored: DType::F32 },
                    "{}",
                    t.name
                )
            }
            "passthrough_HalfStorage" => {
                assert_eq!(
                    t.scheme,
                    QuantScheme::Passthrough { stored: DType::F16 },
                    "{}",
                    t.name
                )
            }
            k => panic!("fixture kind {k}"),
        }
    }
    for (name, c) in fx.get("checks").obj() {
        let t = a.get(name).unwrap_or_else(|| panic!("missing {name}"));
        let (mut sum, mut sq, mut amax) = (0f64, 0f64, 0f64);
        for &v in &t.values {
            let v = f64::from(v);
            sum += v;
            sq += v * v;
            amax = amax.max(v.abs());
        }
        let tol = |x: f64| 1e-9 * x.abs().max(1.0) + 1e-6;
        let (es, esq) = (c.get("sum").num(), c.get("sum_sq").num());
        assert!((sum - es).abs() <= tol(es), "{name}: sum {sum} vs {es}");
        assert!((sq - esq).abs() <= tol(esq), "{name}: sum_sq {sq} vs {esq}");
        assert_eq!(amax, c.get("abs_max").num(), "{name}: abs max");
        for s in c.get("samples").arr() {
            let (i, v) = (s.arr()[0].num() as usize, s.arr()[1].num());
            // Sampled values are exact: both sides do f32 math then the same dtype rounding.
            assert_eq!(f64::from(t.values[i]), v, "{name}[{i}]");
        }
    }
}

#[test]
fn baseline9l_int8_zlib() {
    let Some(a) = load("baseline9L_int8_zlib.ptz") else {
        return;
    };
    let fixture = parse_json(FIXTURE);
    let fx = fixture.get("baseline9L_int8_zlib.ptz");
    assert_eq!(fx.get("compression").str(), "zlib");
    assert_eq!(a.compression, Compression::Zlib);
    assert_eq!(a.format, ContainerFormat::Int8CleanPerRowV1);
    assert!(a.file_bytes <= SIZE_CAP_BYTES);
    assert_eq!(a.file_bytes, 10_953_972); // README table
                                          // Spec 3.1 / 3.2: parameter count and state-dict shapes.
    assert_eq!(a.num_params(), 17_059_912);
    assert_eq!(a.tensors.len(), 1 + 1 + 9 * 10);
    let shape = |n: &str| {
        a.get(n)
            .unwrap_or_else(|| panic!("missing {n}"))
            .shape
            .clone()
    };
    assert_eq!(shape("tok_emb.weight"), [1024, 512]);
    assert_eq!(shape("skip_weights"), [4, 512]);
    for i in 0..9 {
        let b = format!("blocks.{i}");
        assert_eq!(shape(&format!("{b}.attn.c_q.weight")), [512, 512]);
        assert_eq!(shape(&format!("{b}.attn.c_k.weight")), [256, 512]);
        assert_eq!(shape(&format!("{b}.attn.c_v.weight")), [256, 512]);
        assert_eq!(shape(&format!("{b}.attn.proj.weight")), [512, 512]);
        assert_eq!(shape(&format!("{b}.mlp.fc.weight")), [1024, 512]);
        assert_eq!(shape(&format!("{b}.mlp.proj.weight")), [512, 1024]);
        assert_eq!(shape(&format!("{b}.attn.q_gain")), [8]);
        assert_eq!(shape(&format!("{b}.attn_scale")), [512]);
        assert_eq!(shape(&format!("{b}.mlp_scale")), [512]);
        assert_eq!(shape(&format!("{b}.resid_mix")), [2, 512]);
    }
    assert!(a.get("blocks.9.attn.c_q.weight").is_none());
    // tok_emb is int8 per row with bf16 as original dtype; control tensors are fp32.
    let e = a.get("tok_emb.weight").unwrap();
    assert_eq!(
        (e.dtype, e.scheme.clone()),
        (DType::BF16, QuantScheme::PerRow { bits: 8 })
    );
    assert!(e
        .values
        .iter()
        .all(|&v| half::bf16::from_f32(v).to_f32() == v));
    let g = a.get("blocks.0.attn.q_gain").unwrap();
    assert_eq!(g.scheme, QuantScheme::Passthrough { stored: DType::F32 });
    let names: BTreeMap<&str, ()> = a.tensors.iter().map(|t| (t.name.as_str(), ())).collect();
    assert_eq!(names.len(), a.tensors.len());
    check_against_fixture(&a, fx);
}

#[test]
fn mlp3x11l_int6_zstd() {
    let Some(a) = load("mlp3x11L_int6_zstd.ptz") else {
        return;
    };
    let fixture = parse_json(FIXTURE);
    let fx = fixture.get("mlp3x11L_int6_zstd.ptz");
    assert_eq!(fx.get("compression").str(), "zstd");
    assert_eq!(a.compression, Compression::Zstd);
    // The record's script writes the int8_clean container with int6 levels (multiples of 4).
    assert_eq!(a.format, ContainerFormat::Int8CleanPerRowV1);
    assert!(fx.has("keys"));
    assert_eq!(a.file_bytes, 9_846_815);
    assert_eq!(a.num_params(), 26_501_720);
    assert_eq!(a.tensors.len(), 1 + 1 + 11 * 10);
    let shape = |n: &str| {
        a.get(n)
            .unwrap_or_else(|| panic!("missing {n}"))
            .shape
            .clone()
    };
    assert_eq!(shape("skip_weights"), [5, 512]);
    for i in 0..11 {
        assert_eq!(shape(&format!("blocks.{i}.mlp.fc.weight")), [1536, 512]);
        assert_eq!(shape(&format!("blocks.{i}.mlp.proj.weight")), [512, 1536]);
        assert_eq!(shape(&format!("blocks.{i}.attn.c_k.weight")), [256, 512]);
        let fc = a.get(&format!("blocks.{i}.mlp.fc.weight")).unwrap();
        assert_eq!(fc.scheme, QuantScheme::PerRow { bits: 6 });
        assert_eq!(fc.dtype, DType::F32);
    }
    // fp16 tied embedding, cast back to its recorded original dtype (bf16).
    let e = a.get("tok_emb.weight").unwrap();
    assert_eq!(e.shape, [1024, 512]);
    assert_eq!(
        (e.dtype, e.scheme.clone()),
        (DType::BF16, QuantScheme::Passthrough { stored: DType::F16 })
    );
    check_against_fixture(&a, fx);
}
