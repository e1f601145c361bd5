//! Fuzzed chat templates rendered with fuzzed messages: any template ends in output or a
//! clean error within the fuel and output limits.
//! The body is shared with the fuzz smoke test of the normal test build (tests/it/fuzz_smoke.rs).
#![no_main]

#[path = "../bodies/chat_template.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
