//! A validated request: what the engine thread needs to generate, and the channel its output
//! goes back on. Everything a client can get wrong is checked here, before the request queues.

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::error::ApiError;
use super::logprobs;
use super::types::{ChatRequest, CompletionRequest, Content, Params, Prompt, Stop};
use super::Loaded;
use crate::chat::Message;
use crate::generate::{DecodeSpec, TokenSource, TokenTrace};
use crate::sampling::SamplingParams;

/// The largest `max_tokens` accepted at all (any request must also fit the context).
const MAX_TOKENS_LIMIT: i64 = 1 << 20;
/// Temperatures above this only produce noise; OpenAI's own limit.
const MAX_TEMPERATURE: f32 = 2.0;

pub struct Job {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub spec: DecodeSpec,
    /// Send a [`TracedToken`] after each generated token.
    pub trace: bool,
    /// Send each generated token's log-probability with this many alternatives.
    pub logprobs: Option<usize>,
    pub events: UnboundedSender<Event>,
}

/// What the engine sends back about a job, in order: the text each step emitted (with the
/// step's generated token's log-probability when asked for; a step may emit a token whose text
/// is held back, or text without a token when the generation ends), each generated token's
/// trace when asked for, then `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    Text { text: String, logprob: Option<Box<logprobs::Entry>> },
    Token(Box<TracedToken>),
    Done(Box<Outcome>),
    Failed(String),
}

/// One generated token as the `ffnskip.trace` extension reports it.
#[derive(Debug, Clone, Serialize)]
pub struct TracedToken {
    /// Position among the generated tokens, from 0.
    pub index: usize,
    pub id: u32,
    /// The token's own bytes as text (lossy: a token may hold part of a character).
    pub text: String,
    /// One letter per layer, layer 0 first: `F` FFN computed, `s` FFN skipped, `k` layer
    /// skipped with its K/V copied, `d` layer dropped.
    pub layers: String,
    pub source: TokenSource,
    pub warmup: bool,
}

