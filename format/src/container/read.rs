//! Reading a `.zsv` file: the header, the index and (version 2) the stored
//! safetensors header are checked when it is opened; each section's checksum
//! when its tensor is read.
//!
//! Sections are read with positioned reads into buffers of their own size,
//! never mapped, so reading a model tensor by tensor holds one tensor in
//! memory, and a file that changes under us gives an error, not a fault.

use std::path::{Path, PathBuf};

use half::bf16;

use super::header::{HEADER_LEN, Header};
use super::index::{Encoding, Index, Section, TensorEntry};
use crate::codec::{CompressedMatrix, MatrixParts};
use crate::error::{Error, Result};
use crate::files::{FileId, InputFile};
use crate::st::{self, MAX_HEADER_LEN, PREFIX_LEN};

/// Where the container's bytes are.
enum Storage {
    File(InputFile),
    Buffer(Vec<u8>),
}

/// An opened `.zsv` container whose header and index passed validation.
pub struct ZsvFile {
    path: PathBuf,
    storage: Storage,
    len: u64,
    index: Index,
    /// The header of the safetensors file decompression writes: stored
    /// (version 2) or rebuilt from the index (version 1).
    output_json: Vec<u8>,
    output: st::Header,
}

/// A tensor's data as safetensors stores it.
pub enum TensorData {
    /// Stored bytes of a raw tensor.
    Raw(Vec<u8>),
    /// A decompressed BF16 matrix, row-major.
    Bf16(Vec<bf16>),
}

impl TensorData {
    /// Little-endian bytes, as in a safetensors file.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Raw(b) => b,
            // The crate only builds for little-endian targets (lib.rs).
            Self::Bf16(v) => bytemuck::cast_slice(v),
        }
    }
}

impl ZsvFile {
    /// Opens `path` (a regular file) and validates its header and index.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let input = InputFile::open(path.as_ref())?;
        let (path, len) = (input.path.clone(), input.len);
        Self::parse(path, Storage::File(input), len)
    }

    /// Validates a container held in memory (`label` names it in errors).
    pub fn from_bytes(bytes: Vec<u8>, label: impl Into<PathBuf>) -> Result<Self> {
        let len = bytes.len() as u64;
        Self::parse(label.into(), Storage::Buffer(bytes), len)
    }

    fn parse(path: PathBuf, storage: Storage, len: u64) -> Result<Self> {
        let head_len = len.min(HEADER_LEN as u64) as usize;
        let head = read_range(&storage, 0, head_len, "header", len)?;
        let header = Header::parse(&head, len)?;
        let index_section = Section {
            offset: header.index_offset,
            len: header.index_len,
            crc32: header.index_crc,
        };
        let index_bytes = checked_section(&storage, len, &index_section, "index")?;
        let index = Index::parse(&index_bytes, header.version, header.index_offset, len)?;
        let (output_json, output) = match index.source {
            Some(source) => stored_output(&storage, len, &index, &source)?,
            None => rebuilt_output(&index),
        };
        Ok(Self {
            path,
            storage,
            len,
            index,
            output_json,
            output,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's identity (`None` for a container held in memory).
    pub fn id(&self) -> Option<FileId> {
        match &self.storage {
            Storage::File(f) => Some(f.id),
            Storage::Buffer(_) => None,
        }
    }

    /// Container format version of the file.
    pub fn version(&self) -> u32 {
        self.index.version
    }

    /// Bytes of the whole file.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Tensors in file order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.index.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.index.tensors.iter().find(|t| t.name == name)
    }

    /// Key/value metadata of the safetensors file.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.output.metadata
    }

    /// The header JSON of the safetensors file decompression writes.
    pub fn output_header_json(&self) -> &[u8] {
        &self.output_json
    }

    /// Bytes of the safetensors file decompression writes.
    pub fn output_len(&self) -> u64 {
        PREFIX_LEN + self.output_json.len() as u64 + self.output.data_len()
    }

    /// CRC-32 of that file, recorded at compression (version 2).
    pub fn output_crc32(&self) -> Option<u32> {
        self.index.source.map(|s| s.crc32)
    }

    /// The checksummed bytes of a raw tensor.
    pub fn raw_data(&self, entry: &TensorEntry) -> Result<Vec<u8>> {
        match &entry.encoding {
            Encoding::Raw(s) => self.section(entry, "data", s),
            Encoding::Tiles(_) => Err(Error::Unsupported(format!(
                "tensor `{}` is compressed, not raw",
                entry.name.escape_debug()
            ))),
        }
    }

    /// The checksummed and validated compressed matrix of a tile-encoded
    /// tensor.
    pub fn matrix(&self, entry: &TensorEntry) -> Result<CompressedMatrix> {
        let Encoding::Tiles(t) = &entry.encoding else {
            return Err(Error::Unsupported(format!(
                "tensor `{}` is stored raw, not compressed",
                entry.name.escape_debug()
            )));
        };
        let parts = MatrixParts {
            rows: entry.shape[0],
            cols: entry.shape[1],
            base: t.base,
            exception_table: t.exception_table.clone(),
            tiles: self.section(entry, "tiles", &t.tiles)?,
            exception_starts: u32s(&self.section(
                entry,
                "exception_starts",
                &t.exception_starts,
            )?),
            exceptions: u16s(&self.section(entry, "exceptions", &t.exceptions)?),
            far_starts: u32s(&self.section(entry, "far_starts", &t.far_starts)?),
            far_exponents: self.section(entry, "far_exponents", &t.far_exponents)?,
        };
        CompressedMatrix::from_parts(parts).map_err(|e| match e {
            Error::Corrupt(msg) => {
                Error::Corrupt(format!("tensor `{}`: {msg}", entry.name.escape_debug()))
            }
            other => other,
        })
    }

    /// The tensor's data as safetensors stores it, decompressed if needed.
    pub fn tensor_data(&self, entry: &TensorEntry) -> Result<TensorData> {
        match &entry.encoding {
            Encoding::Raw(_) => self.raw_data(entry).map(TensorData::Raw),
            Encoding::Tiles(_) => Ok(TensorData::Bf16(self.matrix(entry)?.decode())),
        }
    }

    /// Reads every section once and checks its CRC-32 (a full-file check
    /// without decoding; memory: the largest section).
    pub fn check_sections(&self) -> Result<()> {
        for entry in self.tensors() {
            match &entry.encoding {
                Encoding::Raw(s) => drop(self.section(entry, "data", s)?),
                Encoding::Tiles(t) => {
                    for (what, s) in t.named() {
                        drop(self.section(entry, what, s)?);
                    }
                }
            }
        }
        Ok(())
    }

    fn section(&self, entry: &TensorEntry, what: &str, s: &Section) -> Result<Vec<u8>> {
        let label = format!("tensor `{}` section {what}", entry.name.escape_debug());
        checked_section(&self.storage, self.len, s, &label)
    }
}

