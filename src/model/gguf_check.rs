//! A bounded pre-scan of a GGUF header, run before candle parses it. candle trusts some fields
//! it should not (an alignment of 0 divides by zero; a repeated tensor name silently replaces
//! the first), so this walk checks every count and length against the bytes that remain, and
//! the structural rules, while allocating nothing larger than one key or tensor name.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

/// Keys and tensor names are short identifiers; a longer one is a crafted file.
const MAX_NAME_LEN: u64 = 1 << 16;
/// GGUF allows arrays of arrays; nothing ffnskip reads nests deeper than one level.
const MAX_ARRAY_DEPTH: u32 = 2;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// The largest `general.alignment` accepted (ggml uses 32).
const MAX_ALIGNMENT: u64 = 1 << 16;

/// What the scan learnt that the later checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFacts {
    pub alignment: u64,
}

/// Walks the header of a GGUF stream of `file_len` bytes; the error is one line of text.
pub fn scan<R: Read + Seek>(reader: &mut R, file_len: u64) -> Result<HeaderFacts, String> {
    let mut s = Scanner { r: reader, file_len };
    s.expect_magic()?;
    let version = s.u32()?;
    let wide = match version {
        1 => false,
        2 | 3 => true,
        v => return Err(format!("GGUF version {v} is not supported")),
    };
    let tensor_count = s.len(wide)?;
    let kv_count = s.len(wide)?;
    // A key-value pair needs at least a length, a type and one byte; a tensor entry a name
    // length, a dimension count, a type and an offset.
    let prefix = if wide { 8 } else { 4 };
    s.need(kv_count.saturating_mul(prefix + 5), "the metadata entries")?;
    s.need(tensor_count.saturating_mul(prefix + 16), "the tensor table")?;
    let mut alignment = 32;
    let mut keys = HashSet::new();
    for _ in 0..kv_count {
        let key = s.name(wide, "metadata key")?;
        let ty = s.u32()?;
        if key == "general.alignment" {
            alignment = s.alignment(ty)?;
        } else {
            s.skip_value(ty, wide, 0)?;
        }
        if !keys.insert(key.clone()) {
            return Err(format!("metadata key '{key}' appears twice"));
        }
    }
    let mut names = HashSet::new();
    for _ in 0..tensor_count {
        let name = s.name(wide, "tensor name")?;
        let n_dims = s.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!("tensor '{name}' has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"));
        }
        let mut elems: u64 = 1;
        for _ in 0..n_dims {
            let d = if wide { s.u64()? } else { u64::from(s.u32()?) };
            elems = elems
                .checked_mul(d)
                .filter(|&e| e <= file_len.saturating_mul(4))
                .ok_or_else(|| format!("tensor '{name}' claims more elements than the file could hold"))?;
        }
        s.skip(12)?; // type (u32) and offset (u64), checked against the data once candle has read them
        if !names.insert(name.clone()) {
            return Err(format!("tensor '{name}' appears twice"));
        }
    }
    Ok(HeaderFacts { alignment })
}

struct Scanner<'a, R> {
    r: &'a mut R,
    file_len: u64,
}

