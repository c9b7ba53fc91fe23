//! The one error type of the library.

use std::fmt;

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

    /// Reading or writing a file (or the terminal) failed.
    #[error("I/O error on {what}: {source}")]
    Io {
        /// The file's path, or what else was being read or written.
        what: String,
        #[source]
        source: std::io::Error,
    },
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
