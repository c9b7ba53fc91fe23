//! The paths of one benchmark case, in one process on one card: ZipGEMM on
//! the compressed weights, decompress + cuBLAS, and the BF16 baselines on
//! the uncompressed weights: cuBLAS, cuBLASLt and (N ≤ 8) the library's
//! BF16 GEMV. Each path rotates its
//! own weight copies past L2.

use cust::memory::{CopyDestination, DeviceBuffer};
use half::bf16;

use super::record::Row;
use super::rotation::{rotation_copies, upload_rotated};
use super::sweep::Case;
use super::timing::{Replay, TimingOptions, time_batches};
use super::weights_file::{FileMatrix, MatrixData};
use zipserv_format::codec::CompressedMatrix;
use zipserv_format::rng::SplitMix64;
use zipserv_format::synth;
use zipserv_gpu::error::{CudaContext, Error, Result, Shape};
use zipserv_gpu::{
    Cublas, CublasLt, DeviceWeights, GemmOutput, GemmWorkspace, Gpu, LtAlgorithm, bf16_gemv,
    decompress, gemv_unsupported, zipgemm,
};

/// Back-to-back launches per timed sample (at least; rounded up to whole
/// rotations of the weight copies): one event pair per batch keeps event
/// overhead out of kernels that take ~10 µs.
const BATCH: usize = 10;

/// cuBLASLt algorithms asked of the heuristics and timed, per case.
pub const LT_ALGORITHMS: usize = 16;

/// The short timing that ranks cuBLASLt's algorithms (the winner is then
/// timed again with the run's full options, so that picking the best of
/// many noisy short timings does not flatter it).
const LT_SCREEN: TimingOptions = TimingOptions {
    warmup: 2,
    iters: 2 * BATCH,
    replay: Replay::Graph,
};

/// Largest relative difference (‖a − b‖ / ‖b‖) accepted between two
/// products of the same bf16 inputs: bf16 rounding of the outputs is
/// about 2⁻⁹ per element.
const AGREEMENT: f64 = 1e-2;

/// One weight matrix in both forms the paths need, and where it came from.
pub struct BenchWeights {
    label: String,
    bf16: Vec<bf16>,
    matrix: CompressedMatrix,
}

impl BenchWeights {
    /// Trained-like synthetic weights of shape `rows × cols`
    /// ([`synth::trained_like`]), seeded from the shape so that every run
    /// of a sweep times the same matrices.
    pub fn trained_like(rows: usize, cols: usize) -> Result<Self> {
        let values = synth::trained_like(rows, cols, synthetic_seed(rows, cols))?;
        Self::from_bf16(synthetic_label(rows, cols), rows, cols, values)
    }

    /// `values` (`rows × cols`, row-major), compressed here.
    pub fn from_bf16(
        label: impl Into<String>,
        rows: usize,
        cols: usize,
        values: Vec<bf16>,
    ) -> Result<Self> {
        let matrix = CompressedMatrix::encode(&values, rows, cols)?;
        Ok(Self {
            label: label.into(),
            bf16: values,
            matrix,
        })
    }

    /// A compressed matrix, decompressed here for the bf16 paths.
    pub fn from_compressed(label: impl Into<String>, matrix: CompressedMatrix) -> Self {
        Self {
            label: label.into(),
            bf16: matrix.decode(),
            matrix,
        }
    }

