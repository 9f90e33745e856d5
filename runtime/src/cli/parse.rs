//! Value parsers and checks for flags: a value that would panic, run unbounded or give a
//! silently wrong number (NaN learning rates, zero batches, `TIE_EMBEDDINGS=7`) is refused when
//! the command line is parsed, before any file is read.

use anyhow::{Context, Result};
use pgolf_rt::limits::{FORWARD_TOKENS, SEQ_LEN};

/// A finite `f32` (`NaN`, `inf` and friends are refused).
pub fn finite_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{s} is not a finite number"))
    }
}

/// A finite `f64`.
pub fn finite_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{s} is not a finite number"))
    }
}

/// A count that must be at least 1.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    let v: usize = s.trim().parse().map_err(|e| format!("{e}"))?;
    if v == 0 {
        Err("must be at least 1".into())
    } else {
        Ok(v)
    }
}

/// Most samples an audit flag may ask for (each perturbed position re-runs the sample twice).
pub const MAX_AUDIT_SAMPLES: usize = 1000;

/// An audit sample count in `1..=MAX_AUDIT_SAMPLES`.
pub fn audit_count(s: &str) -> Result<usize, String> {
    let v = at_least_one(s)?;
    if v > MAX_AUDIT_SAMPLES {
        return Err(format!(
            "{v} is more than {MAX_AUDIT_SAMPLES} (each sample re-runs the model)"
        ));
    }
    Ok(v)
}

/// A 0/1 switch (`train_gpt.py`'s integer flags such as `TIE_EMBEDDINGS`).
pub fn switch(s: &str) -> Result<u8, String> {
    match s.trim() {
        "0" => Ok(0),
        "1" => Ok(1),
        _ => Err(format!("{s:?} is not 0 or 1")),
    }
}

/// A window of `seq_len` tokens ([`pgolf_rt::limits::SEQ_LEN`]), `windows` of them in one
/// forward pass ([`pgolf_rt::limits::FORWARD_TOKENS`]); `what` names the flags.
pub fn check_forward(seq_len: usize, windows: usize, what: &str) -> Result<()> {
    if seq_len as u64 > SEQ_LEN.get() {
        anyhow::bail!(SEQ_LEN.exceeded(format!("{what}: a window of {seq_len} tokens")));
    }
    let tokens = seq_len.checked_mul(windows);
    match tokens {
        Some(t) if t as u64 <= FORWARD_TOKENS.get() => Ok(()),
        _ => anyhow::bail!(FORWARD_TOKENS.exceeded(format!(
            "{what} ({windows} x {seq_len} tokens per forward pass)"
        ))),
    }
}

/// The text of a `TEXT` argument: `-` (or no argument) reads standard input, capped at
/// [`pgolf_rt::limits::TEXT_BYTES`].
pub fn text_or_stdin(arg: Option<&str>) -> Result<String> {
    match arg {
        Some("-") | None => {
            let bytes = pgolf_rt::limits::read_capped(
                std::io::stdin().lock(),
                &pgolf_rt::limits::TEXT_BYTES,
                "standard input",
            )?;
            String::from_utf8(bytes).context("standard input is not UTF-8 text")
        }
        Some(t) => Ok(t.to_string()),
    }
}

/// The text of a file argument (`-` reads standard input), capped at
/// [`pgolf_rt::limits::TEXT_BYTES`].
pub fn text_file(path: &str) -> Result<String> {
    if path == "-" {
        return text_or_stdin(None);
    }
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
    let bytes = pgolf_rt::limits::read_capped(f, &pgolf_rt::limits::TEXT_BYTES, path)?;
    String::from_utf8(bytes).with_context(|| format!("{path} is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_refuse_what_would_mislead() {
        assert_eq!(finite_f32("0.5"), Ok(0.5));
        for bad in ["NaN", "inf", "-inf", "x", ""] {
            assert!(finite_f32(bad).is_err(), "{bad}");
            assert!(finite_f64(bad).is_err(), "{bad}");
        }
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("-1").is_err());
        assert_eq!(audit_count("3"), Ok(3));
        assert!(audit_count("1000000000000000000").is_err());
        assert_eq!(switch("1"), Ok(1));
        assert!(switch("7").is_err());
        assert!(check_forward(1024, 8, "x").is_ok());
        assert!(check_forward(usize::MAX, 2, "x").is_err());
        let e = check_forward(10_000_000, 1, "--seq-len")
            .unwrap_err()
            .to_string();
        assert!(e.contains("PGOLF_MAX_SEQ_LEN"), "{e}");
        let e = check_forward(4096, 1024, "x").unwrap_err().to_string();
        assert!(e.contains("PGOLF_MAX_FORWARD_TOKENS"), "{e}");
    }
}
