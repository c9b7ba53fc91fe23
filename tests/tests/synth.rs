//! The benchmark's trained-like weights (`zipserv_format::synth`) compress
//! like the reference model: bits per weight and the share of weights
//! outside the window within a few tenths of a percent of all-MiniLM-L6-v2
//! cast to BF16 (whose figures `tests/tests/minilm.rs` checks against the
//! model itself).

use zipserv_format::CompressedMatrix;
use zipserv_format::synth::{self, OffsetHistogram};

/// A Llama-3-8B `o_proj`-sized matrix.
const SIDE: usize = 4096;

#[test]
fn trained_like_compresses_like_minilm() {
    let weights = synth::trained_like(SIDE, SIDE, 0x5EED).unwrap();
    assert!(weights.iter().all(|w| w.is_finite()));
    let matrix = CompressedMatrix::encode(&weights, SIDE, SIDE).unwrap();
    let stats = matrix.stats();
    let share = stats.exceptions as f64 / (SIDE * SIDE) as f64;
    let (want_bits, want_share) = (
        synth::reference_bits_per_weight(),
        synth::reference_out_of_window_share(),
    );
    let bits_off = stats.bits_per_weight / want_bits - 1.0;
    let share_off = share / want_share - 1.0;
    println!(
        "synth: {SIDE}x{SIDE} trained-like: {:.4} bits/weight (MiniLM {want_bits:.4}, {:+.3}%), \
         {:.4}% out of window (MiniLM {:.4}%, {:+.3}% of it), ratio {:.4}, base {}",
        stats.bits_per_weight,
        100.0 * bits_off,
        100.0 * share,
        100.0 * want_share,
        100.0 * share_off,
        stats.ratio,
        stats.base,
    );
    // The encoder finds the window where the generator put it.
    assert_eq!(stats.base, synth::TRAINED_BASE);
    assert!(bits_off.abs() < 0.002, "bits/weight off by {bits_off:+.4}");
    // One part in 200 of the share: ~3 standard deviations of the sampling
    // noise for 16.8 M weights, about 0.008 percentage points.
    assert!(
        share_off.abs() < 0.005,
        "out-of-window share off by {share_off:+.4}"
    );

    // And the generated exponents follow the table around the base.
    let mut got = OffsetHistogram::new();
    got.add_matrix(&weights, stats.base);
    let trained = OffsetHistogram::trained();
    let total = trained.total() as f64;
    for (offset, count) in trained.entries() {
        let want = count as f64 / total;
        let have = got
            .entries()
            .iter()
            .find(|e| e.0 == offset)
            .map_or(0.0, |e| e.1 as f64 / (SIDE * SIDE) as f64);
        // Five standard deviations of a binomial share, plus a floor for
        // offsets seen a handful of times.
        let tolerance = 5.0 * (want / (SIDE * SIDE) as f64).sqrt() + 1e-6;
        assert!(
            (have - want).abs() < tolerance,
            "offset {offset}: share {have:.3e}, table {want:.3e}"
        );
    }
}
