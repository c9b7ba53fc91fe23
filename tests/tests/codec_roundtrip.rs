//! Bit-exact round trips of the CPU codec.

use half::bf16;
use zipserv_format::CompressedMatrix;
use zipserv_format::rng::{SplitMix64, fresh_seed};

fn round_trip(bits: &[u16], rows: usize, cols: usize) -> CompressedMatrix {
    let weights: &[bf16] = bytemuck::cast_slice(bits);
    let m = CompressedMatrix::encode(weights, rows, cols).unwrap();
    let back = m.decode();
    let back: &[u16] = bytemuck::cast_slice(&back);
    if let Some(i) = (0..bits.len()).find(|&i| back[i] != bits[i]) {
        panic!(
            "{rows}x{cols}: element {i} was {:#06x}, decoded {:#06x}",
            bits[i], back[i]
        );
    }
    // What was encoded must also pass the validation applied to files.
    CompressedMatrix::from_parts(m.parts().clone()).unwrap()
}

#[test]
fn every_bf16_bit_pattern_round_trips() {
    // All 65536 patterns (±0, subnormals, ±Inf, every NaN payload) in one
    // matrix whose shape is not a multiple of the tile.
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    round_trip(&bits, 256, 256);
    let mut shuffled = bits.clone();
    let mut rng = SplitMix64::new(fresh_seed());
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    round_trip(&shuffled[..65535], 5, 13107);
}

#[test]
fn weight_like_matrices_round_trip_at_odd_shapes() {
    let seed = fresh_seed();
    let mut rng = SplitMix64::new(seed);
    for &(rows, cols) in &[
        (1, 1),
        (1, 127),
        (15, 129),
        (16, 128),
        (17, 300),
        (33, 1000),
        (100, 384),
    ] {
        let bits: Vec<u16> = (0..rows * cols)
            .map(|_| bf16::from_f32(rng.next_f32_signed() * 0.05).to_bits())
            .collect();
        let m = round_trip(&bits, rows, cols);
        assert!(
            m.stats().coverage > 0.9,
            "seed {seed}: {rows}x{cols} coverage {}",
            m.stats().coverage
        );
    }
}
