//! The GPU benchmark harness behind `zipserv bench`: measurement machinery
//! independent of which kernel is timed, and the cases that time ours beside
//! cuBLAS. It lives outside the libraries so that they carry no measurement
//! code.
//!
//! - [`time_op`]: device events around each iteration (or batch), warm-up
//!   first, median and spread in µs;
//! - [`rotation_copies`]: how many buffer sets to rotate so that no
//!   iteration finds its weights in L2 (rotation, not flushing);
//! - [`copy_bandwidth`]: the card's device-to-device copy rate, the ceiling
//!   every memory-bound kernel is judged against;
//! - [`BenchRecord`] / [`Row`]: what a run found, written as JSON plus a
//!   markdown table;
//! - [`Runner`] / [`run_benchmark`]: run [`Case`]s (e.g.
//!   [`llama3_8b_sweep`]) through a caller's closure, one at a time or as a
//!   list, printing a live table and completing each row (best bf16 time,
//!   roofline floors);
//! - [`FullBench`]: ZipGEMM, decompress + cuBLAS, cuBLAS and cuBLASLt for
//!   one case, on trained-like synthetic weights or on [`BenchWeights`] of
//!   a model's own;
//! - [`for_each_matrix`]: a model's 2-D BF16 tensors from its files (all
//!   of the benchmark's file reading);
//! - [`cublas_only_case`]: the cuBLAS baseline alone.
//!
//! See `docs/BENCHMARKING.md` for the method.

mod bandwidth;
mod cublas_case;
mod provenance;
mod record;
mod rotation;
mod runner;
mod sweep;
mod table;
mod timing;
mod weights_file;
mod zipserv_case;

pub use bandwidth::{COPY_BYTES, copy_bandwidth, copy_bandwidth_with, gbps};
pub use cublas_case::cublas_only_case;
pub use provenance::{
    COMMIT_ENV, build_commit, commit, driver_version, parse_nvidia_driver_version, today_utc,
};
pub use record::{BenchRecord, LEGACY_WEIGHTS, Row, floor_us, slug};
pub use rotation::{rotation_copies, upload_rotated};
pub use runner::{Runner, run_benchmark};
pub use sweep::{Case, DECODE_N, LLAMA3_8B_LAYERS, Layer, PREFILL_N, SWEEP_N, llama3_8b_sweep};
pub use table::{live_header, live_line};
pub use timing::{Replay, Timing, TimingOptions, time_batches, time_op, time_op_batched};
pub use weights_file::{FileMatrix, MatrixData, for_each_matrix};
pub use zipserv_case::{BenchWeights, FullBench, LT_ALGORITHMS};
