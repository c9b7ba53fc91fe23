//! Synthetic BF16 weights with the exponent statistics of trained ones.
//!
//! What the codec makes of a matrix depends only on its exponents: each
//! weight keeps its sign+mantissa byte, its exponent costs a 3-bit code
//! inside the matrix's window of 8 exponents (`[base, base + 7]`) or an
//! exception entry outside it. So a benchmark whose weights have the
//! exponent distribution of trained weights *around the window base* sees
//! the same compressed size, the same exception share and the same decode
//! work as on a real model, whatever the values' scale.
//!
//! The distribution here was measured on all-MiniLM-L6-v2 cast to BF16 (the
//! project's real-weights reference): for each of its 2-D matrices, every
//! weight's exponent minus that matrix's window base, counted and summed
//! over the matrices (so each matrix weighs by its size). [`trained_like`]
//! draws exponents from that histogram around [`TRAINED_BASE`], with
//! uniformly random sign and mantissa bits. `tests/tests/minilm.rs`
//! recomputes the table from the model and checks it against the one
//! embedded here.
//!
//! Generation is deterministic in the seed alone: the matrix is cut into
//! fixed chunks, each with its own generator seeded from (seed, chunk), so
//! the result does not depend on the number of threads.

use half::bf16;
use rayon::prelude::*;
use zipserv_kernels::format::{MAX_BASE, WINDOW};

use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// The model the embedded statistics come from.
pub const REFERENCE_MODEL: &str = "all-MiniLM-L6-v2 (fp32, rounded to BF16)";

/// One line saying how [`trained_like`] makes weights, for benchmark records.
pub const DESCRIPTION: &str = "synthetic, trained-like: exponents drawn from all-MiniLM-L6-v2's \
    histogram around the window base, random sign and mantissa";

/// Exponent offsets from the window base and how many weights of the
/// reference model had each (zero counts left out), in offset order.
/// Offsets 0..=7 lie in the window; the rest are exceptions.
pub const TRAINED_OFFSETS: &[(i16, u64)] = &[
    (-117, 3),
    (-17, 3),
    (-16, 7),
    (-15, 10),
    (-14, 21),
    (-13, 46),
    (-12, 77),
    (-11, 146),
    (-10, 334),
    (-9, 660),
    (-8, 1311),
    (-7, 2506),
    (-6, 5161),
    (-5, 10306),
    (-4, 20633),
    (-3, 41258),
    (-2, 81970),
    (-1, 163317),
    (0, 326820),
    (1, 652887),
    (2, 1295008),
    (3, 2518819),
    (4, 4549087),
    (5, 6553443),
    (6, 5281528),
    (7, 1138497),
    (8, 37104),
    (9, 989),
    (10, 146),
    (11, 11),
    (12, 3),
    (13, 1),
];

/// The window base that most of the reference model's weights had (19.4 M
/// of its 22.7 M); [`trained_like`] puts its window there, which sets the
/// values' scale: the most common exponent is base + 5, magnitudes of
/// 2⁻⁵ to 2⁻⁴.
pub const TRAINED_BASE: u8 = 117;

/// Weights in the reference model's 2-D matrices.
pub const REFERENCE_WEIGHTS: u64 = 22_682_112;

/// Their compressed bytes, every section counted (`compressed_bytes`).
pub const REFERENCE_COMPRESSED_BYTES: u64 = 32_020_008;

/// The reference model's compressed bits per weight.
pub fn reference_bits_per_weight() -> f64 {
    8.0 * REFERENCE_COMPRESSED_BYTES as f64 / REFERENCE_WEIGHTS as f64
}

/// The reference model's share of weights outside their matrix's window.
pub fn reference_out_of_window_share() -> f64 {
    OffsetHistogram::trained().out_of_window_share()
}

/// Smallest and largest offset of an exponent (0..=255) from a window base
/// (0..=[`MAX_BASE`]).
const OFFSET_MIN: i16 = -(MAX_BASE as i16);
const OFFSET_MAX: i16 = 255;
const OFFSETS: usize = (OFFSET_MAX - OFFSET_MIN + 1) as usize;

/// Weights per independently seeded chunk of [`trained_like`]'s output.
const CHUNK: usize = 1 << 16;

/// How many weights had each exponent offset from their matrix's window
/// base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetHistogram {
    counts: Box<[u64; OFFSETS]>,
}

impl Default for OffsetHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl OffsetHistogram {
    /// No weights counted yet.
    pub fn new() -> Self {
        Self {
            counts: Box::new([0; OFFSETS]),
        }
    }

    /// The embedded histogram of the reference model ([`TRAINED_OFFSETS`]).
    pub fn trained() -> Self {
        Self::from_entries(TRAINED_OFFSETS).expect("the embedded table is in range")
    }

