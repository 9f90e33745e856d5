//! Tensors inside a `torch.save` pickle: rebuild them from persistent storages, and write them.
//!
//! Why: torch pickles each tensor as
//! `torch._utils._rebuild_tensor_v2(persid(('storage', torch.<X>Storage, key, location, numel)),
//! offset, size, stride, requires_grad, OrderedDict())` with the raw little-endian bytes in
//! `<prefix>/data/<key>`. Reading checks every number against the storage (contiguity, bounds,
//! byte counts) so a malformed file is an error; writing produces exactly that shape so that
//! `torch.load(path, weights_only=True)` accepts our exports.

use half::{bf16, f16};

use super::pickle::{self, Value};
use super::zip::{write_torch_archive, TorchArchive};
use super::{err, DType};
use crate::Result;

/// Most elements accepted in one tensor (2^31, far above any challenge tensor).
pub const MAX_NUMEL: usize = 1 << 31;

impl DType {
    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::I64 => 8,
        }
    }
    /// True for floating-point dtypes.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }
    /// PyTorch's dtype name (`str(t.dtype)` without `torch.`).
    pub fn torch_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::I8 => "int8",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }
    /// Parses a PyTorch dtype name (`float32`, `torch.bfloat16`, `half`, ...).
    pub fn from_torch_name(s: &str) -> Option<DType> {
        Some(match s.strip_prefix("torch.").unwrap_or(s) {
            "float32" | "float" => DType::F32,
            "float16" | "half" => DType::F16,
            "bfloat16" => DType::BF16,
            "int8" => DType::I8,
            "int32" | "int" => DType::I32,
            "int64" | "long" => DType::I64,
            "uint8" => DType::U8,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
    /// Legacy typed-storage class name torch pickles (`FloatStorage`, ...).
    pub fn storage_name(self) -> &'static str {
        match self {
            DType::F32 => "FloatStorage",
            DType::F16 => "HalfStorage",
            DType::BF16 => "BFloat16Storage",
            DType::I8 => "CharStorage",
            DType::I32 => "IntStorage",
            DType::I64 => "LongStorage",
            DType::U8 => "ByteStorage",
            DType::Bool => "BoolStorage",
        }
    }
    fn from_storage_name(s: &str) -> Option<DType> {
        Some(match s {
            "FloatStorage" => DType::F32,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "CharStorage" => DType::I8,
            "IntStorage" => DType::I32,
            "LongStorage" => DType::I64,
            "ByteStorage" | "UntypedStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }
    /// Rounds an f32 through this dtype and back (bf16/fp16 round to nearest even).
    pub fn round_f32(self, x: f32) -> f32 {
        match self {
            DType::BF16 => bf16::from_f32(x).to_f32(),
            DType::F16 => f16::from_f32(x).to_f32(),
            _ => x,
        }
    }
}

/// A tensor as stored: dtype, shape and its little-endian bytes (borrowed from the archive).
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor<'a> {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
}

impl RawTensor<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Values widened to f32 (exact for every supported dtype except large int32/int64).
    pub fn to_f32(&self) -> Vec<f32> {
        let b = self.bytes;
        match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::I8 => b.iter().map(|&x| f32::from(x as i8)).collect(),
            DType::U8 | DType::Bool => b.iter().map(|&x| f32::from(x)).collect(),
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect(),
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
        }
    }
}

fn int_of(v: &Value, what: &str) -> Result<i64> {
    v.as_int()
        .ok_or_else(|| err(format!("tensor: {what} is not an integer")))
}

fn dims_of(v: &Value, what: &str) -> Result<Vec<usize>> {
    let seq = v
        .as_seq()
        .ok_or_else(|| err(format!("tensor: {what} is not a tuple")))?;
    if seq.len() > 16 {
        return Err(err(format!("tensor: {what} has {} dimensions", seq.len())));
    }
    seq.iter()
        .map(|d| {
            usize::try_from(int_of(d, what)?).map_err(|_| err(format!("tensor: negative {what}")))
        })
        .collect()
}

/// If `v` is a pickled tensor (`_rebuild_tensor_v2` or `_rebuild_parameter` around one),
/// rebuilds it against the archive's storages; `Ok(None)` for any other value.
pub fn as_tensor<'a>(v: &Value, ar: &TorchArchive<'a>) -> Result<Option<RawTensor<'a>>> {
    let Value::Reduce { callable, args } = v else {
        return Ok(None);
    };
    let args = args.as_seq().unwrap_or(&[]);
    if callable.is_global("torch._utils", "_rebuild_parameter") {
        let inner = args
            .first()
            .ok_or_else(|| err("tensor: _rebuild_parameter without data"))?;
        return match as_tensor(inner, ar)? {
            Some(t) => Ok(Some(t)),
            None => Err(err("tensor: _rebuild_parameter around a non-tensor")),
        };
    }
    if !callable.is_global("torch._utils", "_rebuild_tensor_v2") {
        return Ok(None);
    }
    if args.len() < 4 {
        return Err(err("tensor: _rebuild_tensor_v2 with too few arguments"));
    }
    let Value::PersId(pid) = &args[0] else {
        return Err(err("tensor: storage argument is not a persistent id"));
    };
    let pid = pid
        .as_seq()
        .filter(|p| p.len() == 5 && p[0].as_str() == Some("storage"))
        .ok_or_else(|| {
            err("tensor: persistent id is not ('storage', type, key, location, numel)")
        })?;
    let dtype = match &pid[1] {
        Value::Global { module, name } if module == "torch" || module == "torch.storage" => {
            DType::from_storage_name(name).ok_or_else(|| {
                err(format!(
                    "tensor: unsupported storage type {}",
                    super::quoted(&format!("torch.{name}"))
                ))
            })?
        }
        other => {
            return Err(err(format!(
                "tensor: bad storage type (a {}, not a torch storage class)",
                other.kind()
            )))
        }
    };
    let key = pid[2]
        .as_str()
        .ok_or_else(|| err("tensor: storage key is not a string"))?;

    let storage_numel = usize::try_from(int_of(&pid[4], "storage numel")?)
        .map_err(|_| err("tensor: negative storage numel"))?;
    let offset = usize::try_from(int_of(&args[1], "storage offset")?)
        .map_err(|_| err("tensor: negative storage offset"))?;
    let shape = dims_of(&args[2], "size")?;
    let stride = dims_of(&args[3], "stride")?;
    if shape.len() != stride.len() {
        return Err(err("tensor: size and stride ranks differ"));
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_NUMEL)
        .ok_or_else(|| err(format!("tensor: shape {shape:?} is too large")))?;
    if numel > 0 {
        let mut expect = 1usize;
        for (&d, &s) in shape.iter().zip(&stride).rev() {
            if d != 1 && s != expect {
                return Err(err(format!(
                    "tensor: non-contiguous strides {stride:?} for shape {shape:?}"
                )));
            }
            expect *= d;
        }
    }
    let esize = dtype.size_bytes();
    let record = ar.record(key)?;
    if Some(record.len()) != storage_numel.checked_mul(esize) {
        return Err(err(format!(
            "tensor: storage {} holds {} bytes, expected {storage_numel} x {esize}",
            super::quoted(key),
            record.len()
        )));
    }
    if offset
        .checked_add(numel)
        .is_none_or(|end| end > storage_numel)
    {
        return Err(err(format!(
            "tensor: offset {offset} + {numel} elements exceeds storage {} ({storage_numel})",
            super::quoted(key)
        )));
    }
    let bytes = &record[offset * esize..(offset + numel) * esize];
    ar.charge_elements(numel)?;
    Ok(Some(RawTensor {
        dtype,
        shape,
        bytes,
    }))
}

