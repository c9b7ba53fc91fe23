//! zipserv-gpu: the GPU side of zipserv. Uploads compressed matrices made by
//! `zipserv-format`, runs the Rust-written kernels embedded as PTX (bit-exact
//! decompression, fused decode + GEMM) and, as the baselines, cuBLAS and
//! cuBLASLt.
//!
//! Layers, bottom up: [`driver`] (the CUDA driver library, loaded at run
//! time), [`device`] (context, module and kernel handles, stream),
//! [`weights`] (compressed matrices in device memory), [`kernels`] (checked
//! launches; the Hopper ZipGEMM's in [`zipgemm_sm90`]), [`cublas`] and
//! [`cublaslt`].
//!
//! [`Gpu::new`] retains the device's *primary* context, the one cuBLAS,
//! PyTorch and cudarc use by default, so buffers and streams of those
//! libraries work here: the `_raw` entry points ([`zipgemm_raw`],
//! [`ZipGemm::run_raw`], [`decompress_raw`]) take their device pointers and
//! `CUstream`s.
//!
//! Compress a matrix, upload it, and multiply (on a machine without a GPU
//! this prints why and stops):
//!
//! ```
//! use cust::memory::{CopyDestination, DeviceBuffer};
//! use half::bf16;
//! use zipserv_format::CompressedMatrix;
//! use zipserv_gpu::{DeviceWeights, GemmOutput, Gpu, ZipGemm};
//!
//! let gpu = match Gpu::new(0) {
//!     Ok(gpu) => gpu,
//!     Err(e) if e.is_no_gpu() => {
//!         println!("skipped: {e}");
//!         return Ok(());
//!     }
//!     Err(e) => return Err(e),
//! };
//! let (m, k, n) = (256, 512, 4);
//! let w: Vec<bf16> = (0..m * k).map(|i| bf16::from_f32(((i % 13) as f32 - 6.0) / 64.0)).collect();
//! let x: Vec<bf16> = (0..n * k).map(|i| bf16::from_f32(((i % 5) as f32 - 2.0) / 8.0)).collect();
//! let weights = DeviceWeights::upload(&gpu, &CompressedMatrix::encode(&w, m, k)?)?;
//! let d_x = DeviceBuffer::from_slice(&x).map_err(|source| zipserv_gpu::Error::Cuda { call: "upload", source })?;
//! let mut d_y = DeviceBuffer::from_slice(&vec![f32::NAN; n * m]).map_err(|source| zipserv_gpu::Error::Cuda { call: "alloc", source })?;
//!
//! let mut gemm = ZipGemm::new(&gpu);
//! gemm.run(gpu.stream(), &weights, &d_x, n, GemmOutput::F32(&mut d_y))?;
//! gpu.synchronize()?;
//!
//! let mut y = vec![0f32; n * m];
//! d_y.copy_to(&mut y[..]).map_err(|source| zipserv_gpu::Error::Cuda { call: "download", source })?;
//! let want: f32 = (0..k).map(|j| x[j].to_f32() * w[j].to_f32()).sum();
//! assert!((y[0] - want).abs() <= 1e-3 * want.abs().max(1.0));
//! # Ok::<(), zipserv_gpu::Error>(())
//! ```

pub mod cublas;
pub mod cublaslt;
mod demo;
pub mod device;
pub mod driver;
pub mod error;
pub mod gemv;
pub mod graph;
pub mod kernels;
pub mod launch;
mod tensor_map;
pub mod weights;
pub mod zipgemm_sm90;
mod zipgemv;

pub use cublas::{BlasOutput, Cublas, CublasStatus};
pub use cublaslt::{CublasLt, LinearPlan, LtAlgorithm};
/// The driver's handle types, for the `_raw` entry points.
pub use cust::sys::{CUdeviceptr, CUstream};
pub use demo::{DemoReport, run_demo_mma};
pub use device::{
    BUILD_COMMIT, DeviceInfo, EmbeddedPtx, GEMM_FETCH_ENV, GEMM_PATH_ENV, Gpu, PTX, PTX_ARCH,
    PTX_IMAGES, WGMMA_BLOCKS_ENV,
};
pub use error::{Error, Result};
pub use gemv::{
    BF16_PATH_ENV, Bf16Path, GEMV_AUTO_MAX_K, GEMV_AUTO_MAX_ROWS, GEMV_MAX_N, bf16_gemv,
    bf16_gemv_raw, gemv_unsupported,
};
pub use graph::Graph;
pub use kernels::{
    CompressedPath, Fetch, GemmOptions, GemmOutput, GemmPath, GemmWorkspace, LARGE_MATRIX_ELEMENTS,
    OutputType, SplitK, WGMMA_MIN_N, ZIPGEMV_AUTO_MAX_N, ZipGemm, compressed_path, decompress,
    decompress_raw, gemv_auto, zipgemm, zipgemm_raw, zipgemm_with,
};
pub use launch::{Kernel, LaunchOrder};
pub use weights::{DeviceWeights, Sections};
pub use zipgemm_sm90::WgmmaBlocks;
pub use zipserv_kernels::zipgemv::zipgemv_unsupported;