    /// A histogram from `(offset, count)` pairs (repeated offsets add up).
    pub fn from_entries(entries: &[(i16, u64)]) -> Result<Self> {
        let mut h = Self::new();
        for &(offset, count) in entries {
            let slot = Self::slot(offset).ok_or_else(|| {
                Error::Unsupported(format!(
                    "exponent offset {offset} outside {OFFSET_MIN}..={OFFSET_MAX}"
                ))
            })?;
            h.counts[slot] += count;
        }
        Ok(h)
    }

    fn slot(offset: i16) -> Option<usize> {
        (OFFSET_MIN..=OFFSET_MAX)
            .contains(&offset)
            .then(|| (offset - OFFSET_MIN) as usize)
    }

    /// Counts every weight of one matrix whose window base is `base` (the
    /// base `CompressedMatrix::encode` chose for it).
    pub fn add_matrix(&mut self, weights: &[bf16], base: u8) {
        for w in weights {
            let exponent = ((w.to_bits() >> 7) & 0xFF) as i16;
            // exponent - base lies in OFFSET_MIN..=OFFSET_MAX for any u8 base.
            self.counts[(exponent - base as i16 - OFFSET_MIN) as usize] += 1;
        }
    }

    /// `(offset, count)` for every offset with a non-zero count, in offset
    /// order: the form of [`TRAINED_OFFSETS`].
    pub fn entries(&self) -> Vec<(i16, u64)> {
        (OFFSET_MIN..=OFFSET_MAX)
            .zip(self.counts.iter())
            .filter(|&(_, &c)| c > 0)
            .map(|(o, &c)| (o, c))
            .collect()
    }

    /// Weights counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Weights with offsets outside `0..WINDOW`, i.e. exceptions.
    pub fn out_of_window(&self) -> u64 {
        self.entries()
            .iter()
            .filter(|&&(o, _)| !(0..WINDOW as i16).contains(&o))
            .map(|&(_, c)| c)
            .sum()
    }

    /// [`Self::out_of_window`] over [`Self::total`] (NaN when empty).
    pub fn out_of_window_share(&self) -> f64 {
        self.out_of_window() as f64 / self.total() as f64
    }
}

/// Draws weights whose exponents follow a histogram of offsets around a
/// chosen window base.
#[derive(Debug, Clone)]
pub struct Sampler {
    /// Exponent for each histogram entry, in entry order.
    exponents: Vec<u8>,
    /// Running totals of the entries' counts; the last one is the total.
    cumulative: Vec<u64>,
}

impl Sampler {
    /// A sampler for `histogram` with its window at `base`. Offsets that
    /// would put an exponent below 0 or at 255 (Inf/NaN, which trained
    /// weights do not have) are moved to 0 and 254: such weights are
    /// exceptions either way.
    pub fn new(histogram: &OffsetHistogram, base: u8) -> Result<Self> {
        let entries = histogram.entries();
        if entries.is_empty() {
            return Err(Error::Unsupported(
                "cannot sample from an empty exponent histogram".into(),
            ));
        }
        let exponents = entries
            .iter()
            .map(|&(o, _)| (base as i16 + o).clamp(0, 254) as u8)
            .collect();
        let cumulative = entries
            .iter()
            .scan(0u64, |sum, &(_, c)| {
                *sum += c;
                Some(*sum)
            })
            .collect();
        Ok(Self {
            exponents,
            cumulative,
        })
    }

    /// The sampler of [`trained_like`].
    pub fn trained() -> Self {
        Self::new(&OffsetHistogram::trained(), TRAINED_BASE).expect("the embedded table is valid")
    }

    /// One weight from 64 random bits: the low 8 are sign and mantissa, the
    /// high 56 pick the exponent (in proportion to the counts).
    fn weight(&self, bits: u64) -> bf16 {
        let total = *self.cumulative.last().expect("not empty") as u128;
        let pick = (((bits >> 8) as u128 * total) >> 56) as u64;
        let entry = self.cumulative.partition_point(|&c| c <= pick);
        let exponent = u16::from(self.exponents[entry]);
        let sign = (bits as u16 & 0x80) << 8;
        let mantissa = bits as u16 & 0x7F;
        bf16::from_bits(sign | exponent << 7 | mantissa)
    }

    /// A `rows × cols` row-major matrix, the same for the same seed on any
    /// machine and any number of threads.
    pub fn matrix(&self, rows: usize, cols: usize, seed: u64) -> Result<Vec<bf16>> {
        let len = rows
            .checked_mul(cols)
            .ok_or_else(|| Error::Unsupported(format!("{rows} x {cols} weights overflow")))?;
        let mut out = vec![bf16::ZERO; len];
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(chunk, weights)| {
                let mut rng = chunk_rng(seed, chunk as u64);
                for w in weights {
                    *w = self.weight(rng.next_u64());
                }
            });
        Ok(out)
    }
}

