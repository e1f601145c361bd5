//! Fuzzed chat templates rendered with fuzzed messages: any template ends in output or a
//! clean error within the fuel and output limits.

use arbitrary::{Arbitrary, Unstructured};
use ffnskip::chat::{ChatTemplate, Message};

#[derive(Debug, Arbitrary)]
struct Input {
    template: String,
    bos: String,
    eos: String,
    messages: Vec<(String, String)>,
    add_generation_prompt: bool,
}

pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let Ok(t) = ChatTemplate::new(&input.template, &input.bos, &input.eos) else { return };
    let messages: Vec<Message> = input.messages.iter().map(|(r, c)| Message::new(r, c)).collect();
    let _ = t.render_in_process(&messages, input.add_generation_prompt);
}
