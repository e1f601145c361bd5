//! `ffnskip serve`: an OpenAI-compatible HTTP server. The HTTP side ([`routes`]) validates and
//! queues requests; one engine thread ([`scheduler`]) owns the model and advances the running
//! requests a token per round in one batched forward, each in its own KV cache slot with its own
//! sampler and skip policy; [`web`] is the chat page at `/`.

mod auth;
mod error;
mod job;
mod logprobs;
mod metrics;
mod routes;
mod scheduler;
mod types;
mod web;

use std::net::SocketAddr;
use std::sync::{mpsc, Arc, OnceLock};

use crate::chat::ChatTemplate;
use crate::error::{Error, Result};
use crate::generate::DecodeSpec;
use crate::tokenizer::Tokenizer;
use crate::Engine;

pub use error::ApiError;
pub use job::check_body;

/// Request bodies larger than this are refused (413) unless configured otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Sequences generated at once, each in its own KV cache slot.
    pub parallel: usize,
    /// Tokens per slot; the model's context (at most 4096) when `None`.
    pub ctx_size: Option<usize>,
    pub default_spec: DecodeSpec,
    pub api_key: Option<String>,
    /// Requests that may wait for a slot; more are refused with 503 at once.
    pub max_queue: usize,
    pub max_body_bytes: usize,
    /// Rows per prefill piece: a joining prompt advances this much per round, between the
    /// running requests' decode steps.
    pub prefill_chunk: usize,
    /// The name `/v1/models` and responses report.
    pub model_name: String,
}

/// The model's context used per slot when none is asked for: llama.cpp's default.
const DEFAULT_SLOT_CONTEXT: usize = 4096;

/// What the HTTP side needs of the loaded model.
pub struct Loaded {
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// Tokens per slot: prompt plus generated tokens must fit.
    pub context: usize,
    pub n_layers: usize,
}

pub struct AppState {
    /// Set once the engine thread has loaded the model; `/health` is 503 until then.
    loaded: OnceLock<Arc<Loaded>>,
    queue: mpsc::SyncSender<job::Job>,
    metrics: Arc<metrics::Metrics>,
    api_key: Option<[u8; 32]>,
    model_name: String,
    default_spec: DecodeSpec,
    created: u64,
}

/// Binds the address, then loads the model with `load` on the engine thread while already
/// answering `/health` (503 until loaded), and serves until the process ends. `on_listen`
/// gets the bound address (the port is chosen by the OS when `port` is 0).
pub fn serve(
    config: ServerConfig,
    load: Box<dyn FnOnce() -> Result<Engine> + Send>,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<()> {
    if config.parallel == 0 || config.max_queue == 0 {
        return Err(Error::InvalidArgument("--parallel and --max-queue must be at least 1".into()));
    }
    crate::generate::check_piece(config.prefill_chunk)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port)).await?;
        on_listen(listener.local_addr()?);
        let (queue, jobs) = mpsc::sync_channel(config.max_queue);
        let state = Arc::new(AppState {
            loaded: OnceLock::new(),
            queue,
            metrics: Arc::default(),
            api_key: config.api_key.as_deref().map(auth::digest),
            model_name: config.model_name.clone(),
            default_spec: config.default_spec.clone(),
            created: routes::unix_now(),
        });
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
        let engine_state = state.clone();
        std::thread::Builder::new().name("engine".into()).spawn(move || {
            let (parallel, piece) = (config.parallel, config.prefill_chunk);
            if let Err(e) = run_engine(load, &engine_state, parallel, config.ctx_size, piece, jobs) {
                let _ = failed_tx.send(e);
            }
        })?;
        let app = routes::router(state, config.max_body_bytes);
        tokio::select! {
            served = axum::serve(listener, app) => served.map_err(Error::from),
            failed = failed_rx => match failed {
                Ok(e) => Err(e),
                Err(_) => Err(Error::InvalidArgument("the engine thread stopped".into())),
            },
        }
    })
}

fn run_engine(
    load: Box<dyn FnOnce() -> Result<Engine> + Send>,
    state: &AppState,
    parallel: usize,
    ctx_size: Option<usize>,
    piece: usize,
    jobs: mpsc::Receiver<job::Job>,
) -> Result<()> {
    let Engine { model, tokenizer, chat_template } = load()?;
    let context = ctx_size.unwrap_or(model.config.context_len.min(DEFAULT_SLOT_CONTEXT));
    let loaded = Arc::new(Loaded { tokenizer, chat_template, context, n_layers: model.config.n_layers });
    let engine = scheduler::Engine::new(&model, loaded.clone(), state.metrics.clone(), parallel, piece)?;
    let _ = state.loaded.set(loaded);
    engine.run(jobs);
    Ok(())
}