/// A tensor to write: dtype, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl OwnedTensor {
    /// Encodes f32 values as `dtype` (floats round to nearest even; integers must be exact).
    pub fn from_f32(dtype: DType, shape: &[usize], values: &[f32]) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel != values.len() {
            return Err(err(format!(
                "tensor writer: shape {shape:?} needs {numel} values, got {}",
                values.len()
            )));
        }
        let mut bytes = Vec::with_capacity(numel * dtype.size_bytes());
        for &x in values {
            let int = |lo: f32, hi: f32| -> Result<i64> {
                if x.fract() != 0.0 || !(lo..=hi).contains(&x) {
                    return Err(err(format!(
                        "tensor writer: {x} is not a valid {}",
                        dtype.torch_name()
                    )));
                }
                Ok(x as i64)
            };
            match dtype {
                DType::F32 => bytes.extend_from_slice(&x.to_le_bytes()),
                DType::F16 => bytes.extend_from_slice(&f16::from_f32(x).to_le_bytes()),
                DType::BF16 => bytes.extend_from_slice(&bf16::from_f32(x).to_le_bytes()),
                DType::I8 => bytes.push(int(-128.0, 127.0)? as i8 as u8),
                DType::U8 => bytes.push(int(0.0, 255.0)? as u8),
                DType::Bool => bytes.push(int(0.0, 1.0)? as u8),
                DType::I32 => bytes
                    .extend_from_slice(&(int(-2.147_483_6e9, 2.147_483_6e9)? as i32).to_le_bytes()),
                DType::I64 => bytes.extend_from_slice(&int(-9.2e18, 9.2e18)?.to_le_bytes()),
            }
        }
        Ok(OwnedTensor {
            dtype,
            shape: shape.to_vec(),
            bytes,
        })
    }
    /// An int8 tensor from quantized values.
    pub fn from_i8(shape: &[usize], q: &[i8]) -> Self {
        OwnedTensor {
            dtype: DType::I8,
            shape: shape.to_vec(),
            bytes: q.iter().map(|&x| x as u8).collect(),
        }
    }
}

