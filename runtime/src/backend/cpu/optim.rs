//! The optimizers' float32 oracles, beside the other CPU kernels: Newton-Schulz (Muon's
//! orthogonalisation, float32 and the challenge's bf16 rounding), Muon's momentum and update,
//! Adam/AdamW, the EMA, the squared global norm and QAT's fake quantization. The host
//! optimizers (`crate::train`) call these, and so do the [`crate::backend::train::TrainBackend`]
//! defaults that every backend starts from; device kernels (`cuda/optim.cu`,
//! `cuda/newton_schulz.cu`) are tested against them.
//!
//! ```text
//! muon_momentum : buf ← μ·buf + g ;  u = g + μ·buf (nesterov) or buf
//! muon_apply    : w ← w·decay − (lr·s)·o            (float32; s = sqrt(max(1, rows/cols)))
//!                 w ← w·decay − lr·bf16(o·s)        (bf16)
//! adam_update   : m ← β1 m + (1−β1) g ; v ← β2 v + (1−β2) g² ;
//!                 w ← w·decay − step_size · m / (sqrt(v)/sqrt(bc2) + eps)
//! ema_update    : e ← d·e + (1−d)·w
//! sgd_update    : d = g·scale + wd·w ; b ← d (first step, or μ = 0) else μ·b + d ; w ← w − lr·b
//! sum_squares   : Σ over tensors (in order) of Σ g² in f64
//! fake_quant    : per row s = amax/127, q = clamp(4·round(round(w/s)/4), −128, 124), w' = q·s
//! ```

use super::matmul::{gemm_into, View};
use super::par::{gemm_parallelism, zip_apply, zip_map};

/// The quintic's coefficients `(a, b, c)` of Newton-Schulz.
pub const NS_COEFFS: (f32, f32, f32) = (3.4445, -4.7750, 2.0315);

fn view(data: &[f32], rs: usize, cs: usize) -> View<'_> {
    View {
        data,
        offset: 0,
        rs,
        cs,
    }
}

/// `out[m×n] = a[m×k] · b[k×n]` with row-major or transposed operands given by strides.
fn mm(m: usize, n: usize, k: usize, a: View, b: View) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    gemm_into(m, n, k, a, b, &mut out, 0, n, false, gemm_parallelism());
    out
}

/// Rounds every value to the nearest bf16 (ties to even), as a PyTorch bf16 op writes its output.
fn round_bf16(v: &mut [f32]) {
    v.iter_mut()
        .for_each(|x| *x = half::bf16::from_f32(*x).to_f32());
}

/// Newton-Schulz orthogonalisation of a `rows × cols` matrix (row-major), `steps` iterations,
/// in float32.
pub fn newton_schulz(g: &[f32], rows: usize, cols: usize, steps: usize) -> Vec<f32> {
    let (a, b, c) = NS_COEFFS;
    let norm = g
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt() as f32;
    let inv = 1.0 / (norm + 1e-7);
    // Work on the wide orientation (r ≤ c) so X·Xᵀ is the small r×r product.
    let transposed = rows > cols;
    let (r, c_) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let mut x: Vec<f32> = if transposed {
        let mut t = vec![0.0; r * c_];
        for i in 0..rows {
            for j in 0..cols {
                t[j * rows + i] = g[i * cols + j] * inv;
            }
        }
        t
    } else {
        g.iter().map(|&v| v * inv).collect()
    };
    for _ in 0..steps {
        // A = X·Xᵀ  [r×r]
        let am = mm(r, r, c_, view(&x, c_, 1), view(&x, 1, c_));
        // A² (A is symmetric)
        let a2 = mm(r, r, r, view(&am, r, 1), view(&am, r, 1));
        let bm: Vec<f32> = am.iter().zip(&a2).map(|(&p, &q)| b * p + c * q).collect();
        // X = a·X + B·X
        let bx = mm(r, c_, r, view(&bm, r, 1), view(&x, c_, 1));
        x.iter_mut().zip(&bx).for_each(|(xv, &d)| *xv = a * *xv + d);
    }
    if transposed {
        transpose(&x, r, c_)
    } else {
        x
    }
}

