//! The skip config `ffnskip calibrate` writes and `ffnskip generate --skip-config` reads: the
//! chosen policy, the per-layer means the fixed-layer policies need, and what the choice was
//! measured to realise, so a config always carries the evidence for its ratio.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::skip::{Calibration, PolicySpec};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkipConfig {
    /// A canonical policy spec string, e.g. `ffnskip@0.2613:cold_end=1:cold_start=1`.
    pub policy: String,
    pub calibration: Calibration,
    pub measured: Measured,
}

/// The realised skipping of `policy` on the calibration text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Skipped FFNs over all FFNs of the decode steps after each window's warm-up.
    pub realised_post_warmup: f64,
    /// Decoded tokens measured.
    pub tokens: usize,
    /// The text file.
    pub text: String,
}

impl SkipConfig {
    pub fn spec(&self) -> Result<PolicySpec> {
        self.policy.parse()
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidArgument(format!("reading skip config {}: {e}", path.display())))?;
        Self::from_json(&text).map_err(|e| Error::InvalidArgument(format!("skip config {}: {e}", path.display())))
    }

    /// Parses a skip config and checks that its policy spec parses.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        config.spec()?;
        Ok(config)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).expect("a skip config serialises");
        std::fs::write(path, json + "\n")?;
        Ok(())
    }
}
