//! Whole files and model directories in and out of the compressed form:
//! [`compress_file`] / [`decompress_file`] / [`verify_file`] for one
//! safetensors file, and [`compress_dir`] / [`decompress_dir`] /
//! [`verify_dir`] for a Hugging Face model directory.
//!
//! Memory stays bounded by a few tensors whatever the model's size: every
//! tensor is read, converted, written and dropped before the next. The
//! projections an engine stacks into one matrix ([`stack_groups`]) are read
//! once more beforehand, one at a time, for the window base they share.

mod dir;
mod file;
mod groups;
pub mod manifest;
mod plan;

pub use dir::{DirReport, compress_dir, decompress_dir, verify_dir};
pub use file::{
    CompressReport, DecompressReport, TensorDone, VerifyReport, compress_file, decompress_file,
    verify_file,
};
pub use groups::stack_groups;
pub use plan::{CompressOptions, Plan, Values};
