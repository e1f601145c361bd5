//! The default model's tokenizer built from GGUF metadata: round trips on multi-byte UTF-8 and
//! special tokens, and byte-exact streaming.

use ffnskip::tokenizer::Utf8Stream;

use crate::common::default_engine;

const TEXTS: &[&str] = &[
    "Hello, world! 123456 tokens.",
    "naïve café — 日本語のテキスト, emoji 🙂👍🏽 and Ünïcödé.",
    "  leading spaces\n\ttabs and\r\nnewlines  ",
    "def f(x):\n    return x ** 2  # ∑",
];

#[test]
fn round_trip_multibyte_utf8() {
    let tok = &default_engine().tokenizer;
    for text in TEXTS {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids), *text);
        assert_eq!(tok.hf().decode(&ids, false).unwrap(), *text);
        // Streaming token by token prints the same text, never a broken character.
        let mut stream = Utf8Stream::default();
        let mut out = String::new();
        for &id in &ids {
            let piece = stream.push(tok.bytes(id));
            assert!(!piece.contains('\u{FFFD}'), "broken UTF-8 in {text:?}");
            out.push_str(&piece);
        }
        out.push_str(&stream.finish());
        assert_eq!(out, *text);
    }
}

#[test]
fn special_tokens_are_single_tokens_and_not_printed() {
    let tok = &default_engine().tokenizer;
    let im_start = tok.token_to_id("<|im_start|>").unwrap();
    let im_end = tok.token_to_id("<|im_end|>").unwrap();
    let text = "<|im_start|>user\nHi there<|im_end|>\n";
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids[0], im_start);
    assert!(ids.contains(&im_end));
    assert_eq!(tok.hf().decode(&ids, false).unwrap(), text);
    assert_eq!(tok.decode(&ids), "user\nHi there\n");
    assert!(tok.stop_tokens().contains(&im_end));
}

#[test]
fn digits_are_split_individually_as_in_smollm() {
    let tok = &default_engine().tokenizer;
    let ids = tok.encode("2024").unwrap();
    assert_eq!(ids.len(), 4, "{ids:?}");
}
