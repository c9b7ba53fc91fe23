//! Generation: a prefill of every prompt in one pass, then one decode step
//! per new token for all sequences at once, the step replayed as a CUDA
//! graph. Every step's choice of token happens on the GPU; the host only
//! reads the tokens back at the end (and the logits, when asked to).

use std::time::Instant;

use cust::memory::{CopyDestination, DeviceBuffer, DeviceSlice};
use half::bf16;
use zipserv_gpu::Gpu;

use crate::error::{CudaContext, Error, Result, device_sync};
use crate::graph::Graph;
use crate::kernels::{self, Rows, StepState};
use crate::kv_cache::KvCache;
use crate::linear::{Gemm, LinearOut, LinearPath, choose_path};
use crate::model::Model;
use crate::profile::{Profiler, StepProfile};
use crate::sampling::Sampling;

/// What one run does.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Tokens generated per sequence (the first comes from the prefill).
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Replay the decode step as a CUDA graph (else launch it kernel by
    /// kernel every step).
    pub graph: bool,
    /// Keep every step's logits (copied to the host after each step).
    pub keep_logits: bool,
    /// After the run, launch one more decode step kernel by kernel with an
    /// event after each launch, for [`Generation::profile`].
    pub profile_step: bool,
}

/// How the decode steps after the first were run.
#[derive(Debug, Clone, PartialEq)]
pub enum StepMode {
    /// Replays of one captured CUDA graph.
    Graph,
    /// Kernel by kernel, and why not as a graph.
    Eager(String),
}

/// Wall-clock times, each ending with a device synchronization.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Prompt upload, prefill of every prompt and the first token.
    pub prefill_s: f64,
    /// The first decode step, launched kernel by kernel (it also warms up
    /// cuBLAS and the workspaces the graph then reuses), and the capture.
    pub first_step_s: f64,
    /// The remaining decode steps.
    pub steady_s: f64,
    pub steady_steps: usize,
}

/// The result of a run.
pub struct Generation {
    /// The generated tokens of each sequence (`max_new_tokens` each; the
    /// run does not stop at EOS, the caller cuts there).
    pub tokens: Vec<Vec<u32>>,
    /// When kept: per step, `batch × vocab` logits.
    pub logits: Vec<Vec<f32>>,
    pub timings: Timings,
    pub step_mode: StepMode,
    pub kv_cache_bytes: u64,
    /// Activations, decompression scratch and sampling scratch.
    pub scratch_bytes: u64,
    /// The path the linear layers took in the prefill and in decode steps.
    pub prefill_path: LinearPath,
    pub decode_path: LinearPath,
    /// Where one decode step's time went (with `profile_step`).
    pub profile: Option<StepProfile>,
}

impl Generation {
    /// Decode throughput after the first step: tokens per second over all
    /// sequences.
    pub fn tokens_per_s(&self) -> Option<f64> {
        let t = &self.timings;
        (t.steady_steps > 0 && t.steady_s > 0.0)
            .then(|| (t.steady_steps * self.tokens.len()) as f64 / t.steady_s)
    }

    /// Milliseconds per decode step (each gives one token per sequence).
    pub fn ms_per_step(&self) -> Option<f64> {
        let t = &self.timings;
        (t.steady_steps > 0).then(|| 1e3 * t.steady_s / t.steady_steps as f64)
    }
}

/// Per-run device buffers, sized for the longest launch (the prefill).
struct Buffers {
    h: DeviceBuffer<bf16>,
    x: DeviceBuffer<bf16>,
    q: DeviceBuffer<bf16>,
    k: DeviceBuffer<bf16>,
    v: DeviceBuffer<bf16>,
    attn: DeviceBuffer<bf16>,
    o: DeviceBuffer<bf16>,
    gate: DeviceBuffer<bf16>,
    up: DeviceBuffer<bf16>,
    act: DeviceBuffer<bf16>,
    /// The last prompt row of each sequence, normalised.
    last: DeviceBuffer<bf16>,
    logits: DeviceBuffer<f32>,
    probs: DeviceBuffer<f32>,
    rope: DeviceBuffer<f32>,
    /// Prefill rows: token ids, sequences, positions; last row per sequence.
    ids: DeviceBuffer<u32>,
    row_seq: DeviceBuffer<u32>,
    row_pos: DeviceBuffer<u32>,
    last_rows: DeviceBuffer<u32>,
    /// Decode rows: sequence `b` is row `b`; its current position.
    decode_seq: DeviceBuffer<u32>,
    positions: DeviceBuffer<u32>,
    counter: DeviceBuffer<u32>,
    tokens: DeviceBuffer<u32>,
    history: DeviceBuffer<u32>,
    cache: KvCache,
}

