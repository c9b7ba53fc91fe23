//! CPU codec throughput on a weight-like matrix, in bytes of BF16 per second:
//! encode and decode, on one thread and on every core.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::bf16;
use zipserv_format::CompressedMatrix;
use zipserv_format::rng::SplitMix64;

/// A 4096 × 4096 projection, the size of a 7B model's attention matrices.
const ROWS: usize = 4096;
const COLS: usize = 4096;

/// Weights ~ N(0, 0.02) (sum of four uniforms, rescaled), cast to BF16.
fn weight_like(rows: usize, cols: usize) -> Vec<bf16> {
    let mut rng = SplitMix64::new(0x5EED);
    // Var of a uniform on [-1, 1) is 1/3; four of them sum to variance 4/3.
    let scale = 0.02 / (4.0f32 / 3.0).sqrt();
    (0..rows * cols)
        .map(|_| {
            let s: f32 = (0..4).map(|_| rng.next_f32_signed()).sum();
            bf16::from_f32(s * scale)
        })
        .collect()
}

fn codec(c: &mut Criterion) {
    let weights = weight_like(ROWS, COLS);
    let matrix = CompressedMatrix::encode(&weights, ROWS, COLS).unwrap();
    let mut out = vec![bf16::ZERO; ROWS * COLS];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes((2 * ROWS * COLS) as u64));
    group.sample_size(20);
    for threads in [1, cores] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let id = |op: &str| BenchmarkId::new(op, format!("{ROWS}x{COLS}/{threads}-thread"));
        group.bench_function(id("encode"), |b| {
            b.iter(|| pool.install(|| CompressedMatrix::encode(&weights, ROWS, COLS).unwrap()))
        });
        group.bench_function(id("decode"), |b| {
            b.iter(|| pool.install(|| matrix.decode_into(&mut out).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
