//! The tokenizer, built from GGUF metadata (`tokenizer.ggml.*`) into a Hugging Face
//! `tokenizers::Tokenizer`: `gpt2` byte-level BPE (SmolLM2, Llama 3) and `llama` SentencePiece
//! BPE with byte fallback (TinyLlama, Llama 2, Mistral).
//!
//! Decoding goes through a per-token byte table, so a stream of tokens can be turned into text
//! byte-exactly, holding back incomplete UTF-8 sequences (see [`Utf8Stream`]).

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, NormalizerWrapper, SplitDelimiterBehavior, Tokenizer as HfTokenizer};

use crate::error::{Error, Result};
use crate::model::GgufFile;

/// GGUF token types (`tokenizer.ggml.token_type`).
const TYPE_NORMAL: i32 = 1;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_BYTE: i32 = 6;

/// The GPT-4-style pre-tokenizer split, with `$digits` the pattern of a run of digits.
macro_rules! gpt4_split {
    ($digits:literal) => {
        concat!(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|",
            $digits,
            r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
        )
    };
}

/// Llama 3's pre-tokenizer split (llama.cpp's `llama-bpe`): digits in runs of up to three.
const LLAMA3_SPLIT: &str = gpt4_split!(r"\p{N}{1,3}");

/// Qwen2's split: Llama 3's, but digits one at a time (llama.cpp's `qwen2`).
const QWEN2_SPLIT: &str = gpt4_split!(r"\p{N}");

/// The vocabulary as the GGUF file stores it.
pub struct Vocabulary {
    pub model: String,
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub scores: Vec<f32>,
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub add_bos: bool,
    pub add_space_prefix: bool,
}

impl Vocabulary {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let tokens = gguf.strings("tokenizer.ggml.tokens").map_err(tok_err)?;
        let token_types = match gguf.array("tokenizer.ggml.token_type") {
            Ok(a) => a.iter().map(|v| v.to_i32().unwrap_or(TYPE_NORMAL)).collect(),
            Err(_) => vec![TYPE_NORMAL; tokens.len()],
        };
        let scores = match gguf.array("tokenizer.ggml.scores") {
            Ok(a) => a.iter().map(|v| v.to_f32().unwrap_or(0.0)).collect(),
            Err(_) => vec![0.0; tokens.len()],
        };
        let id = |key: &str| gguf.u64(key).ok().map(|v| v as u32);
        let model = gguf.string("tokenizer.ggml.model").map_err(tok_err)?.to_string();
        Ok(Self {
            merges: gguf.strings("tokenizer.ggml.merges").unwrap_or_default(),
            pre: gguf.string("tokenizer.ggml.pre").ok().map(str::to_string),
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            eot: id("tokenizer.ggml.eot_token_id"),
            add_bos: gguf.bool("tokenizer.ggml.add_bos_token").unwrap_or(model == "llama"),
            add_space_prefix: gguf.bool("tokenizer.ggml.add_space_prefix").unwrap_or(true),
            model,
            tokens,
            token_types,
            scores,
        })
    }
}

/// Special-token ids name existing tokens, and no control token is listed twice (the second
/// copy would be unreachable and decoding ambiguous).
fn check_specials(v: &Vocabulary) -> Result<()> {
    for (what, id) in [("BOS", v.bos), ("EOS", v.eos), ("EOT", v.eot)] {
        if let Some(id) = id.filter(|&id| id as usize >= v.tokens.len()) {
            return Err(Error::Tokenizer(format!(
                "the {what} token id {id} is outside the vocabulary of {} tokens",
                v.tokens.len()
            )));
        }
    }
    let mut seen = std::collections::HashSet::new();
    let specials = v.tokens.iter().zip(&v.token_types).filter(|(_, &t)| t == TYPE_CONTROL || t == TYPE_USER_DEFINED);
    for (tok, _) in specials {
        if !seen.insert(tok.as_str()) {
            return Err(Error::Tokenizer(format!("special token '{tok}' appears twice in the vocabulary")));
        }
    }
    Ok(())
}

fn tok_err(e: Error) -> Error {
    Error::Tokenizer(e.to_string())
}

pub struct Tokenizer {
    hf: HfTokenizer,
    /// The bytes each token stands for when printed; empty for control tokens.
    token_bytes: Vec<Vec<u8>>,
    tokens: Vec<String>,
    bos: Option<u32>,
    add_bos: bool,
    stop_tokens: Vec<u32>,
}

