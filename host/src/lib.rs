//! zipserv-gpu: the GPU side of zipserv. Uploads compressed matrices made by
//! `zipserv-format`, runs the Rust-written kernels embedded as PTX (bit-exact
//! decompression, fused decode + GEMM) and, as the baselines, cuBLAS and
//! cuBLASLt.
//!
//! Layers, bottom up: [`driver`] (the CUDA driver library, loaded at run
//! time), [`device`] (context, module, stream), [`weights`] (compressed
//! matrices in device memory), [`kernels`] (checked launches), [`cublas`]
//! and [`cublaslt`].

pub mod cublas;
pub mod cublaslt;
mod demo;
pub mod device;
pub mod driver;
pub mod error;
pub mod kernels;
pub mod weights;

pub use cublas::{BlasOutput, Cublas, CublasStatus};
pub use cublaslt::{CublasLt, LinearPlan, LtAlgorithm};
pub use demo::{DemoReport, run_demo_mma};
pub use device::{BUILD_COMMIT, DeviceInfo, Gpu, PTX, PTX_ARCH};
pub use error::{Error, Result};
pub use kernels::{GemmOutput, GemmWorkspace, SplitK, decompress, zipgemm};
pub use weights::{DeviceWeights, Sections};
