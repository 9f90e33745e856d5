//! Hostile inputs built by hand: artifacts whose pickle, zip or xz layer tries to make the
//! reader use unbounded memory or time, or to load silently wrong values.

use pgolf_rt::artifact::compress::compress;
use pgolf_rt::artifact::pickle::{self, Value};
use pgolf_rt::artifact::torch::{save, OwnedTensor, SaveValue};
use pgolf_rt::artifact::zip::write_torch_archive;
use pgolf_rt::artifact::{Compression, DType};

/// A `torch.save` zip around `pickle` and `records`, zlib-compressed like the baseline.
pub fn zlib_artifact(pickle: &[u8], records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let zip = write_torch_archive("archive", pickle, records).unwrap();
    compress(&zip, Compression::Zlib).unwrap()
}

/// A pickle that memoizes one `len`-byte string and fetches it `fetches` times into a list:
/// each fetch copies the string.
pub fn memo_string_pickle(len: usize, fetches: usize) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'X'];
    p.extend_from_slice(&(len as u32).to_le_bytes());
    p.resize(p.len() + len, b'a');
    p.extend_from_slice(&[b'q', 0, b'(']);
    for _ in 0..fetches {
        p.extend_from_slice(&[b'h', 0]);
    }
    p.extend_from_slice(b"l.");
    p
}

/// A pickle of `n` MARK opcodes.
pub fn marks_pickle(n: usize) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.resize(2 + n, b'(');
    p.push(b'.');
    p
}

fn global(module: &str, name: &str) -> Value {
    Value::Global {
        module: module.into(),
        name: name.into(),
    }
}

/// `torch._utils._rebuild_tensor_v2` of a contiguous 1-D view of storage `key`.
pub fn tensor_value(storage: &str, key: &str, numel: usize) -> Value {
    Value::Reduce {
        callable: Box::new(global("torch._utils", "_rebuild_tensor_v2")),
        args: Box::new(Value::Tuple(vec![
            Value::PersId(Box::new(Value::Tuple(vec![
                Value::Str("storage".into()),
                global("torch", storage),
                Value::Str(key.into()),
                Value::Str("cpu".into()),
                Value::Int(numel as i64),
            ]))),
            Value::Int(0),
            Value::Tuple(vec![Value::Int(numel as i64)]),
            Value::Tuple(vec![Value::Int(1)]),
            Value::Bool(false),
            Value::Dict(vec![]),
        ])),
    }
}

/// A state dict of `count` tensors that all view the same `numel`-byte int8 storage: each
/// would be dequantized to its own `numel` floats.
pub fn shared_storage_artifact(count: usize, numel: usize) -> Vec<u8> {
    let t = tensor_value("CharStorage", "0", numel);
    let root = Value::Dict(
        (0..count)
            .map(|i| (Value::Str(format!("t{i}")), t.clone()))
            .collect(),
    );
    let pkl = pickle::dump(&root).unwrap();
    zlib_artifact(&pkl, &[("0".into(), vec![1u8; numel])])
}

/// The baseline's int8 layout with one tensor whose fp16 scale is `scale` (e.g. infinity).
pub fn int8_artifact_with_scale(scale: f32) -> Vec<u8> {
    let s = |x: &str| SaveValue::Str(x.into());
    let q = OwnedTensor::from_i8(&[2, 2], &[1, -1, 2, 3]);
    let sc = OwnedTensor::from_f32(DType::F16, &[2], &[0.5, scale]).unwrap();
    let obj = SaveValue::Dict(vec![
        ("__quant_format__".into(), s("int8_clean_per_row_v1")),
        (
            "quantized".into(),
            SaveValue::Dict(vec![("w".into(), SaveValue::Tensor(q))]),
        ),
        (
            "scales".into(),
            SaveValue::Dict(vec![("w".into(), SaveValue::Tensor(sc))]),
        ),
        (
            "dtypes".into(),
            SaveValue::Dict(vec![("w".into(), s("float32"))]),
        ),
        ("passthrough".into(), SaveValue::Dict(vec![])),
    ]);
    compress(&save(&obj).unwrap(), Compression::Zlib).unwrap()
}

