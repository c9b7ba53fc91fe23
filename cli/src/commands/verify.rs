//! `zipserv verify`: does a compressed file or directory give back its
//! original? Reads both, writes nothing.

use std::path::Path;

use zipserv_format::convert::{verify_dir, verify_file};

use super::is_dir;
use crate::error::{CliError, Result};

pub fn run(original: &Path, compressed: &Path) -> Result<()> {
    match (is_dir(original), is_dir(compressed)) {
        (true, true) => {
            let r = verify_dir(original, compressed, |_| {})?;
            println!(
                "verified: {} files ({} safetensors, {} tensors); {} give back their original byte for byte{}",
                r.files,
                r.model_files,
                r.tensors,
                r.identical_files,
                if r.identical_files < r.files {
                    ", the others the BF16 rounding of their tensors (--cast-bf16)"
                } else {
                    ""
                }
            );
        }
        (false, false) => {
            let r = verify_file(original, compressed)?;
            if r.identical_file {
                println!(
                    "verified: {} tensors; decompression gives back {} byte for byte",
                    r.tensors,
                    original.display()
                );
            } else {
                println!(
                    "verified: {} tensors, {} of them the BF16 rounding of the original (--cast-bf16)",
                    r.tensors, r.cast
                );
            }
        }
        _ => {
            return Err(CliError::Usage(
                "give two files or two directories (the original and its compressed form)".into(),
            ));
        }
    }
    Ok(())
}
