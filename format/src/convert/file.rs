//! One safetensors file ⇄ one `.zsv` file, tensor by tensor, each output
//! written beside its destination and renamed into place only once checked.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use safetensors::Dtype;

use super::groups::shared_bases;
use super::plan::{CompressOptions, Plan, Values};
use crate::codec::CompressedMatrix;
use crate::container::{Encoding, ZsvFile, ZsvWriter};
use crate::error::{Error, Result};
use crate::files::{AtomicFile, FileId};
use crate::st::SafetensorsFile;

/// Reported after each tensor is written.
#[derive(Debug, Clone, Copy)]
pub struct TensorDone<'a> {
    pub name: &'a str,
    /// Bytes of the tensor in the input file.
    pub input_bytes: u64,
    /// Whether it was stored in the tile format.
    pub compressed: bool,
}

/// What [`compress_file`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompressReport {
    pub tensors: usize,
    /// Tensors stored in the tile format (the others raw).
    pub compressed: usize,
    /// Tensors rounded to BF16 (`--cast-bf16`).
    pub cast: usize,
    /// Bytes of the input file.
    pub input_len: u64,
    /// Bytes of the safetensors file decompression gives back (the input's
    /// size unless tensors were cast to BF16) and its CRC-32. Without casts
    /// that file is the input, byte for byte.
    pub restored_len: u64,
    pub restored_crc32: u32,
    /// Bytes of the `.zsv` file.
    pub output_len: u64,
}

/// Compresses the safetensors file `input` into a new `.zsv` file at
/// `output`: non-empty 2-D BF16 tensors in the tile format when that makes
/// them smaller, every other tensor as it is. The q/k/v and gate/up
/// projections of a Llama-family block share one window base, so that an
/// engine can stack them ([`super::stack_groups`]). Each compressed tensor is
/// decoded and compared with its input before it is written; the finished
/// file is read back (every checksum) before it is renamed into place.
pub fn compress_file(
    input: &Path,
    output: &Path,
    options: CompressOptions,
    on_tensor: impl FnMut(&TensorDone),
) -> Result<CompressReport> {
    let st = SafetensorsFile::open(input)?;
    let plan = Plan::new(&st, options)?;
    let mut out = AtomicFile::create(output, &[st.id()])?;
    let report = compress_into(&st, &plan, out.file(), output, on_tensor)?;
    check_written(out.temporary_path(), &plan)?;
    out.commit()?;
    Ok(report)
}

/// Writes the `.zsv` form of `st` (as `plan`, made from it, says) to
/// `file` (`label` names it in errors).
pub(crate) fn compress_into(
    st: &SafetensorsFile,
    plan: &Plan,
    file: &mut File,
    label: &Path,
    mut on_tensor: impl FnMut(&TensorDone),
) -> Result<CompressReport> {
    let mut zsv = ZsvWriter::new(BufWriter::with_capacity(1 << 20, &*file), label)?;
    // A read-only pre-pass over the groups an engine stacks (one tensor in
    // memory at a time, as below); it runs once the output is created, so a
    // refused output is refused before any tensor is read, and an error or
    // interrupt here removes the temporary like one in the loop.
    let bases = shared_bases(st, plan)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&(plan.header_json.len() as u64).to_le_bytes());
    crc.update(&plan.header_json);
    let mut compressed = 0;
    let tensors = st.tensors().iter().zip(&plan.tensors).zip(&plan.cast);
    for (((t, out), &cast), &base) in tensors.zip(&bases) {
        let values = Values::read(st, t, cast)?;
        crc.update(values.bytes());
        let tiles = add_tensor(&mut zsv, &t.name, t.dtype, &t.shape, &values, base)?;
        debug_assert_eq!(values.bytes().len() as u64, out.end - out.begin);
        compressed += usize::from(tiles);
        on_tensor(&TensorDone {
            name: &t.name,
            input_bytes: t.len(),
            compressed: tiles,
        });
    }
    let restored_crc32 = crc.finalize();
    let (mut writer, output_len) =
        zsv.finish(&plan.header_json, plan.output_len(), restored_crc32)?;
    writer.flush().map_err(Error::io(label))?;
    Ok(CompressReport {
        tensors: plan.tensors.len(),
        compressed,
        cast: plan.cast.iter().filter(|&&c| c).count(),
        input_len: st.len(),
        restored_len: plan.output_len(),
        restored_crc32,
        output_len,
    })
}

