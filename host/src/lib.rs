//! zipserv: lossless compression of BF16 LLM weights that GPU kernels read
//! directly.
//!
//! Layers, bottom up: [`gpu`] (CUDA context, embedded kernels, launches,
//! the cuBLAS baseline) and the error type [`Error`]; [`bench`] measures
//! them.

pub mod bench;
pub mod codec;
pub mod container;
pub mod error;
pub mod gpu;
pub mod rng;

pub use codec::CompressedMatrix;
pub use error::{Error, Result};
