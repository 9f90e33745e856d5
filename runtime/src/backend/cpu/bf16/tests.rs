//! Each bf16 kernel this CPU has, against the f64 reference on bf16-rounded operands and
//! against the float32 product; the rounding and the packed layout against their definitions.

use super::*;

/// The kernels this CPU runs: AMX (if detected) and AVX512-BF16 (every CPU with any).
fn kernels() -> Vec<Kernel> {
    let ks = match Kernel::detect() {
        Some(Kernel::Amx) => vec![Kernel::Amx, Kernel::Avx512Bf16],
        Some(Kernel::Avx512Bf16) => vec![Kernel::Avx512Bf16],
        None => vec![],
    };
    if std::env::var("PGOLF_REQUIRE_BF16").is_ok_and(|v| v == "1") {
        assert!(
            !ks.is_empty(),
            "PGOLF_REQUIRE_BF16=1 but no bf16 kernel was detected"
        );
    }
    eprintln!(
        "bf16 kernels tested: {:?}",
        ks.iter().map(|k| k.name()).collect::<Vec<_>>()
    );
    ks
}

/// Deterministic values of both signs over a few binades, no subnormals.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            let e = ((s >> 8) % 6) as i32 - 3;
            (u - 0.5) * 2f32.powi(e)
        })
        .collect()
}

#[test]
fn rounding_is_nearest_even_like_the_half_crate() {
    let mut vals = values(20_000, 3);
    vals.extend([
        0.0,
        -0.0,
        1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::from_bits(0x3f80_8000), // a tie: rounds to even (down)
        f32::from_bits(0x3f81_8000), // a tie: rounds to even (up)
        f32::from_bits(0x3f80_8001),
    ]);
    for v in vals {
        assert_eq!(
            to_bf16(v),
            half::bf16::from_f32(v).to_bits(),
            "{v:e} ({:#x})",
            v.to_bits()
        );
    }
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    assert!(from_bf16(to_bf16(f32::from_bits(0x7f80_0001))).is_nan());
}

#[test]
fn vector_conversion_equals_the_scalar_rounding() {
    if kernels().is_empty() {
        return;
    }
    let src = values(1000 + 7, 5);
    let mut got = vec![0u16; src.len()];
    convert_row(&src, &mut got);
    let want: Vec<u16> = src.iter().map(|&v| to_bf16(v)).collect();
    assert_eq!(got, want);
}

#[test]
fn packed_layout_holds_each_weight_at_its_documented_place() {
    let (n, k) = (37, 70);
    let w = values(n * k, 7);
    let p = PackedWeight::pack(&w, n, k);
    assert_eq!(p.k_pad, 96);
    assert_eq!(p.col_blocks(), 4, "n padded to a multiple of 32");
    for nb in 0..p.col_blocks() {
        let blk = p.col_block(nb);
        for kk in 0..p.k_pad {
            for c in 0..NB {
                let j = nb * NB + c;
                let got = blk[(kk / KB) * BLOCK + ((kk % KB) / 2) * 2 * NB + 2 * c + kk % 2];
                let want = if j < n && kk < k {
                    to_bf16(w[j * k + kk])
                } else {
                    0
                };
                assert_eq!(got, want, "w[{j}][{kk}]");
            }
        }
    }
}

#[test]
fn row_and_column_packers_equal_the_element_packer() {
    for (n, k) in [(1, 1), (37, 70), (64, 64), (150, 20), (20, 151)] {
        let w = values(n * k, 11);
        let want = PackedWeight::pack_with(n, k, |j, kk| w[j * k + kk]);
        let rows = PackedWeight::pack_rows(n, k, |j| &w[j * k..(j + 1) * k]);
        assert_eq!(rows.data, want.data, "pack_rows {n}x{k}");
        // The transpose `t [k, n]` given by its rows is the columns of `w`.
        let t: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        let cols = PackedWeight::pack_cols(n, k, |kk| &t[kk * n..(kk + 1) * n]);
        assert_eq!(cols.data, want.data, "pack_cols {n}x{k}");
        assert_eq!((rows.shape(), cols.shape()), ((n, k), (n, k)));
    }
}

