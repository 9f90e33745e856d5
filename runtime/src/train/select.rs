//! Choosing parameters by name: comma-separated glob patterns over the state-dict names of
//! [`crate::model::Params::leaves`] (`blocks.9.*,*scale*,lm_head.weight`), as a TTT recipe
//! says which tensors it adapts. `*` matches any run of characters (dots included); every
//! other character matches itself.

use crate::{Error, Result};

/// A set of parameters given by name patterns; the empty set of patterns selects every
/// parameter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParamSelect {
    patterns: Vec<String>,
}

impl ParamSelect {
    /// Every parameter.
    pub fn all() -> Self {
        ParamSelect::default()
    }

    /// The patterns, in the order given (empty: every parameter).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| glob(p, name))
    }

    /// Checks every pattern against the model's parameter names: a pattern that selects
    /// nothing is a mistake (a typo, or a layer the model does not have), not a no-op.
    pub fn check<'a>(&self, names: impl IntoIterator<Item = &'a str> + Clone) -> Result<()> {
        for p in &self.patterns {
            if !names.clone().into_iter().any(|n| glob(p, n)) {
                let some: Vec<&str> = names.clone().into_iter().take(6).collect();
                return Err(Error::Usage(format!(
                    "parameter pattern {p:?} matches no parameter of this model (its names \
                     look like {}, ...; `pgolf-rt inspect` lists them all)",
                    some.join(", ")
                )));
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for ParamSelect {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut patterns = Vec::new();
        for p in s.split(',').map(str::trim) {
            let ok = !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._*".contains(c));
            if !ok {
                return Err(Error::Usage(format!(
                    "parameter pattern {p:?}: use state-dict names with `*` as the wildcard, \
                     comma-separated (e.g. 'blocks.9.*,*scale*,lm_head.weight')"
                )));
            }
            patterns.push(p.to_string());
        }
        Ok(ParamSelect { patterns })
    }
}

impl std::fmt::Display for ParamSelect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.patterns.is_empty() {
            f.write_str("*")
        } else {
            f.write_str(&self.patterns.join(","))
        }
    }
}

/// Whether `name` matches `pattern` (`*`: any run of characters), by the two-pointer method:
/// on a mismatch, the last `*` takes one more character.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_as_a_shell_would() {
        for (p, n, want) in [
            ("blocks.9.*", "blocks.9.attn.c_q.weight", true),
            ("blocks.9.*", "blocks.19.attn.c_q.weight", false),
            ("blocks.1.*", "blocks.10.mlp.fc.weight", false),
            ("*scale*", "blocks.3.attn_scale", true),
            ("*scale*", "ve_layer_scales.0", true),
            ("*scale*", "bigram.scale", true),
            ("*scale*", "blocks.3.resid_mix", false),
            ("lm_head*", "lm_head.weight", true),
            ("tok_emb.weight", "tok_emb.weight", true),
            ("tok_emb.weight", "tok_emb.weight2", false),
            ("*", "anything.at.all", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("**", "", true),
        ] {
            assert_eq!(glob(p, n), want, "{p:?} vs {n:?}");
        }
    }

    #[test]
    fn parses_checks_and_prints() {
        let s: ParamSelect = " blocks.9.* , *scale*,lm_head.weight".parse().unwrap();
        assert_eq!(s.to_string(), "blocks.9.*,*scale*,lm_head.weight");
        assert!(s.matches("blocks.9.mlp.fc.weight") && !s.matches("tok_emb.weight"));
        assert!(ParamSelect::all().matches("tok_emb.weight"));
        let names = ["tok_emb.weight", "blocks.9.attn_scale", "lm_head.weight"];
        s.check(names).unwrap();
        let e = s
            .check(["tok_emb.weight", "blocks.9.attn_scale"])
            .unwrap_err();
        assert!(e.to_string().contains("\"lm_head.weight\""), "{e}");
        for bad in ["", "a,,b", "blocks.[0-3].*", "a b"] {
            assert!(bad.parse::<ParamSelect>().is_err(), "{bad:?} accepted");
        }
    }
}