/// The object tree `torch.save` writes for our exports.
#[derive(Debug, Clone, PartialEq)]
pub enum SaveValue {
    Tensor(OwnedTensor),
    Str(String),
    Int(i64),
    /// String-keyed dict in insertion order.
    Dict(Vec<(String, SaveValue)>),
}

fn global(module: &str, name: &str) -> Value {
    Value::Global {
        module: module.into(),
        name: name.into(),
    }
}

fn to_pickle_value(v: &SaveValue, records: &mut Vec<(String, Vec<u8>)>) -> Result<Value> {
    Ok(match v {
        SaveValue::Str(s) => Value::Str(s.clone()),
        SaveValue::Int(i) => Value::Int(*i),
        SaveValue::Dict(d) => Value::Dict(
            d.iter()
                .map(|(k, v)| Ok((Value::Str(k.clone()), to_pickle_value(v, records)?)))
                .collect::<Result<_>>()?,
        ),
        SaveValue::Tensor(t) => {
            let numel: usize = t.shape.iter().product();
            if t.bytes.len() != numel * t.dtype.size_bytes() {
                return Err(err("tensor writer: byte count does not match shape"));
            }
            let key = records.len().to_string();
            records.push((key.clone(), t.bytes.clone()));
            let mut stride = vec![0i64; t.shape.len()];
            let mut acc = 1i64;
            for (s, &d) in stride.iter_mut().zip(&t.shape).rev() {
                *s = acc;
                acc *= d as i64;
            }
            let pid = Value::Tuple(vec![
                Value::Str("storage".into()),
                global("torch", t.dtype.storage_name()),
                Value::Str(key),
                Value::Str("cpu".into()),
                Value::Int(numel as i64),
            ]);
            Value::Reduce {
                callable: Box::new(global("torch._utils", "_rebuild_tensor_v2")),
                args: Box::new(Value::Tuple(vec![
                    Value::PersId(Box::new(pid)),
                    Value::Int(0),
                    Value::Tuple(t.shape.iter().map(|&d| Value::Int(d as i64)).collect()),
                    Value::Tuple(stride.into_iter().map(Value::Int).collect()),
                    Value::Bool(false),
                    Value::Reduce {
                        callable: Box::new(global("collections", "OrderedDict")),
                        args: Box::new(Value::Tuple(vec![])),
                    },
                ])),
            }
        }
    })
}

