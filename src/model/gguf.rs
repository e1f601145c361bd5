//! Opening a GGUF file: validation of the header (see [`gguf_check`]) and tensor layout, typed metadata access, and
//! reading tensors straight out of a memory map (no intermediate buffer per tensor).

use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::{ggml_file, GgmlDType, QTensor};
use candle_core::Device;
use memmap2::{Mmap, MmapMut};

use crate::error::{Error, Result};
use crate::model::gguf_check;
use crate::kernels::WeightBytes;

/// The quantisation types whose CPU kernels candle provides and ffnskip has tested.
const SUPPORTED_DTYPES: &[GgmlDType] = &[
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::BF16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

pub struct GgufFile {
    path: PathBuf,
    content: Content,
    mmap: Arc<Mmap>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let path_buf = path.to_path_buf();
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::ModelNotFound(path_buf.clone()),
            _ => Error::Io(e),
        })?;
        if file.metadata()?.is_dir() {
            return Err(Error::NotGguf { path: path_buf, reason: "it is a directory".into() });
        }
        // SAFETY: the map is read-only and the file is not modified while ffnskip runs; a
        // concurrent writer could change the weights under us, which is the usual mmap caveat.
        // Every slice taken from it below is bounds-checked against its length first.
        let mmap = unsafe { Mmap::map(&file)? };
        Self::from_map(path_buf, mmap)
    }

    /// A GGUF held in memory (a fuzzer's input, a file received over the network): the bytes
    /// are copied into an anonymous read-only map so weights are read exactly as from a file.
    /// `label` names the source in error messages.
    pub fn from_bytes(label: &Path, bytes: &[u8]) -> Result<Self> {
        // Maps cannot be empty; an empty input gets one zero byte, which fails the magic check.
        let mut anon = MmapMut::map_anon(bytes.len().max(1))?;
        anon[..bytes.len()].copy_from_slice(bytes);
        Self::from_map(label.to_path_buf(), anon.make_read_only()?)
    }

    fn from_map(path: PathBuf, mmap: Mmap) -> Result<Self> {
        if mmap.len() < 4 || &mmap[..4] != b"GGUF" {
            return Err(Error::NotGguf { path, reason: "it does not start with the GGUF magic".into() });
        }
        let corrupt = |reason: String| Error::CorruptGguf { path: path.clone(), reason };
        let facts = gguf_check::scan(&mut Cursor::new(&mmap[..]), mmap.len() as u64).map_err(corrupt)?;
        let content = Content::read(&mut Cursor::new(&mmap[..])).map_err(|e| {
            let reason = first_line(&e.to_string());
            match reason.strip_prefix("unknown dtype for tensor ") {
                Some(id) => Error::UnsupportedQuantisation {
                    tensor: "in the header".into(),
                    dtype: format!("ggml type {id}"),
                },
                None => corrupt(reason),
            }
        })?;
        let gguf = Self { path: path.clone(), content, mmap: Arc::new(mmap) };
        gguf.check_tensor_layout(facts.alignment)?;
        Ok(gguf)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor lies inside the file, starts on the alignment and overlaps no other, so
    /// the slices [`Self::tensor`] and [`Self::mapped_tensor`] take are always in bounds.
    fn check_tensor_layout(&self, alignment: u64) -> Result<()> {
        let file_len = self.mmap.len() as u64;
        let mut ranges = Vec::with_capacity(self.content.tensor_infos.len());
        for (name, info) in &self.content.tensor_infos {
            if info.offset % alignment != 0 {
                return Err(self.corrupt(format!(
                    "tensor '{name}' starts at offset {} which is not a multiple of the alignment {alignment}",
                    info.offset
                )));
            }
            let (start, len) = self.tensor_range(name, info)?;
            match start.checked_add(len) {
                Some(end) if end <= file_len => ranges.push((start, end, name)),
                _ => {
                    return Err(self.corrupt(format!(
                        "tensor '{name}' needs {len} bytes from {start} but the file has {file_len}"
                    )))
                }
            }
        }
        ranges.sort();
        for pair in ranges.windows(2) {
            let ((_, end, a), (start, _, b)) = (pair[0], pair[1]);
            if start < end {
                return Err(self.corrupt(format!("tensors '{a}' and '{b}' overlap")));
            }
        }
        Ok(())
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::CorruptGguf { path: self.path.clone(), reason }
    }

    /// The tensor's byte range; overflow-checked because the shape comes from the file.
    fn tensor_range(&self, name: &str, info: &TensorInfo) -> Result<(u64, u64)> {
        let too_big = || self.corrupt(format!("tensor '{name}' claims more bytes than a file can hold"));
        let elems = info.shape.dims().iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(too_big)?;
        let block = info.ggml_dtype.block_size();
        if !elems.is_multiple_of(block) {
            return Err(self.corrupt(format!("tensor '{name}' has {elems} elements, not a multiple of {block}")));
        }
        let len = (elems / block).checked_mul(info.ggml_dtype.type_size()).ok_or_else(too_big)? as u64;
        let start = self.content.tensor_data_offset.checked_add(info.offset).ok_or_else(too_big)?;
        Ok((start, len))
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    pub fn tensor_dims(&self, name: &str) -> Result<Vec<usize>> {
        let info = self.info(name)?;
        Ok(info.shape.dims().to_vec())
    }

    /// The tensor's description, if its type is one this engine reads.
    fn supported(&self, name: &str) -> Result<&TensorInfo> {
        let info = self.info(name)?;
        if !SUPPORTED_DTYPES.contains(&info.ggml_dtype) {
            return Err(Error::UnsupportedQuantisation {
                tensor: format!("'{name}'"),
                dtype: format!("{:?}", info.ggml_dtype),
            });
        }
        Ok(info)
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.content.tensor_infos.get(name).ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    /// Reads one tensor into candle's storage: the only heap copy of these weights.
    pub fn tensor(&self, name: &str) -> Result<QTensor> {
        let info = self.supported(name)?;
        let (start, len) = self.tensor_range(name, info)?;
        let bytes = &self.mmap[start as usize..(start + len) as usize];
        Ok(ggml_file::qtensor_from_ggml(
            info.ggml_dtype,
            bytes,
            info.shape.dims().to_vec(),
            &Device::Cpu,
        )?)
    }

    /// A tensor's type, shape and bytes, left in the memory-mapped file (no copy).
    pub fn mapped_tensor(&self, name: &str) -> Result<(GgmlDType, Vec<usize>, WeightBytes)> {
        let info = self.supported(name)?;
        let (start, len) = self.tensor_range(name, info)?;
        let bytes = WeightBytes::Mapped { map: Arc::clone(&self.mmap), start: start as usize, len: len as usize };
        Ok((info.ggml_dtype, info.shape.dims().to_vec(), bytes))
    }

    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn string(&self, key: &str) -> Result<&str> {
        match self.metadata(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(Error::Metadata(format!("'{key}' is not a string"))),
            None => Err(Error::Metadata(format!("missing key '{key}'"))),
        }
    }

    pub fn u64(&self, key: &str) -> Result<u64> {
        let v = self.metadata(key).ok_or_else(|| Error::Metadata(format!("missing key '{key}'")))?;
        v.to_u64()
            .or_else(|_| v.to_u32().map(u64::from))
            .or_else(|_| v.to_i32().map(|x| x.max(0) as u64))
            .or_else(|_| v.to_i64().map(|x| x.max(0) as u64))
            .map_err(|_| Error::Metadata(format!("'{key}' is not an integer")))
    }

    pub fn f32(&self, key: &str) -> Result<f32> {
        let v = self.metadata(key).ok_or_else(|| Error::Metadata(format!("missing key '{key}'")))?;
        v.to_f32()
            .or_else(|_| v.to_f64().map(|x| x as f32))
            .map_err(|_| Error::Metadata(format!("'{key}' is not a float")))
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        self.metadata(key).and_then(|v| v.to_bool().ok())
    }

    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        self.array(key)?
            .iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|_| Error::Metadata(format!("'{key}' holds a non-string")))
            })
            .collect()
    }

    pub fn array(&self, key: &str) -> Result<&Vec<Value>> {
        match self.metadata(key) {
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(Error::Metadata(format!("'{key}' is not an array"))),
            None => Err(Error::Metadata(format!("missing key '{key}'"))),
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}
