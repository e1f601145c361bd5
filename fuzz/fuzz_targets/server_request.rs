//! Request bodies of `ffnskip serve`'s completion endpoints: JSON into the request types, then
//! every check made before the model is needed, ending in a job or a 4xx error, never a panic.
#![no_main]

use ffnskip::server::check_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (bool, u16, &[u8])| {
    let (chat, prompt_tokens, body) = input;
    if let Err(e) = check_body(chat, body, usize::from(prompt_tokens), 4096) {
        assert!(e.status.is_client_error(), "a body can only be the client's error: {e:?}");
    }
});
