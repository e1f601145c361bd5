//! The evaluation protocol's way through a text (DESIGN §5): windows of `window` tokens, the first
//! `prefill` of each prefilled in one batched step, every following token fed through the decode
//! path one at a time, so policies see decode steps exactly as they do in generation.

use crate::error::{Error, Result};
use crate::generate::Session;
use crate::model::{BlockCounts, Llama};
use crate::skip::SkipPolicy;

/// How a text is cut and how many decoded tokens a run takes from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windowing {
    /// Tokens per window, prefill included.
    pub window: usize,
    /// Tokens prefilled at the start of each window.
    pub prefill: usize,
    /// Decoded tokens in all; the run stops there.
    pub tokens: usize,
}

impl Windowing {
    /// Cuts `text` into windows holding exactly `self.tokens` decoded tokens in all (the last
    /// window is shortened), or says why the text or the settings cannot.
    /// Checks the settings alone, so bad flags fail before a model is loaded.
    pub fn validate(&self) -> Result<()> {
        if self.tokens == 0 {
            return Err(Error::InvalidArgument("--tokens must be at least 1".into()));
        }
        if self.prefill == 0 || self.prefill >= self.window {
            return Err(Error::InvalidArgument(format!(
                "the prefill ({}) must be at least 1 and shorter than the window ({})",
                self.prefill, self.window
            )));
        }
        Ok(())
    }

    pub fn windows<'a>(&self, text: &'a [u32]) -> Result<Vec<&'a [u32]>> {
        self.validate()?;
        let mut windows = Vec::new();
        let mut left = self.tokens;
        for chunk in text.chunks(self.window) {
            if left == 0 {
                break;
            }
            let decoded = chunk.len().saturating_sub(self.prefill).min(left);
            if decoded > 0 {
                windows.push(&chunk[..self.prefill + decoded]);
                left -= decoded;
            }
        }
        if left > 0 {
            return Err(Error::InvalidArgument(format!(
                "the text has {} tokens, enough for {} decoded tokens in windows of {} with {} prefilled, not {}",
                text.len(),
                self.tokens - left,
                self.window,
                self.prefill,
                self.tokens
            )));
        }
        Ok(windows)
    }
}

/// Runs one window through a fresh session: its prefill, then one decode step per following
/// token. `on_decode(position, counts, past_warmup)` follows each decode step with that step's
/// block counts and whether the policy was past its warm-up.
pub fn feed_window(
    model: &Llama,
    window: &[u32],
    prefill: usize,
    policy: &mut dyn SkipPolicy,
    on_decode: &mut dyn FnMut(usize, &BlockCounts, bool),
) -> Result<()> {
    let n_layers = model.config.n_layers;
    let mut session = Session::new(model, Some(window.len()))?;
    let mut logits = Vec::new();
    session.prefill(&window[..prefill], policy, &mut BlockCounts::new(n_layers), &mut logits)?;
    for (i, &token) in window[prefill..].iter().enumerate() {
        let mut counts = BlockCounts::new(n_layers);
        session.decode(token, policy, &mut counts, &mut logits)?;
        on_decode(prefill + i, &counts, policy.past_warmup());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lengths(w: Windowing, text_len: usize) -> Result<Vec<usize>> {
        let text: Vec<u32> = (0..text_len as u32).collect();
        Ok(w.windows(&text)?.iter().map(|w| w.len()).collect())
    }

    #[test]
    fn windows_stop_at_the_token_budget() {
        let w = Windowing { window: 10, prefill: 4, tokens: 14 };
        // 6 + 6 decoded, then 2 more in a window shortened to 4 + 2.
        assert_eq!(lengths(w, 100).unwrap(), vec![10, 10, 6]);
        let text: Vec<u32> = (0..100).collect();
        assert_eq!(w.windows(&text).unwrap()[1][0], 10, "windows are consecutive");
        // A tail shorter than the prefill is no window.
        assert_eq!(lengths(Windowing { tokens: 12, ..w }, 23).unwrap(), vec![10, 10]);
    }

    #[test]
    fn windows_reject_short_texts_and_bad_settings() {
        let w = Windowing { window: 10, prefill: 4, tokens: 14 };
        let err = lengths(w, 22).unwrap_err().to_string();
        assert!(err.contains("enough for 12 decoded tokens"), "{err}");
        assert!(lengths(Windowing { tokens: 0, ..w }, 100).unwrap_err().to_string().contains("--tokens"));
        assert!(lengths(Windowing { prefill: 10, ..w }, 100).unwrap_err().to_string().contains("prefill"));
        assert!(lengths(Windowing { prefill: 0, ..w }, 100).unwrap_err().to_string().contains("prefill"));
    }
}