/// `m [r×c]` transposed to `[c×r]`.
fn transpose(m: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = m[i * c + j];
        }
    }
    t
}

/// Newton-Schulz as `train_gpt.py` runs it in bf16: `X = G.bfloat16(); X /= X.norm() + eps;`
/// then `A = X@X.T; B = b*A + c*A@A; X = a*X + B@X` (so `(c·A)·A`), every tensor op's output
/// rounded to bf16 and every product accumulated in f32.
pub fn newton_schulz_bf16(g: &[f32], rows: usize, cols: usize, steps: usize) -> Vec<f32> {
    let (a, b, c) = NS_COEFFS;
    let mut x = g.to_vec();
    round_bf16(&mut x);
    let norm = x.iter().map(|&v| v * v).sum::<f32>().sqrt();
    let denom = half::bf16::from_f32(half::bf16::from_f32(norm).to_f32() + 1e-7).to_f32();
    x.iter_mut().for_each(|v| *v /= denom);
    round_bf16(&mut x);
    let transposed = rows > cols;
    let (r, k) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    if transposed {
        x = transpose(&x, rows, cols);
    }
    let scaled = |m: &[f32], s: f32| -> Vec<f32> {
        let mut o: Vec<f32> = m.iter().map(|&v| s * v).collect();
        round_bf16(&mut o);
        o
    };
    let sum = |p: &[f32], q: &[f32]| -> Vec<f32> {
        let mut o: Vec<f32> = p.iter().zip(q).map(|(u, v)| u + v).collect();
        round_bf16(&mut o);
        o
    };
    for _ in 0..steps {
        let mut am = mm(r, r, k, view(&x, k, 1), view(&x, 1, k));
        round_bf16(&mut am);
        let ca = scaled(&am, c);
        let mut ca_a = mm(r, r, r, view(&ca, r, 1), view(&am, r, 1));
        round_bf16(&mut ca_a);
        let bm = sum(&scaled(&am, b), &ca_a);
        let mut bx = mm(r, k, r, view(&bm, r, 1), view(&x, k, 1));
        round_bf16(&mut bx);
        x = sum(&scaled(&x, a), &bx);
    }
    if transposed {
        transpose(&x, r, k)
    } else {
        x
    }
}

/// Muon's momentum in place (`buf ← μ·buf + g`) and the update's input: `g + μ·buf` with
/// Nesterov, else `buf`.
pub fn muon_momentum(buf: &mut [f32], g: &[f32], mu: f32, nesterov: bool) -> Vec<f32> {
    zip_apply(buf, g, |b, g| *b = mu * *b + g);
    if nesterov {
        zip_map(g, buf, |g, b| g + mu * b)
    } else {
        buf.to_vec()
    }
}

/// Muon's update of `w` by the orthogonalised `o`: `w·decay − (lr·shape_scale)·o` in float32;
/// with `bf16`, `o·shape_scale` is rounded to bf16 first and `w·decay − lr·o'` follows.
pub fn muon_apply(w: &mut [f32], o: &[f32], decay: f32, lr: f32, shape_scale: f32, bf16: bool) {
    if bf16 {
        zip_apply(w, o, |w, o| {
            let o = half::bf16::from_f32(o * shape_scale).to_f32();
            *w = *w * decay - lr * o
        });
    } else {
        let scale = lr * shape_scale;
        zip_apply(w, o, |w, o| *w = *w * decay - scale * o);
    }
}

/// One Adam/AdamW step's factors (from the group's settings and the step count).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `lr / (1 − β1ᵗ)`.
    pub step_size: f32,
    /// `sqrt(1 − β2ᵗ)`.
    pub bc2_sqrt: f32,
    /// `1 − lr·wd` (AdamW), else 1.
    pub decay: f32,
}

