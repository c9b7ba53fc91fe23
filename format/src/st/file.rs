//! A safetensors file opened for reading tensor by tensor.
//!
//! Nothing is mapped: each tensor is read with a positioned read into a
//! buffer of its own size, so a program that handles one tensor at a time
//! holds one tensor in memory, whatever the file's size.

use std::path::Path;

use super::header::{Header, MAX_HEADER_LEN, PREFIX_LEN, TensorInfo};
use crate::error::{Error, Result};
use crate::files::{FileId, InputFile};

/// An opened safetensors file whose header passed validation.
#[derive(Debug)]
pub struct SafetensorsFile {
    input: InputFile,
    header_json: Vec<u8>,
    header: Header,
}

impl SafetensorsFile {
    /// Opens `path` (a regular file) and validates its header against the
    /// file's length; reads nothing else.
    pub fn open(path: &Path) -> Result<Self> {
        let input = InputFile::open(path)?;
        let in_file = |e: Error| match e {
            Error::InvalidSafetensors { reason } => Error::Safetensors {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        };
        if input.len < PREFIX_LEN {
            return Err(in_file(Error::InvalidSafetensors {
                reason: format!(
                    "{} bytes is too short for the 8-byte header length",
                    input.len
                ),
            }));
        }
        let mut prefix = [0u8; PREFIX_LEN as usize];
        input.read_at(0, &mut prefix, "safetensors header length")?;
        let json_len = u64::from_le_bytes(prefix);
        if json_len > MAX_HEADER_LEN || json_len > input.len - PREFIX_LEN {
            return Err(in_file(Error::InvalidSafetensors {
                reason: format!(
                    "header length {json_len} exceeds the file ({} bytes) or the {MAX_HEADER_LEN}-byte limit",
                    input.len
                ),
            }));
        }
        let header_json = input.read_vec(PREFIX_LEN, json_len as usize, "safetensors header")?;
        let data_len = input.len - PREFIX_LEN - json_len;
        let header = Header::parse(&header_json, Some(data_len)).map_err(in_file)?;
        Ok(Self {
            input,
            header_json,
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.input.path
    }

    pub fn id(&self) -> FileId {
        self.input.id
    }

    /// Bytes of the whole file.
    pub fn len(&self) -> u64 {
        self.input.len
    }

    pub fn is_empty(&self) -> bool {
        self.input.len == 0
    }

    /// The header's JSON exactly as the file holds it.
    pub fn header_json(&self) -> &[u8] {
        &self.header_json
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Tensors in data (file) order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// Bytes of all tensor data.
    pub fn data_len(&self) -> u64 {
        self.header.data_len()
    }

    /// The bytes of one tensor of this file's header, into `out` (exactly
    /// the tensor's length), so a caller can read straight into a typed
    /// buffer without a second copy.
    pub fn read_into(&self, tensor: &TensorInfo, out: &mut [u8]) -> Result<()> {
        if out.len() as u64 != tensor.len() {
            return Err(Error::Unsupported(format!(
                "tensor `{}`: a {}-byte buffer for {} bytes",
                tensor.name.escape_debug(),
                out.len(),
                tensor.len()
            )));
        }
        let start = PREFIX_LEN + self.header_json.len() as u64 + tensor.begin;
        self.input.read_at(
            start,
            out,
            &format!("tensor `{}`", tensor.name.escape_debug()),
        )
    }

    /// The bytes of one tensor of this file's header.
    pub fn read(&self, tensor: &TensorInfo) -> Result<Vec<u8>> {
        let start = PREFIX_LEN + self.header_json.len() as u64 + tensor.begin;
        let len = usize::try_from(tensor.len()).map_err(|_| {
            Error::Unsupported(format!(
                "tensor `{}` is too large for this machine",
                tensor.name
            ))
        })?;
        self.input.read_vec(
            start,
            len,
            &format!("tensor `{}`", tensor.name.escape_debug()),
        )
    }
}
