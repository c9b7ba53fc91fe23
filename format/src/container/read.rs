//! Reading a `.zsv` file: the header and index are checked when it is
//! opened, each section's checksum when its tensor is read.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::header::{HEADER_LEN, Header};
use super::index::{Encoding, Index, Section, TensorEntry};
use crate::codec::{CompressedMatrix, MatrixParts};
use crate::error::{Error, Result};

/// The bytes of a container: a read-only map of a file, or a buffer.
enum Storage {
    Map(Mmap),
    Buffer(Vec<u8>),
}

/// An opened `.zsv` container whose header and index passed validation.
pub struct ZsvFile {
    path: PathBuf,
    storage: Storage,
    index: Index,
}

impl ZsvFile {
    /// Maps `path` and validates its header and index.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(Error::io(&path))?;
        let len = file.metadata().map_err(Error::io(&path))?.len();
        let storage = if len < HEADER_LEN as u64 {
            // Too short to map usefully; read it so the header check reports why.
            Storage::Buffer(std::fs::read(&path).map_err(Error::io(&path))?)
        } else {
            // SAFETY: the map is read-only and private to this value. Another
            // process truncating or rewriting the file while it is mapped
            // could change the bytes under us (or fault on access); like any
            // reader of mapped model files we accept that risk. Every read
            // is bounds-checked against the length validated here and every
            // section is checksummed before use.
            Storage::Map(unsafe { Mmap::map(&file) }.map_err(Error::io(&path))?)
        };
        Self::parse(path, storage)
    }

    /// Validates a container held in memory (`label` names it in errors).
    pub fn from_bytes(bytes: Vec<u8>, label: impl Into<PathBuf>) -> Result<Self> {
        Self::parse(label.into(), Storage::Buffer(bytes))
    }

    fn parse(path: PathBuf, storage: Storage) -> Result<Self> {
        let bytes: &[u8] = match &storage {
            Storage::Map(m) => m,
            Storage::Buffer(b) => b,
        };
        let file_len = bytes.len() as u64;
        let header = Header::parse(&bytes[..bytes.len().min(HEADER_LEN)], file_len)?;
        let index_section = Section {
            offset: header.index_offset,
            len: header.index_len,
            crc32: header.index_crc,
        };
        let index_bytes = checked_section(bytes, &index_section, "index")?;
        let index = Index::parse(index_bytes, header.index_offset, file_len)?;
        Ok(Self {
            path,
            storage,
            index,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Map(m) => m,
            Storage::Buffer(b) => b,
        }
    }

    /// Bytes of the whole file.
    pub fn file_len(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// Tensors in file order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.index.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.index.tensors.iter().find(|t| t.name == name)
    }

    /// Key/value metadata of the original safetensors file.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.index.metadata
    }

    /// The checksummed bytes of a raw tensor.
    pub fn raw_data(&self, entry: &TensorEntry) -> Result<&[u8]> {
        match &entry.encoding {
            Encoding::Raw(s) => self.section(entry, "data", s),
            Encoding::Tiles(_) => Err(Error::Unsupported(format!(
                "tensor `{}` is compressed, not raw",
                entry.name
            ))),
        }
    }

    /// The checksummed and validated compressed matrix of a tile-encoded
    /// tensor.
    pub fn matrix(&self, entry: &TensorEntry) -> Result<CompressedMatrix> {
        let Encoding::Tiles(t) = &entry.encoding else {
            return Err(Error::Unsupported(format!(
                "tensor `{}` is stored raw, not compressed",
                entry.name
            )));
        };
        let parts = MatrixParts {
            rows: entry.shape[0],
            cols: entry.shape[1],
            base: t.base,
            exception_table: t.exception_table.clone(),
            tiles: self.section(entry, "tiles", &t.tiles)?.to_vec(),
            exception_starts: u32s(self.section(entry, "exception_starts", &t.exception_starts)?),
            exceptions: u16s(self.section(entry, "exceptions", &t.exceptions)?),
            far_starts: u32s(self.section(entry, "far_starts", &t.far_starts)?),
            far_exponents: self
                .section(entry, "far_exponents", &t.far_exponents)?
                .to_vec(),
        };
        CompressedMatrix::from_parts(parts).map_err(|e| match e {
            Error::Corrupt(msg) => Error::Corrupt(format!("tensor `{}`: {msg}", entry.name)),
            other => other,
        })
    }

    /// The tensor's data as safetensors stores it (little-endian, row-major),
    /// decompressed if needed.
    pub fn tensor_data(&self, entry: &TensorEntry) -> Result<Cow<'_, [u8]>> {
        match &entry.encoding {
            Encoding::Raw(_) => self.raw_data(entry).map(Cow::Borrowed),
            Encoding::Tiles(_) => {
                let values = self.matrix(entry)?.decode();
                Ok(Cow::Owned(
                    values
                        .iter()
                        .flat_map(|v| v.to_bits().to_le_bytes())
                        .collect(),
                ))
            }
        }
    }

    fn section(&self, entry: &TensorEntry, what: &str, s: &Section) -> Result<&[u8]> {
        checked_section(
            self.bytes(),
            s,
            &format!("tensor `{}` section {what}", entry.name),
        )
    }
}

/// The bytes of `s`, after checking that they lie in `bytes` and match the
/// stored CRC-32.
fn checked_section<'a>(bytes: &'a [u8], s: &Section, what: &str) -> Result<&'a [u8]> {
    let range = usize::try_from(s.offset)
        .ok()
        .zip(usize::try_from(s.len).ok())
        .and_then(|(start, len)| Some(start..start.checked_add(len)?));
    let Some(data) = range.and_then(|r| bytes.get(r)) else {
        return Err(Error::Truncated {
            what: what.to_string(),
            start: s.offset,
            end: s.offset.saturating_add(s.len),
            len: bytes.len() as u64,
        });
    };
    let got = crc32fast::hash(data);
    if got != s.crc32 {
        return Err(Error::ChecksumMismatch {
            what: what.to_string(),
            expected: s.crc32,
            got,
        });
    }
    Ok(data)
}

fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn u16s(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