impl<R: Read + Seek> Scanner<'_, R> {
    fn remaining(&mut self) -> Result<u64, String> {
        let pos = self.r.stream_position().map_err(|e| e.to_string())?;
        Ok(self.file_len.saturating_sub(pos))
    }

    fn need(&mut self, bytes: u64, what: &str) -> Result<(), String> {
        let left = self.remaining()?;
        if bytes > left {
            return Err(format!("{what}: {bytes} bytes claimed but only {left} remain"));
        }
        Ok(())
    }

    fn skip(&mut self, bytes: u64) -> Result<(), String> {
        self.need(bytes, "a value")?;
        let delta = i64::try_from(bytes).map_err(|_| "a length overflows".to_string())?;
        self.r.seek(SeekFrom::Current(delta)).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(|_| "the header ends early".to_string())?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.bytes::<4>().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.bytes::<8>().map(u64::from_le_bytes)
    }

    fn len(&mut self, wide: bool) -> Result<u64, String> {
        if wide {
            self.u64()
        } else {
            self.u32().map(u64::from)
        }
    }

    fn expect_magic(&mut self) -> Result<(), String> {
        match &self.bytes::<4>()? {
            b"GGUF" => Ok(()),
            _ => Err("it does not start with the GGUF magic".into()),
        }
    }

    fn name(&mut self, wide: bool, what: &str) -> Result<String, String> {
        let len = self.len(wide)?;
        if len > MAX_NAME_LEN {
            return Err(format!("a {what} claims {len} bytes (at most {MAX_NAME_LEN})"));
        }
        self.need(len, what)?;
        let mut buf = vec![0u8; len as usize];
        self.r.read_exact(&mut buf).map_err(|_| "the header ends early".to_string())?;
        // candle drops trailing NULs from every string, so "general.alignment\0" is the
        // alignment key to it: compare names as candle will see them.
        while buf.last() == Some(&0) {
            buf.pop();
        }
        String::from_utf8(buf).map_err(|_| format!("a {what} is not UTF-8"))
    }

    fn alignment(&mut self, ty: u32) -> Result<u64, String> {
        let a = match ty {
            0 => u64::from(self.bytes::<1>()?[0]),
            2 => u64::from(u16::from_le_bytes(self.bytes::<2>()?)),
            4 => u64::from(self.u32()?),
            _ => return Err("general.alignment is not an unsigned integer".into()),
        };
        if !a.is_power_of_two() || a > MAX_ALIGNMENT {
            return Err(format!("general.alignment {a} is not a power of two up to {MAX_ALIGNMENT}"));
        }
        Ok(a)
    }

    fn skip_value(&mut self, ty: u32, wide: bool, depth: u32) -> Result<(), String> {
        match ty {
            0 | 1 | 7 => self.skip(1),
            2 | 3 => self.skip(2),
            4..=6 => self.skip(4),
            10..=12 => self.skip(8),
            8 => {
                let len = self.len(wide)?;
                self.skip(len)
            }
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!("arrays nest deeper than {MAX_ARRAY_DEPTH} levels"));
                }
                let elem = self.u32()?;
                let count = self.len(wide)?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    10..=12 => 8,
                    8 | 9 => if wide { 8 } else { 4 },
                    t => return Err(format!("unknown metadata value type {t}")),
                };
                self.need(count.saturating_mul(min), "an array")?;
                match elem {
                    8 | 9 => (0..count).try_for_each(|_| self.skip_value(elem, wide, depth + 1)),
                    _ => self.skip(count * min),
                }
            }
            t => Err(format!("unknown metadata value type {t}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn header(kvs: &[u8], n_kv: u64, tensors: &[u8], n_t: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(n_t.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b.extend(kvs);
        b.extend(tensors);
        b
    }

    fn kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
        let mut b = (key.len() as u64).to_le_bytes().to_vec();
        b.extend(key.as_bytes());
        b.extend(ty.to_le_bytes());
        b.extend(value);
        b
    }

    fn run(b: &[u8]) -> Result<HeaderFacts, String> {
        scan(&mut Cursor::new(b), b.len() as u64)
    }

    #[test]
    fn accepts_a_small_header_and_reads_the_alignment() {
        let b = header(&kv("general.alignment", 4, &64u32.to_le_bytes()), 1, &[], 0);
        assert_eq!(run(&b), Ok(HeaderFacts { alignment: 64 }));
    }

    #[test]
    fn refuses_zero_alignment() {
        let b = header(&kv("general.alignment", 4, &0u32.to_le_bytes()), 1, &[], 0);
        assert!(run(&b).unwrap_err().contains("power of two"));
    }

    /// Found by the `gguf` fuzz target: candle trims the NULs and then divided by zero.
    #[test]
    fn sees_the_alignment_key_through_trailing_nuls() {
        let b = header(&kv("general.alignment\0\0\0", 0, &[0]), 1, &[], 0);
        assert!(run(&b).unwrap_err().contains("general.alignment 0"));
    }

    #[test]
    fn refuses_counts_and_lengths_past_the_end() {
        assert!(run(&header(&[], u64::MAX, &[], 0)).unwrap_err().contains("remain"));
        assert!(run(&header(&[], 0, &[], 1 << 40)).unwrap_err().contains("remain"));
        let s = kv("k", 8, &(1u64 << 40).to_le_bytes());
        assert!(run(&header(&s, 1, &[], 0)).unwrap_err().contains("remain"));
        let mut arr = 5u32.to_le_bytes().to_vec();
        arr.extend((1u64 << 50).to_le_bytes());
        assert!(run(&header(&kv("k", 9, &arr), 1, &[], 0)).unwrap_err().contains("remain"));
    }

    #[test]
    fn refuses_duplicate_keys_and_tensor_names() {
        let one = kv("k", 0, &[1]);
        let two = [one.clone(), one].concat();
        assert!(run(&header(&two, 2, &[], 0)).unwrap_err().contains("twice"));
        let mut t = 1u64.to_le_bytes().to_vec();
        t.extend(b"t");
        t.extend(1u32.to_le_bytes());
        t.extend(4u64.to_le_bytes());
        t.extend([0u8; 12]);
        let both = [t.clone(), t].concat();
        assert!(run(&header(&[], 0, &both, 2)).unwrap_err().contains("twice"));
    }

    #[test]
    fn refuses_element_counts_that_overflow() {
        let mut t = 1u64.to_le_bytes().to_vec();
        t.extend(b"t");
        t.extend(2u32.to_le_bytes());
        t.extend(u64::MAX.to_le_bytes());
        t.extend(u64::MAX.to_le_bytes());
        t.extend([0u8; 12]);
        assert!(run(&header(&[], 0, &t, 1)).unwrap_err().contains("more elements"));
    }
}