/// The rows and columns of a tensor of shape `shape` that may go into the
/// tile format: 2-D, not empty, and with tiles that can be smaller than its
/// BF16 bytes. Any other tensor (thin or tiny matrices: tiles pad to 16 ×
/// 128) is stored raw whatever its values; the others are stored raw when
/// their tiles turn out no smaller.
pub(super) fn tile_shape(shape: &[usize]) -> Option<(usize, usize)> {
    let [rows, cols] = *shape else { return None };
    let raw = rows.checked_mul(cols)?.checked_mul(2)?;
    let fits = CompressedMatrix::min_compressed_bytes(rows, cols).is_some_and(|b| b < raw);
    (rows > 0 && cols > 0 && fits).then_some((rows, cols))
}

/// Stores one tensor, BF16 matrices in the tile format with window base
/// `base` when given ([`shared_bases`]), else the encoder's own; returns
/// whether it went into the tile format.
fn add_tensor<W: Write + std::io::Seek>(
    zsv: &mut ZsvWriter<W>,
    name: &str,
    source: Dtype,
    shape: &[usize],
    values: &Values,
    base: Option<u8>,
) -> Result<bool> {
    let bf16 = match values {
        Values::Bf16(v) => v,
        Values::Other(bytes) => {
            zsv.add_raw(name, source, source, shape, bytes)?;
            return Ok(false);
        }
    };
    if let Some((rows, cols)) = tile_shape(shape) {
        let matrix = match base {
            Some(base) => CompressedMatrix::encode_with_base(bf16, rows, cols, base)?,
            None => CompressedMatrix::encode(bf16, rows, cols)?,
        };
        if matrix.compressed_bytes() < matrix.original_bytes() {
            check_round_trip(name, &matrix, bf16)?;
            zsv.add_matrix(name, source, &matrix)?;
            return Ok(true);
        }
    }
    zsv.add_raw(name, Dtype::BF16, source, shape, values.bytes())?;
    Ok(false)
}

/// Decodes `matrix` band by band and compares it bit for bit with what was
/// encoded (no second full-size copy at the peak of compression).
fn check_round_trip(name: &str, matrix: &CompressedMatrix, values: &[half::bf16]) -> Result<()> {
    match matrix.first_mismatch(values)? {
        None => Ok(()),
        Some((i, got)) => Err(Error::Mismatch(format!(
            "tensor `{}`: element {i} decodes to {:#06x}, not {:#06x}; nothing was written \
             (please report this as a bug)",
            name.escape_debug(),
            got.to_bits(),
            values[i].to_bits()
        ))),
    }
}

/// Reads a just-written `.zsv` back: it must open, list the planned output
/// header, and every section must match its checksum.
pub(crate) fn check_written(path: &Path, plan: &Plan) -> Result<()> {
    let written = ZsvFile::open(path)?;
    if written.output_header_json() != plan.header_json.as_slice()
        || written.tensors().len() != plan.tensors.len()
    {
        return Err(Error::Mismatch(format!(
            "{}: the written file does not list the input's tensors",
            path.display()
        )));
    }
    written.check_sections()
}

/// The first byte where `entry` of `zsv` decompresses to something other
/// than `want`, if any. A compressed matrix is compared band by band
/// (`first_mismatch`), not decoded whole beside the original.
fn first_differing_byte(
    zsv: &ZsvFile,
    entry: &crate::container::TensorEntry,
    want: &Values,
) -> Result<Option<usize>> {
    if let (Encoding::Tiles(_), Values::Bf16(w)) = (&entry.encoding, want) {
        let m = zsv.matrix(entry)?;
        if w.len() != m.rows() * m.cols() {
            return Ok(Some(2 * w.len().min(m.rows() * m.cols())));
        }
        return Ok(m.first_mismatch(w)?.map(|(i, got)| {
            // The first differing byte of element i (low byte first).
            let (a, b) = (w[i].to_bits().to_le_bytes(), got.to_bits().to_le_bytes());
            2 * i + usize::from(a[0] == b[0])
        }));
    }
    let got = zsv.tensor_data(entry)?;
    let (a, b) = (want.bytes(), got.bytes());
    Ok(a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then_some(a.len().min(b.len()))))
}

/// What [`decompress_file`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecompressReport {
    pub tensors: usize,
    /// Bytes of the safetensors file written, and its CRC-32.
    pub output_len: u64,
    pub crc32: u32,
}