impl Buffers {
    fn bytes(&self) -> u64 {
        let b16 = [
            &self.h, &self.x, &self.q, &self.k, &self.v, &self.attn, &self.o, &self.gate, &self.up,
            &self.act, &self.last,
        ]
        .iter()
        .map(|b| 2 * b.len())
        .sum::<usize>();
        let b32 = [&self.logits, &self.probs, &self.rope]
            .iter()
            .map(|b| 4 * b.len())
            .sum::<usize>();
        (b16 + b32) as u64
    }
}

/// Runs a loaded model.
pub struct Generator<'gpu> {
    gpu: &'gpu Gpu,
    model: &'gpu Model,
    gemm: Gemm<'gpu>,
    /// Set only while a step is profiled.
    profiler: Option<Profiler>,
}

fn zeroed<T: cust::memory::DeviceCopy + bytemuck::Zeroable>(n: usize) -> Result<DeviceBuffer<T>> {
    DeviceBuffer::zeroed(n.max(1)).cuda("cuMemAlloc")
}

fn upload<T: cust::memory::DeviceCopy>(data: &[T]) -> Result<DeviceBuffer<T>> {
    DeviceBuffer::from_slice(data).cuda("cuMemcpyHtoD")
}

impl<'gpu> Generator<'gpu> {
    pub fn new(gpu: &'gpu Gpu, model: &'gpu Model) -> Result<Self> {
        let mut gemm = Gemm::new(gpu)?;
        if model.linears().any(|l| l.is_compressed()) {
            gemm.reserve_scratch(model.largest_matrix())?;
        }
        Ok(Self {
            gpu,
            model,
            gemm,
            profiler: None,
        })
    }

