//! Timing with device events: what the GPU spent between two points of a
//! stream, free of host jitter, launch queues and clock skew.

use cust::event::{Event, EventFlags};
use cust::stream::Stream;

use zipserv_gpu::error::{CudaContext, Error, Result};

/// Summary of per-iteration device times, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub median_us: f64,
    pub min_us: f64,
    /// 10th and 90th percentiles (linear interpolation between samples).
    pub p10_us: f64,
    pub p90_us: f64,
    /// How many timed samples (iterations, or batches) these come from.
    pub samples: usize,
}

impl Timing {
    /// Summarises samples in µs; `None` when there are none.
    pub fn from_samples(samples_us: &[f64]) -> Option<Self> {
        if samples_us.is_empty() {
            return None;
        }
        let mut sorted = samples_us.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Self {
            median_us: percentile(&sorted, 0.5),
            min_us: sorted[0],
            p10_us: percentile(&sorted, 0.1),
            p90_us: percentile(&sorted, 0.9),
            samples: sorted.len(),
        })
    }
}

/// The `p`-quantile of non-empty sorted samples, interpolating between the
/// two nearest ranks (so the median of an even count is the middle mean).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let pos = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// How long to warm up and how many iterations to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimingOptions {
    pub warmup: usize,
    pub iters: usize,
    /// How each batch is sent (a CUDA graph unless asked otherwise).
    pub replay: Replay,
}

impl Default for TimingOptions {
    fn default() -> Self {
        Self {
            warmup: 10,
            iters: 100,
            replay: Replay::Graph,
        }
    }
}

/// Times `op` with a pair of device events around each of `iters`
/// iterations, after `warmup` untimed ones. `op(i)` enqueues one iteration
/// on `stream`; `i` counts from 0 through the warm-up and on through the
/// timed iterations, so callers can rotate buffers with `i % copies`.
///
/// Events measure the stream, so what `op` enqueues must go to `stream`.
/// When the host enqueues more slowly than the GPU runs, the gaps count too
/// (see `docs/BENCHMARKING.md`); [`time_op_batched`] times batches instead.
pub fn time_op<F>(stream: &Stream, warmup: usize, iters: usize, op: F) -> Result<Timing>
where
    F: FnMut(usize) -> Result<()>,
{
    time_op_batched(stream, warmup, iters, 1, op)
}

/// As [`time_op`], with events around each of `batches` batches of
/// `batch_len` back-to-back iterations; each sample is the batch's time
/// divided by `batch_len`. Events are recorded only once per batch, which
/// suits operations shorter than the events' ~0.5 µs resolution.
pub fn time_op_batched<F>(
    stream: &Stream,
    warmup: usize,
    batches: usize,
    batch_len: usize,
    op: F,
) -> Result<Timing>
where
    F: FnMut(usize) -> Result<()>,
{
    time_batches(stream, warmup, batches, batch_len, Replay::Launches, op)
}

/// How a timed batch reaches the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replay {
    /// The host enqueues every iteration of every batch. When the host's
    /// cost per call exceeds the GPU's time per call (cuBLAS's
    /// `cublasGemmEx` took 10–16 µs of host time per call on an H200 host,
    /// longer than a 4096 × 4096 decode product), the events time the host.
    Launches,
    /// One batch is captured once as a CUDA graph (`zipserv_gpu::Graph`)
    /// and replayed per sample: the GPU's own time for the batch, as in an
    /// engine that replays its decode step. Iteration indices repeat from
    /// batch to batch (`warmup .. warmup + batch_len`), so a rotation over
    /// `copies` buffers needs `batch_len` a multiple of `copies`.
    #[default]
    Graph,
}

impl Replay {
    /// What a benchmark record says of it.
    pub fn describe(self) -> &'static str {
        match self {
            Replay::Launches => {
                "batches enqueued launch by launch from the host (host time per call counts \
                 where it exceeds the GPU's)"
            }
            Replay::Graph => {
                "each batch replayed as one CUDA graph (GPU time; host time per call excluded)"
            }
        }
    }
}

/// [`time_op_batched`] with the batches sent as `replay` says. With
/// [`Replay::Graph`], `op` must only enqueue (no synchronization, no
/// allocation, no host copies) once warmed up.
pub fn time_batches<F>(
    stream: &Stream,
    warmup: usize,
    batches: usize,
    batch_len: usize,
    replay: Replay,
    mut op: F,
) -> Result<Timing>
where
    F: FnMut(usize) -> Result<()>,
{
    if batches == 0 || batch_len == 0 {
        return Err(Error::Unsupported(format!(
            "timing needs at least one batch of one iteration (got {batches} x {batch_len})"
        )));
    }
    batches
        .checked_mul(batch_len)
        .and_then(|timed| timed.checked_add(warmup))
        .ok_or_else(|| Error::Unsupported("iteration count overflows".into()))?;

    // All events exist before the first launch, so creating them costs the
    // timed region nothing.
    let mut events = Vec::with_capacity(batches);
    for _ in 0..batches {
        let start = Event::new(EventFlags::DEFAULT).cuda("cuEventCreate")?;
        let end = Event::new(EventFlags::DEFAULT).cuda("cuEventCreate")?;
        events.push((start, end));
    }

    for i in 0..warmup {
        op(i)?;
    }
    stream.synchronize().cuda("cuStreamSynchronize")?;

    match replay {
        Replay::Launches => {
            let mut i = warmup;
            for (start, end) in &events {
                start.record(stream).cuda("cuEventRecord")?;
                for _ in 0..batch_len {
                    op(i)?;
                    i += 1;
                }
                end.record(stream).cuda("cuEventRecord")?;
            }
        }
        Replay::Graph => {
            let graph = zipserv_gpu::Graph::capture(stream, || {
                (warmup..warmup + batch_len).try_for_each(&mut op)
            })?;
            // One untimed replay: the first launch of a graph uploads it.
            graph.launch(stream)?;
            for (start, end) in &events {
                start.record(stream).cuda("cuEventRecord")?;
                graph.launch(stream)?;
                end.record(stream).cuda("cuEventRecord")?;
            }
        }
    }
    stream.synchronize().cuda("cuStreamSynchronize")?;

    let mut samples = Vec::with_capacity(batches);
    for (start, end) in &events {
        let ms = end.elapsed_time_f32(start).cuda("cuEventElapsedTime")?;
        samples.push(f64::from(ms) * 1e3 / batch_len as f64);
    }
    Timing::from_samples(&samples).ok_or_else(|| Error::Unsupported("no timing samples".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_samples() {
        let t = Timing::from_samples(&[5.0, 1.0, 4.0, 2.0, 3.0]).unwrap();
        assert_eq!(t.median_us, 3.0);
        assert_eq!(t.min_us, 1.0);
        assert!((t.p10_us - 1.4).abs() < 1e-12);
        assert!((t.p90_us - 4.6).abs() < 1e-12);
        assert_eq!(t.samples, 5);
    }

    #[test]
    fn median_of_even_count_is_middle_mean() {
        let t = Timing::from_samples(&[10.0, 2.0, 4.0, 8.0]).unwrap();
        assert_eq!(t.median_us, 6.0);
    }

    #[test]
    fn single_sample_and_empty() {
        let t = Timing::from_samples(&[7.5]).unwrap();
        assert_eq!(
            (t.median_us, t.min_us, t.p10_us, t.p90_us),
            (7.5, 7.5, 7.5, 7.5)
        );
        assert!(Timing::from_samples(&[]).is_none());
    }
}
