//! The three paths of one benchmark case, in one process on one card:
//! ZipGEMM on the compressed weights, decompress + cuBLAS, and cuBLAS on the
//! BF16 weights. Each path rotates its own weight copies past L2.

use std::collections::HashMap;

use cust::memory::{CopyDestination, DeviceBuffer};
use half::bf16;

use super::record::Row;
use super::rotation::{rotation_copies, upload_rotated};
use super::sweep::Case;
use super::timing::{TimingOptions, time_op_batched};
use zipserv_format::codec::CompressedMatrix;
use zipserv_format::rng::SplitMix64;
use zipserv_gpu::error::{CudaContext, Error, Result};
use zipserv_gpu::{Cublas, DeviceWeights, GemmOutput, GemmWorkspace, Gpu, decompress, zipgemm};

/// Back-to-back launches per timed sample: one event pair per batch keeps
/// event overhead out of kernels that take ~10 µs.
const BATCH: usize = 10;

/// Weights of one layer shape, on the device in every form the paths need.
/// Built once per (M, K) and reused for every N of a sweep.
struct Layer {
    bf16_copies: Vec<DeviceBuffer<bf16>>,
    compressed_copies: Vec<DeviceWeights>,
    decompressed: DeviceBuffer<bf16>,
    ratio: f64,
}

/// Runs benchmark cases for all three paths, caching each layer's weights.
pub struct FullBench<'a> {
    gpu: &'a Gpu,
    blas: &'a Cublas<'a>,
    options: TimingOptions,
    layers: HashMap<(usize, usize), Layer>,
    workspace: GemmWorkspace,
}

impl<'a> FullBench<'a> {
    pub fn new(gpu: &'a Gpu, blas: &'a Cublas<'a>, options: TimingOptions) -> Self {
        Self {
            gpu,
            blas,
            options,
            layers: HashMap::new(),
            workspace: GemmWorkspace::default(),
        }
    }

    /// Times the three paths of `case` (`split_k == 0`: chosen from the
    /// shape), checks ZipGEMM against cuBLAS, and returns the row.
    pub fn run(&mut self, case: &Case) -> Result<Row> {
        let &Case { m, k, n, split_k } = case;
        let gpu = self.gpu;
        if !self.layers.contains_key(&(m, k)) {
            self.layers.clear(); // keep one layer resident at a time
            self.layers.insert((m, k), Layer::new(gpu, m, k)?);
        }
        let Layer {
            bf16_copies,
            compressed_copies,
            decompressed,
            ratio,
        } = self.layers.get_mut(&(m, k)).expect("inserted above");
        let requested = (split_k > 0).then_some(split_k as u32);
        let split = gpu.gemm_split(m, k, n, requested);

        let mut rng = SplitMix64::new(0xA11CE ^ n as u64);
        let x: Vec<bf16> = (0..n * k)
            .map(|_| bf16::from_f32(rng.next_f32_signed()))
            .collect();
        let x = DeviceBuffer::from_slice(&x).cuda("cuMemAlloc")?;
        let mut y_zip = DeviceBuffer::from_slice(&vec![bf16::NAN; n * m]).cuda("cuMemAlloc")?;
        let mut y_ref = DeviceBuffer::from_slice(&vec![bf16::NAN; n * m]).cuda("cuMemAlloc")?;
        let stream = gpu.stream();
        let (warmup, batches) = (
            self.options.warmup,
            self.options.iters.div_ceil(BATCH).max(1),
        );

        let workspace = &mut self.workspace;
        let zip = time_op_batched(stream, warmup, batches, BATCH, |i| {
            let w = &compressed_copies[i % compressed_copies.len()];
            zipgemm(
                gpu,
                stream,
                w,
                &x,
                n,
                GemmOutput::Bf16(&mut y_zip),
                requested,
                workspace,
            )
        })?;

        let blas = self.blas;
        let dec = time_op_batched(stream, warmup, batches, BATCH, |i| {
            decompress(
                gpu,
                stream,
                &compressed_copies[i % compressed_copies.len()],
                decompressed,
            )?;
            // SAFETY: all buffers outlive the timing, which synchronizes.
            unsafe { blas.linear(stream, decompressed, &x, &mut y_ref, m, k, n) }
        })?;

        let cublas = time_op_batched(stream, warmup, batches, BATCH, |i| {
            // SAFETY: all buffers outlive the timing, which synchronizes.
            unsafe {
                blas.linear(
                    stream,
                    &bf16_copies[i % bf16_copies.len()],
                    &x,
                    &mut y_ref,
                    m,
                    k,
                    n,
                )
            }
        })?;

        check_against_cublas(&y_zip, &y_ref, n * m)?;
        Ok(Row {
            m,
            k,
            n,
            split_k: split.slices() as usize,
            zipgemm_us: zip.median_us,
            decompress_cublas_us: dec.median_us,
            cublas_us: cublas.median_us,
            ratio: *ratio,
        })
    }
}

impl Layer {
    fn new(gpu: &Gpu, m: usize, k: usize) -> Result<Self> {
        let weights = weight_like(m, k);
        let matrix = CompressedMatrix::encode(&weights, m, k)?;
        let l2 = gpu.info().l2_bytes;
        // At least two copies, so that one iteration never finds the tail of
        // the previous one's weights in L2.
        let zip_copies = rotation_copies(l2, matrix.compressed_bytes()).max(2);
        let bf16_copies = rotation_copies(l2, 2 * m * k).max(2);
        Ok(Self {
            bf16_copies: upload_rotated(&weights, bf16_copies)?,
            compressed_copies: (0..zip_copies)
                .map(|_| DeviceWeights::upload(gpu, &matrix))
                .collect::<Result<_>>()?,
            decompressed: DeviceBuffer::from_slice(&weights).cuda("cuMemAlloc")?,
            ratio: matrix.original_bytes() as f64 / matrix.compressed_bytes() as f64,
        })
    }
}

/// Trained-weight-like values: a sum of four uniforms (close to a normal
/// distribution) with standard deviation ≈ 0.02, rounded to BF16.
fn weight_like(m: usize, k: usize) -> Vec<bf16> {
    let mut rng = SplitMix64::new(0x3E16 ^ ((m as u64) << 20) ^ k as u64);
    (0..m * k)
        .map(|_| {
            let s: f32 = (0..4).map(|_| rng.next_f32_signed()).sum();
            bf16::from_f32(s * 0.0173)
        })
        .collect()
}

/// ZipGEMM and cuBLAS computed the same product: their results must agree to
/// BF16 rounding.
fn check_against_cublas(
    zip: &DeviceBuffer<bf16>,
    reference: &DeviceBuffer<bf16>,
    len: usize,
) -> Result<()> {
    let mut a = vec![bf16::ZERO; len];
    let mut b = vec![bf16::ZERO; len];
    zip.copy_to(&mut a[..]).cuda("cuMemcpyDtoH")?;
    reference.copy_to(&mut b[..]).cuda("cuMemcpyDtoH")?;
    let (mut e2, mut r2) = (0f64, 0f64);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let (x, y) = (x.to_f64(), y.to_f64());
        if !x.is_finite() {
            return Err(Error::Mismatch(format!("ZipGEMM output {i} is {x}")));
        }
        e2 += (x - y) * (x - y);
        r2 += y * y;
    }
    let rel = (e2 / r2.max(f64::MIN_POSITIVE)).sqrt();
    if rel > 1e-2 {
        return Err(Error::Mismatch(format!(
            "ZipGEMM vs cuBLAS: relative difference {rel:.3e} > 1e-2"
        )));
    }
    Ok(())
}
