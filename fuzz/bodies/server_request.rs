//! Request bodies of `ffnskip serve`'s completion endpoints: JSON into the request types, then
//! every check made before the model is needed, ending in a job or a 4xx error, never a panic.

use arbitrary::{Arbitrary, Unstructured};
use ffnskip::server::check_body;

pub fn run(data: &[u8]) {
    let Ok((chat, prompt_tokens, body)) = <(bool, u16, &[u8])>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    if let Err(e) = check_body(chat, body, usize::from(prompt_tokens), 4096) {
        assert!(e.status.is_client_error(), "a body can only be the client's error: {e:?}");
    }
}