/// `zip` with the central-directory record of entry `name` listed `times` times in all
/// (a stored-only archive without ZIP64 records, as our writer produces).
pub fn repeat_central_record(zip: &[u8], name: &str, times: usize) -> Vec<u8> {
    let u16_at = |at: usize| u16::from_le_bytes([zip[at], zip[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(zip[at..at + 4].try_into().unwrap()) as usize;
    let eocd = zip.len() - 22;
    let (count, cd_off) = (u16_at(eocd + 10), u32_at(eocd + 16));
    let mut central = Vec::new();
    let mut p = cd_off;
    for _ in 0..count {
        let len = 46 + u16_at(p + 28) + u16_at(p + 30) + u16_at(p + 32);
        let rec = &zip[p..p + len];
        let copies = if &rec[46..46 + u16_at(p + 28)] == name.as_bytes() {
            times
        } else {
            1
        };
        for _ in 0..copies {
            central.extend_from_slice(rec);
        }
        p += len;
    }
    let n = count + times - 1;
    assert!(n < 0xFFFF, "too many records for a plain end record");
    let mut out = zip[..cd_off].to_vec();
    out.extend_from_slice(&central);
    out.extend_from_slice(&zip[eocd..eocd + 8]);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&(cd_off as u32).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// One LZMA2 chunk (dictionary, state and properties reset) that unpacks to 1 MiB of zeros,
/// made by liblzma (`lzma.compress(b"\0" * 2**20, format=FORMAT_RAW, filters=[LZMA2 preset 0])`).
const ZEROS_CHUNK_HEX: [&str; 5] = [
    "efffff00d95d00006ffdffffa3b7ff473e481572396151b89228e6a38607f9eee41e82d32fc53a3c014bb17ec98a8a4d",
    "2fa30dd97fa6e38c231153e05918c5758ae277f8b6947f0c6ac0de744964e2e95c53b204d8f7440cab5f0d6d46e9e5c3",
    "7688b79657acb64de1691d6ffb4b88106c42cb883f5c008fd04eaf262894711f3d8f24e1709ea7235fec28cb85d19598",
    "8a7e2a91f22775f719c006984d98fdd8afd5900fc42553f8f591363105a5b0ee6fc1704d470cd19111aaad601dbaceb1",
    "27185c5986e9665258bee976ac59e4e55b0508f9c7daadfcfb522af7e4952500",
];

/// Appends `n` as a protobuf / xz base-128 varint.
pub fn put_varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7F) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A valid single-block `.xz` file (no check) that decodes to `mib` MiB of zeros, at 224 bytes
/// per MiB: 2048 MiB fit in 460 kB.
pub fn xz_of_zeros(mib: usize) -> Vec<u8> {
    let hex: String = ZEROS_CHUNK_HEX.concat();
    let chunk: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    // Block header: size (12 / 4 - 1), flags (one filter), LZMA2 id, 1 property byte (1 MiB
    // dictionary), padding, CRC-32.
    let mut block = vec![0x02, 0x00, 0x21, 0x01, 0x10, 0, 0, 0];
    let crc = crc32fast::hash(&block);
    block.extend_from_slice(&crc.to_le_bytes());
    for _ in 0..mib {
        block.extend_from_slice(&chunk);
    }
    block.push(0x00); // end of LZMA2 data
    let unpadded = block.len();
    while block.len() % 4 != 0 {
        block.push(0);
    }
    let mut out = vec![0xFD, b'7', b'z', b'X', b'Z', 0, 0, 0];
    out.extend_from_slice(&crc32fast::hash(&[0, 0]).to_le_bytes());
    out.extend_from_slice(&block);
    let mut index = vec![0x00];
    put_varint(1, &mut index);
    put_varint(unpadded as u64, &mut index);
    put_varint((mib as u64) << 20, &mut index);
    while index.len() % 4 != 0 {
        index.push(0);
    }
    let crc = crc32fast::hash(&index);
    index.extend_from_slice(&crc.to_le_bytes());
    let mut back = ((index.len() / 4 - 1) as u32).to_le_bytes().to_vec();
    back.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&index);
    out.extend_from_slice(&crc32fast::hash(&back).to_le_bytes());
    out.extend_from_slice(&back);
    out.extend_from_slice(b"YZ");
    out
}

/// A valid zlib stream of `mib` MiB of zeros, about 1 kB per MiB: one sync-flushed deflate
/// chunk of 1 MiB repeated (after the first, each chunk's bytes are the same), then a final
/// empty stored block and the Adler-32 of the zeros.
pub fn zlib_of_zeros(mib: usize) -> Vec<u8> {
    use flate2::{Compress, FlushCompress};
    let zeros = vec![0u8; 1 << 20];
    let mut c = Compress::new(flate2::Compression::new(9), true);
    let chunk = |c: &mut Compress| {
        let mut out = Vec::with_capacity(1 << 16);
        let before = c.total_in();
        c.compress_vec(&zeros, &mut out, FlushCompress::Sync)
            .unwrap();
        assert_eq!(
            c.total_in() - before,
            1 << 20,
            "one call takes the whole chunk"
        );
        out
    };
    let first = chunk(&mut c);
    let next = chunk(&mut c);
    assert_eq!(chunk(&mut c), next, "repeated chunks encode identically");
    let mut out = first;
    for _ in 1..mib {
        out.extend_from_slice(&next);
    }
    out.extend_from_slice(&[0x01, 0x00, 0x00, 0xFF, 0xFF]); // final, stored, empty
    let n = (mib as u64) << 20;
    let adler = ((n % 65521) << 16 | 1) as u32; // a = 1, b = n (mod 65521) for zeros
    out.extend_from_slice(&adler.to_be_bytes());
    out
}

/// `mib` zstd frames of 1 MiB of zeros each (a decoder reads concatenated frames).
pub fn zstd_of_zeros(mib: usize) -> Option<Vec<u8>> {
    let frame = compress(&vec![0u8; 1 << 20], Compression::Zstd).ok()?;
    Some(frame.repeat(mib))
}

/// The top-level fields of a protobuf message: `(key, start, body start, end)` per field
/// (varint, fixed and length-delimited wire types; `.model` files use no groups).
pub fn proto_fields(b: &[u8]) -> Vec<(u64, usize, usize, usize)> {
    fn varint(b: &[u8], p: &mut usize) -> u64 {
        let mut v = 0u64;
        for i in 0..10 {
            let x = b[*p];
            *p += 1;
            v |= u64::from(x & 0x7F) << (7 * i);
            if x & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    let mut p = 0;
    while p < b.len() {
        let start = p;
        let key = varint(b, &mut p);
        let body = p;
        match key & 7 {
            0 => {
                varint(b, &mut p);
            }
            1 => p += 8,
            2 => {
                let len = varint(b, &mut p) as usize;
                p += len;
            }
            5 => p += 4,
            w => panic!("wire type {w} does not occur in .model files"),
        }
        out.push((key, start, body, p));
    }
    out
}

/// A SentencePiece model with its last `drop` pieces removed (top-level field 1 records).
pub fn tokenizer_without_last_pieces(model: &[u8], drop: usize) -> Vec<u8> {
    let fields = proto_fields(model);
    let pieces = fields.iter().filter(|f| f.0 >> 3 == 1).count();
    let mut kept = 0;
    let mut out = Vec::new();
    for (key, start, _, end) in fields {
        if key >> 3 == 1 {
            kept += 1;
            if kept > pieces - drop {
                continue;
            }
        }
        out.extend_from_slice(&model[start..end]);
    }
    out
}
