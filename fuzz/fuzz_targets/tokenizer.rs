//! A tokenizer built from fuzzed GGUF tokenizer metadata (vocabulary, merges, token types,
//! special ids), then encoding arbitrary text and decoding arbitrary ids.
//! The body is shared with the fuzz smoke test of the normal test build (tests/it/fuzz_smoke.rs).
#![no_main]

#[path = "../bodies/tokenizer.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
