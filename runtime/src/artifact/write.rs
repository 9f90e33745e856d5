//! Export: quantize f32 weights into the challenge's layouts, `torch.save` them, compress, and
//! write the file atomically.
//!
//! Why: a trained (or fine-tuned) model must leave the runtime as an artifact the PyTorch
//! scripts can read back. The rules follow spec 6.2 (baseline `int8_clean_per_row_v1`) and 6.3
//! (`{"w","m"}` int6 with the GPTQ-lite clip search); quantiles use `torch.quantile`'s linear
//! interpolation in f32 and rounding is half-to-even like `torch.round`.

use std::path::{Path, PathBuf};

use super::compress::compress;
use super::quant::is_control;
use super::torch::{save, OwnedTensor, SaveValue};
use super::{err, Compression, DType};
use crate::Result;

/// One model tensor to export (values row-major, as the model holds them).
#[derive(Debug, Clone, Copy)]
pub struct ExportTensor<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    /// The model's dtype for the tensor (recorded as the "original dtype").
    pub dtype: DType,
    pub values: &'a [f32],
}

/// Which container layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportLayout {
    /// Baseline `int8_clean_per_row_v1` (spec 6.2).
    Int8Clean,
    /// `{"w","m"}` with int6 GPTQ-lite rows for attention/MLP matrices (spec 6.3).
    Int6Wm,
    /// Plain state dict, each tensor in its own dtype (no quantization).
    StateDict,
}

/// Export knobs.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Float tensors with at most this many elements are kept as float (spec: 65,536).
    pub passthrough_max_numel: usize,
    /// `Int6Wm` only: keep `tok_emb`/`lm_head` as fp16 passthrough (`FP16_EMBED_EXPORT`)
    /// instead of int8 rows.
    pub fp16_embed: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            passthrough_max_numel: 65_536,
            fp16_embed: false,
        }
    }
}

/// Baseline clip quantile (99.99984th percentile).
pub const INT8_CLIP_Q: f32 = 0.999_998_4;
/// GPTQ-lite candidate clip quantiles (1.0 = row max).
pub const INT6_CLIP_QS: [f32; 5] = [0.999, 0.9995, 0.9999, 0.99999, 1.0];

/// `torch.quantile(x, q)` on sorted data (linear interpolation, computed in f32).
pub fn quantile_sorted(sorted: &[f32], q: f32) -> f32 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = q * (sorted.len() - 1) as f32;
    let lo = (rank as usize).min(sorted.len() - 1);
    let hi = (rank.ceil() as usize).min(sorted.len() - 1);
    let w = rank - lo as f32;
    let (a, b) = (sorted[lo], sorted[hi]);
    // torch's lerp kernel
    if w < 0.5 {
        a + w * (b - a)
    } else {
        b - (b - a) * (1.0 - w)
    }
}

fn sorted_abs(x: &[f32]) -> Vec<f32> {
    let mut v: Vec<f32> = x.iter().map(|a| a.abs()).collect();
    v.sort_unstable_by(f32::total_cmp);
    v
}

fn check(t: &ExportTensor) -> Result<usize> {
    let numel: usize = t.shape.iter().product();
    if numel != t.values.len() {
        return Err(err(format!(
            "export {}: shape {:?} needs {numel} values, got {}",
            t.name,
            t.shape,
            t.values.len()
        )));
    }
    if t.dtype.is_float() && t.values.iter().any(|v| !v.is_finite()) {
        return Err(err(format!("export {}: non-finite value", t.name)));
    }
    Ok(numel)
}

/// Baseline per-row int8 (2-D): returns q and the fp32 scales (stored fp16 by the caller).
pub fn quantize_rows_int8(values: &[f32], rows: usize, cols: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(rows);
    for r in 0..rows {
        let row = &values[r * cols..(r + 1) * cols];
        let c = quantile_sorted(&sorted_abs(row), INT8_CLIP_Q);
        let s = (c / 127.0).max(1.0 / 127.0);
        q.extend(
            row.iter()
                .map(|&w| (w.clamp(-c, c) / s).round_ties_even().clamp(-127.0, 127.0) as i8),
        );
        scales.push(s);
    }
    (q, scales)
}