/// Serializes `obj` like `torch.save(obj, f)` would (zip with prefix `archive`).
pub fn save(obj: &SaveValue) -> Result<Vec<u8>> {
    let mut records = Vec::new();
    let root = to_pickle_value(obj, &mut records)?;
    let pkl = pickle::dump(&root)?;
    write_torch_archive("archive", &pkl, &records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_root(zip: &[u8]) -> (TorchArchive<'_>, Value) {
        let ar = TorchArchive::parse(zip).unwrap();
        let root = pickle::load(ar.pickle).unwrap();
        (ar, root)
    }

    #[test]
    fn save_then_rebuild() {
        let a = OwnedTensor::from_f32(DType::F32, &[2, 3], &[1., 2., 3., 4., 5., -6.]).unwrap();
        let h = OwnedTensor::from_f32(DType::F16, &[], &[0.1]).unwrap();
        let b = OwnedTensor::from_f32(DType::BF16, &[2], &[1.0 / 3.0, 7.0]).unwrap();
        let q = OwnedTensor::from_i8(&[3], &[-127, 0, 5]);
        let l = OwnedTensor::from_f32(DType::I64, &[1], &[-3.0]).unwrap();
        let obj = SaveValue::Dict(vec![
            ("a".into(), SaveValue::Tensor(a)),
            (
                "inner".into(),
                SaveValue::Dict(vec![
                    ("h".into(), SaveValue::Tensor(h)),
                    ("b".into(), SaveValue::Tensor(b)),
                    ("q".into(), SaveValue::Tensor(q)),
                    ("l".into(), SaveValue::Tensor(l)),
                ]),
            ),
            ("s".into(), SaveValue::Str("x".into())),
        ]);
        let zip = save(&obj).unwrap();
        let (ar, root) = load_root(&zip);
        let t = as_tensor(root.get("a").unwrap(), &ar).unwrap().unwrap();
        assert_eq!((t.dtype, t.shape.clone()), (DType::F32, vec![2, 3]));
        assert_eq!(t.to_f32(), vec![1., 2., 3., 4., 5., -6.]);
        let inner = root.get("inner").unwrap();
        let h = as_tensor(inner.get("h").unwrap(), &ar).unwrap().unwrap();
        assert!(h.shape.is_empty());
        assert_eq!(h.to_f32(), vec![f16::from_f32(0.1).to_f32()]);
        let b = as_tensor(inner.get("b").unwrap(), &ar).unwrap().unwrap();
        assert_eq!(b.to_f32(), vec![0.333_984_38, 7.0]); // bf16(1/3) = 0x3EAB
        let q = as_tensor(inner.get("q").unwrap(), &ar).unwrap().unwrap();
        assert_eq!(q.to_f32(), vec![-127., 0., 5.]);
        let l = as_tensor(inner.get("l").unwrap(), &ar).unwrap().unwrap();
        assert_eq!((l.dtype, l.to_f32()), (DType::I64, vec![-3.0]));
        assert_eq!(as_tensor(root.get("s").unwrap(), &ar).unwrap(), None);
    }

    fn tensor_value(storage: &str, numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Value {
        let ints = |v: &[i64]| Value::Tuple(v.iter().map(|&x| Value::Int(x)).collect());
        Value::Reduce {
            callable: Box::new(global("torch._utils", "_rebuild_tensor_v2")),
            args: Box::new(Value::Tuple(vec![
                Value::PersId(Box::new(Value::Tuple(vec![
                    Value::Str("storage".into()),
                    global("torch", storage),
                    Value::Str("0".into()),
                    Value::Str("cpu".into()),
                    Value::Int(numel),
                ]))),
                Value::Int(offset),
                ints(size),
                ints(stride),
                Value::Bool(false),
                Value::Dict(vec![]),
            ])),
        }
    }

    #[test]
    fn rejects_bad_tensor_descriptions() {
        let zip = write_torch_archive("archive", b"N.", &[("0".into(), vec![0u8; 24])]).unwrap();
        let ar = TorchArchive::parse(&zip).unwrap();
        // A valid view with an offset.
        let ok = as_tensor(&tensor_value("FloatStorage", 6, 2, &[2, 2], &[2, 1]), &ar)
            .unwrap()
            .unwrap();
        assert_eq!(ok.bytes.len(), 16);
        let bad = [
            tensor_value("FloatStorage", 6, 3, &[2, 2], &[2, 1]), // past the end
            tensor_value("FloatStorage", 6, 0, &[2, 3], &[1, 2]), // transposed
            tensor_value("FloatStorage", 5, 0, &[5], &[1]),       // byte count mismatch
            tensor_value("DoubleStorage", 3, 0, &[3], &[1]),      // unsupported
            tensor_value("FloatStorage", 6, -1, &[2], &[1]),      // negative offset
            tensor_value("FloatStorage", 6, 0, &[2, -1], &[1, 1]), // negative size
            tensor_value("FloatStorage", 6, 0, &[2], &[1, 1]),    // rank mismatch
            tensor_value("FloatStorage", 6, 0, &[1 << 40, 1 << 40], &[1 << 40, 1]), // overflow
        ];
        for b in &bad {
            assert!(as_tensor(b, &ar).is_err(), "{b:?}");
        }
        // Size-1 dims may carry any stride (torch's contiguity rule).
        assert!(as_tensor(&tensor_value("FloatStorage", 6, 0, &[1, 6], &[99, 1]), &ar).is_ok());
        let missing = write_torch_archive("archive", b"N.", &[]).unwrap();
        let ar2 = TorchArchive::parse(&missing).unwrap();
        assert!(as_tensor(&tensor_value("FloatStorage", 6, 0, &[6], &[1]), &ar2).is_err());
    }

    #[test]
    fn integer_writer_is_exact() {
        assert!(OwnedTensor::from_f32(DType::I8, &[1], &[200.0]).is_err());
        assert!(OwnedTensor::from_f32(DType::I32, &[1], &[0.5]).is_err());
        assert!(OwnedTensor::from_f32(DType::F32, &[2], &[0.5]).is_err());
    }
}
