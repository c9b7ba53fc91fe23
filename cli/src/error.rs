//! What a `zipserv` command can fail with.

/// A command's error: from the format crate, from the GPU crate, or a
/// command line that makes no sense. `main` prints it as `error: ...` and
/// exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Format(#[from] zipserv_format::Error),
    #[error(transparent)]
    Gpu(#[from] zipserv_gpu::Error),
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;
