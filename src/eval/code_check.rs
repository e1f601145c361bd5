//! Runs a generated solution against its problem's tests, outside the engine: in a fresh
//! `python3 -I` process (isolated mode: no user site-packages, no environment variables read),
//! in an empty temporary directory with an empty environment, its address space capped, and
//! killed when it runs past the time limit. A timeout, a crash, a syntax error or a failed
//! assertion is a failure; only exit status 0 passes.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::eval::data::CodeProblem;

/// The address space a check may use: room for Python and a test's data, not for a runaway.
const MEMORY_LIMIT: u64 = 1 << 30;
/// Characters of the checker's last stderr line kept as the failure reason.
const REASON_CHARS: usize = 200;

/// How one solution fared.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub passed: bool,
    /// Empty when passed; else `timeout` or the last line Python printed (the exception).
    pub reason: String,
}

/// The program a check runs: the memory cap, the prompt and its completion, the tests, and the
/// call of `check` on the entry point.
fn program(problem: &CodeProblem, completion: &str) -> String {
    format!(
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n\
         {}{completion}\n\n{}\n\ncheck({})\n",
        problem.prompt, problem.test, problem.entry_point
    )
}

/// Runs `completion` (the body that follows the prompt) against the problem's tests.
pub fn check(problem: &CodeProblem, completion: &str, timeout: Duration) -> Result<Verdict> {
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("solution.py");
    std::fs::write(&source, program(problem, completion))?;
    let stderr_path = dir.path().join("stderr.txt");
    let mut child = Command::new("python3")
        .arg("-I")
        .arg(&source)
        .current_dir(dir.path())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path)?)
        .spawn()
        .map_err(|e| Error::InvalidArgument(format!("cannot run python3 for the code task: {e}")))?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() >= timeout {
            // Already exited between the two calls is fine: the kill then fails harmlessly.
            let _ = child.kill();
            child.wait()?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(match status {
        None => Verdict { passed: false, reason: "timeout".into() },
        Some(s) if s.success() => Verdict { passed: true, reason: String::new() },
        Some(s) => {
            let mut err = String::new();
            std::fs::File::open(&stderr_path)?.take(1 << 20).read_to_string(&mut err).ok();
            let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
            let reason = if last.is_empty() { format!("exit {s}") } else { last.chars().take(REASON_CHARS).collect() };
            Verdict { passed: false, reason }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem() -> CodeProblem {
        CodeProblem {
            task_id: "t/0".into(),
            prompt: "def add(a, b):\n    \"\"\"Sum of a and b.\"\"\"\n".into(),
            entry_point: "add".into(),
            test: "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n".into(),
        }
    }

    fn verdict(completion: &str) -> Verdict {
        check(&problem(), completion, Duration::from_secs(2)).unwrap()
    }

    #[test]
    fn a_right_solution_passes_and_wrong_ones_fail_with_their_reason() {
        assert_eq!(verdict("    return a + b\n"), Verdict { passed: true, reason: String::new() });
        let wrong = verdict("    return a - b\n");
        assert!(!wrong.passed && wrong.reason.contains("AssertionError"), "{wrong:?}");
        let syntax = verdict("    return a +\n");
        assert!(!syntax.passed && syntax.reason.contains("SyntaxError"), "{syntax:?}");
        let crash = verdict("    raise SystemExit(3)\n");
        assert!(!crash.passed, "{crash:?}");
    }

    #[test]
    fn a_solution_that_never_ends_is_killed_at_the_limit() {
        let start = Instant::now();
        let v = check(&problem(), "    while True:\n        pass\n", Duration::from_millis(500)).unwrap();
        assert_eq!(v, Verdict { passed: false, reason: "timeout".into() });
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    }

    #[test]
    fn a_solution_cannot_take_unbounded_memory_or_see_the_environment() {
        let hog = verdict("    x = bytearray(4 << 30)\n    return a + b\n");
        assert!(!hog.passed && hog.reason.contains("MemoryError"), "{hog:?}");
        assert!(std::env::var_os("PATH").is_some());
        let env = verdict("    import os\n    assert 'PATH' not in os.environ\n    return a + b\n");
        assert!(env.passed, "{env:?}");
    }
}
