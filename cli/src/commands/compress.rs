//! `zipserv compress`: safetensors file → `.zsv` file, or model directory →
//! compressed directory.

use std::path::Path;

use zipserv_format::convert::{CompressOptions, compress_dir, compress_file};

use super::progress::{bytes_bar, input_bytes};
use super::{human_bytes, is_dir};
use crate::error::Result;

pub fn run(input: &Path, output: &Path, cast_bf16: bool) -> Result<()> {
    let options = CompressOptions { cast_bf16 };
    let bar = bytes_bar(input_bytes(input), "compressing");
    let on_tensor = |done: &zipserv_format::convert::TensorDone| {
        bar.set_message(done.name.escape_debug().to_string());
        bar.inc(done.input_bytes);
    };
    if is_dir(input) {
        let r = compress_dir(input, output, options, |_| {}, on_tensor)?;
        bar.finish_and_clear();
        let cast_note = if r.restored_bytes != r.input_bytes {
            format!(" (as BF16: {})", human_bytes(r.restored_bytes))
        } else {
            String::new()
        };
        println!(
            "{}: {} files ({} safetensors: {} tensors, {} compressed), {}{cast_note} -> {} ({:.3}x)",
            output.display(),
            r.files,
            r.model_files,
            r.tensors,
            r.compressed_tensors,
            human_bytes(r.input_bytes),
            human_bytes(r.output_bytes),
            r.restored_bytes as f64 / r.output_bytes.max(1) as f64
        );
    } else {
        let r = compress_file(input, output, options, on_tensor)?;
        bar.finish_and_clear();
        // The ratio against what decompression gives back: the BF16 form of
        // cast tensors, not their F32 originals.
        let cast_note = if r.cast > 0 {
            format!(
                " ({} cast to BF16: {})",
                r.cast,
                human_bytes(r.restored_len)
            )
        } else {
            String::new()
        };
        println!(
            "{}: {} tensors ({} compressed), {}{cast_note} -> {} ({:.3}x)",
            output.display(),
            r.tensors,
            r.compressed,
            human_bytes(r.input_len),
            human_bytes(r.output_len),
            r.restored_len as f64 / r.output_len.max(1) as f64,
        );
    }
    Ok(())
}