/// Baseline per-tensor int8 (non-2-D): q and the fp32 scalar scale.
pub fn quantize_tensor_int8(values: &[f32]) -> (Vec<i8>, f32) {
    let c = quantile_sorted(&sorted_abs(values), INT8_CLIP_Q);
    let s = if c > 0.0 {
        (f64::from(c) / 127.0) as f32
    } else {
        1.0
    };
    let q = values
        .iter()
        .map(|&w| (w.clamp(-c, c) / s).round_ties_even().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, s)
}

/// GPTQ-lite int6 rows: for each candidate quantile, per-row clip `c`, `s = max(c/31, 1/31)`
/// rounded to fp16, `q = clamp(round(w/s), -31, 31)`; keeps the candidate with the least
/// whole-matrix MSE. Returns q and the fp16 scales (as f32 values).
pub fn quantize_rows_int6(values: &[f32], rows: usize, cols: usize) -> (Vec<i8>, Vec<f32>) {
    const R: f32 = 31.0;
    let sorted: Vec<Vec<f32>> = (0..rows)
        .map(|r| sorted_abs(&values[r * cols..(r + 1) * cols]))
        .collect();
    let mut best: Option<(f64, Vec<i8>, Vec<f32>)> = None;
    for &p in &INT6_CLIP_QS {
        let mut q = Vec::with_capacity(values.len());
        let mut scales = Vec::with_capacity(rows);
        let mut sse = 0f64;
        for (r, srt) in sorted.iter().enumerate() {
            let c = if p >= 1.0 {
                srt.last().copied().unwrap_or(0.0)
            } else {
                quantile_sorted(srt, p)
            };
            let s = half::f16::from_f32((c / R).max(1.0 / R)).to_f32();
            for &w in &values[r * cols..(r + 1) * cols] {
                let qi = (w / s).round_ties_even().clamp(-R, R);
                sse += f64::from(w - qi * s).powi(2);
                q.push(qi as i8);
            }
            scales.push(s);
        }
        if best.as_ref().is_none_or(|b| sse < b.0) {
            best = Some((sse, q, scales));
        }
    }
    let (_, q, s) = best.unwrap_or_default();
    (q, s)
}

fn f16_tensor(shape: &[usize], v: &[f32]) -> Result<SaveValue> {
    Ok(SaveValue::Tensor(OwnedTensor::from_f32(
        DType::F16,
        shape,
        v,
    )?))
}

fn str_val(s: &str) -> SaveValue {
    SaveValue::Str(s.to_string())
}

/// Builds the baseline `int8_clean_per_row_v1` object (spec 6.2).
pub fn quantize_int8_clean(tensors: &[ExportTensor], opts: &ExportOptions) -> Result<SaveValue> {
    let (mut quantized, mut scales, mut dtypes, mut pass, mut qmeta, mut orig) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for t in tensors {
        let numel = check(t)?;
        let name = t.name.to_string();
        if !t.dtype.is_float() {
            pass.push((
                name,
                SaveValue::Tensor(OwnedTensor::from_f32(t.dtype, t.shape, t.values)?),
            ));
        } else if numel <= opts.passthrough_max_numel {
            if is_control(t.name) {
                pass.push((
                    name,
                    SaveValue::Tensor(OwnedTensor::from_f32(DType::F32, t.shape, t.values)?),
                ));
            } else {
                if t.dtype != DType::F16 {
                    orig.push((name.clone(), str_val(t.dtype.torch_name())));
                }
                pass.push((name, f16_tensor(t.shape, t.values)?));
            }
        } else {
            if t.shape.len() == 2 {
                let (rows, cols) = (t.shape[0], t.shape[1]);
                let (q, s) = quantize_rows_int8(t.values, rows, cols);
                quantized.push((
                    name.clone(),
                    SaveValue::Tensor(OwnedTensor::from_i8(t.shape, &q)),
                ));
                scales.push((name.clone(), f16_tensor(&[rows], &s)?));
                qmeta.push((
                    name.clone(),
                    SaveValue::Dict(vec![
                        ("scheme".into(), str_val("per_row")),
                        ("axis".into(), SaveValue::Int(0)),
                    ]),
                ));
            } else {
                let (q, s) = quantize_tensor_int8(t.values);
                quantized.push((
                    name.clone(),
                    SaveValue::Tensor(OwnedTensor::from_i8(t.shape, &q)),
                ));
                scales.push((
                    name.clone(),
                    SaveValue::Tensor(OwnedTensor::from_f32(DType::F32, &[], &[s])?),
                ));
            }
            dtypes.push((name, str_val(t.dtype.torch_name())));
        }
    }
    let mut root = vec![
        (
            "__quant_format__".to_string(),
            str_val("int8_clean_per_row_v1"),
        ),
        ("quantized".into(), SaveValue::Dict(quantized)),
        ("scales".into(), SaveValue::Dict(scales)),
        ("dtypes".into(), SaveValue::Dict(dtypes)),
        ("passthrough".into(), SaveValue::Dict(pass)),
    ];
    if !qmeta.is_empty() {
        root.push(("qmeta".into(), SaveValue::Dict(qmeta)));
    }
    if !orig.is_empty() {
        root.push(("passthrough_orig_dtypes".into(), SaveValue::Dict(orig)));
    }
    Ok(SaveValue::Dict(root))
}

