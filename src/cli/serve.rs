//! `ffnskip serve`: the OpenAI-compatible HTTP server.

use anyhow::Result;
use clap::Args;
use ffnskip::generate::DecodeSpec;
use ffnskip::server::{serve, ServerConfig, DEFAULT_MAX_BODY_BYTES};

use super::common::ModelArgs;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (loopback unless asked otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 lets the system choose (the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests generated at once, each with its own KV cache slot of --ctx-size tokens.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,
    /// Decoding used when a request does not name one (`"ffnskip": {"policy": SPEC}`): any
    /// policy spec (`dense`, `ffnskip@0.25`, ...) or `speculate:DRAFT`.
    #[arg(long, default_value = "dense")]
    pub skip: String,
    /// Require `Authorization: Bearer KEY` on /v1/* requests.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Requests that may wait for a free slot; more are refused with 503.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queue: u32,
    /// Rows per prefill piece: a joining prompt is prefilled this many tokens per engine round,
    /// between the running requests' decode steps (a multiple of 4 from 8 to 512; output is
    /// the same for every value). 64: a 1500-token prompt stalls a running stream for one
    /// 64-row piece a round instead of its whole prefill (docs/SERVER.md).
    #[arg(long, default_value_t = 64)]
    pub prefill_chunk: usize,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let default_spec: DecodeSpec = args.skip.parse()?;
    let model_name = match &args.model.model {
        None => ffnskip::catalog::DEFAULT_MODEL.to_string(),
        Some(m) => std::path::Path::new(m).file_stem().map_or(m.clone(), |s| s.to_string_lossy().into_owned()),
    };
    let config = ServerConfig {
        host: args.host,
        port: args.port,
        parallel: args.parallel.into(),
        ctx_size: args.model.context(),
        default_spec,
        api_key: args.api_key,
        max_queue: args.max_queue as usize,
        max_body_bytes: args.max_body_bytes,
        prefill_chunk: args.prefill_chunk,
        model_name,
    };
    let model = args.model;
    serve(config, Box::new(move || model.load_engine()), |addr| eprintln!("listening on http://{addr}"))?;
    Ok(())
}
