//! The HTTP routes: they validate a request, queue it for the engine thread and turn the
//! engine's events into an OpenAI-style response, whole or as server-sent events.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::TrySendError;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::error::ApiError;
use super::job::{parse_request, Event, Outcome};
use super::logprobs::{self, Entry};
use super::{auth, web, AppState};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completion))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_key));
    Router::new()
        .merge(v1)
        .merge(web::routes())
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "unknown route") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), count_status))
        .with_state(state)
}

async fn count_status(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    state.metrics.count_status(response.status().as_u16());
    response
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.loaded.get() {
        Some(_) => Json(json!({"status": "ok"})).into_response(),
        None => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model is loading").into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// The model, with llama-server's `meta` object once it has loaded (the web page sizes its
/// skip map by `n_layers`).
async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let mut model = json!({"id": state.model_name, "object": "model", "created": state.created, "owned_by": "ffnskip"});
    if let Some(loaded) = state.loaded.get() {
        model["meta"] = json!({"n_layers": loaded.n_layers, "n_ctx": loaded.context});
    }
    Json(json!({"object": "list", "data": [model]}))
}

async fn chat(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    complete(&state, Kind::Chat, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn completion(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    complete(&state, Kind::Completion, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn complete(state: &AppState, kind: Kind, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let loaded = state.loaded.get().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model is loading"))?;
    let bytes = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let (input, settings) = parse_request(kind == Kind::Chat, &bytes, &state.default_spec)?;
    let text = input.prompt(loaded)?;
    let (stream, include_usage, logprobs) = (settings.stream, settings.include_usage, settings.logprobs.is_some());
    let trace = settings.trace.then(|| {
        json!({
            "policy": settings.spec.to_string(),
            "n_layers": loaded.n_layers,
            "cold_layers": settings.spec.cold_layers(loaded.n_layers),
        })
    });
    let prompt = loaded.tokenizer.encode(&text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (events, rx) = unbounded_channel();
    let job = settings.job(prompt, loaded.context, events)?;
    state.metrics.queue_depth.fetch_add(1, Relaxed);
    if let Err(e) = state.queue.try_send(job) {
        state.metrics.queue_depth.fetch_sub(1, Relaxed);
        let message = match e {
            TrySendError::Full(_) => "the queue is full; retry later",
            TrySendError::Disconnected(_) => "the engine has stopped",
        };
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message));
    }
    let reply = Reply { kind, id: next_id(kind), created: unix_now(), model: state.model_name.clone(), trace, logprobs };
    if stream {
        Ok(reply.stream(rx, include_usage))
    } else {
        reply.whole(rx).await
    }
}

fn next_id(kind: Kind) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = if kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
    format!("{prefix}-{}", NEXT.fetch_add(1, Relaxed))
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The fields every response and chunk of one request shares.
struct Reply {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    /// With `ffnskip.trace`: the policy, the layer count and the cold layers, which the
    /// response's `ffnskip` object (or the stream's first chunk) carries.
    trace: Option<Value>,
    /// Whether the choices carry the tokens' log-probabilities.
    logprobs: bool,
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({"id": self.id, "object": self.object(chunk), "created": self.created, "model": self.model, "choices": choices})
    }

    /// A choice's `logprobs`: `null` unless asked for; `offsets` (the legacy format's) are in
    /// characters of the choice's text.
    fn logprobs(&self, entries: &[Entry], offsets: &[usize]) -> Value {
        match (self.logprobs, self.kind) {
            (false, _) => Value::Null,
            (true, Kind::Chat) => logprobs::chat(entries),
            (true, Kind::Completion) => logprobs::legacy(entries, offsets),
        }
    }

    async fn whole(self, mut rx: UnboundedReceiver<Event>) -> Result<Response, ApiError> {
        let mut text = String::new();
        let mut tokens = Vec::new();
        let (mut entries, mut offsets, mut chars) = (Vec::new(), Vec::new(), 0);
        loop {
            match rx.recv().await {
                Some(Event::Text { text: piece, logprob }) => {
                    if let Some(entry) = logprob {
                        entries.push(*entry);
                        offsets.push(chars);
                    }
                    chars += piece.chars().count();
                    text.push_str(&piece);
                }
                Some(Event::Token(token)) => tokens.push(token),
                Some(Event::Done(outcome)) => {
                    let logprobs = self.logprobs(&entries, &offsets);
                    let choice = match self.kind {
                        Kind::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text},
                            "finish_reason": outcome.finish_reason, "logprobs": logprobs}),
                        Kind::Completion => json!({"index": 0, "text": text,
                            "finish_reason": outcome.finish_reason, "logprobs": logprobs}),
                    };
                    let mut body = self.envelope(false, json!([choice]));
                    body["usage"] = usage(&outcome);
                    if let Some(mut trace) = self.trace {
                        trace["tokens"] = json!(tokens);
                        body["ffnskip"] = trace;
                    }
                    return Ok(Json(body).into_response());
                }
                Some(Event::Failed(message)) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)),
                None => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the engine dropped the request")),
            }
        }
    }

    fn delta(&self, piece: Option<&str>, finish_reason: Option<&str>, first: bool, logprobs: Value) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = json!({});
                if first {
                    delta["role"] = json!("assistant");
                }
                if let Some(p) = piece {
                    delta["content"] = json!(p);
                }
                json!({"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs})
            }
            Kind::Completion => {
                json!({"index": 0, "text": piece.unwrap_or(""), "finish_reason": finish_reason, "logprobs": logprobs})
            }
        };
        self.envelope(true, json!([choice]))
    }

    /// Server-sent events: a chunk per text piece, a last chunk with the finish reason, the
    /// usage chunk when asked for, then `[DONE]`. A text chunk carries the log-probability of
    /// the token it comes from when asked for. With `ffnskip.trace`, a first chunk carries
    /// the trace's header and each token's trace follows its text in a chunk of its own.
    /// Dropping the body (client gone) closes the channel, which the engine notices at the
    /// job's next step.
    fn stream(self, rx: UnboundedReceiver<Event>, include_usage: bool) -> Response {
        let mut first = self.kind == Kind::Chat;
        let mut header = String::new();
        if let Some(trace) = &self.trace {
            let mut chunk = self.delta(first.then_some(""), None, first, Value::Null);
            chunk["ffnskip"] = trace.clone();
            header = sse(&chunk);
            first = false;
        }
        // The last field: characters streamed so far, the legacy format's text offset.
        let state = Some((self, rx, first, include_usage, 0));
        let events = futures_util::stream::unfold(state, |state| async move {
            let (reply, mut rx, first, include_usage, mut chars) = state?;
            let (data, more) = match rx.recv().await {
                Some(Event::Text { text, logprob }) => {
                    let logprobs = logprob.map_or(Value::Null, |e| reply.logprobs(std::slice::from_ref(&*e), &[chars]));
                    chars += text.chars().count();
                    (sse(&reply.delta(Some(&text), None, first, logprobs)), true)
                }
                Some(Event::Token(token)) => {
                    let mut chunk = reply.delta(None, None, first, Value::Null);
                    chunk["ffnskip"] = json!({"token": token});
                    (sse(&chunk), true)
                }
                Some(Event::Done(outcome)) => {
                    let mut data = String::new();
                    if first {
                        data += &sse(&reply.delta(Some(""), None, true, Value::Null));
                    }
                    data += &sse(&reply.delta(None, Some(outcome.finish_reason), false, Value::Null));
                    if include_usage {
                        let mut chunk = reply.envelope(true, json!([]));
                        chunk["usage"] = usage(&outcome);
                        data += &sse(&chunk);
                    }
                    (data + "data: [DONE]\n\n", false)
                }
                Some(Event::Failed(message)) => {
                    (sse(&ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message).body()), false)
                }
                None => return None,
            };
            let next = more.then_some((reply, rx, false, include_usage, chars));
            Some((Ok::<_, std::convert::Infallible>(Bytes::from(data)), next))
        });
        let header = futures_util::stream::iter((!header.is_empty()).then(|| Ok(Bytes::from(header))));
        let events = header.chain(events);
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(events))
            .unwrap_or_else(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
    }
}

fn sse(value: &Value) -> String {
    format!("data: {value}\n\n")
}

fn usage(o: &Outcome) -> Value {
    json!({
        "prompt_tokens": o.prompt_tokens,
        "completion_tokens": o.completion_tokens,
        "total_tokens": o.prompt_tokens + o.completion_tokens,
        "ffnskip": {
            "policy": o.policy,
            "ffn_skip_ratio": o.ffn_skip_ratio,
            "ffn_skip_ratio_post_warmup": o.ffn_skip_ratio_post_warmup,
        },
    })
}
