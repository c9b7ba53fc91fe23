//! `zipserv decompress`: `.zsv` file → safetensors file, or compressed
//! directory → model directory.

use std::path::Path;

use zipserv_format::convert::{TensorDone, decompress_dir, decompress_file};

use super::progress::{bytes_bar, input_bytes};
use super::{human_bytes, is_dir};
use crate::error::Result;

pub fn run(input: &Path, output: &Path) -> Result<()> {
    let bar = bytes_bar(input_bytes(input), "decompressing");
    let on_tensor = |done: &TensorDone| {
        bar.set_message(done.name.escape_debug().to_string());
        bar.inc(done.input_bytes);
    };
    if is_dir(input) {
        let r = decompress_dir(input, output, |_| {}, on_tensor)?;
        bar.finish_and_clear();
        println!(
            "{}: {} files ({} safetensors, {} tensors; {} identical to the original), {}, every file checked",
            output.display(),
            r.files,
            r.model_files,
            r.tensors,
            r.identical_files,
            human_bytes(r.output_bytes)
        );
    } else {
        let r = decompress_file(input, output, on_tensor)?;
        bar.finish_and_clear();
        println!(
            "{}: {} tensors, {}, checked against the recorded checksum",
            output.display(),
            r.tensors,
            human_bytes(r.output_len)
        );
    }
    Ok(())
}
