//! zipserv-format: lossless compression of BF16 LLM weights into a tile
//! format that GPU kernels read directly. This crate needs no CUDA: it holds
//! the CPU codec ([`codec`]), the `.zsv` container ([`container`]),
//! safetensors files ([`st`]), whole files and model directories in and out
//! of the compressed form ([`convert`]), careful file handling ([`files`])
//! and trained-like synthetic weights ([`synth`]); `zipserv-gpu` uploads and
//! runs what it makes.
//!
//! Compress a tensor and get it back bit for bit:
//!
//! ```
//! use half::bf16;
//! use zipserv_format::CompressedMatrix;
//!
//! // A 64 × 256 weight matrix (trained-like exponents, random mantissas).
//! let weights: Vec<bf16> = zipserv_format::synth::trained_like(64, 256, 7)?;
//! let matrix = CompressedMatrix::encode(&weights, 64, 256)?;
//! println!("{} -> {} bytes", matrix.original_bytes(), matrix.compressed_bytes());
//! assert!(matrix.compressed_bytes() < matrix.original_bytes());
//! let back = matrix.decode();
//! assert!(back.iter().zip(&weights).all(|(a, b)| a.to_bits() == b.to_bits()));
//! # Ok::<(), zipserv_format::Error>(())
//! ```
//!
//! And a whole safetensors file (or, with `compress_dir`, a model
//! directory), written through a temporary file and renamed into place only
//! when complete and checked:
//!
//! ```
//! use zipserv_format::convert::{CompressOptions, compress_file, decompress_file};
//! # let dir = tempfile::tempdir().unwrap();
//! # let model = dir.path().join("model.safetensors");
//! # let w = zipserv_format::synth::trained_like(32, 256, 1)?;
//! # let header = zipserv_format::st::Header {
//! #     metadata: vec![],
//! #     tensors: vec![zipserv_format::st::TensorInfo {
//! #         name: "w".into(), dtype: safetensors::Dtype::BF16, shape: vec![32, 256], begin: 0, end: 2 * 32 * 256,
//! #     }],
//! # }.to_json();
//! # let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
//! # bytes.extend_from_slice(&header);
//! # bytes.extend_from_slice(bytemuck::cast_slice(&w));
//! # std::fs::write(&model, &bytes).unwrap();
//! let packed = dir.path().join("model.zsv");
//! let report = compress_file(&model, &packed, CompressOptions::default(), |_| {})?;
//! assert_eq!(report.compressed, 1);
//! let back = dir.path().join("back.safetensors");
//! decompress_file(&packed, &back, |_| {})?;
//! assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&model).unwrap());
//! # Ok::<(), zipserv_format::Error>(())
//! ```

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

pub use codec::{CompressedMatrix, NotStackable};
pub use error::{Error, Result};
