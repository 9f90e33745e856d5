//! LoRA adapters (spec 7.5): `y = W x + B (A x)` with `A [r, in] ~ U(±1/sqrt(in))` from a
//! seeded PRNG and `B [out, r] = 0`, so a fresh adapter leaves the model unchanged exactly.

use crate::model::{Matrix, ModelConfig};
use crate::{Error, Result};

/// Where an adapter sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// A linear of block `layer`.
    Block { layer: usize, which: Proj },
    /// The output head (`logits += B (A h)` before the soft-cap).
    Head,
}

/// The linears of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    MlpFc,
    MlpProj,
}

impl Proj {
    pub(crate) const ALL: [Proj; 6] = [
        Proj::Q,
        Proj::K,
        Proj::V,
        Proj::O,
        Proj::MlpFc,
        Proj::MlpProj,
    ];
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Which linears get adapters. The published recipe: Q, V and the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoraTargets {
    pub q: bool,
    pub k: bool,
    pub v: bool,
    pub o: bool,
    /// Both MLP linears.
    pub mlp: bool,
    pub head: bool,
}

impl Default for LoraTargets {
    fn default() -> Self {
        LoraTargets {
            q: true,
            k: false,
            v: true,
            o: false,
            mlp: false,
            head: true,
        }
    }
}

impl std::str::FromStr for LoraTargets {
    type Err = Error;
    /// Comma-separated list of `q,k,v,o,mlp,head` (e.g. `q,v,head`).
    fn from_str(s: &str) -> Result<Self> {
        let mut t = LoraTargets {
            q: false,
            k: false,
            v: false,
            o: false,
            mlp: false,
            head: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_lowercase().as_str() {
                "q" => t.q = true,
                "k" => t.k = true,
                "v" => t.v = true,
                "o" => t.o = true,
                "mlp" => t.mlp = true,
                "head" => t.head = true,
                _ => {
                    return Err(Error::Usage(format!(
                        "unknown LoRA target {part:?} (expected q, k, v, o, mlp, head)"
                    )))
                }
            }
        }
        Ok(t)
    }
}

impl LoraTargets {
    fn has(&self, p: Proj) -> bool {
        match p {
            Proj::Q => self.q,
            Proj::K => self.k,
            Proj::V => self.v,
            Proj::O => self.o,
            Proj::MlpFc | Proj::MlpProj => self.mlp,
        }
    }
}

/// One adapter: `delta(x) = (x · Aᵀ) · Bᵀ`.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    pub site: Site,
    /// `[rank, in]`.
    pub a: Matrix,
    /// `[out, rank]`.
    pub b: Matrix,
}

/// All adapters of a model, in a fixed order (blocks in order, `Proj::ALL` order, head last).
#[derive(Debug, Clone, PartialEq)]
pub struct Lora {
    pub rank: usize,
    pub adapters: Vec<Adapter>,
}

/// SplitMix64: a small, seedable, portable PRNG.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)` with 24 random bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn dims(cfg: &ModelConfig, p: Proj) -> (usize, usize) {
    let (d, kv, hid) = (cfg.model_dim, cfg.kv_dim(), cfg.mlp_hidden);
    match p {
        Proj::Q | Proj::O => (d, d),
        Proj::K | Proj::V => (d, kv),
        Proj::MlpFc => (d, hid),
        Proj::MlpProj => (hid, d),
    }
}

impl Lora {
    /// Fresh adapters: `A ~ U(±1/sqrt(in))` drawn from `seed`, `B = 0`.
    pub fn new(cfg: &ModelConfig, targets: LoraTargets, rank: usize, seed: u64) -> Result<Self> {
        if rank == 0 {
            return Err(Error::Usage("LoRA rank must be positive".into()));
        }
        let mut sites = Vec::new();
        for layer in 0..cfg.num_layers {
            for p in Proj::ALL {
                if targets.has(p) {
                    sites.push((Site::Block { layer, which: p }, dims(cfg, p)));
                }
            }
        }
        if targets.head {
            sites.push((Site::Head, (cfg.model_dim, cfg.vocab_size)));
        }
        let mut rng = SplitMix64(seed);
        let adapters = sites
            .into_iter()
            .map(|(site, (inp, out))| {
                let bound = 1.0 / (inp as f32).sqrt();
                let a = (0..rank * inp)
                    .map(|_| (2.0 * rng.next_f32() - 1.0) * bound)
                    .collect();
                Adapter {
                    site,
                    a: Matrix {
                        rows: rank,
                        cols: inp,
                        data: a,
                    },
                    b: Matrix::zeros(out, rank),
                }
            })
            .collect();
        Ok(Lora { rank, adapters })
    }

    /// Number of trainable values.
    pub fn param_count(&self) -> usize {
        self.adapters
            .iter()
            .map(|a| a.a.data.len() + a.b.data.len())
            .sum()
    }

    /// The parameters as flat slices, `[A_0, B_0, A_1, B_1, ...]`.
    pub fn params_mut(&mut self) -> Vec<&mut [f32]> {
        self.adapters
            .iter_mut()
            .flat_map(|a| [a.a.data.as_mut_slice(), a.b.data.as_mut_slice()])
            .collect()
    }
}

/// Gradients of the adapters, `(dA, dB)` in [`Lora::adapters`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraGrads(pub Vec<(Vec<f32>, Vec<f32>)>);

impl LoraGrads {
    /// The gradients as flat slices in [`Lora::params_mut`] order.
    pub fn slices(&self) -> Vec<&[f32]> {
        self.0
            .iter()
            .flat_map(|(a, b)| [a.as_slice(), b.as_slice()])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t: LoraTargets = "q,v,head".parse().unwrap();
        assert_eq!(t, LoraTargets::default());
        assert!("q,x".parse::<LoraTargets>().is_err());
    }

    #[test]
    fn rng_is_uniform_and_seeded() {
        let mut r = SplitMix64(7);
        let xs: Vec<f32> = (0..10_000).map(|_| r.next_f32()).collect();
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        assert!((mean - 0.5).abs() < 0.02);
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert_eq!(SplitMix64(7).next_u64(), SplitMix64(7).next_u64());
    }
}
