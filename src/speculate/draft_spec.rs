//! What drafts the tokens that the full model then verifies, as one string for the command
//! line and for reports: `ngram`, a skip policy spec (`ffnskip@0.5`, `layer-drop@0.5`, ...), or
//! `ngram+SPEC` (the n-gram continuation when the text has one, else the skip draft).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::skip::{PolicyKind, PolicySpec};

#[derive(Debug, Clone, PartialEq)]
pub enum DraftSpec {
    /// Prompt lookup: the continuation of the longest recent n-gram match.
    Ngram,
    /// The model itself under a skip policy.
    Skip(PolicySpec),
    /// The n-gram continuation, or the skip draft when there is none.
    NgramThenSkip(PolicySpec),
}

impl DraftSpec {
    /// The skip policy that drafts, if any.
    pub fn skip_policy(&self) -> Option<&PolicySpec> {
        match self {
            DraftSpec::Ngram => None,
            DraftSpec::Skip(p) | DraftSpec::NgramThenSkip(p) => Some(p),
        }
    }

    pub fn uses_ngram(&self) -> bool {
        matches!(self, DraftSpec::Ngram | DraftSpec::NgramThenSkip(_))
    }
}

/// A skip policy as a draft: it must skip something (a dense draft costs a full step and is
/// always accepted), and unless the spec says otherwise it skips from the first draft token on,
/// since a warm-up would only make the first drafts as dear as the steps they replace.
fn draft_policy(text: &str) -> Result<PolicySpec> {
    let mut spec: PolicySpec = text.parse()?;
    if spec.kind == PolicyKind::Dense {
        return Err(Error::InvalidArgument(
            "a dense draft costs as much as the step it replaces; draft with a skip policy or ngram".into(),
        ));
    }
    if spec.kind.has_warmup() {
        spec.options.entry("warmup".into()).or_insert_with(|| "0".into());
    }
    spec.validate()?;
    Ok(spec)
}

impl FromStr for DraftSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.split_once('+') {
            None if s == "ngram" => Ok(DraftSpec::Ngram),
            None => Ok(DraftSpec::Skip(draft_policy(s)?)),
            Some(("ngram", policy)) => Ok(DraftSpec::NgramThenSkip(draft_policy(policy)?)),
            Some(_) => Err(Error::InvalidArgument(format!(
                "draft '{s}': expected ngram, a skip policy (e.g. ffnskip@0.5) or ngram+POLICY"
            ))),
        }
    }
}

impl fmt::Display for DraftSpec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            DraftSpec::Ngram => write!(f, "ngram"),
            DraftSpec::Skip(p) => write!(f, "{p}"),
            DraftSpec::NgramThenSkip(p) => write!(f, "ngram+{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_prints_it_back() {
        for (text, canonical) in [
            ("ngram", "ngram"),
            ("ffnskip@0.5", "ffnskip@0.5:warmup=0"),
            ("ngram+layer-drop@0.5", "ngram+layer-drop@0.5"),
            ("ngram+no-adaptive@0.6:warmup=4", "ngram+no-adaptive@0.6:warmup=4"),
        ] {
            let spec: DraftSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), canonical);
            assert_eq!(canonical.parse::<DraftSpec>().unwrap(), spec);
        }
    }

    #[test]
    fn rejects_dense_unknown_and_malformed_drafts() {
        for bad in ["dense", "ngram+dense", "bogus", "ffnskip", "ngram+", "skip+ngram", "ffnskip@1.5"] {
            assert!(bad.parse::<DraftSpec>().is_err(), "{bad}");
        }
    }
}
