//! Chat templates: the model's `tokenizer.chat_template` (a Jinja template written for Python's
//! `jinja2`), rendered with minijinja plus the Python-compatibility helpers HF templates use.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::GgufFile;
use crate::sandbox;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self { role: role.to_string(), content: content.to_string() }
    }
}

/// A model's chat template. Renders run in a [`sandbox::Worker`]: the template comes from an
/// untrusted file, and fuel bounds its instructions but not the memory its strings take.
pub struct ChatTemplate {
    renderer: Arc<Renderer>,
    worker: sandbox::Worker,
}

impl ChatTemplate {
    /// The template stored in the GGUF, or `None` when the model has none.
    pub fn from_gguf(gguf: &GgufFile, tokenizer: &Tokenizer) -> Result<Option<Self>> {
        let Ok(source) = gguf.string("tokenizer.chat_template") else {
            return Ok(None);
        };
        let token = |key: &str| {
            gguf.u64(key)
                .ok()
                .and_then(|id| tokenizer.id_to_token(id as u32))
                .unwrap_or_default()
                .to_string()
        };
        let bos = token("tokenizer.ggml.bos_token_id");
        let eos = token("tokenizer.ggml.eos_token_id");
        Self::new(source, &bos, &eos).map(Some)
    }

    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| -> String { strftime_now(&fmt) });
        // Fuel bounds the instructions any template can run (a loop over a huge range, runaway
        // recursion) and the environment has no loader, so `include`/`import` reach nothing on
        // disk; the worker bounds memory and time.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_recursion_limit(TEMPLATE_RECURSION);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::ChatTemplate(one_line(&e)))?;
        let renderer = Arc::new(Renderer { env, bos_token: bos_token.to_string(), eos_token: eos_token.to_string() });
        let handler = Arc::clone(&renderer);
        let worker = sandbox::Worker::new(TEMPLATE_BUDGET, Box::new(move |request| handler.answer(request)));
        Ok(Self { renderer, worker })
    }

    /// Renders the conversation; with `add_generation_prompt` the text ends where the
    /// assistant's reply begins.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let request = RenderRequest { messages: Cow::Borrowed(messages), add_generation_prompt };
        let request = serde_json::to_vec(&request).map_err(|e| Error::ChatTemplate(e.to_string()))?;
        match self.worker.call(&request) {
            Ok(bytes) => String::from_utf8(bytes).map_err(|_| Error::ChatTemplate("the output is not UTF-8".into())),
            Err(sandbox::Failure::Work(message)) => Err(Error::ChatTemplate(message)),
            Err(failure) => Err(Error::ChatTemplate(format!("rendering {failure}"))),
        }
    }

    /// [`render`](Self::render) in this process, bounded by fuel and the output cap only. The
    /// fuzz target calls it, so that libFuzzer sees the render's coverage.
    pub fn render_in_process(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.renderer.render(messages, add_generation_prompt)
    }
}

/// What the worker is asked: the arguments of [`ChatTemplate::render`].
#[derive(Serialize, Deserialize)]
struct RenderRequest<'a> {
    messages: Cow<'a, [Message]>,
    add_generation_prompt: bool,
}

/// The compiled template and the tokens it may name.
struct Renderer {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl Renderer {
    /// The worker's handler: a [`RenderRequest`] in, the rendered text or the error's message out.
    fn answer(&self, request: &[u8]) -> std::result::Result<Vec<u8>, String> {
        let request: RenderRequest = serde_json::from_slice(request).map_err(|e| e.to_string())?;
        self.render(&request.messages, request.add_generation_prompt).map(String::into_bytes).map_err(|e| match e {
            Error::ChatTemplate(message) => message,
            other => other.to_string(),
        })
    }

    fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self.env.get_template("chat").map_err(|e| Error::ChatTemplate(one_line(&e)))?;
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        };
        let mut out = CappedWriter(Vec::new());
        template.render_captured_to(ctx, &mut out).map_err(|e| match out.0.len() >= TEMPLATE_OUTPUT_MAX {
            true => Error::ChatTemplate(format!("the output exceeds {TEMPLATE_OUTPUT_MAX} bytes")),
            false => Error::ChatTemplate(one_line(&e)),
        })?;
        String::from_utf8(out.0).map_err(|_| Error::ChatTemplate("the output is not UTF-8".into()))
    }
}

/// Memory and time renders may take in the worker: real chat templates need a few kilobytes
/// and well under a millisecond.
const TEMPLATE_BUDGET: sandbox::Budget = sandbox::Budget { memory: 256 << 20, time: Duration::from_secs(5) };
/// Instructions a template may execute per render: real chat templates use a few thousand.
const TEMPLATE_FUEL: u64 = 2_000_000;
/// Nested macro calls and includes; minijinja's own ceiling is 500.
const TEMPLATE_RECURSION: usize = 100;
/// A rendered prompt larger than this cannot fit any context ffnskip runs.
const TEMPLATE_OUTPUT_MAX: usize = 4 << 20;

/// Stops the render once the output passes [`TEMPLATE_OUTPUT_MAX`].
struct CappedWriter(Vec<u8>);

impl std::io::Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > TEMPLATE_OUTPUT_MAX {
            self.0.resize(TEMPLATE_OUTPUT_MAX, 0);
            return Err(std::io::Error::other("chat template output too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// minijinja's Display adds the template source around the error over several lines; the CLI
/// prints one line.
fn one_line(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// The date in the few formats templates ask for (`%d %b %Y` in Llama 3.x), computed from the
/// system clock without a time-zone database (UTC).
fn strftime_now(fmt: &str) -> String {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    fmt.replace("%d", &format!("{d:02}"))
        .replace("%m", &format!("{m:02}"))
        .replace("%b", MONTHS[(m - 1) as usize])
        .replace("%Y", &y.to_string())
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let out = t.render(&[Message::new("user", " Hi ")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ messages[0].content.strip().upper() }}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert_eq!(t.render(&[Message::new("user", " hey ")], false).unwrap(), "HEY");
        let err = t.render(&[Message::new("system", "x")], false).unwrap_err();
        assert!(err.to_string().contains("first must be user"), "{err}");
    }

    #[test]
    fn a_template_that_loops_or_recurses_forever_runs_out_of_fuel() {
        let msgs = [Message::new("user", "x")];
        for src in [
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        ] {
            let err = ChatTemplate::new(src, "", "").unwrap().render(&msgs, true).unwrap_err().to_string();
            assert!(err.contains("fuel") || err.contains("recursion"), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    #[test]
    fn huge_output_is_cut_off() {
        let src = "{% for i in range(10000) %}{{ 'x' * 10000 }}{% endfor %}";
        let err = ChatTemplate::new(src, "", "").unwrap().render(&[], true).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }

    #[test]
    #[cfg(target_os = "linux")] // the worker's memory cap (src/sandbox.rs)
    fn a_template_that_builds_gigabytes_stops_at_its_memory_budget() {
        // Each `~` doubles the string: 16 doublings of 50 MB are far within the fuel.
        let src = format!("{{% set s = 'x' * 50000000 %}}{}{{{{ s|length }}}}", "{% set s = s ~ s %}".repeat(16));
        let t = ChatTemplate::new(&src, "", "").unwrap();
        let err = t.render(&[], true).unwrap_err().to_string();
        assert_eq!(err, "chat template: rendering needed more than 256 MiB of memory");
        let small = ChatTemplate::new("{% set s = 'ab' %}{% set s = s ~ s %}{{ s }}", "", "").unwrap();
        assert_eq!(small.render(&[], true).unwrap(), "abab");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }
}
