//! Causal GQA attention backward, recomputing the probabilities (no saved `[T, T]` state).
//!
//! Reference, per window, query head `h`, KV group `g`: `S = Q_h K_gᵀ / sqrt(hd)` (causal),
//! `P = softmax(S)`, `O = P V_g`; XSA: `Y = O − (O·û)û`, `û_t = v_t / max(|v_t|, 1e-12)`.
//! Backward: `dO = dY − (dY·û)û`, `dû = −(O·û) dY − (dY·û) O`, `dv_t += (dû − (dû·û)û)/|v_t|`
//! (XSA only); `dP = dO V_gᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP)) / sqrt(hd)`, `dQ_h = dS K_g`,
//! `dK_g += dSᵀ Q_h`, `dV_g += Pᵀ dO`, by blocks of 64 queries against the keys they see (the
//! upper triangle is never computed). Tasks are (window, KV group) so the `dK`, `dV` sums of
//! a group's heads stay in one task.

use super::super::matmul::{gemm_into, View};
use super::super::par::map_range;
use crate::backend::AttnGeometry;

const BLOCK: usize = 64;

fn mm(m: usize, n: usize, k: usize, a: View, b: View, out: &mut [f32], acc: bool) {
    gemm_into(m, n, k, a, b, out, 0, n, acc, gemm::Parallelism::None);
}

fn v_(data: &[f32], offset: usize, rs: usize, cs: usize) -> View<'_> {
    View {
        data,
        offset,
        rs,
        cs,
    }
}

/// Returns `(dq, dk, dv)` with the shapes of `q`, `k`, `v`.
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dy: &[f32],
    g: &AttnGeometry,
    xsa: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (t, hd) = (g.seq, g.head_dim);
    let (qw, kw) = (g.heads * hd, g.kv_heads * hd);
    let group = g.heads / g.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    type TaskOut = (Vec<Vec<f32>>, Vec<f32>, Vec<f32>);
    let outs: Vec<TaskOut> = map_range(g.batch * g.kv_heads, |task| {
        let (b, kvh) = (task / g.kv_heads, task % g.kv_heads);
        let row0 = b * t;
        let koff = row0 * kw + kvh * hd;
        let mut s = vec![0.0f32; BLOCK.min(t) * t];
        let mut dp = vec![0.0f32; BLOCK.min(t) * t];
        let mut dk = vec![0.0f32; t * hd];
        let mut dv = vec![0.0f32; t * hd];
        let mut dyh = vec![0.0f32; t * hd];
        let mut dqs = Vec::with_capacity(group);
        for h in kvh * group..(kvh + 1) * group {
            let qoff = row0 * qw + h * hd;
            for r in 0..t {
                dyh[r * hd..(r + 1) * hd].copy_from_slice(&dy[(row0 + r) * qw + h * hd..][..hd]);
            }
            let mut dq = vec![0.0f32; t * hd];
            // Query blocks [i0, i1) see keys [0, i1): the upper triangle is never computed.
            for i0 in (0..t).step_by(BLOCK) {
                let i1 = (i0 + BLOCK).min(t);
                let (m, n) = (i1 - i0, i1);
                let (s, dp) = (&mut s[..m * n], &mut dp[..m * n]);
                let qv = v_(q, qoff + i0 * qw, qw, 1);
                mm(m, n, hd, qv, v_(k, koff, 1, kw), s, false);
                for r in 0..m {
                    let last = i0 + r;
                    let row = &mut s[r * n..(r + 1) * n];
                    let mut mx = f32::NEG_INFINITY;
                    for x in row[..=last].iter_mut() {
                        *x *= scale;
                        mx = mx.max(*x);
                    }
                    let inv = 1.0 / super::super::math::exp_shift_sum(&mut row[..=last], mx);
                    row[..=last].iter_mut().for_each(|x| *x *= inv);
                    row[last + 1..].iter_mut().for_each(|x| *x = 0.0);
                }
                if xsa {
                    let mut o = vec![0.0f32; m * hd];
                    mm(m, hd, n, v_(s, 0, n, 1), v_(v, koff, kw, 1), &mut o, false);
                    for r in 0..m {
                        let tr = i0 + r;
                        let vt = &v[koff + tr * kw..][..hd];
                        let nv = vt.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                        let u: Vec<f32> = vt.iter().map(|x| x / nv).collect();
                        let orow = &o[r * hd..(r + 1) * hd];
                        let drow = &mut dyh[tr * hd..(tr + 1) * hd];
                        let ou: f32 = orow.iter().zip(&u).map(|(a, b)| a * b).sum();
                        let dyu: f32 = drow.iter().zip(&u).map(|(a, b)| a * b).sum();
                        let du: Vec<f32> = (0..hd).map(|j| -ou * drow[j] - dyu * orow[j]).collect();
                        let duu: f32 = du.iter().zip(&u).map(|(a, b)| a * b).sum();
                        for j in 0..hd {
                            dv[tr * hd + j] += (du[j] - duu * u[j]) / nv;
                            drow[j] -= dyu * u[j];
                        }
                    }
                }
                let dov = v_(&dyh, i0 * hd, hd, 1);
                mm(m, n, hd, dov, v_(v, koff, 1, kw), dp, false);
                for r in 0..m {
                    let last = i0 + r;
                    let (p, d) = (&s[r * n..(r + 1) * n], &mut dp[r * n..(r + 1) * n]);
                    let sum: f32 = p[..=last].iter().zip(&d[..=last]).map(|(a, b)| a * b).sum();
                    for j in 0..=last {
                        d[j] = p[j] * (d[j] - sum) * scale;
                    }
                    d[last + 1..].iter_mut().for_each(|x| *x = 0.0);
                }
                mm(
                    m,
                    hd,
                    n,
                    v_(dp, 0, n, 1),
                    v_(k, koff, kw, 1),
                    &mut dq[i0 * hd..i1 * hd],
                    false,
                );
                mm(n, hd, m, v_(dp, 0, 1, n), qv, &mut dk[..n * hd], true);
                mm(
                    n,
                    hd,
                    m,
                    v_(s, 0, 1, n),
                    v_(&dyh, i0 * hd, hd, 1),
                    &mut dv[..n * hd],
                    true,
                );
            }
            dqs.push(dq);
        }
        (dqs, dk, dv)
    });
    let mut dq = vec![0.0f32; q.len()];
    let mut dk = vec![0.0f32; k.len()];
    let mut dv = vec![0.0f32; v.len()];
    for (task, (dqs, dkl, dvl)) in outs.into_iter().enumerate() {
        let (b, kvh) = (task / g.kv_heads, task % g.kv_heads);
        for r in 0..t {
            let row = b * t + r;
            dk[row * kw + kvh * hd..][..hd].copy_from_slice(&dkl[r * hd..(r + 1) * hd]);
            dv[row * kw + kvh * hd..][..hd].copy_from_slice(&dvl[r * hd..(r + 1) * hd]);
            for (i, dqh) in dqs.iter().enumerate() {
                let h = kvh * group + i;
                dq[row * qw + h * hd..][..hd].copy_from_slice(&dqh[r * hd..(r + 1) * hd]);
            }
        }
    }
    (dq, dk, dv)
}
