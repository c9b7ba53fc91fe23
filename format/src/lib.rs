//! zipserv-format: lossless compression of BF16 LLM weights into a tile
//! format that GPU kernels read directly. This crate needs no CUDA: it holds
//! the CPU codec ([`codec`]), the `.zsv` container ([`container`]) and the
//! safetensors conversions; `zipserv-gpu` uploads and runs what it makes.

pub mod codec;
pub mod container;
pub mod convert;
pub mod error;
pub mod files;
pub mod rng;
pub mod st;
pub mod synth;

#[cfg(not(all(unix, target_endian = "little")))]
compile_error!(
    "zipserv-format needs a little-endian Unix target: files hold little-endian values, and \
     inputs are checked with Unix file identities and O_NONBLOCK"
);

pub use codec::CompressedMatrix;
pub use error::{Error, Result};