/// The generator of one chunk: seeded by a hash of (seed, chunk), so that
/// neighbouring chunks' streams do not overlap.
fn chunk_rng(seed: u64, chunk: u64) -> SplitMix64 {
    let mut mix = SplitMix64::new(seed ^ chunk.wrapping_mul(0xD1B5_4A32_D192_ED03));
    SplitMix64::new(mix.next_u64())
}

/// A `rows × cols` row-major BF16 matrix whose exponents follow the
/// reference model's distribution around the window base (see the module
/// docs), deterministic in `seed`. Errors only when `rows × cols`
/// overflows.
pub fn trained_like(rows: usize, cols: usize, seed: u64) -> Result<Vec<bf16>> {
    Sampler::trained().matrix(rows, cols, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> OffsetHistogram {
        OffsetHistogram::from_entries(&[(-3, 10), (0, 30), (4, 50), (9, 10)]).unwrap()
    }

    #[test]
    fn histogram_counts_offsets_from_the_base() {
        let mut h = OffsetHistogram::new();
        let w = |e: u16| bf16::from_bits(e << 7 | 0x15);
        h.add_matrix(&[w(120), w(120), w(127), w(0), w(255)], 120);
        assert_eq!(h.entries(), [(-120, 1), (0, 2), (7, 1), (135, 1)]);
        assert_eq!(h.total(), 5);
        assert_eq!(h.out_of_window(), 2);
        assert_eq!(OffsetHistogram::from_entries(&h.entries()).unwrap(), h);
        assert!(OffsetHistogram::from_entries(&[(300, 1)]).is_err());
        assert!(OffsetHistogram::new().out_of_window_share().is_nan());
    }

    #[test]
    fn sampler_follows_the_histogram() {
        let sampler = Sampler::new(&toy(), 100).unwrap();
        let w = sampler.matrix(100, 1000, 7).unwrap();
        let mut got = OffsetHistogram::new();
        got.add_matrix(&w, 100);
        let counts: Vec<(i16, u64)> = got.entries();
        assert_eq!(
            counts.iter().map(|&(o, _)| o).collect::<Vec<_>>(),
            [-3, 0, 4, 9]
        );
        for ((_, c), want) in counts.iter().zip([0.1, 0.3, 0.5, 0.1]) {
            let share = *c as f64 / 100_000.0;
            assert!((share - want).abs() < 0.005, "{counts:?}");
        }
        // Signs and mantissas are uniform: half negative, all 128 mantissas.
        let negative = w.iter().filter(|v| v.to_bits() & 0x8000 != 0).count();
        assert!((negative as f64 / 1e5 - 0.5).abs() < 0.01, "{negative}");
        let mut mantissas = [false; 128];
        w.iter()
            .for_each(|v| mantissas[(v.to_bits() & 0x7F) as usize] = true);
        assert!(mantissas.iter().all(|&m| m));
    }

    #[test]
    fn deterministic_in_the_seed_and_chunked() {
        let sampler = Sampler::new(&toy(), 100).unwrap();
        let a = sampler.matrix(3, CHUNK, 1).unwrap();
        assert_eq!(a, sampler.matrix(3, CHUNK, 1).unwrap());
        assert_ne!(a, sampler.matrix(3, CHUNK, 2).unwrap());
        // Chunks differ from one another, and a shorter matrix is a prefix.
        assert_ne!(a[..CHUNK], a[CHUNK..2 * CHUNK]);
        assert_eq!(sampler.matrix(1, CHUNK + 5, 1).unwrap()[..], a[..CHUNK + 5]);
    }

    #[test]
    fn exponents_stay_finite_and_in_range() {
        let h = OffsetHistogram::from_entries(&[(-200, 1), (0, 1), (200, 1)]).unwrap();
        let sampler = Sampler::new(&h, 100).unwrap();
        let w = sampler.matrix(10, 100, 3).unwrap();
        assert!(w.iter().all(|v| v.is_finite()));
        let exps: std::collections::BTreeSet<u16> =
            w.iter().map(|v| (v.to_bits() >> 7) & 0xFF).collect();
        assert_eq!(exps.into_iter().collect::<Vec<_>>(), [0, 100, 254]);
    }

    #[test]
    fn bad_requests_are_errors() {
        assert!(Sampler::new(&OffsetHistogram::new(), 100).is_err());
        assert!(
            Sampler::new(&toy(), 1)
                .unwrap()
                .matrix(usize::MAX, 2, 0)
                .is_err()
        );
        assert!(
            Sampler::new(&toy(), 1)
                .unwrap()
                .matrix(0, 5, 0)
                .unwrap()
                .is_empty()
        );
    }
}
