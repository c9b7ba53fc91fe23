//! CUDA graphs: work captured once from a stream, then replayed, so a
//! sequence of launches costs one launch instead of one each (the engine's
//! decode step; the benchmark's batches, so cuBLAS's host-side cost per
//! call is not timed). cust 0.3.2 does not wrap graphs; these are the
//! driver calls.

use cust::stream::Stream;
use cust::sys::{
    CUgraph, CUgraphExec, CUstreamCaptureMode, cuGraphDestroy, cuGraphExecDestroy,
    cuGraphInstantiateWithFlags, cuGraphLaunch, cuStreamBeginCapture_v2, cuStreamEndCapture,
    cudaError_enum,
};

use crate::error::{Error, Result};

fn driver(call: &'static str, code: cudaError_enum) -> Result<()> {
    if code == cudaError_enum::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::Driver {
            call,
            code: code as i32,
        })
    }
}

/// An instantiated graph; destroyed on drop.
pub struct Graph {
    graph: CUgraph,
    exec: CUgraphExec,
}

impl Graph {
    /// Records everything `enqueue` puts on `stream` (nothing runs) and
    /// instantiates it. `enqueue` must not synchronize, allocate device
    /// memory or copy to or from the host. Capture ends even when `enqueue`
    /// fails, so the stream is usable afterwards.
    pub fn capture<E: From<Error>>(
        stream: &Stream,
        enqueue: impl FnOnce() -> std::result::Result<(), E>,
    ) -> std::result::Result<Self, E> {
        let raw = stream.as_inner();
        // SAFETY: a live stream of the current context; relaxed mode, as
        // cuBLAS may query or allocate while capturing.
        driver("cuStreamBeginCapture", unsafe {
            cuStreamBeginCapture_v2(raw, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
        })?;
        let recorded = enqueue();
        let mut graph: CUgraph = std::ptr::null_mut();
        // SAFETY: the stream is capturing; `graph` receives the result.
        let ended = driver("cuStreamEndCapture", unsafe {
            cuStreamEndCapture(raw, &mut graph)
        });
        ended?;
        if let Err(e) = recorded {
            // SAFETY: the graph just captured is ours and not instantiated.
            unsafe { cuGraphDestroy(graph) };
            return Err(e);
        }
        let mut exec: CUgraphExec = std::ptr::null_mut();
        // SAFETY: `graph` is the graph just captured.
        let made = driver("cuGraphInstantiateWithFlags", unsafe {
            cuGraphInstantiateWithFlags(&mut exec, graph, 0)
        });
        if let Err(e) = made {
            // SAFETY: the graph is ours and not instantiated.
            unsafe { cuGraphDestroy(graph) };
            return Err(e.into());
        }
        Ok(Self { graph, exec })
    }

    /// Enqueues one replay on `stream`.
    pub fn launch(&self, stream: &Stream) -> Result<()> {
        // SAFETY: an instantiated graph and a live stream.
        driver("cuGraphLaunch", unsafe {
            cuGraphLaunch(self.exec, stream.as_inner())
        })
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: both were created by `capture` and are destroyed once;
        // a failure here has nowhere to go.
        unsafe {
            cuGraphExecDestroy(self.exec);
            cuGraphDestroy(self.graph);
        }
    }
}
