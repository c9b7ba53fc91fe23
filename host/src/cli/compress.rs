//! `zipserv compress`: safetensors → `.zsv`.

use std::path::Path;

use zipserv::Result;
use zipserv::container::{CompressOptions, SafetensorsInput};

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
    let input_bytes = model.total_bytes();
    println!(
        "{}: {tensors} tensors ({compressed} compressed), {} of tensor data -> {} ({:.3}x)",
        output.display(),
        human_bytes(input_bytes),
        human_bytes(written),
        input_bytes as f64 / written as f64,
    );
    if cast_bf16 {
        println!("(float tensors were cast to BF16; `zipserv inspect` gives ratios against BF16)");
    }
    Ok(())
}
