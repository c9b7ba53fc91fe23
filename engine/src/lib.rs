//! zipserv-engine: runs a Llama-family model (Llama 2/3, SmolLM2, TinyLlama)
//! on one GPU from BF16 weights through cuBLAS or from compressed weights
//! through ZipGEMM, with the same kernels for everything else, so the two
//! runs differ only in how the weights are stored and multiplied.
//!
//! Layers, bottom up: [`config`] (what `config.json` says), [`plan`] (the
//! tensors a config needs), [`source`] (where they come from: a Hugging
//! Face directory, a compressed directory, or drawn at random), [`linear`]
//! (one linear layer and its path choice), [`model`] (every weight on the
//! GPU), [`kv_cache`], [`kernels`] (checked launches of the engine
//! kernels), [`batch`] (how B sequences of different lengths share a
//! launch) and [`generate`] (prefill, decode as a CUDA graph
//! (`zipserv_gpu::Graph`), timings), with [`stop`] (where sequences end).

pub mod batch;
pub mod config;
pub mod error;
pub mod generate;
pub mod kernels;
pub mod kv_cache;
pub mod linear;
pub mod model;
pub mod plan;
pub mod profile;
pub mod rope;
pub mod sampling;
pub mod source;
pub mod stacked;
pub mod stop;
pub mod tokenizer;

pub use config::ModelConfig;
pub use error::{Error, Result};
pub use generate::{Generation, Generator, RunOptions, Timings};
pub use model::{Model, WeightForm};
pub use sampling::Sampling;
pub use source::{Source, TensorSource};
