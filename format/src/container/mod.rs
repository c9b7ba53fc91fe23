//! The `.zsv` container: many tensors of a model in one file, BF16 matrices
//! in the zipserv tile format and everything else as stored bytes
//! (docs/FORMAT.md, "Container").
//!
//! Layout: a fixed 64-byte [`header`], the sections of every tensor (each
//! aligned to [`SECTION_ALIGN`] bytes so they can be mapped and uploaded in
//! place), and at the end a binary [`index`] naming every tensor and its
//! sections with a CRC-32 each. Writing streams tensor by tensor and patches
//! the header last; reading maps the file and checks every size, offset and
//! checksum before it allocates or decodes.

mod dtype;
pub mod header;
pub mod index;
mod read;
mod safetensors_io;
mod write;

pub use dtype::{dtype_from_name, element_bytes};
pub use header::{FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_INDEX_LEN, SECTION_ALIGN};
pub use index::{Encoding, Section, TensorEntry, TileSections};
pub use read::ZsvFile;
pub use safetensors_io::{
    CompressOptions, InputTensor, SafetensorsInput, TensorDone, decompress_to_safetensors,
};
pub use write::ZsvWriter;
