//! A long prompt joining a running stream is prefilled a piece per round: the running stream
//! keeps receiving tokens meanwhile, and both outputs equal `ffnskip generate`'s.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Instant;

use serde_json::{json, Value};

use crate::common::{default_engine, ffnskip, stdout};
use crate::server::Server;

const KEY: &str = "test-key-1234";

/// A streamed greedy completion read to its end: each text chunk's arrival time and text.
fn stream(addr: &str, prompt: &str, max_tokens: usize) -> Vec<(Instant, String)> {
    let body = json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": true}).to_string();
    let mut tcp = TcpStream::connect(addr).unwrap();
    write!(tcp, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .unwrap();
    let mut chunks = Vec::new();
    for line in BufReader::new(tcp).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            return chunks;
        }
        let event: Value = serde_json::from_str(data).unwrap();
        let text = event["choices"][0]["text"].as_str().unwrap_or_else(|| panic!("{event}"));
        chunks.push((Instant::now(), text.to_string()));
    }
    panic!("the stream ended without [DONE]");
}

fn text(chunks: &[(Instant, String)]) -> String {
    chunks.iter().map(|(_, t)| t.as_str()).collect()
}

fn cli(prompt: &str, max_tokens: usize) -> String {
    let out = ffnskip(&["generate", "-t", "2", "-p", prompt, "-n", &max_tokens.to_string()]);
    assert!(out.status.success());
    stdout(&out).strip_suffix('\n').unwrap().to_string()
}

#[test]
fn serve_long_prompt_joins_without_stalling_a_running_stream() {
    let piece = 64;
    let server = Server::start(&["--api-key", KEY, "--parallel", "2", "--ctx-size", "2048", "--prefill-chunk", &piece.to_string()]);
    let long_prompt = (0..60).map(|i| format!("Line {i}: the quick brown fox jumps over the lazy dog. ")).collect::<String>();
    let long_tokens = default_engine().tokenizer.encode(&long_prompt).unwrap().len();
    let pieces = long_tokens / piece;
    assert!(pieces >= 10, "{long_tokens} prompt tokens");

    let (short_prompt, short_max) = ("Once upon a time", 300);
    let addr = server.addr.clone();
    let running = std::thread::spawn(move || stream(&addr, short_prompt, short_max));
    // Join once the running stream is well under way.
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while crate::server::metric(&server.get("/metrics").1, "ffnskip_generated_tokens_total") < 10.0 {
        assert!(Instant::now() < deadline, "the running stream did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let sent = Instant::now();
    let joined = stream(&server.addr, &long_prompt, 8);
    let first_token = joined[0].0;
    let running = running.join().unwrap();

    // Before, the whole prefill ran inside one round: the running stream got nothing between
    // the long request's arrival and its first token. Now every round brings a piece and a
    // token of the running stream.
    let during = running.iter().filter(|(t, _)| *t > sent && *t < first_token).count();
    assert!(during >= pieces / 2, "{during} tokens of the running stream during {pieces} prefill pieces");
    assert!(running.last().unwrap().0 > first_token, "the running stream ended before the long prompt's first token");

    assert_eq!(text(&joined), cli(&long_prompt, 8), "the long prompt");
    assert_eq!(text(&running), cli(short_prompt, short_max), "the running stream");
}