    /// A tensor read from a model's file, labelled `file:tensor`.
    pub fn from_file(m: FileMatrix) -> Result<Self> {
        let label = m.label();
        match m.data {
            MatrixData::Bf16(values) => Self::from_bf16(label, m.rows, m.cols, values),
            MatrixData::Compressed(matrix) => Ok(Self::from_compressed(label, matrix)),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn rows(&self) -> usize {
        self.matrix.rows()
    }

    pub fn cols(&self) -> usize {
        self.matrix.cols()
    }

    /// bf16 bytes / compressed bytes.
    pub fn ratio(&self) -> f64 {
        self.matrix.original_bytes() as f64 / self.matrix.compressed_bytes() as f64
    }

    /// Share of weights outside the exponent window.
    pub fn exception_rate(&self) -> f64 {
        let stats = self.matrix.stats();
        stats.exceptions as f64 / (stats.rows * stats.cols) as f64
    }
}

/// The seed of [`BenchWeights::trained_like`] for a shape.
fn synthetic_seed(rows: usize, cols: usize) -> u64 {
    0x3E16 ^ ((rows as u64) << 20) ^ cols as u64
}

/// What [`BenchWeights::trained_like`] labels its weights: how they were
/// made and the seed.
fn synthetic_label(rows: usize, cols: usize) -> String {
    format!(
        "{}; seed {:#x}",
        synth::DESCRIPTION,
        synthetic_seed(rows, cols)
    )
}

/// Weights of one matrix, on the device in every form the paths need.
/// Built once per matrix and reused for every N of a sweep.
struct Layer {
    label: String,
    rows: usize,
    cols: usize,
    bf16_copies: Vec<DeviceBuffer<bf16>>,
    compressed_copies: Vec<DeviceWeights>,
    decompressed: DeviceBuffer<bf16>,
    ratio: f64,
    exception_rate: f64,
}

/// Runs benchmark cases for every path, keeping the last matrix's weights
/// on the device.
pub struct FullBench<'a> {
    gpu: &'a Gpu,
    blas: &'a Cublas<'a>,
    lt: &'a CublasLt<'a>,
    options: TimingOptions,
    layer: Option<Layer>,
    workspace: GemmWorkspace,
}

impl<'a> FullBench<'a> {
    pub fn new(
        gpu: &'a Gpu,
        blas: &'a Cublas<'a>,
        lt: &'a CublasLt<'a>,
        options: TimingOptions,
    ) -> Self {
        Self {
            gpu,
            blas,
            lt,
            options,
            layer: None,
            workspace: GemmWorkspace::default(),
        }
    }

    /// Times `case` on trained-like synthetic weights of its shape
    /// ([`BenchWeights::trained_like`], made once per shape).
    pub fn run(&mut self, case: &Case) -> Result<Row> {
        let label = synthetic_label(case.m, case.k);
        let resident = self
            .layer
            .as_ref()
            .is_some_and(|l| (l.rows, l.cols) == (case.m, case.k) && l.label == label);
        if !resident {
            self.layer = None; // free the old weights before making new ones
            let weights = BenchWeights::trained_like(case.m, case.k)?;
            self.layer = Some(Layer::new(self.gpu, &weights)?);
        }
        self.measure(case)
    }

    /// Times `case` on `weights` (whose shape must be the case's M×K),
    /// uploading them unless they are already resident.
    pub fn run_on(&mut self, weights: &BenchWeights, case: &Case) -> Result<Row> {
        if (weights.rows(), weights.cols()) != (case.m, case.k) {
            return Err(Error::ShapeMismatch {
                what: "benchmark weights (M x K)",
                expected: Shape(vec![case.m, case.k]),
                got: Shape(vec![weights.rows(), weights.cols()]),
            });
        }
        let resident = self
            .layer
            .as_ref()
            .is_some_and(|l| l.label == weights.label && (l.rows, l.cols) == (case.m, case.k));
        if !resident {
            self.layer = None;
            self.layer = Some(Layer::new(self.gpu, weights)?);
        }
        self.measure(case)
    }

