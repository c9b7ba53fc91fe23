//! safetensors files: the header parsed with every size checked before
//! anything is read, tensors read one at a time, headers written back byte
//! for byte.

mod file;
mod header;

pub use file::SafetensorsFile;
pub use header::{Header, MAX_HEADER_LEN, PREFIX_LEN, TensorInfo};
