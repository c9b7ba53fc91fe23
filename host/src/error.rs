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
