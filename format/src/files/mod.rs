//! Files as a careful tool treats them: inputs must be regular files and are
//! read with positioned reads; outputs are written beside their destination
//! under unique temporary names and renamed into place once complete, never
//! over an input, never over a device; interrupted runs leave nothing behind.

mod input;
mod output;
pub mod pending;

pub use input::{FileId, InputFile, file_kind};
pub use output::{AtomicDir, AtomicFile, check_output_dir, check_output_file};