impl Tokenizer {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        Self::from_vocabulary(Vocabulary::from_gguf(gguf)?)
    }

    pub fn from_vocabulary(v: Vocabulary) -> Result<Self> {
        if v.token_types.len() != v.tokens.len() || v.scores.len() != v.tokens.len() {
            return Err(Error::Tokenizer("token, type and score arrays differ in length".into()));
        }
        check_specials(&v)?;
        let (mut hf, token_bytes) = match v.model.as_str() {
            "gpt2" => (byte_level_bpe(&v)?, byte_level_bytes(&v)),
            "llama" => (sentencepiece_bpe(&v)?, sentencepiece_bytes(&v)),
            other => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer model '{other}' is not supported (supported: gpt2, llama)"
                )))
            }
        };
        let added: Vec<AddedToken> = v
            .tokens
            .iter()
            .zip(&v.token_types)
            .filter(|(_, &t)| t == TYPE_CONTROL || t == TYPE_USER_DEFINED)
            .map(|(s, &t)| AddedToken::from(s.clone(), t == TYPE_CONTROL))
            .collect();
        hf.add_special_tokens(added).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let stop_tokens = stop_tokens(&v);
        Ok(Self { hf, token_bytes, tokens: v.tokens, bos: v.bos, add_bos: v.add_bos, stop_tokens })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Tokenises `text`, recognising special tokens written in it (`<|im_start|>`), and adds the
    /// BOS token when the model asks for it and the text does not already start with it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.hf.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// The text of `ids`, control tokens left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.bytes(id).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map_or(&[], |b| b.as_slice())
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.hf.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// End-of-sequence and end-of-turn tokens: generation stops at any of them.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop_tokens
    }

    /// The underlying Hugging Face tokenizer.
    pub fn hf(&self) -> &HfTokenizer {
        &self.hf
    }
}

/// EOS, EOT, and the end-of-turn markers of common chat formats present as control tokens.
fn stop_tokens(v: &Vocabulary) -> Vec<u32> {
    const END_OF_TURN: &[&str] =
        &["<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>", "</s>", "<end_of_turn>"];
    let mut out: Vec<u32> = v.eos.into_iter().chain(v.eot).collect();
    for (id, (tok, &ty)) in v.tokens.iter().zip(&v.token_types).enumerate() {
        if ty == TYPE_CONTROL && END_OF_TURN.contains(&tok.as_str()) && !out.contains(&(id as u32)) {
            out.push(id as u32);
        }
    }
    out
}

fn vocab_map(v: &Vocabulary) -> Vocab {
    let mut vocab = Vocab::default();
    for (id, tok) in v.tokens.iter().enumerate() {
        vocab.entry(tok.clone()).or_insert(id as u32);
    }
    vocab
}

fn hf_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

// Both builders turn off the BPE's word cache (`cache_capacity(0)`). In tokenizers 0.23 that
// cache is a thread-local map keyed by a per-`BPE` id that nothing removes when the `BPE` is
// dropped (models/bpe/model.rs, `BPE_LOCAL_CACHE`): every tokenizer built and used on a thread
// leaves its cached words there for the thread's lifetime, about 1 KB for one short text. The
// cache only skips re-merging a word seen before, a small share of encoding a prompt.
fn byte_level_bpe(v: &Vocabulary) -> Result<HfTokenizer> {
    let merges = v
        .merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::Tokenizer(format!("malformed merge '{m}'")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder().vocab_and_merges(vocab_map(v), merges).cache_capacity(0).build().map_err(hf_err)?;
    let mut hf = HfTokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    match v.pre.as_deref() {
        Some("smollm") => {
            hf.with_pre_tokenizer(Some(PreSequence::new(vec![
                Digits::new(true).into(),
                byte_level.into(),
            ])));
        }
        Some(pre @ ("llama-bpe" | "llama3" | "qwen2")) => {
            let pattern = if pre == "qwen2" { QWEN2_SPLIT } else { LLAMA3_SPLIT };
            let split = Split::new(SplitPattern::Regex(pattern.into()), SplitDelimiterBehavior::Isolated, false)
                .map_err(hf_err)?;
            hf.with_pre_tokenizer(Some(PreSequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])));
        }
        _ => {
            hf.with_pre_tokenizer(Some(byte_level));
        }
    }
    hf.with_decoder(Some(ByteLevel::default()));
    Ok(hf)
}

fn sentencepiece_bpe(v: &Vocabulary) -> Result<HfTokenizer> {
    let vocab = vocab_map(v);
    // SentencePiece BPE stores scores, not merges: every split of a piece into two pieces of
    // the vocabulary is a merge, ranked by the score of the merged piece.
    let mut merges: Vec<(f32, u32, u32, String, String)> = Vec::new();
    for (tok, (&ty, &score)) in v.tokens.iter().zip(v.token_types.iter().zip(&v.scores)) {
        if ty != TYPE_NORMAL {
            continue;
        }
        for (i, _) in tok.char_indices().skip(1) {
            let (a, b) = tok.split_at(i);
            if let (Some(&ia), Some(&ib)) = (vocab.get(a), vocab.get(b)) {
                merges.push((score, ia, ib, a.to_string(), b.to_string()));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let merges = merges.into_iter().map(|m| (m.3, m.4)).collect();
    let mut builder =
        BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true).cache_capacity(0);
    if let Some(unk) = v.tokens.iter().zip(&v.token_types).find(|(_, &t)| t == 2) {
        builder = builder.unk_token(unk.0.clone());
    }
    let mut hf = HfTokenizer::new(builder.build().map_err(hf_err)?);
    let replace: NormalizerWrapper = Replace::new(" ", "▁").map_err(hf_err)?.into();
    let normalizer = if v.add_space_prefix {
        tokenizers::normalizers::Sequence::new(vec![Prepend::new("▁".into()).into(), replace]).into()
    } else {
        replace
    };
    hf.with_normalizer(Some(normalizer)).map_err(hf_err)?;
    hf.with_decoder(Some(DecoderSequence::new(vec![
        Replace::new("▁", " ").map_err(hf_err)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
        Strip::new(' ', usize::from(v.add_space_prefix), 0).into(),
    ])));
    Ok(hf)
}

/// GPT-2's reversible map from a byte to the printable character byte-level BPE vocabularies
/// spell it with: printable Latin-1 bytes stand for themselves, the other 68 bytes are mapped in
/// order to U+0100 onwards.
pub fn byte_level_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).expect("U+0100..U+0143 are valid chars")
}

