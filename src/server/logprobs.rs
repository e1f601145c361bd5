//! The `logprobs` of the completion endpoints: what a request may ask for, and the generated
//! tokens' log-probabilities in OpenAI's two wire formats (chat's `content` list, and the legacy
//! completions' parallel lists).

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use crate::generate::{TokenLogprob, MAX_TOP_LOGPROBS};
use crate::tokenizer::Tokenizer;

/// Chat's `"logprobs": true, "top_logprobs": N`: the number of alternatives per token, or
/// `None` when not asked for.
pub fn chat_request(logprobs: Option<bool>, top_logprobs: Option<u32>) -> Result<Option<usize>, ApiError> {
    match (logprobs.unwrap_or(false), top_logprobs) {
        (false, Some(_)) => Err(ApiError::bad_request("top_logprobs needs logprobs: true")),
        (false, None) => Ok(None),
        (true, n) => top_n("top_logprobs", n.unwrap_or(0)).map(Some),
    }
}

/// The legacy completions' `"logprobs": N` (alternatives per token; `null` or absent: none).
pub fn completion_request(logprobs: Option<u32>) -> Result<Option<usize>, ApiError> {
    logprobs.map(|n| top_n("logprobs", n)).transpose()
}

fn top_n(field: &str, n: u32) -> Result<usize, ApiError> {
    match usize::try_from(n) {
        Ok(n) if n <= MAX_TOP_LOGPROBS => Ok(n),
        _ => Err(ApiError::bad_request(format!("{field} must be in [0, {MAX_TOP_LOGPROBS}] (got {n})"))),
    }
}

/// A token as both formats name it: its text (lossy where it holds part of a character) and
/// its bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Alternative {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

impl Alternative {
    fn new(id: u32, logprob: f32, tokenizer: &Tokenizer) -> Self {
        let bytes = tokenizer.bytes(id).to_vec();
        Self { token: String::from_utf8_lossy(&bytes).into_owned(), logprob, bytes }
    }
}

/// A generated token's entry in chat's `logprobs.content`.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    #[serde(flatten)]
    pub chosen: Alternative,
    pub top_logprobs: Vec<Alternative>,
}

impl Entry {
    pub fn new(lp: &TokenLogprob, tokenizer: &Tokenizer) -> Self {
        Self {
            chosen: Alternative::new(lp.token, lp.logprob, tokenizer),
            top_logprobs: lp.top.iter().map(|&(id, l)| Alternative::new(id, l, tokenizer)).collect(),
        }
    }
}

/// Chat's `choices[i].logprobs`.
pub fn chat(entries: &[Entry]) -> Value {
    json!({"content": entries, "refusal": null})
}

/// The legacy completions' `choices[i].logprobs`; `offsets` are where each token's text starts
/// in the choice's text, in characters.
pub fn legacy(entries: &[Entry], offsets: &[usize]) -> Value {
    let top = |e: &Entry| -> Map<String, Value> {
        e.top_logprobs.iter().map(|a| (a.token.clone(), json!(a.logprob))).collect()
    };
    json!({
        "tokens": entries.iter().map(|e| e.chosen.token.as_str()).collect::<Vec<_>>(),
        "token_logprobs": entries.iter().map(|e| e.chosen.logprob).collect::<Vec<_>>(),
        "top_logprobs": entries.iter().map(top).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked() {
        assert_eq!(chat_request(None, None).unwrap(), None);
        assert_eq!(chat_request(Some(false), None).unwrap(), None);
        assert_eq!(chat_request(Some(true), None).unwrap(), Some(0));
        assert_eq!(chat_request(Some(true), Some(20)).unwrap(), Some(20));
        for (lp, top) in [(Some(true), Some(21)), (None, Some(2)), (Some(false), Some(0))] {
            assert_eq!(chat_request(lp, top).unwrap_err().status.as_u16(), 400, "{lp:?} {top:?}");
        }
        assert_eq!(completion_request(Some(5)).unwrap(), Some(5));
        assert_eq!(completion_request(None).unwrap(), None);
        assert_eq!(completion_request(Some(21)).unwrap_err().status.as_u16(), 400);
    }
}
