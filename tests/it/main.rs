//! Integration tests, one binary: `cargo test --release`.

mod cli_errors;
mod batch;
mod common;
mod eval;
mod fetch;
mod forward;
mod fuzz_smoke;
mod generate_cli;
mod hostile;
mod prefill_pieces;
mod profile;
mod reference;
mod server;
mod server_logprobs;
mod server_prefill;
mod server_trace;
mod skip;
mod skip_seam;
mod speculate;
mod tiny_model;
mod tokenizer;
mod web;
