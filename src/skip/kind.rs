//! The skip policies by name: the one list the parser, the builder, the reports and the
//! policies themselves share, so a name can only be spelt one way.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    Dense,
    /// FFN-SkipLLM: a run of FFN blocks after the first saturated window layer.
    FfnSkip,
    /// The paper's Random Skip: a run at a uniformly random start in `[0, L − k]`, cold
    /// layers included, never cut.
    Random,
    /// The paper's No Input Adaptive: a run at a uniformly random place inside the window.
    NoAdaptive,
    /// A run from the first window layer on, the same for every token.
    FixedStart,
    /// The `round(r L)` window FFNs with the highest calibrated cosine, for good.
    Static,
    /// Whole layers after the first window layer whose output barely differs from its input.
    LayerEarlyExit,
    /// The `round(r L)` window layers with the highest calibrated cosine, removed.
    LayerDrop,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 8] = [
        PolicyKind::Dense,
        PolicyKind::FfnSkip,
        PolicyKind::Random,
        PolicyKind::NoAdaptive,
        PolicyKind::FixedStart,
        PolicyKind::Static,
        PolicyKind::LayerEarlyExit,
        PolicyKind::LayerDrop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Dense => "dense",
            PolicyKind::FfnSkip => "ffnskip",
            PolicyKind::Random => "random",
            PolicyKind::NoAdaptive => "no-adaptive",
            PolicyKind::FixedStart => "fixed-start",
            PolicyKind::Static => "static",
            PolicyKind::LayerEarlyExit => "layer-early-exit",
            PolicyKind::LayerDrop => "layer-drop",
        }
    }

    /// The option keys this policy takes beyond the schedule's (cold regions, warm-up).
    pub fn own_keys(self) -> &'static [&'static str] {
        match self {
            PolicyKind::FfnSkip => &["tau", "recheck", "max_run", "signal", "threshold"],
            PolicyKind::Random | PolicyKind::NoAdaptive => &["seed"],
            PolicyKind::LayerEarlyExit => &["tau", "recheck", "max_run"],
            PolicyKind::Dense | PolicyKind::FixedStart | PolicyKind::Static | PolicyKind::LayerDrop => &[],
        }
    }

    /// Whether the policy runs dense decode steps at the start of each prompt.
    pub fn has_warmup(self) -> bool {
        !matches!(self, PolicyKind::Dense | PolicyKind::LayerDrop)
    }

    /// Whether the policy places its runs by a saturation test (and so has a threshold).
    pub fn tests_saturation(self) -> bool {
        matches!(self, PolicyKind::FfnSkip | PolicyKind::LayerEarlyExit)
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PolicyKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        PolicyKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<_> = PolicyKind::ALL.iter().map(|k| k.name()).collect();
            Error::InvalidArgument(format!("unknown policy '{s}' (known: {})", names.join(", ")))
        })
    }
}

impl Serialize for PolicyKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for PolicyKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_kind() {
        for kind in PolicyKind::ALL {
            assert_eq!(kind.name().parse::<PolicyKind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            assert_eq!(serde_json::from_str::<PolicyKind>(&json).unwrap(), kind);
        }
        let err = "skip".parse::<PolicyKind>().unwrap_err().to_string();
        assert!(err.contains("unknown policy 'skip'") && err.contains("fixed-start"), "{err}");
    }
}
