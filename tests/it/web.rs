//! The chat page of `ffnskip serve` in a real browser: Debian's headless `chromium`, driven by
//! `chromedriver` through WebDriver. The page must stream a reply, and its skip map must hold
//! one column per generated token and one row per layer, with exactly the per-token trace the
//! API reports for the same greedy request. Screenshots land in the test's temporary folder,
//! and in `$FFNSKIP_SCREENSHOTS` when set (how `docs/img/` is refreshed).
//!
//! Without chromedriver the test says so and passes, unless `FFNSKIP_REQUIRE_BROWSER` is set,
//! as `.ci/run` sets it after installing the browser. `FFNSKIP_BROWSER=firefox` runs the same
//! test in headless Firefox through `geckodriver` (`$FFNSKIP_GECKODRIVER`, or on the `PATH`).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::server::{metric, Server};

const PROMPT: &str = "Write a short story about a robot who learns to paint.";
const MAX_TOKENS: usize = 80;

/// The WebDriver server in a process group of its own, killed with its browsers when dropped
/// (also when an assertion fails before the session is closed).
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group's id is the driver's pid (`process_group(0)`). Not through the `kill` command:
        // procps-ng 4.0.2's `kill -KILL -PID` signals every process (-1), which as root ends the
        // whole machine's session.
        if let Ok(group) = libc::pid_t::try_from(self.child.id()) {
            if group > 1 {
                // SAFETY: a plain system call; a negative id names exactly that process group.
                unsafe { libc::kill(-group, libc::SIGKILL) };
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Browser {
    Chromium,
    Firefox,
}

impl Browser {
    fn chosen() -> Browser {
        match std::env::var("FFNSKIP_BROWSER").as_deref() {
            Ok("firefox") => Browser::Firefox,
            _ => Browser::Chromium,
        }
    }

    fn driver(self) -> PathBuf {
        let (var, default) = match self {
            Browser::Chromium => ("FFNSKIP_CHROMEDRIVER", "/usr/bin/chromedriver"),
            Browser::Firefox => ("FFNSKIP_GECKODRIVER", "geckodriver"),
        };
        std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
    }

    fn screenshot_name(self, name: &str) -> String {
        match self {
            Browser::Chromium => name.to_string(),
            Browser::Firefox => format!("firefox-{name}"),
        }
    }

    /// WebDriver capabilities for a headless session with its own empty profile.
    fn capabilities(self, profile: &std::path::Path) -> serde_json::Map<String, Value> {
        let mut caps = serde_json::Map::new();
        match self {
            Browser::Chromium => {
                let args = [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-quic",
                    "--no-first-run",
                    "--window-size=1280,1000",
                    &format!("--user-data-dir={}", profile.display()),
                ];
                let mut options = json!({"args": args});
                if let Some(binary) = std::env::var_os("FFNSKIP_CHROMIUM") {
                    options["binary"] = json!(binary.to_string_lossy());
                }
                caps.insert("goog:chromeOptions".into(), options);
            }
            Browser::Firefox => {
                let args = ["-headless", "-width=1280", "-height=1000", "-profile", &profile.display().to_string()];
                caps.insert("moz:firefoxOptions".into(), json!({"args": args}));
            }
        }
        caps
    }
}

/// The driver for `browser`, if it can be found on this machine.
fn find_driver(browser: Browser) -> Option<PathBuf> {
    let path = browser.driver();
    let found = path.exists() || (path.is_relative() && Command::new(&path).arg("--version").output().is_ok());
    if found {
        return Some(path);
    }
    assert!(
        std::env::var_os("FFNSKIP_REQUIRE_BROWSER").is_none(),
        "FFNSKIP_REQUIRE_BROWSER is set but {} does not exist",
        path.display()
    );
    eprintln!("skipped: no {} (apt-get install chromium chromium-driver)", path.display());
    None
}

fn start_driver(path: &PathBuf) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the WebDriver server");
    let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the WebDriver server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    driver
}

async fn open_browser(browser: Browser, driver: &Driver, profile: &std::path::Path) -> Client {
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(browser.capabilities(profile))
        .connect(&driver.url)
        .await
        .expect("start a browser session")
}

/// What the page shows once a reply has finished.
#[derive(Debug)]
struct PageReply {
    text: String,
    /// `data-layers` of each map column, in order.
    columns: Vec<String>,
    /// Cells per column.
    rows: Vec<usize>,
    server_ratio: String,
}

async fn ask(page: &Client, policy: &str, ratio: Option<&str>) -> PageReply {
    page.find(Locator::Id("policy")).await.unwrap().select_by_value(policy).await.unwrap();
    if let Some(ratio) = ratio {
        // A range input takes no keys to type; set it as a user's drag would, with its event.
        page.execute(
            "const r = document.getElementById('ratio'); r.value = arguments[0]; r.dispatchEvent(new Event('input'));",
            vec![json!(ratio)],
        )
        .await
        .unwrap();
    }
    let tokens = page.find(Locator::Id("max-tokens")).await.unwrap();
    tokens.clear().await.unwrap();
    tokens.send_keys(&MAX_TOKENS.to_string()).await.unwrap();
    let prompt = page.find(Locator::Id("prompt")).await.unwrap();
    prompt.send_keys(PROMPT).await.unwrap();
    // Enter sends: the keyboard path, not a click.
    prompt.send_keys("\u{E007}").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = page
            .execute(
                "return document.body.dataset.state === 'idle' && document.querySelector('.msg.assistant .show-map') !== null;",
                vec![],
            )
            .await
            .unwrap();
        if done == json!(true) {
            break;
        }
        assert!(Instant::now() < deadline, "the reply did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shown = page
        .execute(
            "const cols = [...document.querySelectorAll('#map .col')];
             return {
               text: document.querySelector('.msg.assistant:last-of-type .text').textContent,
               columns: cols.map(c => c.dataset.layers),
               rows: cols.map(c => c.querySelectorAll('.cell').length),
               server: document.getElementById('stat-server').textContent,
               error: document.getElementById('error').textContent,
             };",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(shown["error"], json!(""), "the page showed an error");
    let strings = |v: &Value| v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    PageReply {
        text: shown["text"].as_str().unwrap().to_string(),
        columns: strings(&shown["columns"]),
        rows: shown["rows"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap() as usize).collect(),
        server_ratio: shown["server"].as_str().unwrap().to_string(),
    }
}

/// The same request through the API, not streamed: the reply and its per-token trace.
fn api_reply(server: &Server, spec: &str) -> (String, Vec<String>, u64) {
    let body = server.post_json(
        "/v1/chat/completions",
        &json!({
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": MAX_TOKENS, "temperature": 0, "top_p": 1, "seed": 42,
            "ffnskip": {"policy": spec, "trace": true},
        }),
    );
    let text = body["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let layers = body["ffnskip"]["tokens"].as_array().unwrap().iter().map(|t| t["layers"].as_str().unwrap().to_string()).collect();
    (text, layers, body["usage"]["completion_tokens"].as_u64().unwrap())
}

async fn screenshot(page: &Client, browser: Browser, name: &str) {
    let name = &browser.screenshot_name(name);
    let png = page.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
    let mut dirs = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR"))];
    dirs.extend(std::env::var_os("FFNSKIP_SCREENSHOTS").map(PathBuf::from));
    for dir in dirs {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), &png).unwrap();
        eprintln!("screenshot: {}", dir.join(name).display());
    }
}

/// Stop ends a long reply mid-stream: the page keeps what came, says "stopped", and the server
/// frees the slot.
async fn stop_a_reply(page: &Client, server: &Server) {
    page.find(Locator::Id("new-chat")).await.unwrap().click().await.unwrap();
    page.find(Locator::Id("policy")).await.unwrap().select_by_value("dense").await.unwrap();
    let tokens = page.find(Locator::Id("max-tokens")).await.unwrap();
    tokens.clear().await.unwrap();
    tokens.send_keys("3000").await.unwrap();
    let prompt = page.find(Locator::Id("prompt")).await.unwrap();
    prompt.send_keys("Write a long essay about the history of Rome.\u{E007}").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while page.execute("return document.querySelectorAll('#map .col').length;", vec![]).await.unwrap().as_u64() < Some(3) {
        assert!(Instant::now() < deadline, "the long reply did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    page.find(Locator::Id("stop")).await.unwrap().click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let meta = page.execute("const m = document.querySelector('.msg.assistant .meta'); return m ? m.textContent : '';", vec![]).await.unwrap();
        if meta.as_str().is_some_and(|m| m.contains("stopped")) {
            break;
        }
        assert!(Instant::now() < deadline, "the page did not mark the reply stopped: {meta}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&server.get("/metrics").1, "ffnskip_busy_slots") != 0.0 {
        assert!(Instant::now() < deadline, "the stopped request still holds a slot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = page.execute("return document.querySelector('.msg.assistant .text').textContent;", vec![]).await.unwrap();
    assert!(reply.as_str().is_some_and(|r| !r.is_empty()), "the partial reply stays");
}

#[test]
fn web_page_streams_a_reply_and_draws_its_skip_map() {
    let browser = Browser::chosen();
    let Some(driver_path) = find_driver(browser) else { return };
    let server = Server::start(&["--parallel", "2"]);
    let (status, models) = server.get("/v1/models");
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    let n_layers = models["data"][0]["meta"]["n_layers"].as_u64().unwrap() as usize;
    let driver = start_driver(&driver_path);
    let profile = tempfile::tempdir().unwrap();
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let page = open_browser(browser, &driver, profile.path()).await;
        page.goto(&format!("http://{}/", server.addr)).await.unwrap();
        for (policy, ratio, spec, shot) in
            [("dense", None, "dense", "web-dense.png"), ("ffnskip", Some("0.25"), "ffnskip@0.25", "web-ffnskip.png")]
        {
            if policy != "dense" {
                page.find(Locator::Id("new-chat")).await.unwrap().click().await.unwrap();
            }
            let shown = ask(&page, policy, ratio).await;
            let (text, layers, completion_tokens) = api_reply(&server, spec);
            eprintln!("{spec}: {} columns × {n_layers} rows, server ratio {}", shown.columns.len(), shown.server_ratio);
            assert!(!shown.text.is_empty(), "{spec}: the reply is empty");
            assert_eq!(shown.text, text, "{spec}: the page's reply is the API's");
            assert_eq!(shown.columns.len() as u64, completion_tokens, "{spec}: one column per generated token");
            assert!(shown.rows.iter().all(|&r| r == n_layers), "{spec}: one row per layer: {:?}", shown.rows);
            assert_eq!(shown.columns, layers, "{spec}: the map draws the API's trace");
            let skipped = layers.iter().map(|l| l.matches('s').count()).sum::<usize>();
            if spec == "dense" {
                assert_eq!(skipped, 0, "dense skips nothing");
            } else {
                assert!(skipped > 0, "{spec} skipped no FFN block in {} tokens", layers.len());
                assert_ne!(shown.server_ratio, "–", "the server's ratio is shown");
            }
            // The keyboard reaches every token: End selects the last column, ← the one before.
            let map = page.find(Locator::Id("map")).await.unwrap();
            map.send_keys("\u{E010}").await.unwrap();
            map.send_keys("\u{E012}").await.unwrap();
            let selected = page
                .execute(
                    "const s = document.querySelector('#map .col.selected');
                     return [s ? Number(s.dataset.index) : -1, document.getElementById('token-info').textContent];",
                    vec![],
                )
                .await
                .unwrap();
            let last = layers.len() as i64 - 1;
            assert_eq!(selected[0], json!(last - 1), "{spec}: End then ← selects the last column but one");
            let info = selected[1].as_str().unwrap();
            assert!(info.starts_with(&format!("token {}:", last - 1)), "{spec}: the token is described: {info}");
            screenshot(&page, browser, shot).await;
        }
        // Side by side: the same conversation answered under the policy and dense at once.
        page.find(Locator::Id("new-chat")).await.unwrap().click().await.unwrap();
        page.find(Locator::Id("compare")).await.unwrap().click().await.unwrap();
        let shown = ask(&page, "ffnskip", Some("0.25")).await;
        let texts = page
            .execute("return [...document.querySelectorAll('.msg.assistant .pair .text')].map(t => t.textContent);", vec![])
            .await
            .unwrap();
        let (skip_text, skip_layers, _) = api_reply(&server, "ffnskip@0.25");
        let (dense_text, _, _) = api_reply(&server, "dense");
        assert_eq!(texts, json!([skip_text, dense_text]), "compare: the policy's reply, then dense's");
        assert_eq!(shown.columns, skip_layers, "compare: the map shows the policy's trace");
        screenshot(&page, browser, "web-compare.png").await;
        stop_a_reply(&page, &server).await;
        page.close().await.unwrap();
    });
}
