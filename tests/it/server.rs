//! `ffnskip serve` on an ephemeral loopback port: every endpoint, streaming and not, every
//! bad-input case, a full queue, a client that goes away, and concurrent greedy requests that
//! must each equal the CLI's output.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{default_model_path, ffnskip, stdout};

const KEY: &str = "test-key-1234";

/// A server process, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `ffnskip serve --port 0 ARGS` and waits until `/health` answers 200.
    pub fn start(args: &[&str]) -> Server {
        let home = default_model_path().parent().unwrap().to_path_buf();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ffnskip"))
            .args(["serve", "--port", "0", "-t", "2"])
            .args(args)
            .env("FFNSKIP_HOME", home)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ffnskip serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("first line: {line}")).to_string();
        // Keep draining stderr so the server never blocks writing to it.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let server = Server { child, addr };
        let deadline = Instant::now() + Duration::from_secs(120);
        while server.get("/health").0 != 200 {
            assert!(Instant::now() < deadline, "the server did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        request(&self.addr, "GET", path, Some(KEY), "")
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, String) {
        request(&self.addr, "POST", path, Some(KEY), &body.to_string())
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Value {
        let (status, text) = self.post(path, body);
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).unwrap()
    }
}

/// One HTTP/1.1 request on its own connection; returns the status and the (de-chunked) body.
pub fn request(addr: &str, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// The JSON events of an SSE body, checking that it ends with `data: [DONE]`.
pub fn sse_events(body: &str) -> Vec<Value> {
    let datas: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").unwrap()).collect();
    assert_eq!(datas.last(), Some(&"[DONE]"), "{body}");
    datas[..datas.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect()
}

fn assert_error(status: u16, body: &str, want: u16, what: &str) {
    assert_eq!(status, want, "{what}: {body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: not JSON: {body}"));
    assert_eq!(v["error"]["code"], want, "{what}: {body}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
    assert!(v["error"]["type"].is_string(), "{what}: {body}");
}

pub fn metric(metrics: &str, name: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or_else(|| panic!("{name} in {metrics}"))
}

#[test]
fn serve_endpoints_whole_and_streamed() {
    let server = Server::start(&["--api-key", KEY, "--ctx-size", "256"]);
    let models: Value = serde_json::from_str(&server.get("/v1/models").1).unwrap();
    assert_eq!(models["data"][0]["id"], "smollm2-135m");

    let ask = json!({"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0,
        "ffnskip": {"policy": "ffnskip@0.5:warmup=1"}});
    let whole = server.post_json("/v1/completions", &ask);
    assert_eq!(whole["object"], "text_completion");
    let usage = &whole["usage"];
    assert_eq!(usage["completion_tokens"], 6);
    assert_eq!(usage["total_tokens"], usage["prompt_tokens"].as_u64().unwrap() + 6);
    assert_eq!(usage["ffnskip"]["policy"], "ffnskip@0.5:warmup=1");
    assert!(usage["ffnskip"]["ffn_skip_ratio_post_warmup"].as_f64().unwrap() > 0.0, "{usage}");
    assert_eq!(whole["choices"][0]["finish_reason"], "length");

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, body) = server.post("/v1/completions", &streamed);
    assert_eq!(status, 200);
    let events = sse_events(&body);
    let text: String = events.iter().filter_map(|e| e["choices"].get(0)?["text"].as_str()).collect();
    assert_eq!(text, whole["choices"][0]["text"].as_str().unwrap());
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 6);

    let chat = json!({"messages": [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}],
        "max_completion_tokens": 5, "temperature": 0, "stop": ["\n"]});
    let whole = server.post_json("/v1/chat/completions", &chat);
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    assert_eq!(whole["usage"]["ffnskip"]["policy"], "dense");
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let (status, body) = server.post("/v1/chat/completions", &streamed);
    assert_eq!(status, 200);
    let events = sse_events(&body);
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(events.iter().all(|e| e.get("usage").is_none()), "usage without include_usage");
    let text: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, whole["choices"][0]["message"]["content"].as_str().unwrap());
    assert_eq!(events.last().unwrap()["choices"][0]["finish_reason"], whole["choices"][0]["finish_reason"]);

    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    assert!(metric(&metrics, "ffnskip_requests_total{status=\"200\"}") >= 5.0, "{metrics}");
    assert!(metric(&metrics, "ffnskip_generated_tokens_total") >= 12.0, "{metrics}");
    assert!(metric(&metrics, "ffnskip_ffn_skip_ratio") > 0.0, "{metrics}");
    // The engine thread frees a slot right after the last token is sent, so the client may
    // see the response first: the slot must be free very soon after, not necessarily at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let busy = metric(&server.get("/metrics").1, "ffnskip_busy_slots");
        if busy == 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{busy} slots still busy 5 s after the last response");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn serve_rejects_bad_input_with_openai_errors() {
    let server = Server::start(&["--api-key", KEY, "--ctx-size", "64", "--max-body-bytes", "4096"]);
    let chat = |extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        ("wrong field type", chat(json!({"max_tokens": "four"}))),
        ("unknown policy", chat(json!({"ffnskip": {"policy": "skipalot@0.5"}}))),
        ("bad policy option", chat(json!({"ffnskip": {"policy": "ffnskip@0.25:tau=lots"}}))),
        ("empty messages", json!({"messages": []})),
        ("negative max_tokens", chat(json!({"max_tokens": -1}))),
        ("huge max_tokens", chat(json!({"max_tokens": 1_000_000_000_000i64}))),
        ("over the context", chat(json!({"max_tokens": 60}))),
        ("temperature", chat(json!({"temperature": 7.5}))),
        ("top_p", chat(json!({"top_p": 0}))),
        ("n", chat(json!({"n": 2}))),
        ("frequency_penalty", chat(json!({"frequency_penalty": 2.5}))),
        ("presence_penalty", chat(json!({"presence_penalty": -3}))),
        ("empty stop string", chat(json!({"stop": ""}))),
        ("image part", json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})),
    ];
    for (what, body) in cases {
        let (status, text) = server.post("/v1/chat/completions", &body);
        assert_error(status, &text, 400, what);
    }
    let (status, text) = request(&server.addr, "POST", "/v1/completions", Some(KEY), "{\"prompt\": ");
    assert_error(status, &text, 400, "malformed JSON");
    let (status, text) = server.post("/v1/completions", &json!({"prompt": ["a", "b"]}));
    assert_error(status, &text, 400, "several prompts");
    let (status, text) = server.post("/v1/completions", &json!({"prompt": "x ".repeat(5000)}));
    assert_error(status, &text, 413, "body over the limit");
    let (status, text) = server.get("/v2/nothing");
    assert_error(status, &text, 404, "unknown route");
    let (status, text) = request(&server.addr, "GET", "/v1/models", None, "");
    assert_error(status, &text, 401, "missing key");
    let (status, text) = request(&server.addr, "GET", "/v1/models", Some("test-key-1235"), "");
    assert_error(status, &text, 401, "wrong key");
    // The key guards /v1 only; health and metrics stay open to monitoring.
    assert_eq!(request(&server.addr, "GET", "/health", None, "").0, 200);
    let ok = server.post_json("/v1/chat/completions", &chat(json!({"temperature": 0})));
    assert_eq!(ok["usage"]["completion_tokens"], ok["usage"]["total_tokens"].as_u64().unwrap() - ok["usage"]["prompt_tokens"].as_u64().unwrap());
}

