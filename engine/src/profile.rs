//! Where a decode step's time goes: one step launched kernel by kernel with
//! a CUDA event after each launch, the intervals summed by kind (matrix
//! products, attention, norms, ...). The events add a little to each
//! interval, so the parts sum to more than a graph replay of the step; the
//! shares are what this is for.

use cust::event::{Event, EventFlags};
use cust::stream::Stream;

use crate::error::{CudaContext, Result};

/// Milliseconds per kind of kernel in one profiled step, in the order the
/// kinds first ran.
#[derive(Debug, Clone, Default)]
pub struct StepProfile {
    pub parts: Vec<(&'static str, f64)>,
}

impl StepProfile {
    pub fn total_ms(&self) -> f64 {
        self.parts.iter().map(|(_, ms)| ms).sum()
    }

    /// Share of the step spent in `kind` (0 when absent).
    pub fn share(&self, kind: &str) -> f64 {
        let total = self.total_ms();
        let part: f64 = self
            .parts
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, ms)| ms)
            .sum();
        if total > 0.0 { part / total } else { 0.0 }
    }

    /// Adds `ms` to `kind`.
    pub fn add(&mut self, kind: &'static str, ms: f64) {
        match self.parts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, total)) => *total += ms,
            None => self.parts.push((kind, ms)),
        }
    }
}

/// Events recorded on the stream, each closing an interval of one kind.
pub(crate) struct Profiler {
    start: Event,
    marks: Vec<(&'static str, Event)>,
}

impl Profiler {
    pub(crate) fn start(stream: &Stream) -> Result<Self> {
        let start = Event::new(EventFlags::DEFAULT).cuda("cuEventCreate")?;
        start.record(stream).cuda("cuEventRecord")?;
        Ok(Self {
            start,
            marks: Vec::new(),
        })
    }

    /// Closes the interval since the previous event as `kind`.
    pub(crate) fn mark(&mut self, stream: &Stream, kind: &'static str) -> Result<()> {
        let e = Event::new(EventFlags::DEFAULT).cuda("cuEventCreate")?;
        e.record(stream).cuda("cuEventRecord")?;
        self.marks.push((kind, e));
        Ok(())
    }

    /// The intervals by kind; the stream must have been synchronized.
    pub(crate) fn finish(self) -> Result<StepProfile> {
        let mut profile = StepProfile::default();
        let mut previous = &self.start;
        for (kind, e) in &self.marks {
            let ms = e.elapsed_time_f32(previous).cuda("cuEventElapsedTime")?;
            profile.add(kind, f64::from(ms));
            previous = e;
        }
        Ok(profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_add_up_by_kind() {
        let mut p = StepProfile::default();
        p.add("gemm", 3.0);
        p.add("attention", 1.0);
        p.add("gemm", 4.0);
        assert_eq!(p.parts, [("gemm", 7.0), ("attention", 1.0)]);
        assert_eq!(p.total_ms(), 8.0);
        assert_eq!(p.share("gemm"), 7.0 / 8.0);
        assert_eq!(p.share("norm"), 0.0);
    }
}