/// Builds the `{"w","m"}` int6 object (spec 6.3, GPTQ-lite clip search).
pub fn quantize_int6_wm(tensors: &[ExportTensor], opts: &ExportOptions) -> Result<SaveValue> {
    let (mut w, mut m) = (vec![], vec![]);
    let quant_type = |ty: &str| SaveValue::Dict(vec![("type".into(), str_val(ty))]);
    for t in tensors {
        let numel = check(t)?;
        let name = t.name.to_string();
        let embed = t.name.contains("tok_emb") || t.name.contains("lm_head");
        if !t.dtype.is_float() {
            w.push((
                name.clone(),
                SaveValue::Tensor(OwnedTensor::from_f32(t.dtype, t.shape, t.values)?),
            ));
            m.push((name, str_val("passthrough")));
        } else if numel <= opts.passthrough_max_numel || (embed && opts.fp16_embed) {
            w.push((name.clone(), f16_tensor(t.shape, t.values)?));
            m.push((name, str_val("passthrough")));
        } else if is_control(t.name) {
            w.push((
                name.clone(),
                SaveValue::Tensor(OwnedTensor::from_f32(DType::F32, t.shape, t.values)?),
            ));
            m.push((name, str_val("passthrough_ctrl")));
        } else if !embed && (t.name.contains(".mlp.") || t.name.contains(".attn.")) {
            let (q, s) = if t.shape.len() == 2 {
                let (q, s) = quantize_rows_int6(t.values, t.shape[0], t.shape[1]);
                (q, f16_tensor(&[t.shape[0]], &s)?)
            } else {
                let amax = t.values.iter().fold(0f32, |a, v| a.max(v.abs()));
                let s = half::f16::from_f32(if amax > 0.0 { amax / 31.0 } else { 1.0 }).to_f32();
                let q = t
                    .values
                    .iter()
                    .map(|&x| (x / s).round_ties_even().clamp(-31.0, 31.0) as i8)
                    .collect::<Vec<_>>();
                (q, f16_tensor(&[], &[s])?)
            };
            w.push((
                format!("{name}.q"),
                SaveValue::Tensor(OwnedTensor::from_i8(t.shape, &q)),
            ));
            w.push((format!("{name}.scale"), s));
            m.push((name, quant_type("int6")));
        } else {
            // "embed" / "other": the int8 path of spec 6.2 (scale fp16 per row, fp32 per tensor).
            let s = if t.shape.len() == 2 {
                let (q, s) = quantize_rows_int8(t.values, t.shape[0], t.shape[1]);
                w.push((
                    format!("{name}.q"),
                    SaveValue::Tensor(OwnedTensor::from_i8(t.shape, &q)),
                ));
                f16_tensor(&[t.shape[0]], &s)?
            } else {
                let (q, s) = quantize_tensor_int8(t.values);
                w.push((
                    format!("{name}.q"),
                    SaveValue::Tensor(OwnedTensor::from_i8(t.shape, &q)),
                ));
                SaveValue::Tensor(OwnedTensor::from_f32(DType::F32, &[], &[s])?)
            };
            w.push((format!("{name}.scale"), s));
            m.push((name, quant_type("int8")));
        }
    }
    Ok(SaveValue::Dict(vec![
        ("w".into(), SaveValue::Dict(w)),
        ("m".into(), SaveValue::Dict(m)),
    ]))
}

