//! Any bytes given to the safetensors header parser must give a header or
//! an error, never a panic or a huge allocation; a header that parses must
//! list tensors that tile the data exactly, and write back (through
//! `Header::to_json`) to JSON that parses to the same header.
//!
//! The first 8 bytes, when present, give the length of the data after the
//! header (as a file would), so both "known length" and "unknown length"
//! paths are reached.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zipserv_format::st::Header;

fuzz_target!(|data: &[u8]| {
    let (data_len, json) = match data.split_first_chunk::<8>() {
        Some((len, json)) if len[0] & 1 == 1 => (Some(u64::from_le_bytes(*len) >> 1), json),
        _ => (None, data),
    };
    let Ok(header) = Header::parse(json, data_len) else {
        return;
    };
    let mut at = 0;
    for t in &header.tensors {
        assert_eq!(t.begin, at);
        at = t.end;
    }
    if let Some(len) = data_len {
        assert_eq!(at, len);
    }
    let again = Header::parse(&header.to_json(), Some(at)).expect("a written header parses");
    let mut sorted = header.clone();
    sorted.metadata.sort();
    let mut again_sorted = again;
    again_sorted.metadata.sort();
    assert_eq!(again_sorted, sorted);
});