    /// Times every path of `case` on the resident layer (`split_k == 0`:
    /// chosen from the shape), checks ZipGEMM and cuBLASLt against cuBLAS,
    /// and returns the row (floors and best bf16 time are filled in by the
    /// runner).
    fn measure(&mut self, case: &Case) -> Result<Row> {
        let &Case { m, k, n, split_k } = case;
        let gpu = self.gpu;
        let layer = self.layer.as_mut().expect("a layer was made resident");
        let requested = (split_k > 0).then_some(split_k as u32);
        let split = gpu.gemm_split(m, k, n, requested);

        let mut rng = SplitMix64::new(0xA11CE ^ n as u64);
        let x: Vec<bf16> = (0..n * k)
            .map(|_| bf16::from_f32(rng.next_f32_signed()))
            .collect();
        let x = DeviceBuffer::from_slice(&x).cuda("cuMemAlloc")?;
        let poisoned = || DeviceBuffer::from_slice(&vec![bf16::NAN; n * m]).cuda("cuMemAlloc");
        let (mut y_zip, mut y_ref, mut y_lt) = (poisoned()?, poisoned()?, poisoned()?);
        let stream = gpu.stream();
        let batches = |options: TimingOptions| options.iters.div_ceil(BATCH).max(1);
        let (warmup, full) = (self.options.warmup, batches(self.options));
        let replay = self.options.replay;
        // A batch covers whole rotations, so a graph of it still cycles
        // every copy (see `Replay::Graph`).
        let batch_for = |copies: usize| BATCH.div_ceil(copies.max(1)) * copies.max(1);

        let workspace = &mut self.workspace;
        let compressed = &layer.compressed_copies;
        let zip_batch = batch_for(compressed.len());
        let zip = time_batches(stream, warmup, full, zip_batch, replay, |i| {
            zipgemm(
                gpu,
                stream,
                &compressed[i % compressed.len()],
                &x,
                n,
                GemmOutput::Bf16(&mut y_zip),
                requested,
                workspace,
            )
        })?;

        let decompressed = &mut layer.decompressed;
        let alone = time_batches(stream, warmup, full, zip_batch, replay, |i| {
            decompress(gpu, stream, &compressed[i % compressed.len()], decompressed)
        })?;

        let blas = self.blas;
        let dec = time_batches(stream, warmup, full, zip_batch, replay, |i| {
            decompress(gpu, stream, &compressed[i % compressed.len()], decompressed)?;
            // SAFETY: all buffers outlive the timing, which synchronizes.
            unsafe { blas.linear(stream, decompressed, &x, &mut y_ref, m, k, n) }
        })?;

        let plain = &layer.bf16_copies;
        let plain_batch = batch_for(plain.len());
        let cublas = time_batches(stream, warmup, full, plain_batch, replay, |i| {
            // SAFETY: all buffers outlive the timing, which synchronizes.
            unsafe { blas.linear(stream, &plain[i % plain.len()], &x, &mut y_ref, m, k, n) }
        })?;

        // cuBLASLt: rank the heuristics' algorithms with a short timing,
        // then time the fastest like the other paths.
        let plan = self.lt.linear_plan(m, k, n)?;
        let algorithms = plan.algorithms(LT_ALGORITHMS)?;
        let mut time_lt = |algorithm: &LtAlgorithm, warmup: usize, batches: usize| {
            time_batches(stream, warmup, batches, plain_batch, replay, |i| {
                // SAFETY: all buffers outlive the timing, which
                // synchronizes; only this stream uses the handle.
                unsafe { plan.linear(stream, algorithm, &plain[i % plain.len()], &x, &mut y_lt) }
            })
        };
        let mut fastest: Option<(usize, f64)> = None;
        for (i, algorithm) in algorithms.iter().enumerate() {
            let t = time_lt(algorithm, LT_SCREEN.warmup, batches(LT_SCREEN))?;
            if fastest.is_none_or(|(_, best)| t.median_us < best) {
                fastest = Some((i, t.median_us));
            }
        }
        let cublaslt_us = match fastest {
            Some((i, _)) => {
                let t = time_lt(&algorithms[i], warmup, full)?;
                check_agreement("cuBLASLt", i, &y_lt, &y_ref, n * m)?;
                t.median_us
            }
            // cuBLASLt has no algorithm for this shape: not measured.
            None => f64::NAN,
        };
        check_agreement("ZipGEMM", 0, &y_zip, &y_ref, n * m)?;

        // The library's BF16 GEMV, where the shape is one it takes (N ≤ 8).
        let bf16_gemv_us = if gemv_unsupported(m, k, n).is_none() {
            let mut y_gemv = poisoned()?;
            let t = time_batches(stream, warmup, full, plain_batch, replay, |i| {
                let w = &plain[i % plain.len()];
                bf16_gemv(gpu, stream, w, m, k, &x, n, GemmOutput::Bf16(&mut y_gemv))
            })?;
            check_agreement("BF16 GEMV", 0, &y_gemv, &y_ref, n * m)?;
            t.median_us
        } else {
            f64::NAN
        };

        let mut row = Row::new(m, k, n, split.slices() as usize, layer.label.clone());
        row.zipgemm_us = zip.median_us;
        row.decompress_cublas_us = dec.median_us;
        row.decompress_us = alone.median_us;
        row.cublas_us = cublas.median_us;
        row.cublaslt_us = cublaslt_us;
        row.cublaslt_algorithms = algorithms.len();
        row.bf16_gemv_us = bf16_gemv_us;
        row.ratio = layer.ratio;
        row.exception_rate = layer.exception_rate;
        Ok(row)
    }
}

impl Layer {
    fn new(gpu: &Gpu, weights: &BenchWeights) -> Result<Self> {
        let matrix = &weights.matrix;
        let (m, k) = (matrix.rows(), matrix.cols());
        let l2 = gpu.info().l2_bytes;
        // At least two copies, so that one iteration never finds the tail of
        // the previous one's weights in L2.
        let zip_copies = rotation_copies(l2, matrix.compressed_bytes()).max(2);
        let bf16_copies = rotation_copies(l2, 2 * m * k).max(2);
        Ok(Self {
            label: weights.label.clone(),
            rows: m,
            cols: k,
            bf16_copies: upload_rotated(&weights.bf16, bf16_copies)?,
            compressed_copies: (0..zip_copies)
                .map(|_| DeviceWeights::upload(gpu, matrix))
                .collect::<Result<_>>()?,
            decompressed: DeviceBuffer::from_slice(&weights.bf16).cuda("cuMemAlloc")?,
            ratio: weights.ratio(),
            exception_rate: weights.exception_rate(),
        })
    }
}

/// `path` (ZipGEMM, or cuBLASLt with its `algorithm`-th heuristic) and
/// cuBLAS computed the same product: their results must agree to bf16
/// rounding, and every output must have been written (the buffers start
/// as NaN).
fn check_agreement(
    path: &str,
    algorithm: usize,
    got: &DeviceBuffer<bf16>,
    reference: &DeviceBuffer<bf16>,
    len: usize,
) -> Result<()> {
    let mut a = vec![bf16::ZERO; len];
    let mut b = vec![bf16::ZERO; len];
    got.copy_to(&mut a[..]).cuda("cuMemcpyDtoH")?;
    reference.copy_to(&mut b[..]).cuda("cuMemcpyDtoH")?;
    let which = if path == "cuBLASLt" {
        format!("{path} (algorithm {algorithm})")
    } else {
        path.to_string()
    };
    let rel = relative_difference(&a, &b).map_err(|i| {
        Error::Mismatch(format!("{which} output {i} is {} (cuBLAS {})", a[i], b[i]))
    })?;
    if rel > AGREEMENT {
        return Err(Error::Mismatch(format!(
            "{which} vs cuBLAS: relative difference {rel:.3e} > {AGREEMENT:.0e}"
        )));
    }
    Ok(())
}

/// ‖a − b‖ / ‖b‖, or the index of the first non-finite element of `a`
/// (or of `b`: a reference that is not finite proves nothing).
fn relative_difference(a: &[bf16], b: &[bf16]) -> std::result::Result<f64, usize> {
    let (mut e2, mut r2) = (0f64, 0f64);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let (x, y) = (x.to_f64(), y.to_f64());
        if !x.is_finite() || !y.is_finite() {
            return Err(i);
        }
        e2 += (x - y) * (x - y);
        r2 += y * y;
    }
    Ok((e2 / r2.max(f64::MIN_POSITIVE)).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_in_both_forms() {
        let w = BenchWeights::trained_like(64, 256).unwrap();
        assert_eq!((w.rows(), w.cols()), (64, 256));
        assert!(
            w.label().starts_with("synthetic, trained-like"),
            "{}",
            w.label()
        );
        assert!(w.label().contains("seed 0x"), "{}", w.label());
        assert_eq!(w.matrix.decode(), w.bf16);
        assert!(w.ratio() > 1.3 && w.ratio() < 1.5, "{}", w.ratio());
        assert!(w.exception_rate() > 0.0 && w.exception_rate() < 0.05);
        // The same shape gives the same matrix.
        assert_eq!(BenchWeights::trained_like(64, 256).unwrap().bf16, w.bf16);

        let back = BenchWeights::from_compressed("m.zsv:t", w.matrix.clone());
        assert_eq!(back.bf16, w.bf16);
        assert_eq!(back.label(), "m.zsv:t");
        assert!(BenchWeights::from_bf16("x", 3, 3, vec![bf16::ONE; 8]).is_err());
    }

    #[test]
    fn relative_differences() {
        let one = |v: f32| bf16::from_f32(v);
        let b = [one(1.0), one(2.0), one(-2.0)];
        assert_eq!(relative_difference(&b, &b), Ok(0.0));
        let a = [one(1.0), one(2.0), one(-2.0 + 0.0625)];
        let rel = relative_difference(&a, &b).unwrap();
        assert!((rel - 0.0625 / 3.0).abs() < 1e-9, "{rel}");
        assert_eq!(
            relative_difference(&[one(1.0), bf16::NAN], &[one(1.0); 2]),
            Err(1)
        );
        assert_eq!(relative_difference(&[one(1.0)], &[bf16::INFINITY]), Err(0));
    }
}
