//! zipserv-format: lossless compression of BF16 LLM weights into a tile
//! format that GPU kernels read directly. This crate needs no CUDA: it holds
//! the CPU codec ([`codec`]), the `.zsv` container ([`container`]) and the
//! safetensors conversions; `zipserv-gpu` uploads and runs what it makes.

pub mod codec;
pub mod container;
pub mod error;
pub mod rng;
pub mod synth;

pub use codec::CompressedMatrix;
pub use error::{Error, Result};