/// A plain state dict, every tensor in its own dtype.
pub fn state_dict(tensors: &[ExportTensor]) -> Result<SaveValue> {
    let mut d = Vec::with_capacity(tensors.len());
    for t in tensors {
        check(t)?;
        d.push((
            t.name.to_string(),
            SaveValue::Tensor(OwnedTensor::from_f32(t.dtype, t.shape, t.values)?),
        ));
    }
    Ok(SaveValue::Dict(d))
}

/// Quantizes, `torch.save`s and compresses: the bytes of a complete artifact file.
pub fn export_artifact(
    tensors: &[ExportTensor],
    layout: ExportLayout,
    compression: Compression,
    opts: &ExportOptions,
) -> Result<Vec<u8>> {
    let obj = match layout {
        ExportLayout::Int8Clean => quantize_int8_clean(tensors, opts)?,
        ExportLayout::Int6Wm => quantize_int6_wm(tensors, opts)?,
        ExportLayout::StateDict => state_dict(tensors)?,
    };
    compress(&save(&obj)?, compression)
}

/// The folder and file name of an output path (`.` when the path has no folder).
fn split_output(path: &Path) -> Result<(&Path, &std::ffi::OsStr)> {
    let file_name = path
        .file_name()
        .ok_or_else(|| crate::Error::Usage(format!("{}: not a file path", path.display())))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((dir, file_name))
}

/// A fresh file `.<name>.<random>.tmp` in `dir`, created exclusively (`O_CREAT | O_EXCL`: an
/// existing file or a planted symlink at that name is never opened, let alone followed), with
/// an unpredictable suffix. Returns the file and its path.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> std::io::Result<(std::fs::File, PathBuf)> {
    for _ in 0..16 {
        let tmp = dir.join(format!(
            ".{}.{:016x}.tmp",
            name.to_string_lossy(),
            random_u64()
        ));
        match create_exclusive(&tmp) {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no unused temporary file name after 16 tries",
    ))
}

/// Opens `path` for writing only if it does not exist yet (never through a symlink).
fn create_exclusive(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// 64 unpredictable bits: std's per-process random hash keys (seeded by the OS), the clock,
/// the process id and a counter.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.finish()
}

