//! Readers for the evaluation data under `../shared/data/` (DESIGN §5).

use std::path::Path;

use crate::error::{Error, Result};

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", path.display())))
}

/// A FreebaseQA question with its gold answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Factoid {
    pub question: String,
    pub answer: String,
}

/// `question | answer` lines; questions wrapped in CSV-style quotes (with `""` inside) are unwrapped.
pub fn load_factoids(path: &Path) -> Result<Vec<Factoid>> {
    let text = read(path)?;
    let items: Vec<Factoid> = text
        .lines()
        .filter_map(|line| {
            let (q, a) = line.rsplit_once('|')?;
            Some(Factoid { question: unquote(q.trim()), answer: a.trim().to_string() })
        })
        .filter(|f| !f.question.is_empty() && !f.answer.is_empty())
        .collect();
    if items.is_empty() {
        return Err(Error::InvalidArgument(format!("{}: no `question | answer` lines", path.display())));
    }
    Ok(items)
}

fn unquote(s: &str) -> String {
    match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => s.to_string(),
    }
}

/// The first turn of each MT-Bench question.
pub fn load_first_turns(path: &Path) -> Result<Vec<(String, String)>> {
    #[derive(serde::Deserialize)]
    struct Question {
        question_id: serde_json::Value,
        turns: Vec<String>,
    }
    let text = read(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let q: Question = serde_json::from_str(line)
            .map_err(|e| Error::InvalidArgument(format!("{} line {}: {e}", path.display(), i + 1)))?;
        let first = q.turns.into_iter().next().unwrap_or_default();
        out.push((q.question_id.to_string(), first));
    }
    Ok(out)
}

/// A plain text file.
pub fn load_text(path: &Path) -> Result<String> {
    read(path)
}

/// A HumanEval problem: a function's signature and docstring, and the test that checks it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct CodeProblem {
    pub task_id: String,
    pub prompt: String,
    pub entry_point: String,
    /// Python defining `check(candidate)`.
    pub test: String,
}

/// HumanEval's JSON lines.
pub fn load_code_problems(path: &Path) -> Result<Vec<CodeProblem>> {
    let text = read(path)?;
    let problems = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| Error::InvalidArgument(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect::<Result<Vec<CodeProblem>>>()?;
    if problems.is_empty() {
        return Err(Error::InvalidArgument(format!("{}: no problems", path.display())));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factoid_lines_are_unquoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qa.txt");
        std::fs::write(&path, "\"Who said \"\"hi\"\"?\" | bob\nplain question? | alice smith\nbroken line\n").unwrap();
        let items = load_factoids(&path).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].question, "Who said \"hi\"?");
        assert_eq!(items[0].answer, "bob");
        assert_eq!(items[1].answer, "alice smith");
    }
}