    /// Generates `options.max_new_tokens` tokens for each prompt.
    pub fn run(&mut self, prompts: &[Vec<u32>], options: &RunOptions) -> Result<Generation> {
        let config = &self.model.config;
        let batch = prompts.len();
        let steps = options.max_new_tokens;
        if batch == 0 {
            return Err(Error::Invalid("no prompts".into()));
        }
        if steps == 0 {
            return Err(Error::Invalid("max-new-tokens must be at least 1".into()));
        }
        for (s, p) in prompts.iter().enumerate() {
            if let Some(&bad) = p.iter().find(|&&t| t as usize >= config.vocab) {
                return Err(Error::Invalid(format!(
                    "prompt {s}: token id {bad} is outside the vocabulary of {}",
                    config.vocab
                )));
            }
        }
        let lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
        let layout = crate::batch::PrefillLayout::new(&lengths)?;
        let capacity = lengths.iter().max().copied().unwrap_or(0) + steps;
        let rows = layout.rows().max(batch);

        let t0 = Instant::now();
        let mut b = self.buffers(&layout, prompts, batch, capacity, rows, steps)?;
        device_sync()?;
        let mut logits = Vec::new();
        let keep = |b: &Buffers, logits: &mut Vec<Vec<f32>>, gpu: &Gpu| -> Result<()> {
            if options.keep_logits {
                gpu.synchronize()?;
                let mut host = vec![0f32; batch * config.vocab];
                b.logits
                    .index(..batch * config.vocab)
                    .copy_to(&mut host[..])
                    .cuda("cuMemcpyDtoH")?;
                logits.push(host);
            }
            Ok(())
        };

        // prefill: every prompt token, all sequences in one pass
        self.forward(
            &mut b,
            Phase::Prefill {
                rows: layout.rows(),
            },
            batch,
            &options.sampling,
            steps,
        )?;
        self.gpu.synchronize()?;
        keep(&b, &mut logits, self.gpu)?;
        let prefill_s = t0.elapsed().as_secs_f64();

        // decode: position of each sequence's first generated token
        let positions: Vec<u32> = lengths.iter().map(|&l| l as u32).collect();
        b.positions.copy_from(&positions[..]).cuda("cuMemcpyHtoD")?;
        b.counter.copy_from(&[1u32][..]).cuda("cuMemcpyHtoD")?;
        device_sync()?;
        let mut timings = Timings {
            prefill_s,
            ..Timings::default()
        };
        let mut step_mode = StepMode::Eager("one token only: no decode step".into());
        if steps > 1 {
            let t1 = Instant::now();
            self.decode_step(&mut b, batch, &options.sampling, steps)?;
            keep(&b, &mut logits, self.gpu)?;
            let graph = if steps > 2 && options.graph {
                let gpu = self.gpu;
                let result = Graph::capture(gpu.stream(), || {
                    self.decode_step(&mut b, batch, &options.sampling, steps)
                });
                match result {
                    Ok(g) => Some(g),
                    Err(e) => {
                        step_mode = StepMode::Eager(format!("graph capture failed: {e}"));
                        None
                    }
                }
            } else {
                if !options.graph {
                    step_mode = StepMode::Eager("graphs turned off".into());
                }
                None
            };
            if graph.is_some() {
                step_mode = StepMode::Graph;
            }
            self.gpu.synchronize()?;
            timings.first_step_s = t1.elapsed().as_secs_f64();
            let t2 = Instant::now();
            for _ in 2..steps {
                match &graph {
                    Some(g) => g.launch(self.gpu.stream())?,
                    None => self.decode_step(&mut b, batch, &options.sampling, steps)?,
                }
                keep(&b, &mut logits, self.gpu)?;
            }
            self.gpu.synchronize()?;
            timings.steady_s = t2.elapsed().as_secs_f64();
            timings.steady_steps = steps - 2;
        }

        let mut history = vec![0u32; steps * batch];
        b.history.copy_to(&mut history[..]).cuda("cuMemcpyDtoH")?;
        // One more step, after the history is read: its position is still
        // inside the cache (capacity = longest prompt + steps) and its step
        // number is past the history, which it leaves alone.
        let profile = if options.profile_step {
            self.profiler = Some(Profiler::start(self.gpu.stream())?);
            let stepped = self.decode_step(&mut b, batch, &options.sampling, steps);
            let profiler = self.profiler.take();
            stepped?;
            self.gpu.synchronize()?;
            profiler.map(Profiler::finish).transpose()?
        } else {
            None
        };
        let tokens = (0..batch)
            .map(|s| (0..steps).map(|t| history[t * batch + s]).collect())
            .collect();
        let kv_cache_bytes = KvCache::bytes(config, batch, capacity).unwrap_or(0);
        Ok(Generation {
            tokens,
            logits,
            timings,
            step_mode,
            kv_cache_bytes,
            scratch_bytes: b.bytes() + self.gemm.scratch_bytes() as u64,
            // The paths of the largest layers (the MLP's), for the report.
            prefill_path: choose_path(
                self.gpu,
                self.model.form == crate::WeightForm::Compressed,
                config.intermediate,
                config.hidden,
                layout.rows(),
            ),
            decode_path: choose_path(
                self.gpu,
                self.model.form == crate::WeightForm::Compressed,
                config.intermediate,
                config.hidden,
                batch,
            ),
            profile,
        })
    }

    fn buffers(
        &self,
        layout: &crate::batch::PrefillLayout,
        prompts: &[Vec<u32>],
        batch: usize,
        capacity: usize,
        rows: usize,
        steps: usize,
    ) -> Result<Buffers> {
        let c = &self.model.config;
        let rope = crate::rope::table(&crate::rope::inverse_frequencies(c), capacity);
        let ids: Vec<u32> = prompts.iter().flatten().copied().collect();
        let decode_seq: Vec<u32> = (0..batch as u32).collect();
        Ok(Buffers {
            h: zeroed(rows * c.hidden)?,
            x: zeroed(rows * c.hidden)?,
            q: zeroed(rows * c.q_dim())?,
            k: zeroed(rows * c.kv_dim())?,
            v: zeroed(rows * c.kv_dim())?,
            attn: zeroed(rows * c.q_dim())?,
            o: zeroed(rows * c.hidden)?,
            gate: zeroed(rows * c.intermediate)?,
            up: zeroed(rows * c.intermediate)?,
            act: zeroed(rows * c.intermediate)?,
            last: zeroed(batch * c.hidden)?,
            logits: zeroed(batch * c.vocab)?,
            probs: zeroed(batch * c.vocab)?,
            rope: upload(&rope)?,
            ids: upload(&ids)?,
            row_seq: upload(&layout.row_seq)?,
            row_pos: upload(&layout.row_pos)?,
            last_rows: upload(&layout.last_rows)?,
            decode_seq: upload(&decode_seq)?,
            positions: zeroed(batch)?,
            counter: zeroed(1)?,
            tokens: zeroed(batch)?,
            history: zeroed(steps * batch)?,
            cache: KvCache::new(c, batch, capacity)?,
        })
    }

