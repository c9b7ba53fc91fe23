//! `zipserv decompress`: `.zsv` → safetensors.

use std::path::Path;

use crate::error::Result;
use zipserv_format::container::{ZsvFile, decompress_to_safetensors};

use super::human_bytes;
use super::progress::bytes_bar;

pub fn run(input: &Path, output: &Path) -> Result<()> {
    let zsv = ZsvFile::open(input)?;
    let total: u64 = zsv.tensors().iter().map(|t| t.stored_bytes()).sum();
    let bar = bytes_bar(total, "decompressing");
    decompress_to_safetensors(&zsv, output, |done| {
        bar.set_message(done.name.to_owned());
        bar.inc(done.input_bytes);
    })?;
    bar.finish_and_clear();
    let original: u64 = zsv.tensors().iter().map(|t| t.original_bytes()).sum();
    println!(
        "{}: {} tensors, {} of tensor data",
        output.display(),
        zsv.tensors().len(),
        human_bytes(original)
    );
    Ok(())
}
