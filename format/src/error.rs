//! The one error type of the format crate.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong reading, writing, encoding or decoding
/// compressed weights, with enough structure for callers to react and enough
/// text for users to understand.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Compressed data that breaks the format's invariants.
    #[error("corrupt compressed data: {0}")]
    Corrupt(String),

    /// Something asked for (a tensor, a file) that is not there.
    #[error("{0}")]
    NotFound(String),

    /// Valid input that this version cannot handle.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// Shapes or sizes do not fit together.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        what: &'static str,
        expected: Shape,
        got: Shape,
    },

    /// Data that should be identical is not: a compressed file that does not
    /// give back its original, or a written file that does not read back.
    #[error("{0}")]
    Mismatch(String),

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A floating-point tensor that is not BF16, met without `--cast-bf16`.
    #[error(
        "tensor `{tensor}` is {dtype}, not BF16; pass --cast-bf16 to round it to BF16 \
         (round to nearest even) before compressing"
    )]
    NotBf16 { tensor: String, dtype: String },

    /// An input that is not a regular file (a directory where a file is
    /// expected, a device, a FIFO, a socket).
    #[error("{}: {kind}, not a regular file", path.display())]
    NotRegularFile { path: PathBuf, kind: &'static str },

    /// An output path that cannot be written safely.
    #[error("{}: refusing to write there: {reason}", path.display())]
    BadOutput { path: PathBuf, reason: String },

    /// The output is one of the inputs (the same file through any path).
    #[error("{}: the output is also an input; writing it would destroy the input", path.display())]
    OutputIsInput { path: PathBuf },

    /// A safetensors header that breaks the format, before it is known which
    /// file it came from (see [`Error::Safetensors`]).
    #[error("not a valid safetensors header: {reason}")]
    InvalidSafetensors { reason: String },

    /// The input is not a valid safetensors file.
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Safetensors { path: PathBuf, reason: String },

    /// The file is not a `.zsv` container at all.
    #[error("not a .zsv file: magic bytes {found:02x?}, expected {expected:02x?}")]
    BadMagic { found: Vec<u8>, expected: Vec<u8> },

    /// A `.zsv` container of a format version this build cannot read.
    #[error("unsupported .zsv format version {found} (this build reads versions 1 to {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },

    /// A file ends before the data its header or index points to.
    #[error("truncated file: {what} needs bytes {start}..{end}, but the file has {len}")]
    Truncated {
        what: String,
        start: u64,
        end: u64,
        len: u64,
    },

    /// Stored data whose checksum does not match the index.
    #[error("checksum mismatch in {what}: stored crc32 {expected:#010x}, computed {got:#010x}")]
    ChecksumMismatch {
        what: String,
        expected: u32,
        got: u32,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

/// A shape in an error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape(pub Vec<usize>);

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.0.iter().map(|d| d.to_string()).collect();
        write!(f, "[{}]", dims.join(" x "))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
