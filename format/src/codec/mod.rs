//! The CPU codec: BF16 matrix ⇄ [`CompressedMatrix`] (docs/FORMAT.md).
//!
//! The encoder shuffles weights into the lane order the GPU consumes; the
//! decoder runs the same pair-decode functions as the kernels
//! (`zipserv_kernels::decode`) and scatters the pairs back to row-major.

mod decode;
mod encode;
mod layout;
mod matrix;
mod stack;
mod stats;

pub use decode::DECODE_GROUP_BANDS;
pub use encode::{best_window_base, exponent_histogram};
pub(crate) use matrix::tile_count;
pub use matrix::{CompressedMatrix, MatrixParts};
pub use stack::NotStackable;
pub use stats::{MatrixStats, exponent_entropy_bits, histogram_entropy_bits};