/// Checks, before a long run, that [`write_atomic`] will be able to write `path`: the path is
/// not a folder, its folder exists, and a file can be created there (a probe file is created
/// exclusively and removed again).
pub fn check_writable(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    if path.is_dir() {
        return Err(crate::Error::Usage(format!(
            "{}: is a folder; give a file path",
            path.display()
        )));
    }
    let (dir, name) = split_output(path)?;
    if !dir.is_dir() {
        return Err(crate::Error::Usage(format!(
            "{}: the folder {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    let (f, tmp) = create_temp(dir, name).map_err(|e| crate::Error::io(path, e))?;
    drop(f);
    std::fs::remove_file(&tmp).map_err(|e| crate::Error::io(&tmp, e))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory (created
/// exclusively under a random name), flushed to disk, then renamed over the target (readers
/// never see a partial artifact).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let path = path.as_ref();
    let (dir, file_name) = split_output(path)?;
    let (mut f, tmp) = create_temp(dir, file_name).map_err(|e| crate::Error::io(path, e))?;
    let result = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        crate::Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_matches_linear_interpolation() {
        let v = [0.0, 1.0, 2.0, 10.0];
        assert_eq!(quantile_sorted(&v, 0.0), 0.0);
        assert_eq!(quantile_sorted(&v, 1.0), 10.0);
        assert_eq!(quantile_sorted(&v, 0.5), 1.5);
        assert!((quantile_sorted(&v, 0.9) - 7.6).abs() < 1e-5); // rank 2.7: 2 + 0.7*8
        assert_eq!(quantile_sorted(&[], 0.5), 0.0);
    }

    #[test]
    fn int8_rows_follow_the_rules() {
        // Row 0 has an outlier that the 0.9999984 quantile barely clips (n = 4: rank ~3).
        let vals = [0.5f32, -0.25, 0.125, 1.0, 0.001, 0.002, -0.003, 0.0];
        let (q, s) = quantize_rows_int8(&vals, 2, 4);
        // Row 1 is tiny: the 1/127 floor applies and values round to 0.
        assert_eq!(s[1], 1.0 / 127.0);
        assert_eq!(&q[4..], &[0, 0, 0, 0]);
        // Row 0: clip c just below 1.0, so q = 127 for the max and 64 for 0.5 (ties to even).
        assert!(s[0] < 1.0 / 127.0 * 1.0 + 1e-3 && s[0] > 0.99 / 127.0);
        assert_eq!(q[3], 127);
        assert_eq!(q[0], (0.5 / s[0]).round() as i8);
        assert!(q.iter().all(|&x| (-127..=127).contains(&x)));
    }

    #[test]
    fn int6_rows_stay_in_range_and_beat_max_clip() {
        let mut vals = Vec::new();
        let mut x = 12345u32;
        for _ in 0..(8 * 2000) {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let u = (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            vals.push(u * u * u * 0.4); // heavy-ish tails
        }
        let (q, s) = quantize_rows_int6(&vals, 8, 2000);
        assert!(q.iter().all(|&v| (-31..=31).contains(&v)));
        assert!(s.iter().all(|&v| half::f16::from_f32(v).to_f32() == v
            && v >= half::f16::from_f32(1.0 / 31.0).to_f32()));
        // The chosen candidate is no worse than plain max clipping.
        let mse = |q: &[i8], s: &[f32]| -> f64 {
            vals.iter()
                .enumerate()
                .map(|(i, &w)| f64::from(w - f32::from(q[i]) * s[i / 2000]).powi(2))
                .sum()
        };
        let mut qmax = Vec::new();
        let mut smax = Vec::new();
        for r in 0..8 {
            let row = &vals[r * 2000..(r + 1) * 2000];
            let c = row.iter().fold(0f32, |a, v| a.max(v.abs()));
            let sc = half::f16::from_f32((c / 31.0).max(1.0 / 31.0)).to_f32();
            qmax.extend(
                row.iter()
                    .map(|&w| (w / sc).round_ties_even().clamp(-31.0, 31.0) as i8),
            );
            smax.push(sc);
        }
        assert!(mse(&q, &s) <= mse(&qmax, &smax));
    }

    #[test]
    fn atomic_write_replaces_file() {
        let dir = std::env::temp_dir().join(format!("pgolf_atomic_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.ptz");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
        assert!(write_atomic(dir.join("missing_dir/x"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn outputs_are_checked_before_work() {
        let dir = std::env::temp_dir().join(format!("pgolf_check_out_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(check_writable(dir.join("a.ptz")).is_ok());
        let e = check_writable(dir.join("missing/a.ptz"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = check_writable(&dir).unwrap_err().to_string();
        assert!(e.contains("is a folder"), "{e}");
        // The probe leaves nothing behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_never_receives_the_artifact() {
        let dir = std::env::temp_dir().join(format!("pgolf_symlink_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        // The name the old writer used (pid-based) and any fixed name: never opened.
        let planted = dir.join(format!(".a.ptz.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let e = create_exclusive(&planted).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        write_atomic(dir.join("a.ptz"), b"artifact").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(dir.join("a.ptz")).unwrap(), b"artifact");
        // Random names differ from one file to the next.
        assert_ne!(random_u64(), random_u64());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
