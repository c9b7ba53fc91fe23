//! The one error type of the engine.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `config.json` the engine cannot use, with the field at fault.
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },

    /// A model whose files do not hold what its config says.
    #[error("model {model}: {reason}")]
    Model { model: String, reason: String },

    /// A tensor with another shape than the config implies.
    #[error("model {model}: tensor `{tensor}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        model: String,
        tensor: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    /// Arguments that do not fit together (prompt, batch, lengths, sampling).
    #[error("{0}")]
    Invalid(String),

    /// Valid input that this version cannot run.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// The tokenizer could not be loaded or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// Reading a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The GPU side: driver, kernels, cuBLAS.
    #[error(transparent)]
    Gpu(#[from] zipserv_gpu::Error),

    /// The format side: files, codec.
    #[error(transparent)]
    Format(#[from] zipserv_format::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach the failing driver call to a `cust` error.
pub(crate) trait CudaContext<T> {
    fn cuda(self, call: &'static str) -> Result<T>;
}

impl<T> CudaContext<T> for cust::error::CudaResult<T> {
    fn cuda(self, call: &'static str) -> Result<T> {
        self.map_err(|source| Error::Gpu(zipserv_gpu::Error::Cuda { call, source }))
    }
}

/// Waits for all work of the current context, on every stream. Uploads
/// (`DeviceBuffer::from_slice`, `copy_from`, `zeroed`) run on the legacy
/// default stream, which the GPU's non-blocking stream is not ordered
/// after: a kernel that reads what was just uploaded must come after this.
pub(crate) fn device_sync() -> Result<()> {
    cust::context::CurrentContext::synchronize().cuda("cuCtxSynchronize")
}