/// A streamed request that is read until its first token, then abandoned.
fn start_stream(addr: &str, max_tokens: usize) -> TcpStream {
    let body = json!({"prompt": "Once upon a time", "max_tokens": max_tokens, "temperature": 0, "stream": true}).to_string();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: ") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    stream
}

fn wait_for(server: &Server, what: &str, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = server.get("/metrics").1;
        if ok(&metrics) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {metrics}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_full_queue_refuses_and_disconnect_frees_the_slot() {
    let server = Server::start(&["--api-key", KEY, "--parallel", "1", "--max-queue", "1", "--ctx-size", "2048"]);
    let long = start_stream(&server.addr, 1500);
    let addr = server.addr.clone();
    let queued = std::thread::spawn(move || {
        request(&addr, "POST", "/v1/completions", Some(KEY), &json!({"prompt": "Hello", "max_tokens": 3}).to_string())
    });
    wait_for(&server, "the second request queues", |m| metric(m, "ffnskip_queue_depth") == 1.0);
    let (status, text) = server.post("/v1/completions", &json!({"prompt": "Hello", "max_tokens": 3}));
    assert_error(status, &text, 503, "full queue");
    drop(long);
    let (status, text) = queued.join().unwrap();
    assert_eq!(status, 200, "{text}");
    wait_for(&server, "the abandoned request is dropped", |m| metric(m, "ffnskip_cancelled_requests_total") == 1.0);
    // The abandoned request stopped long before its 1500 tokens.
    let metrics = server.get("/metrics").1;
    assert!(metric(&metrics, "ffnskip_generated_tokens_total") < 1000.0, "{metrics}");
    assert_eq!(server.get("/health").0, 200);
}

/// Sends the `(endpoint, prompt, policy)` cases at once to a server with 4 slots and checks
/// every greedy answer against `ffnskip generate` with the same settings.
fn concurrent_greedy_requests_equal_the_cli(cases: &[(&'static str, &'static str, &'static str)]) {
    let server = Server::start(&["--api-key", KEY, "--parallel", "4"]);
    let max_tokens = 16;
    let handles: Vec<_> = cases
        .iter()
        .map(|&(kind, prompt, policy)| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                let (path, mut body) = match kind {
                    "chat" => ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": prompt}]})),
                    _ => ("/v1/completions", json!({"prompt": prompt})),
                };
                body["max_tokens"] = json!(max_tokens);
                body["temperature"] = json!(0);
                body["ffnskip"] = json!({"policy": policy});
                let (status, text) = request(&addr, "POST", path, Some(KEY), &body.to_string());
                assert_eq!(status, 200, "{text}");
                let v: Value = serde_json::from_str(&text).unwrap();
                let choice = &v["choices"][0];
                choice["message"]["content"].as_str().or(choice["text"].as_str()).unwrap().to_string()
            })
        })
        .collect();
    let served: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for ((kind, prompt, policy), served) in cases.iter().zip(served) {
        let n = max_tokens.to_string();
        let decoding = match policy.strip_prefix("speculate:") {
            Some(draft) => ["--speculate", draft],
            None => ["--policy", policy],
        };
        let mut args = vec!["generate", "-t", "2", "-p", prompt, "-n", &n];
        args.extend(decoding);
        if *kind == "chat" {
            args.push("--chat");
        }
        let out = ffnskip(&args);
        assert!(out.status.success());
        assert_eq!(stdout(&out), format!("{served}\n"), "{kind} {prompt:?} under {policy}");
    }
}

