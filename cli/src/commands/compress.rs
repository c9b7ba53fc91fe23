//! `zipserv compress`: safetensors → `.zsv`.

use std::path::Path;

use crate::error::Result;
use safetensors::Dtype;
use zipserv_format::container::{CompressOptions, SafetensorsInput};

use super::human_bytes;
use super::progress::bytes_bar;

pub fn run(input: &Path, output: &Path, cast_bf16: bool) -> Result<()> {
    let model = SafetensorsInput::open(input)?;
    let options = CompressOptions { cast_bf16 };
    model.check(options)?;
    let bar = bytes_bar(model.total_bytes(), "compressing");
    let (mut tensors, mut compressed) = (0, 0);
    let written = model.compress_to(output, options, |done| {
        tensors += 1;
        compressed += usize::from(done.compressed);
        bar.set_message(done.name.to_owned());
        bar.inc(done.input_bytes);
    })?;
    bar.finish_and_clear();
    // Tensor data as stored in the file, float tensors counted as BF16.
    let as_bf16: u64 = model
        .tensors()
        .iter()
        .map(|t| match t.dtype {
            Dtype::F16 | Dtype::F32 | Dtype::F64 if cast_bf16 => 2 * t.elements() as u64,
            _ => t.bytes,
        })
        .sum();
    let cast_note = if as_bf16 == model.total_bytes() {
        String::new()
    } else {
        format!(" ({} as BF16)", human_bytes(as_bf16))
    };
    println!(
        "{}: {tensors} tensors ({compressed} compressed), {} of tensor data{cast_note} -> {} \
         ({:.3}x for the whole file)",
        output.display(),
        human_bytes(model.total_bytes()),
        human_bytes(written),
        as_bf16 as f64 / written as f64,
    );
    Ok(())
}
