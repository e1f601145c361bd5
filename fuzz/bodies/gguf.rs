//! Bytes → GGUF header, tensor layout, Config and weights, tokenizer and chat template, or a
//! clean error: exactly what `Engine::load` does with a file.

use std::path::Path;

use ffnskip::model::{GgufFile, Llama};
use ffnskip::tokenizer::Tokenizer;

pub fn run(data: &[u8]) {
    let Ok(gguf) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data) else { return };
    let _ = Llama::load(&gguf);
    if let Ok(tokenizer) = Tokenizer::from_gguf(&gguf) {
        let _ = ffnskip::chat::ChatTemplate::from_gguf(&gguf, &tokenizer);
    }
}
