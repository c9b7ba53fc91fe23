//! The `.zsv` container: many tensors of a model in one file, BF16 matrices
//! in the zipserv tile format and everything else as stored bytes
//! (docs/FORMAT.md, "Container").
//!
//! Layout: a fixed 64-byte [`header`], the sections of every tensor (each
//! aligned to [`SECTION_ALIGN`] bytes), the safetensors header that
//! decompression gives back, and at the end a binary [`index`] naming every
//! tensor and its sections with a CRC-32 each. Writing streams tensor by
//! tensor and patches the header last; reading checks every size, offset
//! and checksum before it allocates or decodes.

mod dtype;
pub mod header;
pub mod index;
mod read;
mod write;

pub use dtype::{dtype_from_name, element_bytes};
pub use header::READABLE_VERSIONS;
pub use header::{FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_INDEX_LEN, SECTION_ALIGN};
pub use index::{Encoding, MAX_RANK, Section, Source, TensorEntry, TileSections, is_castable};
pub use read::{TensorData, ZsvFile};
pub use write::ZsvWriter;
