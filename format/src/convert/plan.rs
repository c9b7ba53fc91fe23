//! What a safetensors file decompresses back to, decided before anything is
//! written: the output header and, per tensor, whether it is rounded to BF16.
//! Compression writes this plan into the `.zsv` file; verification recomputes
//! it from the original and compares.

use half::{bf16, f16};
use rayon::prelude::*;
use safetensors::Dtype;

use crate::container::is_castable;
use crate::error::{Error, Result};
use crate::st::{self, SafetensorsFile, TensorInfo};

/// Choices for compression.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompressOptions {
    /// Round F16/F32/F64 tensors to BF16 (round to nearest even; NaN stays
    /// NaN) instead of refusing them. The `.zsv` file then decompresses to
    /// the BF16 tensors, not the original file.
    pub cast_bf16: bool,
}

/// The safetensors file a `.zsv` made from `input` decompresses to.
pub struct Plan {
    /// Its header JSON: the input's own bytes when nothing is cast.
    pub header_json: Vec<u8>,
    /// Its tensors, in data order (the input's order).
    pub tensors: Vec<TensorInfo>,
    /// Per tensor (same order), whether it is cast to BF16.
    pub cast: Vec<bool>,
}

impl Plan {
    /// Refuses F16/F32/F64 tensors unless `options.cast_bf16`.
    pub fn new(input: &SafetensorsFile, options: CompressOptions) -> Result<Self> {
        let cast: Vec<bool> = input
            .tensors()
            .iter()
            .map(|t| is_castable(t.dtype))
            .collect();
        if !options.cast_bf16
            && let Some(t) = input.tensors().iter().find(|t| is_castable(t.dtype))
        {
            return Err(Error::NotBf16 {
                tensor: t.name.clone(),
                dtype: t.dtype.to_string(),
            });
        }
        if !cast.contains(&true) {
            return Ok(Self {
                header_json: input.header_json().to_vec(),
                tensors: input.tensors().to_vec(),
                cast,
            });
        }
        // Casting changes sizes: a new header with the same metadata and the
        // same tensor order, offsets recomputed.
        let mut at = 0;
        let tensors: Vec<TensorInfo> = input
            .tensors()
            .iter()
            .zip(&cast)
            .map(|(t, &c)| {
                let dtype = if c { Dtype::BF16 } else { t.dtype };
                let len = if c { 2 * t.elements() as u64 } else { t.len() };
                let info = TensorInfo {
                    name: t.name.clone(),
                    dtype,
                    shape: t.shape.clone(),
                    begin: at,
                    end: at + len,
                };
                at += len;
                info
            })
            .collect();
        let header = st::Header {
            metadata: input.header().metadata.clone(),
            tensors,
        };
        Ok(Self {
            header_json: header.to_json(),
            tensors: header.tensors,
            cast,
        })
    }

    /// Bytes of the file this plan describes.
    pub fn output_len(&self) -> u64 {
        st::PREFIX_LEN + self.header_json.len() as u64 + self.tensors.last().map_or(0, |t| t.end)
    }
}

/// A tensor's values as BF16, when it is (or is cast to) BF16.
pub enum Values {
    Bf16(Vec<bf16>),
    /// Any other dtype: stored as it is.
    Other(Vec<u8>),
}

impl Values {
    /// Tensor `t` of `st`, cast to BF16 when `cast`. A BF16 tensor is read
    /// straight into its `Vec<bf16>` (one buffer of its size, not the
    /// bytes and then a converted copy: at compression that was a second
    /// copy of the largest tensor at the peak).
    pub fn read(st: &SafetensorsFile, t: &TensorInfo, cast: bool) -> Result<Self> {
        if t.dtype == Dtype::BF16 {
            let n = usize::try_from(t.len() / 2).map_err(|_| {
                Error::Unsupported(format!("tensor `{}` is too large for this machine", t.name))
            })?;
            let mut v = vec![bf16::ZERO; n];
            // The crate only builds for little-endian targets (lib.rs).
            st.read_into(t, bytemuck::cast_slice_mut(&mut v))?;
            return Ok(Self::Bf16(v));
        }
        Ok(Self::new(t.dtype, st.read(t)?, cast))
    }

    /// `bytes` of a tensor of `dtype` (little-endian, from the file), cast
    /// to BF16 when `cast`.
    pub fn new(dtype: Dtype, bytes: Vec<u8>, cast: bool) -> Self {
        match dtype {
            Dtype::BF16 => Self::Bf16(from_le(&bytes, |b| bf16::from_bits(u16::from_le_bytes(b)))),
            Dtype::F16 if cast => Self::Bf16(from_le(&bytes, |b| {
                bf16::from_f32(f16::from_le_bytes(b).to_f32())
            })),
            Dtype::F32 if cast => {
                Self::Bf16(from_le(&bytes, |b| bf16::from_f32(f32::from_le_bytes(b))))
            }
            Dtype::F64 if cast => {
                Self::Bf16(from_le(&bytes, |b| bf16::from_f64(f64::from_le_bytes(b))))
            }
            _ => Self::Other(bytes),
        }
    }

    /// The bytes as the decompressed file holds them.
    pub fn bytes(&self) -> &[u8] {
        match self {
            // The crate only builds for little-endian targets (lib.rs).
            Self::Bf16(v) => bytemuck::cast_slice(v),
            Self::Other(b) => b,
        }
    }
}

/// Converts little-endian values of `N` bytes each, in parallel.
fn from_le<const N: usize>(data: &[u8], convert: impl Fn([u8; N]) -> bf16 + Sync) -> Vec<bf16> {
    data.par_chunks_exact(N)
        .map(|c| convert(c.try_into().unwrap()))
        .collect()
}
