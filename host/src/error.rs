//! The one error type of the GPU crate.

use crate::cublas::CublasStatus;
pub use zipserv_format::error::Shape;

/// Everything that can go wrong on the GPU side, with enough structure for
/// callers to react and enough text for users to understand. Errors of the
/// format and codec arrive as [`Error::Format`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CUDA driver library could not be loaded: no NVIDIA driver on this
    /// machine, or one without the entry points zipserv needs.
    #[error("no CUDA driver found: {reason}")]
    NoDriver { reason: String },

    /// A driver is there but offers no usable device.
    #[error("no CUDA device: {reason}")]
    NoDevice { reason: String },

    /// A CUDA driver call failed.
    #[error("CUDA error in {call}: {source}")]
    Cuda {
        call: &'static str,
        #[source]
        source: cust::error::CudaError,
    },

    /// A kernel launch failed (bad configuration, or an earlier
    /// asynchronous error of the context surfacing here).
    #[error("CUDA error launching {kernel}: driver status {code}")]
    Launch { kernel: &'static str, code: i32 },

    /// A raw CUDA driver call (one `cust` does not wrap) failed.
    #[error("CUDA error in {call}: driver status {code}")]
    Driver { call: &'static str, code: i32 },

    /// A result computed on the GPU differs from its CPU reference.
    #[error("GPU result mismatch: {0}")]
    Mismatch(String),

    /// Valid input that this version cannot handle on the GPU.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// Shapes or sizes of a launch do not fit together.
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

    /// cuBLASLt could not be loaded (it ships beside cuBLAS; absent on
    /// CPU-only machines).
    #[error(
        "cuBLASLt unavailable: tried {}; install the CUDA toolkit's cuBLAS (it includes libcublasLt.so) or point ZIPSERV_CUBLASLT at libcublasLt.so",
        .tried.join("; ")
    )]
    CublasLtUnavailable {
        /// Each candidate library with the reason it was rejected.
        tried: Vec<String>,
    },

    /// A cuBLAS or cuBLASLt call returned a status other than success.
    #[error("cuBLAS error in {call}: {status}")]
    Cublas {
        call: &'static str,
        status: CublasStatus,
    },

    /// The compressed data, its file, or the codec.
    #[error(transparent)]
    Format(#[from] zipserv_format::Error),
}

impl Error {
    /// Whether this machine simply has no GPU to run on (no driver, or no
    /// device), as opposed to a GPU that failed.
    pub fn is_no_gpu(&self) -> bool {
        matches!(self, Self::NoDriver { .. } | Self::NoDevice { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach the name of the failing driver call to a `cust` error.
pub trait CudaContext<T> {
    fn cuda(self, call: &'static str) -> Result<T>;
}

impl<T> CudaContext<T> for cust::error::CudaResult<T> {
    fn cuda(self, call: &'static str) -> Result<T> {
        self.map_err(|source| Error::Cuda { call, source })
    }
}
