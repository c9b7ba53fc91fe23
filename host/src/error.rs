//! The one error type of the library.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in zipserv, with enough structure for callers
/// to react and enough text for users to understand.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable CUDA device: no driver, no device, or the driver refused.
    #[error("no CUDA device: {reason}")]
    NoDevice { reason: String },

    /// A CUDA driver call failed.
    #[error("CUDA error in {call}: {source}")]
    Cuda {
        call: &'static str,
        #[source]
        source: cust::error::CudaError,
    },

    /// A raw CUDA driver call (one `cust` does not wrap) failed.
    #[error("CUDA error in {call}: driver status {code}")]
    Driver { call: &'static str, code: i32 },

    /// A result computed on the GPU differs from its CPU reference.
    #[error("GPU result mismatch: {0}")]
    Mismatch(String),

    /// Compressed data that breaks the format's invariants.
    #[error("corrupt compressed data: {0}")]
    Corrupt(String),

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

    /// cuBLAS could not be loaded (absent on CPU-only machines, or a library
    /// without the entry points we need).
    #[error(
        "cuBLAS unavailable: tried {}; install the CUDA toolkit's cuBLAS or point ZIPSERV_CUBLAS at libcublas.so",
        .tried.join("; ")
    )]
    CublasUnavailable {
        /// Each candidate library with the reason it was rejected.
        tried: Vec<String>,
    },

    /// A cuBLAS call returned a status other than success.
    #[error("cuBLAS error in {call}: {status}")]
    Cublas {
        call: &'static str,
        status: crate::gpu::cublas::CublasStatus,
    },

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

    /// The input is not a valid safetensors file.
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Safetensors { path: PathBuf, reason: String },

    /// The file is not a `.zsv` container at all.
    #[error("not a .zsv file: magic bytes {found:02x?}, expected {expected:02x?}")]
    BadMagic { found: Vec<u8>, expected: Vec<u8> },

    /// A `.zsv` container of a format version this build cannot read.
    #[error("unsupported .zsv format version {found} (this build reads version {supported})")]
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
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
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

/// Attach the name of the failing driver call to a `cust` error.
pub(crate) trait CudaContext<T> {
    fn cuda(self, call: &'static str) -> Result<T>;
}

impl<T> CudaContext<T> for cust::error::CudaResult<T> {
    fn cuda(self, call: &'static str) -> Result<T> {
        self.map_err(|source| Error::Cuda { call, source })
    }
}