/// The stored safetensors header of a version 2 file, checked against the
/// index: the same tensors in the same order with the same dtypes and
/// shapes, and the recorded file length.
fn stored_output(
    storage: &Storage,
    len: u64,
    index: &Index,
    source: &super::index::Source,
) -> Result<(Vec<u8>, st::Header)> {
    if source.header.len > MAX_HEADER_LEN {
        return Err(Error::Corrupt(format!(
            "source header of {} bytes exceeds the {MAX_HEADER_LEN}-byte limit",
            source.header.len
        )));
    }
    let json = checked_section(storage, len, &source.header, "source header")?;
    let header = st::Header::parse(&json, None)
        .map_err(|e| Error::Corrupt(format!("source header: {e}")))?;
    if header.tensors.len() != index.tensors.len() {
        return Err(Error::Corrupt(format!(
            "source header lists {} tensors, the index {}",
            header.tensors.len(),
            index.tensors.len()
        )));
    }
    for (h, t) in header.tensors.iter().zip(&index.tensors) {
        if h.name != t.name || h.dtype != t.dtype || h.shape != t.shape {
            return Err(Error::Corrupt(format!(
                "source header has {} {} {:?} where the index has {} {} {:?}",
                h.name.escape_debug(),
                h.dtype,
                h.shape,
                t.name.escape_debug(),
                t.dtype,
                t.shape
            )));
        }
    }
    let want = PREFIX_LEN + json.len() as u64 + header.data_len();
    if source.len != want {
        return Err(Error::Corrupt(format!(
            "source length {} does not match its header ({want} bytes)",
            source.len
        )));
    }
    Ok((json, header))
}

/// The safetensors header a version 1 file decompresses to: its tensors in
/// index order, back to back, and its metadata as stored (sorted).
fn rebuilt_output(index: &Index) -> (Vec<u8>, st::Header) {
    let mut at = 0;
    let tensors = index
        .tensors
        .iter()
        .map(|t| {
            let begin = at;
            at += t.original_bytes();
            st::TensorInfo {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                begin,
                end: at,
            }
        })
        .collect();
    let header = st::Header {
        metadata: index.metadata.clone(),
        tensors,
    };
    (header.to_json(), header)
}

/// `len` bytes at `offset` of the container, which must hold them.
fn read_range(
    storage: &Storage,
    offset: u64,
    len: usize,
    what: &str,
    file_len: u64,
) -> Result<Vec<u8>> {
    let end = offset.checked_add(len as u64);
    if end.is_none_or(|end| end > file_len) {
        return Err(Error::Truncated {
            what: what.to_string(),
            start: offset,
            end: end.unwrap_or(u64::MAX),
            len: file_len,
        });
    }
    match storage {
        Storage::File(f) => f.read_vec(offset, len, what),
        Storage::Buffer(b) => Ok(b[offset as usize..offset as usize + len].to_vec()),
    }
}

/// The bytes of `s`, after checking that they lie in the file and match the
/// stored CRC-32.
fn checked_section(storage: &Storage, file_len: u64, s: &Section, what: &str) -> Result<Vec<u8>> {
    let Ok(len) = usize::try_from(s.len) else {
        return Err(Error::Unsupported(format!(
            "{what}: {} bytes is too large for this machine",
            s.len
        )));
    };
    let data = read_range(storage, s.offset, len, what, file_len)?;
    let got = crc32fast::hash(&data);
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