#[test]
fn serve_concurrent_greedy_requests_equal_the_cli() {
    // Chat and raw completion, dense and skipping.
    concurrent_greedy_requests_equal_the_cli(&[
        ("chat", "What is the capital of France?", "dense"),
        ("completion", "The quick brown fox", "dense"),
        ("chat", "Write a haiku about rain.", "ffnskip@0.5:warmup=2"),
        ("completion", "def fibonacci(n):", "ffnskip@0.25:warmup=0"),
    ]);
}

#[test]
fn serve_mixed_policies_in_one_batch_equal_the_cli() {
    // Seven requests on four slots, so three join the batch as others leave; whole-layer
    // skipping, random skipping and speculation (whose drafts are verified in the batch, the
    // second with skip-policy drafts too) next to FFN skipping.
    concurrent_greedy_requests_equal_the_cli(&[
        ("completion", "Once upon a time, in a small village by the sea,", "layer-early-exit@0.15:warmup=2:tau=0.5"),
        ("chat", "Name three primary colours.", "random@0.3:warmup=2:seed=7"),
        ("completion", "The three primary colours are", "ffnskip@0.25:warmup=2"),
        ("chat", "What is the capital of France?", "speculate:ngram"),
        ("completion", "In 1969, the first humans", "dense"),
        ("chat", "Write a haiku about rain.", "ffnskip@0.5:warmup=0"),
        ("completion", "Red, green, blue. Red, green, blue. Red, green,", "speculate:ngram+ffnskip@0.5"),
    ]);
}

#[test]
fn serve_frequency_and_presence_penalties_equal_the_cli() {
    let server = Server::start(&["--api-key", KEY]);
    let prompt = "Repeat after me: one two one two one two one two";
    let body = json!({"prompt": prompt, "max_tokens": 24, "temperature": 0, "frequency_penalty": 1.5, "presence_penalty": 0.5});
    let served = server.post_json("/v1/completions", &body)["choices"][0]["text"].as_str().unwrap().to_string();
    let cli = |penalties: &[&str]| {
        let mut args = vec!["generate", "-t", "2", "-p", prompt, "-n", "24"];
        args.extend(penalties);
        let out = ffnskip(&args);
        assert!(out.status.success());
        stdout(&out)
    };
    assert_eq!(format!("{served}\n"), cli(&["--frequency-penalty", "1.5", "--presence-penalty", "0.5"]));
    assert_ne!(format!("{served}\n"), cli(&[]), "the penalties changed nothing");
}

#[test]
fn serve_answers_the_official_openai_client() {
    let has_openai = Command::new("python3").args(["-c", "import openai"]).status().is_ok_and(|s| s.success());
    if !has_openai {
        eprintln!("skipped: the Python `openai` package is not installed (python3 -m pip install openai)");
        return;
    }
    let server = Server::start(&["--api-key", KEY]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/openai-client.py");
    let base = format!("http://{}/v1", server.addr);
    let out = Command::new("python3").args([script, "--base-url", &base, "--api-key", KEY]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("all ok"));
}
