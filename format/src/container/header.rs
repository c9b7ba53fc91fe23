//! The fixed 64-byte header at the start of a `.zsv` file.
//!
//! | bytes  | field                                           |
//! |--------|-------------------------------------------------|
//! | 0..8   | magic [`MAGIC`]                                 |
//! | 8..12  | format version, u32 LE ([`FORMAT_VERSION`])     |
//! | 12..16 | flags, u32 LE, zero                             |
//! | 16..24 | index offset, u64 LE                            |
//! | 24..32 | index length in bytes, u64 LE                   |
//! | 32..36 | CRC-32 of the index bytes, u32 LE               |
//! | 36..64 | zero                                            |

use crate::error::{Error, Result};

/// First bytes of every `.zsv` file. The high first byte and the CR LF / ^Z /
/// LF tail catch 7-bit and newline-translating transfers (as PNG's does).
pub const MAGIC: [u8; 8] = *b"\x89ZSV\r\n\x1a\n";
/// The container and tile format described in docs/FORMAT.md, which the
/// writer produces. Version 2 added the safetensors header and checksum of
/// the file decompression writes, and each tensor's source dtype.
pub const FORMAT_VERSION: u32 = 2;
/// Versions this build reads (version 1's tile format is unchanged).
pub const READABLE_VERSIONS: [u32; 2] = [1, 2];
/// Bytes of the header; the first section starts here.
pub const HEADER_LEN: usize = 64;
/// Every section and the index start at a multiple of this many bytes.
pub const SECTION_ALIGN: u64 = 64;
/// Largest index a reader accepts (about 2 million tensors' worth), checked
/// before the index is read.
pub const MAX_INDEX_LEN: u64 = 256 << 20;

/// The decoded header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub index_offset: u64,
    pub index_len: u64,
    pub index_crc: u32,
}

impl Header {
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[16..24].copy_from_slice(&self.index_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.index_len.to_le_bytes());
        b[32..36].copy_from_slice(&self.index_crc.to_le_bytes());
        b
    }

    /// Parses and checks the header of a file of `file_len` bytes whose first
    /// bytes are `bytes`: magic, version, reserved fields, and that the index
    /// lies inside the file and under [`MAX_INDEX_LEN`].
    pub fn parse(bytes: &[u8], file_len: u64) -> Result<Self> {
        let magic_len = bytes.len().min(MAGIC.len());
        if bytes[..magic_len] != MAGIC[..magic_len] {
            return Err(Error::BadMagic {
                found: bytes[..magic_len].to_vec(),
                expected: MAGIC.to_vec(),
            });
        }
        if bytes.len() < HEADER_LEN {
            return Err(Error::Truncated {
                what: "header".into(),
                start: 0,
                end: HEADER_LEN as u64,
                len: file_len,
            });
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        let version = u32_at(8);
        if !READABLE_VERSIONS.contains(&version) {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if u32_at(12) != 0 || bytes[36..HEADER_LEN].iter().any(|&b| b != 0) {
            return Err(Error::Corrupt(
                "header: reserved fields are not zero".into(),
            ));
        }
        let header = Self {
            version,
            index_offset: u64_at(16),
            index_len: u64_at(24),
            index_crc: u32_at(32),
        };
        if header.index_len > MAX_INDEX_LEN {
            return Err(Error::Corrupt(format!(
                "header: index of {} bytes exceeds the {MAX_INDEX_LEN}-byte limit",
                header.index_len
            )));
        }
        if header.index_offset < HEADER_LEN as u64
            || !header.index_offset.is_multiple_of(SECTION_ALIGN)
        {
            return Err(Error::Corrupt(format!(
                "header: index offset {} is not an aligned offset past the header",
                header.index_offset
            )));
        }
        let end = header.index_offset.checked_add(header.index_len);
        if end.is_none_or(|end| end > file_len) {
            return Err(Error::Truncated {
                what: "index".into(),
                start: header.index_offset,
                end: end.unwrap_or(u64::MAX),
                len: file_len,
            });
        }
        Ok(header)
    }
}
