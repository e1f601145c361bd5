//! Policy specs (`--policy`) and skip configs (`--skip-config`): parse, validate, print back
//! and build a policy, or a clean error.
//! The body is shared with the fuzz smoke test of the normal test build (tests/it/fuzz_smoke.rs).
#![no_main]

#[path = "../bodies/policy_spec.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