/// Writes the safetensors file that the `.zsv` file `input` holds to
/// `output`, checked against the length and CRC-32 recorded at compression
/// before it is renamed into place. Stops at the first tensor that fails.
pub fn decompress_file(
    input: &Path,
    output: &Path,
    on_tensor: impl FnMut(&TensorDone),
) -> Result<DecompressReport> {
    let zsv = ZsvFile::open(input)?;
    let inputs: Vec<FileId> = zsv.id().into_iter().collect();
    let mut out = AtomicFile::create(output, &inputs)?;
    let report = decompress_into(&zsv, out.file(), output, on_tensor)?;
    out.commit()?;
    Ok(report)
}

/// Writes the safetensors form of `zsv` to `file` (`label` names it).
pub(crate) fn decompress_into(
    zsv: &ZsvFile,
    file: &mut File,
    label: &Path,
    mut on_tensor: impl FnMut(&TensorDone),
) -> Result<DecompressReport> {
    let mut w = BufWriter::with_capacity(1 << 20, &*file);
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    let mut put = |w: &mut BufWriter<&File>, bytes: &[u8]| -> Result<()> {
        crc.update(bytes);
        len += bytes.len() as u64;
        w.write_all(bytes).map_err(Error::io(label))
    };
    let json = zsv.output_header_json();
    put(&mut w, &(json.len() as u64).to_le_bytes())?;
    put(&mut w, json)?;
    for entry in zsv.tensors() {
        // A compressed matrix is written as it is decoded, a group of row
        // tiles at a time: no whole BF16 copy beside its compressed form.
        match &entry.encoding {
            Encoding::Tiles(_) => zsv
                .matrix(entry)?
                .decode_bands(|rows| put(&mut w, bytemuck::cast_slice(rows)))?,
            Encoding::Raw(_) => put(&mut w, zsv.tensor_data(entry)?.bytes())?,
        }
        on_tensor(&TensorDone {
            name: &entry.name,
            input_bytes: entry.stored_bytes(),
            compressed: matches!(entry.encoding, Encoding::Tiles(_)),
        });
    }
    w.flush().map_err(Error::io(label))?;
    let got = crc.finalize();
    if len != zsv.output_len() {
        return Err(Error::Mismatch(format!(
            "{}: wrote {len} bytes, the header promises {}",
            label.display(),
            zsv.output_len()
        )));
    }
    if let Some(expected) = zsv.output_crc32()
        && expected != got
    {
        return Err(Error::ChecksumMismatch {
            what: format!("decompressed file {}", label.display()),
            expected,
            got,
        });
    }
    Ok(DecompressReport {
        tensors: zsv.tensors().len(),
        output_len: len,
        crc32: got,
    })
}

/// What [`verify_file`] compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub tensors: usize,
    /// Tensors that were rounded to BF16 (compared with the rounding of the
    /// original).
    pub cast: usize,
    /// Whether decompression gives back the original file byte for byte.
    pub identical_file: bool,
}

/// Checks that the `.zsv` file `compressed` gives back `original`: the same
/// header and, tensor by tensor, the same bytes (for tensors rounded to BF16
/// at compression, the rounding of the original's values). Fails at the
/// first difference, naming it.
pub fn verify_file(original: &Path, compressed: &Path) -> Result<VerifyReport> {
    let st = SafetensorsFile::open(original)?;
    let zsv = ZsvFile::open(compressed)?;
    let cast_bf16 = zsv.tensors().iter().any(|t| t.source_dtype != t.dtype);
    let plan = Plan::new(&st, CompressOptions { cast_bf16 })?;
    let differs = |what: String| {
        Error::Mismatch(format!(
            "{} differs from {}: {what}",
            compressed.display(),
            original.display()
        ))
    };
    if zsv.output_header_json() != plan.header_json.as_slice() {
        return Err(differs("the safetensors headers differ".into()));
    }
    for ((t, entry), &cast) in st.tensors().iter().zip(zsv.tensors()).zip(&plan.cast) {
        let want = Values::read(&st, t, cast)?;
        if let Some(i) = first_differing_byte(&zsv, entry, &want)? {
            return Err(differs(format!(
                "tensor `{}` at byte {i}",
                t.name.escape_debug()
            )));
        }
        if entry.source_dtype != t.dtype {
            return Err(differs(format!(
                "tensor `{}` was {}, the original is {}",
                t.name.escape_debug(),
                entry.source_dtype,
                t.dtype
            )));
        }
    }
    let cast = plan.cast.iter().filter(|&&c| c).count();
    Ok(VerifyReport {
        tensors: plan.tensors.len(),
        cast,
        // Same header bytes and same tensor bytes, and an opened safetensors
        // file is exactly its header and its tensors: without casts, the
        // file itself comes back.
        identical_file: cast == 0,
    })
}
