//! safetensors ⇄ `.zsv`: non-empty 2-D BF16 tensors are compressed, every
//! other tensor is stored as it is; decompression writes the same tensors
//! back, bit for bit.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors, View};

use super::index::TensorEntry;
use super::read::ZsvFile;
use super::write::ZsvWriter;
use crate::codec::CompressedMatrix;
use crate::error::{Error, Result};

/// Choices for [`SafetensorsInput::compress_to`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CompressOptions {
    /// Round F16/F32/F64 tensors to BF16 (round to nearest even; NaN stays
    /// NaN) instead of rejecting them.
    pub cast_bf16: bool,
}

/// Reported after each tensor is written.
#[derive(Debug, Clone, Copy)]
pub struct TensorDone<'a> {
    pub name: &'a str,
    /// Bytes of the tensor in the input file.
    pub input_bytes: u64,
    /// Whether it went through the tile codec.
    pub compressed: bool,
}

/// One tensor of a safetensors file.
#[derive(Debug, Clone)]
pub struct InputTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: u64,
}

impl InputTensor {
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A memory-mapped, validated safetensors file.
pub struct SafetensorsInput {
    path: PathBuf,
    map: Mmap,
    tensors: Vec<InputTensor>,
    metadata: Vec<(String, String)>,
}

impl SafetensorsInput {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(Error::io(&path))?;
        // SAFETY: read-only private map; a concurrent writer of the file could
        // change the bytes, which safetensors readers accept as well. All
        // offsets are validated by `SafeTensors::deserialize` below.
        let map = unsafe { Mmap::map(&file) }.map_err(Error::io(&path))?;
        let invalid = |e: safetensors::SafeTensorError| Error::Safetensors {
            path: path.clone(),
            reason: e.to_string(),
        };
        let parsed = SafeTensors::deserialize(&map).map_err(invalid)?;
        let tensors = parsed
            .iter()
            .map(|(name, view)| InputTensor {
                name: name.to_owned(),
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                bytes: view.data().len() as u64,
            })
            .collect();
        let (_, header) = SafeTensors::read_metadata(&map).map_err(invalid)?;
        let mut metadata: Vec<(String, String)> = header
            .metadata()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        metadata.sort();
        Ok(Self {
            path,
            map,
            tensors,
            metadata,
        })
    }

    pub fn tensors(&self) -> &[InputTensor] {
        &self.tensors
    }

