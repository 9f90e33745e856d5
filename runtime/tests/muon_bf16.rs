//! Muon's bf16 Newton-Schulz (`MUON_BF16=1`) against `train_gpt.py`'s own function run by
//! PyTorch in bf16 (fixture from `scripts/torch_ns_bf16_reference.py`).

mod common;

use pgolf_rt::train::muon::{newton_schulz, newton_schulz_bf16};

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn bf16_newton_schulz_matches_pytorch_bf16() {
    let fx: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/torch/ns_bf16.json")).expect("fixture");
    for case in fx["cases"].as_array().unwrap() {
        let (rows, cols) = (
            case["rows"].as_u64().unwrap() as usize,
            case["cols"].as_u64().unwrap() as usize,
        );
        let (g, want) = (floats(&case["g"]), floats(&case["o"]));
        let got = newton_schulz_bf16(&g, rows, cols, 5);
        // Every value is a bf16 value, as the reference's output.
        for v in &got {
            assert_eq!(half::bf16::from_f32(*v).to_f32(), *v);
        }
        // Bit for bit: the same bf16 roundings at the same points as PyTorch's bf16 run.
        let equal = got.iter().zip(&want).filter(|(a, b)| a == b).count();
        let max = common::max_abs_diff(&got, &want);
        let f32_ns = newton_schulz(&g, rows, cols, 5);
        let max_f32 = common::max_abs_diff(&f32_ns, &want);
        println!(
            "{rows}x{cols}: {equal}/{} equal, max |bf16 - torch| {max:.2e}, max |f32 - torch| {max_f32:.2e}",
            got.len()
        );
        assert_eq!(
            equal,
            got.len(),
            "{rows}x{cols}: only {equal} of {} equal (max diff {max})",
            got.len()
        );
        // The emulation is closer to PyTorch's bf16 result than the float32 oracle is.
        assert!(max < max_f32, "{rows}x{cols}: {max} vs f32 {max_f32}");
    }
}

#[test]
fn muon_step_in_bf16_mode_applies_the_bf16_update() {
    use pgolf_rt::train::muon::{MatrixParam, Muon, MuonConfig};
    let (rows, cols) = (16, 8);
    let g: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * 1e-3)
        .collect();
    let mut w = vec![0.5f32; rows * cols];
    let cfg = MuonConfig {
        lr: 0.04,
        momentum: 0.95,
        bf16: true,
        ..MuonConfig::default()
    };
    Muon::new(cfg)
        .step(
            &mut [MatrixParam {
                values: &mut w,
                rows,
                cols,
            }],
            &[&g],
        )
        .unwrap();
    // First step: buf = g, u = g + 0.95·g (NS input); update = bf16(NS(u)·sqrt(2)).
    let u: Vec<f32> = g.iter().map(|&x| x + 0.95 * x).collect();
    let o = newton_schulz_bf16(&u, rows, cols, 5);
    for (i, (&wi, &oi)) in w.iter().zip(&o).enumerate() {
        let upd = half::bf16::from_f32(oi * 2f32.sqrt()).to_f32();
        assert_eq!(wi, 0.5 - 0.04 * upd, "{i}");
    }
}
