//! Bytes → GGUF header, tensor layout, Config and weights, tokenizer and chat template, or a
//! clean error: exactly what `Engine::load` does with a file.
//! The body is shared with the fuzz smoke test of the normal test build (tests/it/fuzz_smoke.rs).
#![no_main]

#[path = "../bodies/gguf.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
