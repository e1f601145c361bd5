//! How a generation decodes, named by one string for the command line and for reports: a skip
//! policy spec (`dense`, `ffnskip@0.25`, ...) or `speculate:DRAFT` (lossless speculation with
//! a draft, see [`DraftSpec`]).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::skip::{Calibration, PolicySpec, SkipPolicy};
use crate::speculate::{DraftSpec, Speculator};

const SPECULATE: &str = "speculate:";

#[derive(Debug, Clone, PartialEq)]
pub enum DecodeSpec {
    Policy(PolicySpec),
    Speculate(DraftSpec),
}

/// A built [`DecodeSpec`], with its state across the turns of a chat.
pub enum Decoder {
    /// One forward per token under a skip policy (dense included), which also prefills.
    Stepwise(Box<dyn SkipPolicy>),
    /// Drafts verified by the full model: the dense output, in fewer forwards.
    Speculative(Box<Speculator>),
}

impl DecodeSpec {
    pub fn dense() -> Self {
        DecodeSpec::Policy("dense".parse().expect("dense parses"))
    }

    pub fn build(&self, n_layers: usize, calibration: Option<&Calibration>) -> Result<Decoder> {
        Ok(match self {
            DecodeSpec::Policy(p) => Decoder::Stepwise(p.build(n_layers, calibration)?),
            DecodeSpec::Speculate(d) => {
                Decoder::Speculative(Box::new(Speculator::new(d.clone(), n_layers, calibration)?))
            }
        })
    }

    /// The layers the decoder never skips (see [`PolicySpec::cold_layers`]); none for
    /// speculation, whose tokens all come from the full model.
    pub fn cold_layers(&self, n_layers: usize) -> Vec<usize> {
        match self {
            DecodeSpec::Policy(p) => p.cold_layers(n_layers),
            DecodeSpec::Speculate(_) => Vec::new(),
        }
    }
}

impl FromStr for DecodeSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.strip_prefix(SPECULATE) {
            Some(draft) => Ok(DecodeSpec::Speculate(draft.parse()?)),
            None => Ok(DecodeSpec::Policy(s.parse()?)),
        }
    }
}

impl fmt::Display for DecodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            DecodeSpec::Policy(p) => write!(f, "{p}"),
            DecodeSpec::Speculate(d) => write!(f, "{SPECULATE}{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_and_speculation_round_trip() {
        for s in ["dense", "ffnskip@0.25", "speculate:ngram", "speculate:ngram+ffnskip@0.5:warmup=0"] {
            assert_eq!(s.parse::<DecodeSpec>().unwrap().to_string(), s);
        }
        assert!(matches!("speculate:ngram".parse(), Ok(DecodeSpec::Speculate(DraftSpec::Ngram))));
        assert!("speculate:dense".parse::<DecodeSpec>().is_err());
        assert!("speculate:".parse::<DecodeSpec>().is_err());
    }
}