    /// One decode step, enqueued only: every sequence's last token in, its
    /// next token out, positions and step counter moved on.
    fn decode_step(
        &mut self,
        b: &mut Buffers,
        batch: usize,
        sampling: &Sampling,
        steps: usize,
    ) -> Result<()> {
        self.forward(b, Phase::Decode, batch, sampling, steps)?;
        kernels::advance(self.gpu, &b.positions, batch, &b.counter)
    }

    /// The forward pass and the token choice, enqueued only.
    fn forward(
        &mut self,
        b: &mut Buffers,
        phase: Phase,
        batch: usize,
        sampling: &Sampling,
        steps: usize,
    ) -> Result<()> {
        let (gpu, model) = (self.gpu, self.model);
        let c = &model.config;
        let (n, ids, rows) = match phase {
            Phase::Prefill { rows } => (
                rows,
                &b.ids,
                Rows {
                    count: rows,
                    seq: &b.row_seq,
                    pos: &b.row_pos,
                },
            ),
            Phase::Decode => (
                batch,
                &b.tokens,
                Rows {
                    count: batch,
                    seq: &b.decode_seq,
                    pos: &b.positions,
                },
            ),
        };
        // `mark` closes a profiled interval; a no-op unless profiling.
        let profiler = &mut self.profiler;
        let mut mark = |kind: &'static str| -> Result<()> {
            match profiler {
                Some(p) => p.mark(gpu.stream(), kind),
                None => Ok(()),
            }
        };
        let gemm = &mut self.gemm;
        kernels::embed(gpu, &model.embed, ids, n, &mut b.h)?;
        mark("embedding")?;
        for (l, layer) in model.layers.iter().enumerate() {
            let delta = (l > 0).then_some(&*b.o);
            kernels::add_rmsnorm(
                gpu,
                &mut b.h,
                delta,
                &layer.input_norm,
                &mut b.x,
                n,
                c.hidden,
                c.rms_eps,
            )?;
            mark("add + norm")?;
            layer.q.forward(gemm, &b.x, n, LinearOut::Bf16(&mut b.q))?;
            layer.k.forward(gemm, &b.x, n, LinearOut::Bf16(&mut b.k))?;
            layer.v.forward(gemm, &b.x, n, LinearOut::Bf16(&mut b.v))?;
            mark("gemm")?;
            kernels::rope_kv(
                gpu,
                c,
                &rows,
                &mut b.q,
                &b.k,
                &b.v,
                &b.rope,
                &mut b.cache,
                l,
            )?;
            mark("rope + cache")?;
            kernels::attention(gpu, c, &rows, &b.q, &mut b.attn, &b.cache, l)?;
            mark("attention")?;
            layer
                .o
                .forward(gemm, &b.attn, n, LinearOut::Bf16(&mut b.o))?;
            mark("gemm")?;
            kernels::add_rmsnorm(
                gpu,
                &mut b.h,
                Some(&b.o),
                &layer.post_norm,
                &mut b.x,
                n,
                c.hidden,
                c.rms_eps,
            )?;
            mark("add + norm")?;
            layer
                .gate
                .forward(gemm, &b.x, n, LinearOut::Bf16(&mut b.gate))?;
            layer
                .up
                .forward(gemm, &b.x, n, LinearOut::Bf16(&mut b.up))?;
            mark("gemm")?;
            kernels::swiglu(gpu, &b.gate, &b.up, &mut b.act, n * c.intermediate)?;
            mark("swiglu")?;
            layer
                .down
                .forward(gemm, &b.act, n, LinearOut::Bf16(&mut b.o))?;
            mark("gemm")?;
        }
        kernels::add_rmsnorm(
            gpu,
            &mut b.h,
            Some(&b.o),
            &model.final_norm,
            &mut b.x,
            n,
            c.hidden,
            c.rms_eps,
        )?;
        let head_in: &DeviceSlice<bf16> = match phase {
            Phase::Prefill { rows } => {
                kernels::gather_rows(gpu, &b.x, rows, c.hidden, &b.last_rows, batch, &mut b.last)?;
                &b.last
            }
            Phase::Decode => &b.x,
        };
        mark("add + norm")?;
        model
            .lm_head()
            .forward(gemm, head_in, batch, LinearOut::F32(&mut b.logits))?;
        mark("gemm")?;
        let state = StepState {
            counter: &b.counter,
            tokens: &b.tokens,
            history: &b.history,
            max_steps: steps,
        };
        kernels::select(gpu, &b.logits, &b.probs, batch, c.vocab, sampling, &state)
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Prefill { rows: usize },
    Decode,
}
