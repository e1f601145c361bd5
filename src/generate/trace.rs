//! Which blocks computed each generated token: one [`LayerRun`] per layer, read off the block
//! counts of the forward whose logits the token was sampled from (the prefill for the first
//! token, a decode step for each later one). The server streams it for the web page's skip map.

use serde::Serialize;

use crate::model::BlockCounts;

/// What one layer ran for one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerRun {
    /// Attention and FFN.
    Full,
    /// Attention only: the FFN block was skipped.
    FfnSkipped,
    /// Neither; the layer's K/V were projected from the current state (early exit).
    KvCopied,
    /// Nothing at all (layer dropping).
    Dropped,
}

impl LayerRun {
    /// The letter the wire format uses for this state: `F`, `s`, `k` or `d`.
    pub fn letter(self) -> char {
        match self {
            LayerRun::Full => 'F',
            LayerRun::FfnSkipped => 's',
            LayerRun::KvCopied => 'k',
            LayerRun::Dropped => 'd',
        }
    }
}

/// Which forward a token came out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    Prefill,
    Decode,
    /// Speculative decoding: the full model's forward (a verification, or a plain step).
    Speculative,
}

/// One generated token's trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenTrace {
    pub source: TokenSource,
    /// Whether the policy was still in its warm-up (it does not skip then).
    pub warmup: bool,
    pub layers: Vec<LayerRun>,
}

impl TokenTrace {
    pub fn new(n_layers: usize) -> Self {
        Self { source: TokenSource::Prefill, warmup: true, layers: vec![LayerRun::Full; n_layers] }
    }

    /// Overwrites the trace (in place: a decode step allocates nothing) with what the forward
    /// behind `counts` ran. A forward plans each layer once for all its rows (and a prefill's
    /// chunks alike), so a block counted for any row ran for the token's row too.
    pub fn record(&mut self, counts: &BlockCounts, source: TokenSource, warmup: bool) {
        self.source = source;
        self.warmup = warmup;
        for (l, run) in self.layers.iter_mut().enumerate() {
            *run = if counts.ffn[l] > 0 {
                LayerRun::Full
            } else if counts.attention[l] > 0 {
                LayerRun::FfnSkipped
            } else if counts.kv_writes[l] > 0 {
                LayerRun::KvCopied
            } else {
                LayerRun::Dropped
            };
        }
    }

    /// Every layer ran in full: the token came from the full model (`source`).
    pub fn record_full(&mut self, source: TokenSource) {
        self.source = source;
        self.warmup = false;
        self.layers.fill(LayerRun::Full);
    }

    /// The layers as a string of [`LayerRun::letter`]s, layer 0 first.
    pub fn letters(&self) -> String {
        self.layers.iter().map(|r| r.letter()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_layers_state_off_the_counts() {
        let mut counts = BlockCounts::new(4);
        counts.attention = vec![1, 1, 0, 0];
        counts.ffn = vec![1, 0, 0, 0];
        counts.kv_writes = vec![1, 1, 1, 0];
        let mut trace = TokenTrace::new(4);
        trace.record(&counts, TokenSource::Decode, false);
        assert_eq!(trace.letters(), "Fskd");
        assert_eq!((trace.source, trace.warmup), (TokenSource::Decode, false));
    }
}
