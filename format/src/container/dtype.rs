//! Tensor element types, named as safetensors names them.

use safetensors::Dtype;

/// Every dtype this build knows, for parsing names back.
const KNOWN: [Dtype; 22] = [
    Dtype::BOOL,
    Dtype::F4,
    Dtype::F6_E2M3,
    Dtype::F6_E3M2,
    Dtype::U8,
    Dtype::I8,
    Dtype::F8_E5M2,
    Dtype::F8_E4M3,
    Dtype::F8_E8M0,
    Dtype::F8_E4M3FNUZ,
    Dtype::F8_E5M2FNUZ,
    Dtype::I16,
    Dtype::U16,
    Dtype::F16,
    Dtype::BF16,
    Dtype::I32,
    Dtype::U32,
    Dtype::F32,
    Dtype::C64,
    Dtype::F64,
    Dtype::I64,
    Dtype::U64,
];

/// The dtype whose safetensors name is `name` (`"BF16"`, `"F32"`, ...).
pub fn dtype_from_name(name: &str) -> Option<Dtype> {
    KNOWN.iter().copied().find(|d| d.to_string() == name)
}

/// Bytes of `elements` values of `dtype`, or `None` on overflow or when the
/// bits do not fill whole bytes.
pub fn element_bytes(dtype: Dtype, elements: u64) -> Option<u64> {
    let bits = elements.checked_mul(dtype.bitsize() as u64)?;
    bits.is_multiple_of(8).then_some(bits / 8)
}
