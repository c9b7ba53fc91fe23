//! `CompressedMatrix::stack_rows` on any matrices the codec can make: one
//! to four parts of fuzzed shapes and bit patterns (every exponent,
//! NaN and Inf included, so exception tables overflow into far exponents),
//! each encoded with its own window or with a fuzzed one. Stacking must
//! either refuse with a reason or give a matrix that decodes to the parts'
//! rows in order, bit for bit; never panic.

#![no_main]

use half::bf16;
use libfuzzer_sys::fuzz_target;
use zipserv_format::CompressedMatrix;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let parts_wanted = 1 + (head & 3) as usize;
    let shared_base = head & 4 != 0;
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = rest.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let Some(&[cols_byte, base_byte]) = take(2) else {
        return;
    };
    // Same columns for most inputs (the interesting path); byte 0 varies them.
    let cols = 1 + cols_byte as usize % 300;
    let base = base_byte % 249;
    let mut parts = Vec::new();
    let mut values = Vec::new();
    for p in 0..parts_wanted {
        let Some(&[rows_byte, col_delta]) = take(2) else {
            return;
        };
        let rows = 1 + rows_byte as usize % 48;
        let cols = if p > 0 && col_delta == 0 {
            cols + 1
        } else {
            cols
        };
        let Some(seed) = take(8) else {
            return;
        };
        let mut state = u64::from_le_bytes(seed.try_into().unwrap()) | 1;
        let weights: Vec<bf16> = (0..rows * cols)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bf16::from_bits(state as u16)
            })
            .collect();
        let m = if shared_base {
            CompressedMatrix::encode_with_base(&weights, rows, cols, base)
        } else {
            CompressedMatrix::encode(&weights, rows, cols)
        };
        let Ok(m) = m else {
            return;
        };
        values.push(weights);
        parts.push(m);
    }
    let refs: Vec<&CompressedMatrix> = parts.iter().collect();
    if let Ok(stacked) = CompressedMatrix::stack_rows(&refs) {
        let want: Vec<u16> = values.iter().flatten().map(|w| w.to_bits()).collect();
        let got: Vec<u16> = stacked.decode().iter().map(|w| w.to_bits()).collect();
        assert_eq!(got, want, "stacked matrix decodes to other values");
        assert_eq!(
            stacked.rows(),
            parts.iter().map(CompressedMatrix::rows).sum::<usize>()
        );
    }
});
