//! Where one `mma.sync` ZipGEMM launch spends its time, block by block: the
//! kernel's timeline (`GemmWorkspace::record_timeline`) for the decode-time
//! products of a Llama-3-8B layer, trained-like weights. Per launch it
//! prints when the blocks started and ended relative to the first start
//! (`%globaltimer`), and each block's own phases in microseconds (its cycle
//! counter, at the clock the start-to-end time implies): its first K loop
//! (the first tile's wait, then the chain of tiles), that segment's output
//! (a direct store, or the split-K partial, the arrival and, for the last
//! block of a unit, the sum), and the rest (further segments). Medians and
//! maxima over blocks; the launch itself timed with events beside, without
//! the timeline.
//!
//!     cargo run --release -p zipserv-benches --example gemm_timeline [N...]

use cust::event::{Event, EventFlags};
use cust::memory::DeviceBuffer;
use half::bf16;
use zipserv_format::CompressedMatrix;
use zipserv_format::synth::trained_like;
use zipserv_gpu::{BlockTimeline, DeviceWeights, GemmOutput, GemmWorkspace, Gpu, zipgemm};

/// The `q`-quantile of `v` (sorted here).
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Median and maximum, formatted.
fn med_max(mut v: Vec<f64>) -> String {
    let med = quantile(&mut v, 0.5);
    let max = quantile(&mut v, 1.0);
    format!("{med:.2} / {max:.2}")
}

fn main() {
    let ns: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("N: a whole number"))
        .collect();
    let ns = if ns.is_empty() {
        vec![1, 8, 16, 32]
    } else {
        ns
    };
    let gpu = Gpu::new(0).expect("a CUDA device");
    println!(
        "{} ({} SMs); µs; blocks' phases as median / max over blocks",
        gpu.info().name,
        gpu.info().multiprocessors
    );
    println!(
        "| M × K | N | blocks | launch (events) | span (timeline) | starts after the first: median / max | ends after the first start: median / max | first K loop | its output | rest | cycles per ns |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (m, k) in [(4096, 4096), (6144, 4096), (28672, 4096), (4096, 14336)] {
        let w = trained_like(m, k, 7).expect("weights");
        let matrix = CompressedMatrix::encode(&w, m, k).expect("encode");
        let dw = DeviceWeights::upload(&gpu, &matrix).expect("upload");
        for &n in &ns {
            let x = DeviceBuffer::from_slice(&vec![bf16::from_f32(0.5); n * k]).expect("upload");
            let mut y = DeviceBuffer::from_slice(&vec![bf16::ZERO; n * m]).expect("upload");
            let mut ws = GemmWorkspace::default();
            let mut run = |ws: &mut GemmWorkspace| {
                zipgemm(
                    &gpu,
                    gpu.stream(),
                    &dw,
                    &x,
                    n,
                    GemmOutput::Bf16(&mut y),
                    None,
                    ws,
                )
                .expect("zipgemm")
            };
            for _ in 0..10 {
                run(&mut ws);
            }
            let (start, end) = (
                Event::new(EventFlags::DEFAULT).expect("event"),
                Event::new(EventFlags::DEFAULT).expect("event"),
            );
            let mut launch = Vec::new();
            for _ in 0..20 {
                start.record(gpu.stream()).expect("record");
                run(&mut ws);
                end.record(gpu.stream()).expect("record");
                gpu.synchronize().expect("sync");
                launch.push(f64::from(end.elapsed_time_f32(&start).expect("elapsed")) * 1e3);
            }
            ws.record_timeline(true);
            run(&mut ws);
            let Some(blocks) = ws.timeline().expect("timeline") else {
                println!("| {m}×{k} | {n} | (the Hopper kernel ran: no timeline) |");
                continue;
            };
            print_row(m, k, n, &blocks, quantile(&mut launch, 0.5));
        }
    }
}

fn print_row(m: usize, k: usize, n: usize, blocks: &[BlockTimeline], launch_us: f64) {
    let first = blocks.iter().map(|b| b.start_ns).min().unwrap_or(0);
    let last = blocks.iter().map(|b| b.end_ns).max().unwrap_or(0);
    // Cycles per ns from the longest block (the coarsest clock's error is
    // smallest there).
    let longest = blocks
        .iter()
        .max_by_key(|b| b.end_ns - b.start_ns)
        .expect("a block");
    let per_ns = (longest.end_clock - longest.start_clock) as f64
        / (longest.end_ns - longest.start_ns).max(1) as f64;
    let us = |cycles: u64| cycles as f64 / per_ns / 1e3;
    let starts: Vec<f64> = blocks
        .iter()
        .map(|b| (b.start_ns - first) as f64 / 1e3)
        .collect();
    let ends: Vec<f64> = blocks
        .iter()
        .map(|b| (b.end_ns - first) as f64 / 1e3)
        .collect();
    let k_loop = blocks
        .iter()
        .map(|b| us(b.k_loop_clock - b.start_clock))
        .collect();
    let output = blocks
        .iter()
        .map(|b| us(b.output_clock - b.k_loop_clock))
        .collect();
    let rest = blocks
        .iter()
        .map(|b| us(b.end_clock - b.output_clock))
        .collect();
    println!(
        "| {m}×{k} | {n} | {} | {launch_us:.1} | {:.1} | {} | {} | {} | {} | {} | {per_ns:.2} |",
        blocks.len(),
        (last - first) as f64 / 1e3,
        med_max(starts),
        med_max(ends),
        med_max(k_loop),
        med_max(output),
        med_max(rest),
    );
}
