//! Any byte string given to the `.zsv` reader must yield a file or an
//! `Error`, never a panic, an out-of-bounds access or a huge allocation; a
//! file that opens must read (and decode) every tensor the same way.
//!
//! Mutated bytes almost never keep their CRC-32s, which would stop the
//! fuzzer at the checksum checks. So each input is tried twice: as it is,
//! and with its index and section checksums recomputed, which lets
//! mutations reach the index validation, `CompressedMatrix::from_parts` and
//! the decoder.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zipserv_format::container::ZsvFile;
use zipserv_format::container::header::{HEADER_LEN, Header};
use zipserv_format::container::index::{Encoding, Index, Section};

fuzz_target!(|data: &[u8]| {
    read_everything(data.to_vec());
    if let Some(fixed) = with_fixed_checksums(data) {
        read_everything(fixed);
    }
});

fn read_everything(bytes: Vec<u8>) {
    let Ok(zsv) = ZsvFile::from_bytes(bytes, "fuzz input") else {
        return;
    };
    let mut restored = 8 + zsv.output_header_json().len() as u64;
    for entry in zsv.tensors() {
        if let Ok(data) = zsv.tensor_data(entry) {
            assert_eq!(data.bytes().len() as u64, entry.original_bytes());
        }
        restored += entry.original_bytes();
    }
    // The header that decompression writes matches the tensors it lists.
    assert_eq!(restored, zsv.output_len());
}

/// `data` with every checksum the header and index point to recomputed, or
/// `None` when the header or index do not parse far enough for that.
fn with_fixed_checksums(data: &[u8]) -> Option<Vec<u8>> {
    let mut bytes = data.to_vec();
    let header = Header::parse(bytes.get(..HEADER_LEN)?, bytes.len() as u64).ok()?;
    let start = usize::try_from(header.index_offset).ok()?;
    let end = start.checked_add(usize::try_from(header.index_len).ok()?)?;
    // `Index::parse` checks the index's structure, not its CRC.
    let index_bytes = bytes.get(start..end)?;
    let mut index = Index::parse(
        index_bytes,
        header.version,
        header.index_offset,
        bytes.len() as u64,
    )
    .ok()?;
    let crc = |s: &Section| {
        let from = s.offset as usize;
        crc32fast::hash(&data[from..from + s.len as usize])
    };
    if let Some(source) = &mut index.source {
        source.header.crc32 = crc(&source.header);
    }
    for t in &mut index.tensors {
        match &mut t.encoding {
            Encoding::Raw(s) => s.crc32 = crc(s),
            Encoding::Tiles(tiles) => {
                for s in [
                    &mut tiles.tiles,
                    &mut tiles.exception_starts,
                    &mut tiles.exceptions,
                    &mut tiles.far_starts,
                    &mut tiles.far_exponents,
                ] {
                    s.crc32 = crc(s);
                }
            }
        }
    }
    let index_bytes = index.to_bytes();
    if index_bytes.len() != end - start {
        return None;
    }
    bytes[start..end].copy_from_slice(&index_bytes);
    let fixed = Header {
        index_crc: crc32fast::hash(&index_bytes),
        ..header
    };
    bytes[..HEADER_LEN].copy_from_slice(&fixed.to_bytes());
    Some(bytes)
}
