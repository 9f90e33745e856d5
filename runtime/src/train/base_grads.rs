//! Base-weight gradients where the backward leaves them: every product's output stays a backend
//! tensor, only the few host-side results (skip weights, SmearGate, BigramHash, the
//! value-embedding scalars) are on the host. The trainer sums its micro-steps here, on the
//! device, and downloads once per optimizer step instead of once per micro-step (the 9-layer
//! baseline on one GPU has 8 micro-steps of ~68 MB of gradients each).

use crate::backend::train::TrainBackend;
use crate::backend::Backend;
use crate::model::{
    BigramWeights, BlockWeights, Matrix, ModelConfig, ModelWeights, ValueEmbedWeights,
};
use crate::{Error, Result};

/// One block's weight gradients, same names as [`BlockWeights`].
pub(crate) struct BlockGradTensors<T> {
    pub c_q: T,
    pub c_k: T,
    pub c_v: T,
    pub attn_proj: T,
    pub q_gain: T,
    pub mlp_fc: T,
    pub mlp_proj: T,
    pub attn_scale: T,
    pub mlp_scale: T,
    pub resid_mix: T,
}

/// Value-embedding gradients: the tables on the backend, the scalars on the host.
pub(crate) struct VeGradTensors<T> {
    pub embed: T,
    pub proj: T,
    pub scale: f32,
    pub layer_scales: Vec<f32>,
}

/// Gradients of every base weight of a model (the layout of [`ModelWeights`]), mostly on the
/// backend. [`BaseGrads::download`] gives the host [`ModelWeights`] the optimizers take.
pub struct BaseGrads<T> {
    pub(crate) config: ModelConfig,
    pub(crate) tok_emb: T,
    pub(crate) lm_head: Option<T>,
    pub(crate) skip_weights: Matrix,
    pub(crate) blocks: Vec<BlockGradTensors<T>>,
    pub(crate) bigram: Option<BigramWeights>,
    pub(crate) smear_gate: Option<Vec<f32>>,
    pub(crate) value_embed: Option<VeGradTensors<T>>,
}

/// A backend matrix downloaded into a host [`Matrix`] of the same shape.
pub(crate) fn download_matrix<B: Backend>(be: &B, t: &B::Tensor) -> Result<Matrix> {
    let (r, c) = be.shape(t);
    Matrix::new(r, c, be.download(t)?)
}

impl<T> BaseGrads<T> {
    /// Every part, in a fixed order: backend tensors, then host slices.
    fn parts_mut(&mut self) -> (Vec<&mut T>, Vec<&mut [f32]>) {
        let mut dev = vec![&mut self.tok_emb];
        dev.extend(self.lm_head.as_mut());
        let mut host: Vec<&mut [f32]> = vec![&mut self.skip_weights.data];
        for b in &mut self.blocks {
            dev.extend([
                &mut b.c_q,
                &mut b.c_k,
                &mut b.c_v,
                &mut b.attn_proj,
                &mut b.q_gain,
                &mut b.mlp_fc,
                &mut b.mlp_proj,
                &mut b.attn_scale,
                &mut b.mlp_scale,
                &mut b.resid_mix,
            ]);
        }
        if let Some(b) = &mut self.bigram {
            host.push(&mut b.embed.data);
            if let Some(p) = &mut b.proj {
                host.push(&mut p.data);
            }
            host.push(std::slice::from_mut(&mut b.scale));
        }
        if let Some(g) = &mut self.smear_gate {
            host.push(g);
        }
        if let Some(v) = &mut self.value_embed {
            dev.extend([&mut v.embed, &mut v.proj]);
            host.push(std::slice::from_mut(&mut v.scale));
            host.push(&mut v.layer_scales);
        }
        (dev, host)
    }

    /// `self ← s · self`, as the host's `0 + s·g` rounds it.
    pub fn scale<B: TrainBackend<Tensor = T>>(&mut self, be: &B, s: f32) -> Result<()> {
        if s == 1.0 {
            return Ok(());
        }
        let (dev, host) = self.parts_mut();
        for t in dev {
            *t = be.scaled(t, s)?;
        }
        for h in host {
            h.iter_mut().for_each(|v| *v *= s);
        }
        Ok(())
    }

    /// `self += s · other` (the same model's gradients from another micro-batch).
    pub fn add_scaled<B: TrainBackend<Tensor = T>>(
        &mut self,
        be: &B,
        mut other: BaseGrads<T>,
        s: f32,
    ) -> Result<()> {
        let ((dev, host), (odev, ohost)) = (self.parts_mut(), other.parts_mut());
        let same = dev.len() == odev.len()
            && host.len() == ohost.len()
            && dev
                .iter()
                .zip(&odev)
                .all(|(a, b)| be.shape(a) == be.shape(b))
            && host.iter().zip(&ohost).all(|(a, b)| a.len() == b.len());
        if !same {
            return Err(Error::Backend(
                "gradient accumulation: gradients of different models".into(),
            ));
        }
        for (a, b) in dev.into_iter().zip(odev) {
            be.add_scalar_scaled(a, b, s)?;
        }
        for (a, b) in host.into_iter().zip(ohost) {
            a.iter_mut().zip(b.iter()).for_each(|(a, &b)| *a += s * b);
        }
        Ok(())
    }

    /// The gradients on the host, laid out as the weights.
    pub fn download<B: TrainBackend<Tensor = T>>(self, be: &B) -> Result<ModelWeights> {
        let m = |t: &T| download_matrix(be, t);
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                Ok(BlockWeights {
                    c_q: m(&b.c_q)?,
                    c_k: m(&b.c_k)?,
                    c_v: m(&b.c_v)?,
                    attn_proj: m(&b.attn_proj)?,
                    q_gain: be.download(&b.q_gain)?,
                    mlp_fc: m(&b.mlp_fc)?,
                    mlp_proj: m(&b.mlp_proj)?,
                    attn_scale: be.download(&b.attn_scale)?,
                    mlp_scale: be.download(&b.mlp_scale)?,
                    resid_mix: m(&b.resid_mix)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let value_embed = match self.value_embed {
            None => None,
            Some(v) => Some(ValueEmbedWeights {
                embed: m(&v.embed)?,
                proj: m(&v.proj)?,
                scale: v.scale,
                layer_scales: v.layer_scales,
            }),
        };
        Ok(ModelWeights {
            config: self.config,
            tok_emb: m(&self.tok_emb)?,
            lm_head: self.lm_head.as_ref().map(m).transpose()?,
            skip_weights: self.skip_weights,
            blocks,
            bigram: self.bigram,
            smear_gate: self.smear_gate,
            value_embed,
        })
    }
}
