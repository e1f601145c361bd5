//! Request bodies of `ffnskip serve`'s completion endpoints: JSON into the request types, then
//! every check made before the model is needed, ending in a job or a 4xx error, never a panic.
//! The body is shared with the fuzz smoke test of the normal test build (tests/it/fuzz_smoke.rs).
#![no_main]

#[path = "../bodies/server_request.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
