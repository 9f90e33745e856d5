//! Checkpoints: everything a killed run needs to continue on the same loss curve (weights, EMA,
//! Muon momentum, Adam moments and step counts, data position, step, training clock), written
//! atomically as an uncompressed `torch.save` dict (so PyTorch can read it too).

use super::groups::{optimizer_group, Group, MuonRoute};
use super::optimizers::ADAM_GROUPS;
use super::trainer::Trainer;
use crate::artifact::torch::{save, SaveValue};
use crate::artifact::write::state_dict;
use crate::artifact::{load_state, write_atomic, DType, ExportTensor, StateValue};
use crate::backend::train::TrainBackend;
use crate::data::StreamPos;
use crate::model::ModelWeights;
use crate::{Error, Result};
use std::path::Path;

const FORMAT: &str = "pgolf_rt_checkpoint_v1";

fn err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Usage(format!("checkpoint {}: {msg}", path.display()))
}

/// A float32 state dict of `(name, shape, values)` entries.
fn f32_dict<'a>(
    entries: impl Iterator<Item = (&'a str, &'a [usize], &'a [f32])>,
) -> Result<SaveValue> {
    let tensors: Vec<ExportTensor> = entries
        .map(|(name, shape, values)| ExportTensor {
            name,
            shape,
            dtype: DType::F32,
            values,
        })
        .collect();
    state_dict(&tensors)
}

fn weights_dict(w: &ModelWeights) -> Result<SaveValue> {
    let mut w = w.clone();
    let params = w.params_mut();
    f32_dict(
        params
            .iter()
            .map(|p| (p.name.as_str(), p.shape.as_slice(), &*p.values)),
    )
}

/// `(name, shape)` of the parameters in one optimizer group, in update order.
fn group_names(w: &ModelWeights, g: Group, route: MuonRoute) -> Vec<(String, Vec<usize>)> {
    let mut w = w.clone();
    w.params_mut()
        .into_iter()
        .filter(|p| optimizer_group(&p.name, &p.shape, route) == g)
        .map(|p| (p.name, p.shape))
        .collect()
}

fn buffers(names: &[(String, Vec<usize>)], bufs: &[Vec<f32>]) -> Result<SaveValue> {
    f32_dict(
        names
            .iter()
            .zip(bufs)
            .map(|((n, s), b)| (n.as_str(), s.as_slice(), b.as_slice())),
    )
}

fn int(v: usize) -> SaveValue {
    SaveValue::Int(v as i64)
}

/// Writes the run's state to `path` (temp file + rename).
pub fn save_checkpoint<B: TrainBackend + Clone>(t: &Trainer<B>, path: &Path) -> Result<()> {
    let pos = t.stream.position();
    let mut root = vec![
        ("format".to_string(), SaveValue::Str(FORMAT.into())),
        ("config".into(), SaveValue::Str(format!("{:?}", t.cfg))),
        ("step".into(), int(t.step)),
        (
            "elapsed_us".into(),
            SaveValue::Int((t.elapsed_ms * 1e3).round() as i64),
        ),
        ("stream_file".into(), int(pos.file)),
        ("stream_token".into(), int(pos.token)),
    ];
    // The state lives on the backend: download it once for the file.
    let st = t.host_state()?;
    root.push(("model".into(), weights_dict(&st.weights)?));
    if let Some(e) = &st.ema {
        root.push(("ema".into(), weights_dict(e.weights())?));
    }
    let route = st.opt.cfg.muon_route;
    let mats = group_names(&st.weights, Group::Matrix, route);
    root.push(("muon".into(), buffers(&mats, &st.opt.muon.bufs)?));
    for (g, label) in ADAM_GROUPS {
        let names = group_names(&st.weights, g, route);
        let a = match g {
            Group::Embed => &st.opt.embed,
            Group::Head => &st.opt.head,
            _ => &st.opt.scalar,
        };
        root.push((
            format!("adam_{label}"),
            SaveValue::Dict(vec![
                ("step".into(), SaveValue::Int(a.step as i64)),
                ("m".into(), buffers(&names, &a.m)?),
                ("v".into(), buffers(&names, &a.v)?),
            ]),
        ));
    }
    write_atomic(path, &save(&SaveValue::Dict(root))?)
}