    /// Bytes of all tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes).sum()
    }

    /// Rejects float tensors that are not BF16 unless casting is allowed.
    pub fn check(&self, options: CompressOptions) -> Result<()> {
        match self.tensors.iter().find(|t| needs_cast(t.dtype)) {
            Some(t) if !options.cast_bf16 => Err(Error::NotBf16 {
                tensor: t.name.clone(),
                dtype: t.dtype.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Writes every tensor to a new `.zsv` file at `output` (through a
    /// temporary file beside it, so a failure leaves no partial output) and
    /// returns its size in bytes.
    pub fn compress_to(
        &self,
        output: &Path,
        options: CompressOptions,
        mut on_tensor: impl FnMut(&TensorDone),
    ) -> Result<u64> {
        self.check(options)?;
        let parsed = SafeTensors::deserialize(&self.map).map_err(|e| Error::Safetensors {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(output, |tmp| {
            let file = File::create(tmp).map_err(Error::io(tmp))?;
            let mut zsv = ZsvWriter::new(BufWriter::with_capacity(1 << 20, file), output)?;
            zsv.set_metadata(self.metadata.clone());
            // In file order, so the input is read front to back.
            let mut tensors: Vec<_> = parsed.iter().collect();
            tensors.sort_by_key(|(_, view)| view.data().as_ptr() as usize);
            for (name, view) in tensors {
                let compressed =
                    add_tensor(&mut zsv, name, view.dtype(), view.shape(), view.data())?;
                on_tensor(&TensorDone {
                    name,
                    input_bytes: view.data().len() as u64,
                    compressed,
                });
            }
            let (_, len) = zsv.finish()?;
            Ok(len)
        })
    }
}

fn needs_cast(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F16 | Dtype::F32 | Dtype::F64)
}

/// Adds one tensor (cast to BF16 first when it is F16/F32/F64; the caller
/// has checked that casting is allowed). Returns whether it was compressed.
fn add_tensor<W: std::io::Write + std::io::Seek>(
    zsv: &mut ZsvWriter<W>,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    data: &[u8],
) -> Result<bool> {
    let values: Cow<'_, [bf16]> = match dtype {
        Dtype::BF16 => match bytemuck::try_cast_slice(data) {
            Ok(values) => Cow::Borrowed(values),
            Err(_) => Cow::Owned(from_le(data, |b| bf16::from_bits(u16::from_le_bytes(b)))),
        },
        Dtype::F16 => Cow::Owned(from_le(data, |b| {
            bf16::from_f32(f16::from_le_bytes(b).to_f32())
        })),
        Dtype::F32 => Cow::Owned(from_le(data, |b| bf16::from_f32(f32::from_le_bytes(b)))),
        Dtype::F64 => Cow::Owned(from_le(data, |b| bf16::from_f64(f64::from_le_bytes(b)))),
        _ => {
            zsv.add_raw(name, dtype, shape, data)?;
            return Ok(false);
        }
    };
    if let [rows, cols] = *shape
        && rows > 0
        && cols > 0
    {
        let matrix = CompressedMatrix::encode(&values, rows, cols)?;
        zsv.add_matrix(name, &matrix)?;
        Ok(true)
    } else {
        zsv.add_raw(name, Dtype::BF16, shape, bytemuck::cast_slice(&values))?;
        Ok(false)
    }
}

/// Converts little-endian values of `N` bytes each, in parallel.
fn from_le<const N: usize>(data: &[u8], convert: impl Fn([u8; N]) -> bf16 + Sync) -> Vec<bf16> {
    data.par_chunks_exact(N)
        .map(|c| convert(c.try_into().unwrap()))
        .collect()
}

/// Writes a safetensors file with every tensor of `zsv` (BF16 matrices
/// decompressed, the rest as stored) and its metadata, through a temporary
/// file beside `output`.
pub fn decompress_to_safetensors(
    zsv: &ZsvFile,
    output: &Path,
    on_tensor: impl FnMut(&TensorDone),
) -> Result<()> {
    let failure = RefCell::new(None);
    let on_tensor = RefCell::new(on_tensor);
    let views: Vec<(&str, LazyTensor<_>)> = zsv
        .tensors()
        .iter()
        .map(|entry| {
            let view = LazyTensor {
                zsv,
                entry,
                failure: &failure,
                on_tensor: &on_tensor,
            };
            (entry.name.as_str(), view)
        })
        .collect();
    let metadata = (!zsv.metadata().is_empty()).then(|| zsv.metadata().iter().cloned().collect());
    write_atomically(output, |tmp| {
        let written = safetensors::serialize_to_file(views, metadata, tmp);
        if let Some(e) = failure.take() {
            return Err(e);
        }
        written.map_err(|e| Error::Safetensors {
            path: output.to_path_buf(),
            reason: e.to_string(),
        })?;
        // safetensors writes through a private (0600) temporary file; give the
        // result the permissions of an ordinary new file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let readable = std::fs::Permissions::from_mode(0o644);
            std::fs::set_permissions(tmp, readable).map_err(Error::io(tmp))?;
        }
        Ok(())
    })
}

/// A tensor of a `.zsv` file that decodes when safetensors asks for its
/// bytes, so only one decoded tensor is in memory at a time. `View::data`
/// cannot fail, so the first error is parked in `failure` (and zeros are
/// returned) for the caller to report once writing stops.
struct LazyTensor<'a, F> {
    zsv: &'a ZsvFile,
    entry: &'a TensorEntry,
    failure: &'a RefCell<Option<Error>>,
    on_tensor: &'a RefCell<F>,
}

impl<F: FnMut(&TensorDone)> View for LazyTensor<'_, F> {
    fn dtype(&self) -> Dtype {
        self.entry.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.entry.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let len = self.data_len();
        if self.failure.borrow().is_some() {
            return Cow::Owned(vec![0; len]);
        }
        match self.zsv.tensor_data(self.entry) {
            Ok(data) => {
                (self.on_tensor.borrow_mut())(&TensorDone {
                    name: &self.entry.name,
                    input_bytes: self.entry.stored_bytes(),
                    compressed: matches!(self.entry.encoding, super::Encoding::Tiles(_)),
                });
                data
            }
            Err(e) => {
                *self.failure.borrow_mut() = Some(e);
                Cow::Owned(vec![0; len])
            }
        }
    }

    fn data_len(&self) -> usize {
        self.entry.original_bytes() as usize
    }
}

/// Runs `write` on a temporary path beside `output`, then renames it to
/// `output`; on failure the temporary file is removed and `output` is left
/// untouched.
fn write_atomically<T>(output: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let mut tmp = output.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    match write(&tmp) {
        Ok(value) => {
            std::fs::rename(&tmp, output).map_err(Error::io(output))?;
            Ok(value)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
