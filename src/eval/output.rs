//! An evaluation's output directory: `items.jsonl` (one line per item and policy, appended as
//! items finish, so a run can be resumed) and `summary.json` (rows derived from the items, so a
//! run can be re-reported), plus `meta.json` (task, data, command, machine).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::generate::DecodeSpec;
use crate::speculate::SpecStats;

pub struct OutputDir {
    dir: PathBuf,
    items: File,
    done: HashSet<(String, String)>,
}

/// What every item line carries besides its task's own fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ItemCommon {
    pub policy: String,
    pub item: String,
    pub decode_steps: u64,
    /// Decode time of this item alone; `None` when it shared its forward steps with other
    /// policies' rows (a side-by-side run), so that no time is its own.
    pub decode_secs: Option<f64>,
    pub post_warmup_steps: u64,
    pub ffn_skipped: u64,
    pub ffn_skipped_post_warmup: u64,
    pub n_layers: u64,
    /// What speculation did, for `speculate:` runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speculation: Option<SpecStats>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{}: {e}", path.display()))
}

impl OutputDir {
    /// Opens (or creates) `dir`, remembering which (policy, item) pairs are already done.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let path = dir.join("items.jsonl");
        let mut done = HashSet::new();
        if path.exists() {
            for line in BufReader::new(File::open(&path)?).lines() {
                let line = line?;
                // A line cut short by an interrupted run is dropped and redone.
                if let Ok(c) = serde_json::from_str::<ItemCommon>(&line) {
                    done.insert((c.policy, c.item));
                }
            }
        }
        let items = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io_err(&path, e))?;
        Ok(Self { dir: dir.to_path_buf(), items, done })
    }

    /// The specs among `specs` whose line for `item` is not written yet, in order.
    pub fn pending<'s>(&self, specs: &'s [DecodeSpec], item: &str) -> Vec<&'s DecodeSpec> {
        specs.iter().filter(|spec| !self.done.contains(&(spec.to_string(), item.to_string()))).collect()
    }

    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let line = serde_json::to_string(record).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        writeln!(self.items, "{line}")?;
        self.items.flush()?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// All item records of a run directory.
pub fn read_items<T: for<'de> Deserialize<'de>>(dir: &Path) -> Result<Vec<T>> {
    let path = dir.join("items.jsonl");
    let file = File::open(&path).map_err(|e| io_err(&path, e))?;
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        if let Ok(record) = serde_json::from_str(&line?) {
            out.push(record);
        }
    }
    Ok(out)
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| io_err(path, e))
}