/// One Adam/AdamW update of `w` with gradient `g` and moments `m`, `v` (same lengths).
pub fn adam_update(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamStep) {
    for i in 0..w.len() {
        let gi = g[i];
        m[i] = s.beta1 * m[i] + (1.0 - s.beta1) * gi;
        v[i] = s.beta2 * v[i] + (1.0 - s.beta2) * gi * gi;
        let denom = v[i].sqrt() / s.bc2_sqrt + s.eps;
        w[i] = w[i] * s.decay - s.step_size * m[i] / denom;
    }
}

/// One SGD step's settings (`torch.optim.SGD` with momentum and coupled weight decay; the
/// gradient is multiplied by `grad_scale`, the clip factor, first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub grad_scale: f32,
    /// The first step: the momentum buffer starts as the step's `d` (torch's rule).
    pub first: bool,
}

/// One SGD update of `w` and its momentum buffer `b` (same lengths as `g`).
pub fn sgd_update(w: &mut [f32], g: &[f32], b: &mut [f32], s: &SgdStep) {
    let restart = s.first || s.momentum == 0.0;
    for i in 0..w.len() {
        let d = g[i] * s.grad_scale + s.weight_decay * w[i];
        b[i] = if restart { d } else { s.momentum * b[i] + d };
        w[i] -= s.lr * b[i];
    }
}

/// The EMA: `e ← d·e + (1−d)·w`.
pub fn ema_update(e: &mut [f32], w: &[f32], d: f32) {
    zip_apply(e, w, |e, w| *e = d * *e + (1.0 - d) * w);
}

/// `Σ_t Σ_i t[i]²` in f64: one sum per tensor (in parallel when available), then their sum in
/// tensor order, so the value does not depend on the number of threads.
pub fn sum_squares(ts: &[&[f32]]) -> f64 {
    super::par::map_range(ts.len(), |i| {
        ts[i].iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>()
    })
    .iter()
    .sum::<f64>()
}

/// QAT's fake quantization of one row in place (int6 values on a multiple-of-4 int8 grid).
pub fn fake_quant_row(row: &mut [f32]) {
    let amax = row.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    if amax == 0.0 {
        return;
    }
    let scale = amax / 127.0;
    for v in row.iter_mut() {
        let q = (*v / scale).round_ties_even();
        let q = ((q / 4.0).round_ties_even() * 4.0).clamp(-128.0, 124.0);
        *v = q * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn momentum_and_update_follow_their_formulas() {
        let mut buf = vec![1.0f32, -2.0];
        let u = muon_momentum(&mut buf, &[0.5, 0.25], 0.9, true);
        assert_eq!(buf, vec![0.9 + 0.5, -1.8 + 0.25]);
        assert_eq!(u, vec![0.5 + 0.9 * 1.4, 0.25 + 0.9 * -1.55]);
        let u = muon_momentum(&mut buf, &[0.0, 0.0], 0.5, false);
        assert_eq!(u, buf);
        let mut w = vec![1.0f32, 2.0];
        muon_apply(&mut w, &[0.1, -0.2], 0.99, 0.04, 2.0, false);
        assert_eq!(w, vec![0.99 - 0.08 * 0.1, 1.98 + 0.08 * 0.2]);
        let mut w = vec![1.0f32];
        // bf16(0.3·1.0): 0.30078125.
        muon_apply(&mut w, &[0.3], 1.0, 0.5, 1.0, true);
        assert_eq!(w, vec![1.0 - 0.5 * 0.300_781_25]);
    }

    #[test]
    fn ema_and_norm() {
        let mut e = vec![2.0f32, 0.0];
        ema_update(&mut e, &[0.0, 4.0], 0.75);
        assert_eq!(e, vec![1.5, 1.0]);
        assert_eq!(sum_squares(&[&[3.0, 4.0], &[1.0]]), 26.0);
        assert_eq!(sum_squares(&[]), 0.0);
    }
}
