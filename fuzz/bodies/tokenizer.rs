//! A tokenizer built from fuzzed GGUF tokenizer metadata (vocabulary, merges, token types,
//! special ids), then encoding arbitrary text and decoding arbitrary ids.

use arbitrary::{Arbitrary, Unstructured};
use ffnskip::tokenizer::{Tokenizer, Utf8Stream, Vocabulary};

#[derive(Debug, Arbitrary)]
struct Input {
    sentencepiece: bool,
    pre: Option<String>,
    tokens: Vec<String>,
    types: Vec<i32>,
    scores: Vec<f32>,
    merges: Vec<String>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    add_bos: bool,
    add_space_prefix: bool,
    text: String,
    ids: Vec<u32>,
    stream: Vec<u8>,
}

pub fn run(data: &[u8]) {
    // What libfuzzer-sys's `fuzz_target!(|input: Input| …)` does with the bytes.
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let n = input.tokens.len();
    let v = Vocabulary {
        model: if input.sentencepiece { "llama" } else { "gpt2" }.into(),
        pre: input.pre,
        // Mismatched lengths are refused up front; pad so the builders themselves get fuzzed.
        token_types: input.types.into_iter().chain(std::iter::repeat(1)).take(n).collect(),
        scores: input.scores.into_iter().chain(std::iter::repeat(0.0)).take(n).collect(),
        tokens: input.tokens,
        merges: input.merges,
        bos: input.bos,
        eos: input.eos,
        eot: input.eot,
        add_bos: input.add_bos,
        add_space_prefix: input.add_space_prefix,
    };
    let Ok(tok) = Tokenizer::from_vocabulary(v) else { return };
    if let Ok(ids) = tok.encode(&input.text) {
        let _ = tok.decode(&ids);
    }
    let _ = tok.decode(&input.ids);
    let mut stream = Utf8Stream::default();
    for &id in &input.ids {
        let _ = stream.push(tok.bytes(id));
    }
    let _ = stream.push(&input.stream);
    let _ = stream.finish();
}
