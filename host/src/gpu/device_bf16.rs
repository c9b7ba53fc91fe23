//! A bf16 that device buffers can hold.
//!
//! `cust`'s `impl_half` feature implements `DeviceCopy` for the `bf16` of
//! `half` 1.x, a different type from the `half` 2 `bf16` this workspace
//! uses, and the orphan rule forbids implementing `cust`'s trait for
//! `half`'s type here. So device-side bf16 data is typed with this
//! transparent wrapper: same bits, same layout, and a host `&[bf16]` becomes
//! a `&[DeviceBf16]` (and back) without copying, through
//! [`bytemuck::TransparentWrapper`]:
//!
//! ```
//! use bytemuck::TransparentWrapper;
//! use half::bf16;
//! use zipserv::gpu::DeviceBf16;
//!
//! let host = [bf16::ONE, bf16::from_f32(-2.5)];
//! let wrapped: &[DeviceBf16] = DeviceBf16::wrap_slice(&host);
//! assert_eq!(DeviceBf16::peel_slice(wrapped), &host);
//! ```

use bytemuck::{Pod, TransparentWrapper, Zeroable};
use half::bf16;

/// One bf16 value as stored in device memory (see the module docs for why
/// this is not `half::bf16` itself).
#[derive(Debug, Default, Clone, Copy, PartialEq, PartialOrd, Pod, Zeroable, TransparentWrapper)]
#[repr(transparent)]
pub struct DeviceBf16(pub bf16);

// SAFETY: a plain 16-bit value with no pointers, references or drop glue, so
// a bitwise copy to and from device memory is a valid value.
unsafe impl cust::memory::DeviceCopy for DeviceBf16 {}

impl From<bf16> for DeviceBf16 {
    fn from(value: bf16) -> Self {
        Self(value)
    }
}

impl From<DeviceBf16> for bf16 {
    fn from(value: DeviceBf16) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_bits_and_layout() {
        assert_eq!(size_of::<DeviceBf16>(), 2);
        assert_eq!(align_of::<DeviceBf16>(), align_of::<bf16>());
        let host: Vec<bf16> = [0x3f80u16, 0xc020, 0x7fc0, 0x0001]
            .into_iter()
            .map(bf16::from_bits)
            .collect();
        let wrapped = DeviceBf16::wrap_slice(&host);
        let bits: &[u16] = bytemuck::cast_slice(wrapped);
        assert_eq!(bits, &[0x3f80, 0xc020, 0x7fc0, 0x0001]);
        assert_eq!(bf16::from(wrapped[1]), host[1]);
    }
}