fn byte_level_decoder() -> HashMap<char, u8> {
    (0..=255u8).map(|b| (byte_level_char(b), b)).collect()
}

fn byte_level_bytes(v: &Vocabulary) -> Vec<Vec<u8>> {
    let map = byte_level_decoder();
    v.tokens
        .iter()
        .zip(&v.token_types)
        .map(|(tok, &ty)| match ty {
            TYPE_CONTROL => Vec::new(),
            TYPE_USER_DEFINED => tok.as_bytes().to_vec(),
            _ => tok.chars().filter_map(|c| map.get(&c).copied()).collect(),
        })
        .collect()
}

fn sentencepiece_bytes(v: &Vocabulary) -> Vec<Vec<u8>> {
    v.tokens
        .iter()
        .zip(&v.token_types)
        .map(|(tok, &ty)| match ty {
            TYPE_CONTROL => Vec::new(),
            TYPE_BYTE => parse_byte_token(tok).map_or_else(|| tok.as_bytes().to_vec(), |b| vec![b]),
            _ => tok.replace('▁', " ").into_bytes(),
        })
        .collect()
}

/// `<0x0A>` → `0x0A`.
fn parse_byte_token(tok: &str) -> Option<u8> {
    let hex = tok.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

/// Turns a stream of token bytes into text without ever emitting a broken UTF-8 sequence: an
/// incomplete sequence at the end is held back until the next token completes it.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).expect("validated prefix"));
                    match e.error_len() {
                        // Incomplete sequence at the end: keep it for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is still held back, lossily (at the end of a generation).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_chars_match_gpt2() {
        assert_eq!(byte_level_char(b' '), 'Ġ');
        assert_eq!(byte_level_char(b'\n'), 'Ċ');
        assert_eq!(byte_level_char(b'a'), 'a');
        assert_eq!(byte_level_decoder().len(), 256);
    }

    #[test]
    fn utf8_stream_holds_back_incomplete_sequences() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.push(&euro[1..2]), "");
        assert_eq!(s.push(&[euro[2], b'!']), "€!");
        assert_eq!(s.push(&[0xFF, b'a']), "\u{FFFD}a");
        assert_eq!(s.push(&[0xE2]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    /// A SentencePiece vocabulary in the llama GGUF layout, with byte fallback.
    fn spm_vocabulary() -> Vocabulary {
        let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
        let mut types = vec![2, TYPE_CONTROL, TYPE_CONTROL];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(TYPE_BYTE);
        }
        let pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "llo", "hello", "▁hello", "▁w", "or", "▁wor", "ld", "▁world"];
        let mut scores = vec![0.0; tokens.len()];
        for (i, p) in pieces.iter().enumerate() {
            tokens.push(p.to_string());
            types.push(TYPE_NORMAL);
            scores.push(i as f32);
        }
        Vocabulary {
            model: "llama".into(),
            pre: None,
            token_types: types,
            scores,
            merges: vec![],
            bos: Some(1),
            eos: Some(2),
            eot: None,
            add_bos: true,
            add_space_prefix: true,
            tokens,
        }
    }

    #[test]
    fn sentencepiece_round_trip_with_byte_fallback() {
        let tok = Tokenizer::from_vocabulary(spm_vocabulary()).unwrap();
        let ids = tok.encode("hello world é").unwrap();
        assert_eq!(ids[0], 1, "BOS is added");
        assert_eq!(tok.id_to_token(ids[1]), Some("▁hello"));
        assert_eq!(tok.id_to_token(ids[2]), Some("▁world"));
        // 'é' is not in the vocabulary: it falls back to its two UTF-8 bytes.
        let tail: Vec<&str> = ids[ids.len() - 2..].iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
        assert_eq!(tail, ["<0xC3>", "<0xA9>"]);
        // Our byte table and the HF decoder agree, up to SentencePiece's leading space.
        assert_eq!(tok.decode(&ids), " hello world é");
        assert_eq!(tok.hf().decode(&ids[1..], true).unwrap(), "hello world é");
        assert_eq!(tok.stop_tokens(), &[2]);
    }
}