#[test]
fn witness_notices_a_weight_changed_in_place() {
    let (n, k) = (64, 64);
    let mut w = values(n * k, 9);
    let p = PackedWeight::pack(&w, n, k);
    assert!(p.matches(&w));
    w.iter_mut().for_each(|v| *v *= 0.5);
    assert!(!p.matches(&w));
    assert!(!p.matches(&w[..n * k - 1]));
}

/// Shapes that cover: one row (decoding), fewer rows than a tile, a partial last strip, `n`
/// and `k` off the block sizes, the model's widths, and tasks split over columns.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 16, 32),
    (1, 512, 512),
    (3, 48, 70),
    (15, 100, 33),
    (16, 32, 32),
    (33, 100, 129),
    (64, 512, 512),
    (96, 1536, 512),
    (40, 512, 2048),
    (130, 64, 2048),
];

#[test]
fn every_kernel_matches_the_reference_within_the_float32_sum_bound() {
    for kernel in kernels() {
        for &(m, n, k) in SHAPES {
            let x = values(m * k, (m * 31 + n) as u64);
            let w = values(n * k, (n * 17 + k) as u64);
            let got = linear(&x, m, &PackedWeight::pack(&w, n, k), kernel);
            let (want, mag) = reference_linear(&x, m, &w, n, k);
            let mut f32_out = vec![0.0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    f32_out[i * n + j] = (0..k).map(|kk| x[i * k + kk] * w[j * k + kk]).sum();
                }
            }
            let sum_bound = k as f64 * 2f64.powi(-23);
            for idx in 0..m * n {
                let (g, r, a) = (got[idx] as f64, want[idx], mag[idx]);
                assert!(
                    (g - r).abs() <= sum_bound * a + 1e-30,
                    "{} {m}x{n}x{k} at {idx}: {g} vs reference {r} (|x||w| {a})",
                    kernel.name()
                );
                // Against float32: the operand rounding (2^-8 relative) plus both sums.
                let f = f32_out[idx] as f64;
                assert!(
                    (g - f).abs() <= (2f64.powi(-8) + 2.0 * sum_bound) * a + 1e-30,
                    "{} {m}x{n}x{k} at {idx}: {g} vs float32 {f}",
                    kernel.name()
                );
            }
        }
    }
}

#[test]
fn linear_into_overwrites_what_the_output_held() {
    for kernel in kernels() {
        let (m, n, k) = (33, 64, 64);
        let x = values(m * k, 1);
        let w = PackedWeight::pack(&values(n * k, 2), n, k);
        let want = linear(&x, m, &w, kernel);
        let mut out = vec![f32::NAN; m * n];
        linear_into(&x, m, &w, kernel, &mut out);
        assert_eq!(out, want, "{}", kernel.name());
    }
}

#[test]
fn attention_matches_its_reference_within_one_bf16_rounding_of_v() {
    use crate::backend::AttnGeometry;
    for kernel in kernels() {
        // GQA groups of 2, 1 and 4; head_dim below, off and at the depth block; a tile of 32
        // that crosses a key block boundary (seq 150); and the baseline's head shape.
        for (heads, kv_heads, head_dim, seq) in [
            (4, 2, 8, 150),
            (2, 2, 16, 150),
            (4, 1, 20, 150),
            (2, 1, 64, 150),
            (8, 4, 64, 96),
        ] {
            for xsa in [false, true] {
                let g = AttnGeometry {
                    batch: 2,
                    seq,
                    heads,
                    kv_heads,
                    head_dim,
                };
                let (q, k, v) = super::super::attention::test_qkv(&g);
                let got = attention::attention(&q, &k, &v, &g, xsa, kernel);
                let want = super::super::attention::reference(&q, &k, &v, &g, xsa, |x| {
                    from_bf16(to_bf16(x))
                });
                let vmax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let tol = 2f32.powi(-8) * vmax + 1e-5;
                let err = crate::backend::cpu::max_abs_diff(&got, &want);
                assert!(
                    err <= tol,
                    "{} {heads}/{kv_heads}/{head_dim} seq {seq} xsa={xsa}: max err {err} > {tol}",
                    kernel.name()
                );
            }
        }
    }
}