fn get<'a>(v: &'a StateValue, key: &str, path: &Path) -> Result<&'a StateValue> {
    v.get(key)
        .ok_or_else(|| err(path, format!("missing `{key}`")))
}

fn get_int(v: &StateValue, key: &str, path: &Path) -> Result<i64> {
    match get(v, key, path)? {
        StateValue::Int(i) => Ok(*i),
        _ => Err(err(path, format!("`{key}` is not an integer"))),
    }
}

fn get_usize(v: &StateValue, key: &str, path: &Path) -> Result<usize> {
    usize::try_from(get_int(v, key, path)?).map_err(|_| err(path, format!("negative `{key}`")))
}

/// Values of tensor `name` in dict `d`, checked against `shape`.
fn values(d: &StateValue, name: &str, shape: &[usize], path: &Path) -> Result<Vec<f32>> {
    match get(d, name, path)? {
        StateValue::Tensor { shape: s, values } if s == shape => Ok(values.clone()),
        StateValue::Tensor { shape: s, .. } => Err(err(
            path,
            format!("`{name}` has shape {s:?}, the run expects {shape:?}"),
        )),
        _ => Err(err(path, format!("`{name}` is not a tensor"))),
    }
}

fn fill_weights(w: &mut ModelWeights, d: &StateValue, path: &Path) -> Result<()> {
    for p in w.params_mut() {
        let v = values(d, &p.name, &p.shape, path)?;
        p.values.copy_from_slice(&v);
    }
    Ok(())
}

fn read_buffers(
    d: &StateValue,
    names: &[(String, Vec<usize>)],
    path: &Path,
) -> Result<Vec<Vec<f32>>> {
    if matches!(d, StateValue::Dict(e) if e.is_empty()) {
        return Ok(Vec::new()); // optimizer not stepped yet
    }
    names.iter().map(|(n, s)| values(d, n, s, path)).collect()
}

/// Restores a checkpoint into `t`, a trainer built with the same configuration and model
/// architecture. Refuses a checkpoint written by a different configuration.
pub fn load_checkpoint<B: TrainBackend + Clone>(t: &mut Trainer<B>, path: &Path) -> Result<()> {
    let bytes = crate::limits::read_file(
        path,
        &crate::limits::ARTIFACT_FILE_BYTES,
        Error::Artifact,
        0,
        |_| Ok(()),
    )?;
    let root = load_state(&bytes).map_err(|e| err(path, e))?;
    match get(&root, "format", path)? {
        StateValue::Str(s) if s == FORMAT => {}
        _ => return Err(err(path, format!("not a {FORMAT} file"))),
    }
    match get(&root, "config", path)? {
        StateValue::Str(s) if *s == format!("{:?}", t.cfg) => {}
        StateValue::Str(s) => {
            return Err(err(
                path,
                format!(
                    "written by a different configuration; resume with the same settings.\n  \
                     checkpoint: {s}\n  this run:   {:?}",
                    t.cfg
                ),
            ))
        }
        _ => return Err(err(path, "`config` is not a string")),
    }
    let mut st = t.host_state()?;
    fill_weights(&mut st.weights, get(&root, "model", path)?, path)?;
    if let Some(e) = &mut st.ema {
        fill_weights(&mut e.shadow, get(&root, "ema", path)?, path)?;
    }
    let route = st.opt.cfg.muon_route;
    let mats = group_names(&st.weights, Group::Matrix, route);
    st.opt.muon.bufs = read_buffers(get(&root, "muon", path)?, &mats, path)?;
    for (g, label) in ADAM_GROUPS {
        let names = group_names(&st.weights, g, route);
        let d = get(&root, &format!("adam_{label}"), path)?;
        let step = get_int(d, "step", path)? as u64;
        let m = read_buffers(get(d, "m", path)?, &names, path)?;
        let v = read_buffers(get(d, "v", path)?, &names, path)?;
        let a = st.opt.adam_mut(g);
        (a.step, a.m, a.v) = (step, m, v);
    }
    t.set_host_state(&st)?;
    t.step = get_usize(&root, "step", path)?;
    t.elapsed_ms = get_int(&root, "elapsed_us", path)? as f64 / 1e3;
    t.stream.seek(StreamPos {
        file: get_usize(&root, "stream_file", path)?,
        token: get_usize(&root, "stream_token", path)?,
    })?;
    Ok(())
}
