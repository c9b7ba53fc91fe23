//! What `zipserv inspect` reports about a compressed matrix.

use half::bf16;

use super::encode::exponent_histogram;
use super::matrix::CompressedMatrix;

/// Size and coverage figures of one compressed matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixStats {
    pub rows: usize,
    pub cols: usize,
    pub base: u8,
    pub exceptions: usize,
    /// Share of weights whose exponent lies in the window.
    pub coverage: f64,
    /// Compressed bits per weight, every section counted.
    pub bits_per_weight: f64,
    /// Original bytes / compressed bytes.
    pub ratio: f64,
}

impl CompressedMatrix {
    pub fn stats(&self) -> MatrixStats {
        let weights = (self.rows() * self.cols()) as f64;
        let exceptions = self.parts.exceptions.len();
        let bytes = self.compressed_bytes() as f64;
        MatrixStats {
            rows: self.rows(),
            cols: self.cols(),
            base: self.base(),
            exceptions,
            coverage: 1.0 - exceptions as f64 / weights,
            bits_per_weight: 8.0 * bytes / weights,
            ratio: self.original_bytes() as f64 / bytes,
        }
    }
}

/// Shannon entropy of the exponent field in bits: `8 + H` bits per weight is
/// the bound for any code that keeps sign+mantissa raw and codes exponents
/// independently, so `16 / (8 + H)` bounds such a format's ratio.
pub fn exponent_entropy_bits(weights: &[bf16]) -> f64 {
    histogram_entropy_bits(&exponent_histogram(weights))
}

/// Shannon entropy in bits of the distribution a histogram counts (0 for
/// an empty one).
pub fn histogram_entropy_bits(histogram: &[u64; 256]) -> f64 {
    let n: u64 = histogram.iter().sum();
    if n == 0 {
        return 0.0;
    }
    histogram
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64 / n as f64)
        .map(|p| -p * p.log2())
        .sum()
}