impl TracedToken {
    pub fn new(index: usize, id: u32, bytes: &[u8], trace: &TokenTrace) -> Self {
        Self {
            index,
            id,
            text: String::from_utf8_lossy(bytes).into_owned(),
            layers: trace.letters(),
            source: trace.source,
            warmup: trace.warmup,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub policy: String,
    pub ffn_skip_ratio: f64,
    pub ffn_skip_ratio_post_warmup: f64,
}

/// The request's settings other than its prompt, checked.
pub struct Settings {
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub spec: DecodeSpec,
    pub trace: bool,
    pub logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
}

impl Settings {
    /// `logprobs`: the endpoint's log-probability request, already checked.
    pub fn from_params(p: &Params, default_spec: &DecodeSpec, logprobs: Option<usize>) -> Result<Self, ApiError> {
        if let Some(n) = p.n {
            if n != 1 {
                return Err(ApiError::bad_request(format!("n must be 1 (got {n})")));
            }
        }
        let max_tokens = match p.max_completion_tokens.or(p.max_tokens) {
            None => None,
            Some(n) if !(0..=MAX_TOKENS_LIMIT).contains(&n) => {
                return Err(ApiError::bad_request(format!("max_tokens must be in [0, {MAX_TOKENS_LIMIT}] (got {n})")))
            }
            Some(n) => Some(n as usize),
        };
        let temperature = p.temperature.unwrap_or(1.0);
        if !(0.0..=MAX_TEMPERATURE).contains(&temperature) {
            return Err(ApiError::bad_request(format!("temperature must be in [0, {MAX_TEMPERATURE}]")));
        }
        let sampling = SamplingParams {
            temperature,
            top_p: p.top_p.unwrap_or(1.0),
            frequency_penalty: p.frequency_penalty.unwrap_or(0.0),
            presence_penalty: p.presence_penalty.unwrap_or(0.0),
            // Without a seed every request samples differently, as OpenAI's API does.
            seed: p.seed.unwrap_or_else(rand::random),
            ..SamplingParams::default()
        };
        sampling.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
        let stop = match &p.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.iter().any(String::is_empty) {
            return Err(ApiError::bad_request("stop strings must not be empty"));
        }
        let spec = match p.ffnskip.as_ref().and_then(|e| e.policy.as_deref()) {
            Some(s) => s.parse().map_err(|e| ApiError::bad_request(format!("ffnskip.policy: {e}")))?,
            None => default_spec.clone(),
        };
        if logprobs.is_some() && matches!(spec, DecodeSpec::Speculate(_)) {
            return Err(ApiError::bad_request("logprobs are not available with speculative decoding (speculate:…)"));
        }
        Ok(Self {
            max_tokens,
            sampling,
            stop,
            spec,
            trace: p.ffnskip.as_ref().and_then(|e| e.trace).unwrap_or(false),
            logprobs,
            stream: p.stream.unwrap_or(false),
            include_usage: p.stream_options.as_ref().is_some_and(|o| o.include_usage),
        })
    }

    /// The job for `prompt`, refused when the prompt and the tokens asked for do not fit the
    /// context (without `max_tokens`, generation may fill what the prompt leaves).
    pub fn job(self, prompt: Vec<u32>, context: usize, events: UnboundedSender<Event>) -> Result<Job, ApiError> {
        if prompt.is_empty() {
            return Err(ApiError::bad_request("the prompt is empty"));
        }
        let max_tokens = self.max_tokens.unwrap_or(context.saturating_sub(prompt.len()));
        if prompt.len() + max_tokens > context {
            return Err(ApiError::bad_request(format!(
                "the prompt ({} tokens) plus max_tokens ({max_tokens}) exceed the context of {context} tokens",
                prompt.len()
            )));
        }
        Ok(Job {
            prompt,
            max_tokens,
            sampling: self.sampling,
            stop: self.stop,
            spec: self.spec,
            trace: self.trace,
            logprobs: self.logprobs,
            events,
        })
    }
}

/// A completion request's input, checked as far as it can be without the model.
pub enum Input {
    Chat(Vec<Message>),
    Completion(String),
}

impl Input {
    /// The prompt text: the chat's messages rendered by the model's template, or the prompt.
    pub fn prompt(self, loaded: &Loaded) -> Result<String, ApiError> {
        match self {
            Input::Chat(messages) => {
                let Some(template) = &loaded.chat_template else {
                    return Err(ApiError::bad_request("this model has no chat template; use /v1/completions"));
                };
                template.render(&messages, true).map_err(|e| ApiError::bad_request(e.to_string()))
            }
            Input::Completion(text) => Ok(text),
        }
    }
}

/// A chat (`chat`) or text completion request body with every check that needs no model: the
/// JSON into the request type, the messages' or prompt's shape, the log-probability request
/// and the settings (`default_spec` for a request that names no policy). The routes and
/// [`check_body`] both start here.
pub fn parse_request(chat: bool, bytes: &[u8], default_spec: &DecodeSpec) -> Result<(Input, Settings), ApiError> {
    let (input, params, logprobs) = if chat {
        let req: ChatRequest = parse(bytes)?;
        if req.messages.is_empty() {
            return Err(ApiError::bad_request("messages must not be empty"));
        }
        let messages = req
            .messages
            .iter()
            .map(|m| Ok(Message::new(&m.role, &message_text(m.content.as_ref())?)))
            .collect::<Result<Vec<_>, ApiError>>()?;
        (Input::Chat(messages), req.params, logprobs::chat_request(req.logprobs, req.top_logprobs)?)
    } else {
        let req: CompletionRequest = parse(bytes)?;
        (Input::Completion(completion_prompt(&req)?), req.params, logprobs::completion_request(req.logprobs)?)
    };
    Ok((input, Settings::from_params(&params, default_spec, logprobs)?))
}

fn message_text(content: Option<&Content>) -> Result<String, ApiError> {
    match content {
        None => Ok(String::new()),
        Some(Content::Text(s)) => Ok(s.clone()),
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|p| match (p.kind.as_str(), &p.text) {
                ("text", Some(t)) => Ok(t.as_str()),
                _ => Err(ApiError::bad_request(format!("content parts of type '{}' are not supported", p.kind))),
            })
            .collect(),
    }
}

fn completion_prompt(req: &CompletionRequest) -> Result<String, ApiError> {
    match &req.prompt {
        Prompt::Text(s) => Ok(s.clone()),
        Prompt::List(v) if v.len() == 1 => Ok(v[0].clone()),
        Prompt::List(_) => Err(ApiError::bad_request("prompt must be a string or a list of one string")),
    }
}

/// A request body as JSON.
fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// Every check the completion endpoints make on a body before they need the model
/// ([`parse_request`]) and whether `prompt_tokens` (standing in for the tokenized prompt) plus
/// `max_tokens` fit `context`. The fuzz target `server_request` drives it.
pub fn check_body(chat: bool, body: &[u8], prompt_tokens: usize, context: usize) -> Result<(), ApiError> {
    let (_, settings) = parse_request(chat, body, &DecodeSpec::dense())?;
    let (events, _) = tokio::sync::mpsc::unbounded_channel();
    settings.job(vec![0; prompt_tokens], context, events).map(drop)
}

#[cfg(test)]
mod tests {
    use super::check_body;

    #[test]
    fn bodies_are_checked_before_the_model_is_needed() {
        let chat = br#"{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "ffnskip": {"trace": true}}"#;
        assert!(check_body(true, chat, 5, 64).is_ok());
        let logprobs = br#"{"messages": [{"role": "user", "content": "Hi"}], "logprobs": true, "top_logprobs": 20}"#;
        assert!(check_body(true, logprobs, 5, 64).is_ok());
        let cases: [(bool, &[u8], usize); 9] = [
            (true, br#"{"messages": [{"role": "user", "content": "Hi"}], "top_logprobs": 2}"#, 5),
            (true, br#"{"messages": [{"role": "user", "content": "Hi"}], "logprobs": true, "top_logprobs": 21}"#, 5),
            (false, br#"{"prompt": "a", "logprobs": 1, "ffnskip": {"policy": "speculate:ngram"}}"#, 5),
            (true, b"{", 5),
            (true, br#"{"messages": []}"#, 5),
            (true, br#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#, 5),
            (false, br#"{"prompt": ["a", "b"]}"#, 5),
            (false, br#"{"prompt": "a", "max_tokens": 60}"#, 5),
            (false, br#"{"prompt": "a", "ffnskip": {"policy": "nonsense"}}"#, 5),
        ];
        for (is_chat, body, tokens) in cases {
            let err = check_body(is_chat, body, tokens, 64).expect_err(&String::from_utf8_lossy(body));
            assert_eq!(err.status.as_u16(), 400, "{}: {err}", String::from_utf8_lossy(body));
        }
    }
}
