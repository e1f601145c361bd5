//! Opening a GGUF file: validation of the header and tensor bounds, typed metadata access, and
//! reading tensors straight out of a memory map (no intermediate buffer per tensor).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{ggml_file, GgmlDType, QTensor};
use candle_core::Device;
use memmap2::Mmap;

use crate::error::{Error, Result};
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
        let mut magic = [0u8; 4];
        let mut reader = BufReader::new(file);
        if reader.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            return Err(Error::NotGguf {
                path: path_buf,
                reason: "it does not start with the GGUF magic".into(),
            });
        }
        let mut file = reader.into_inner();
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0))?;
        let content = Content::read(&mut BufReader::new(&mut file)).map_err(|e| {
            let reason = first_line(&e.to_string());
            match reason.strip_prefix("unknown dtype for tensor ") {
                Some(id) => Error::UnsupportedQuantisation {
                    tensor: "in the header".into(),
                    dtype: format!("ggml type {id}"),
                },
                None => Error::CorruptGguf { path: path_buf.clone(), reason },
            }
        })?;
        // SAFETY: the map is read-only and the file is not modified while ffnskip runs; a
        // concurrent writer could change the weights under us, which is the usual mmap caveat.
        let mmap = unsafe { Mmap::map(&file)? };
        let gguf = Self { path: path_buf, content, mmap: Arc::new(mmap) };
        gguf.check_tensor_bounds()?;
        Ok(gguf)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_tensor_bounds(&self) -> Result<()> {
        let file_len = self.mmap.len() as u64;
        for (name, info) in &self.content.tensor_infos {
            let (start, len) = self.tensor_range(name, info)?;
            if start.saturating_add(len) > file_len {
                return Err(Error::CorruptGguf {
                    path: self.path.clone(),
                    reason: format!(
                        "tensor '{name}' needs bytes {start}..{} but the file has {file_len}",
                        start + len
                    ),
                });
            }
        }
        Ok(())
    }

    fn tensor_range(
        &self,
        name: &str,
        info: &candle_core::quantized::gguf_file::TensorInfo,
    ) -> Result<(u64, u64)> {
        let elems = info.shape.elem_count();
        let block = info.ggml_dtype.block_size();
        if !elems.is_multiple_of(block) {
            return Err(Error::CorruptGguf {
                path: self.path.clone(),
                reason: format!("tensor '{name}' has {elems} elements, not a multiple of {block}"),
            });
        }
        let len = (elems / block * info.ggml_dtype.type_size()) as u64;
        Ok((self.content.tensor_data_offset + info.offset, len))
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    pub fn tensor_dims(&self, name: &str) -> Result<Vec<usize>> {
        let info = self.info(name)?;
        Ok(info.shape.dims().to_vec())
    }

    /// The tensor's description, if its type is one this engine reads.
    fn supported(&self, name: &str) -> Result<&candle_core::quantized::gguf_file::TensorInfo> {
        let info = self.info(name)?;
        if !SUPPORTED_DTYPES.contains(&info.ggml_dtype) {
            return Err(Error::UnsupportedQuantisation {
                tensor: format!("'{name}'"),
                dtype: format!("{:?}", info.ggml_dtype),
            });
        }
        Ok(info)
    }

    fn info(&self, name: &str) -> Result<&candle_core::quantized::gguf_file::TensorInfo> {
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
