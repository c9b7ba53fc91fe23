//! Generation: a prefill of every prompt in one pass, then one decode step
//! per new token for all sequences at once, the step replayed as a CUDA
//! graph. Every step's choice of token happens on the GPU; the host only
//! reads the tokens back at the end (and the logits, when asked to).

use std::time::Instant;

use cust::memory::{CopyDestination, DeviceBuffer, DeviceSlice};
use half::bf16;
use zipserv_gpu::Gpu;

use crate::error::{CudaContext, Error, Result, device_sync};
use crate::kernels::{self, Parts, Rows, StepState};
use crate::kv_cache::KvCache;
use crate::linear::{Gemm, LinearOut, PathTaken};
use crate::model::Model;
use crate::profile::{Profiler, StepProfile};
use crate::sampling::Sampling;
use crate::stop::{StopTracker, check_after};
use zipserv_gpu::Graph;

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
    /// KV cache positions per sequence (default: the longest prompt plus
    /// `max_new_tokens`); at least that.
    pub context: Option<usize>,
    /// A sequence ends at the first of these it generates (kept as its
    /// last token), and the run once every sequence has ended (looked at
    /// every [`crate::stop::STOP_CHECK_STEPS`] steps). Empty: every sequence runs
    /// `max_new_tokens` steps (speed runs).
    pub stop_tokens: Vec<u32>,
}

/// Rows of one prefill launch at most (whole sequences; a longer prompt
/// runs alone). The activations are sized for a chunk, not for the whole
/// batch's prompts: at a Llama-3-70B shape one row of activations is
/// 258 KB, so a 4096-token prompt would need 1 GB per sequence beside its
/// 1.3 GB of KV cache. 4096 rows keep the prefill products large enough
/// for cuBLAS's full speed.
pub const PREFILL_CHUNK_ROWS: usize = 4096;

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
    /// The generated tokens of each sequence: `max_new_tokens`, or fewer
    /// ending with a stop token ([`RunOptions::stop_tokens`]).
    pub tokens: Vec<Vec<u32>>,
    /// Per sequence: whether it ended at a stop token.
    pub ended: Vec<bool>,
    /// Steps the run took (the prefill's token is the first): fewer than
    /// `max_new_tokens` when every sequence ended early.
    pub steps_run: usize,
    /// When kept: per step, `batch × vocab` logits.
    pub logits: Vec<Vec<f32>>,
    pub timings: Timings,
    pub step_mode: StepMode,
    pub kv_cache_bytes: u64,
    /// Activations, decompression scratch and sampling scratch.
    pub scratch_bytes: u64,
    /// The paths the linear layers took in the prefill and in decode steps
    /// (`Model::linear_paths`; `linear::describe_paths` prints them).
    pub prefill_paths: Vec<(PathTaken, Vec<&'static str>)>,
    pub decode_paths: Vec<(PathTaken, Vec<&'static str>)>,
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
    /// The Q/K/V product's output (queries rotated in place).
    qkv: DeviceBuffer<bf16>,
    attn: DeviceBuffer<bf16>,
    /// Split attention's partial states and arrival counters.
    attn_split: DeviceBuffer<f32>,
    attn_counters: DeviceBuffer<u32>,
    o: DeviceBuffer<bf16>,
    /// The gate/up product's output.
    gate_up: DeviceBuffer<bf16>,
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
    /// Bytes of every buffer above but the cache ([`BufferSizes::bytes`]).
    bytes: u64,
}

/// Rows of a run's longest launch: its largest prefill chunk, or the decode
/// batch.
fn launch_rows(chunks: &[crate::batch::PrefillChunk], batch: usize) -> usize {
    chunks
        .iter()
        .map(|c| c.rows.len())
        .max()
        .unwrap_or(0)
        .max(batch)
}

/// Element counts of a run's activation and logit buffers, for the
/// allocation and for [`Generator::max_batch`] alike.
struct BufferSizes {
    /// `h`, `x`, `o`: rows × hidden.
    hidden: usize,
    qkv: usize,
    attn: usize,
    attn_split: usize,
    attn_counters: usize,
    gate_up: usize,
    act: usize,
    last: usize,
    /// `logits` and `probs`: batch × vocab f32.
    logits: usize,
    /// The rotary table: capacity × head_dim f32.
    rope: usize,
}

impl BufferSizes {
    /// For a run of `batch` sequences whose prefill runs as `chunks`: the
    /// activations are sized for its longest launch ([`launch_rows`]).
    fn new(
        gpu: &Gpu,
        c: &crate::ModelConfig,
        batch: usize,
        chunks: &[crate::batch::PrefillChunk],
        capacity: usize,
    ) -> Result<Self> {
        let rows = launch_rows(chunks, batch);
        let (mut attn_split, mut attn_counters) =
            kernels::attention_scratch(gpu, c, batch, capacity)?;
        for chunk in chunks {
            let (words, counters) = kernels::attention_scratch(gpu, c, chunk.rows.len(), capacity)?;
            attn_split = attn_split.max(words);
            attn_counters = attn_counters.max(counters);
        }
        Ok(Self {
            hidden: rows * c.hidden,
            qkv: rows * (c.q_dim() + 2 * c.kv_dim()),
            attn: rows * c.q_dim(),
            attn_split,
            attn_counters,
            gate_up: rows * 2 * c.intermediate,
            act: rows * c.intermediate,
            last: batch * c.hidden,
            logits: batch * c.vocab,
            rope: capacity * c.head_dim,
        })
    }

    /// Bytes of these buffers and of the u32 row, token and history arrays.
    fn bytes(&self, batch: usize, prompt_tokens: usize, steps: usize) -> u64 {
        let b16 = 3 * self.hidden + self.qkv + self.attn + self.gate_up + self.act + self.last;
        let b32 = 2 * self.logits + self.attn_split + self.rope;
        let u32s = 3 * prompt_tokens + 5 * batch + steps * batch + self.attn_counters;
        (2 * b16 + 4 * b32 + 4 * u32s) as u64
    }
}

/// Reads the tokens of steps `stop.seen()..done` of a `batch`-sequence
/// run (after waiting for the GPU), when the run has stop tokens.
fn look(
    gpu: &Gpu,
    history: &DeviceBuffer<u32>,
    batch: usize,
    stop: &mut StopTracker,
    done: usize,
) -> Result<()> {
    if !stop.active() || done <= stop.seen() {
        return Ok(());
    }
    gpu.synchronize()?;
    let rows = stop.seen() * batch..done * batch;
    let mut host = vec![0u32; rows.len()];
    history
        .index(rows)
        .copy_to(&mut host[..])
        .cuda("cuMemcpyDtoH")?;
    stop.observe(&host);
    Ok(())
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
        let longest = lengths.iter().max().copied().unwrap_or(0);
        let capacity = match options.context {
            Some(c) if c < longest + steps => {
                return Err(Error::Invalid(format!(
                    "context {c} is shorter than the longest prompt ({longest} tokens) plus {steps} new tokens"
                )));
            }
            Some(c) => c,
            None => longest + steps,
        };
        let chunks = layout.chunks(PREFILL_CHUNK_ROWS);

        let t0 = Instant::now();
        let mut b = self.buffers(&layout, &chunks, prompts, capacity, steps)?;
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

        // prefill: whole sequences in chunks of at most PREFILL_CHUNK_ROWS
        // rows, each chunk's last rows gathered; then the LM head on all.
        let hidden = config.hidden;
        for chunk in &chunks {
            let (ids, seq, pos) = (
                b.ids.index(chunk.rows.clone()),
                b.row_seq.index(chunk.rows.clone()),
                b.row_pos.index(chunk.rows.clone()),
            );
            let rows = Rows {
                count: chunk.rows.len(),
                seq: &seq,
                pos: &pos,
            };
            self.body(&mut b, &ids, &rows)?;
            let last_rows = b.last_rows.index(chunk.seqs.clone());
            let mut last = b
                .last
                .index(chunk.seqs.start * hidden..chunk.seqs.end * hidden);
            kernels::gather_rows(
                self.gpu,
                &b.x,
                chunk.rows.len(),
                hidden,
                &last_rows,
                chunk.seqs.len(),
                &mut last,
            )?;
        }
        self.head(&mut b, true, batch, &options.sampling, steps)?;
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
        let mut stop = StopTracker::new(&options.stop_tokens, batch);
        let mut done = 1;
        if steps > 1 {
            look(self.gpu, &b.history, batch, &mut stop, done)?;
        }
        if steps > 1 && stop.all_ended() {
            step_mode = StepMode::Eager("every sequence ended at its first token".into());
        } else if steps > 1 {
            let t1 = Instant::now();
            self.decode_step(&mut b, batch, &options.sampling, steps)?;
            keep(&b, &mut logits, self.gpu)?;
            done = 2;
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
            look(self.gpu, &b.history, batch, &mut stop, done)?;
            let t2 = Instant::now();
            while done < steps && !stop.all_ended() {
                match &graph {
                    Some(g) => g.launch(self.gpu.stream())?,
                    None => self.decode_step(&mut b, batch, &options.sampling, steps)?,
                }
                keep(&b, &mut logits, self.gpu)?;
                done += 1;
                if stop.active() && check_after(done, steps) {
                    look(self.gpu, &b.history, batch, &mut stop, done)?;
                }
            }
            self.gpu.synchronize()?;
            timings.steady_s = t2.elapsed().as_secs_f64();
            timings.steady_steps = done - 2;
        }

        let mut history = vec![0u32; steps * batch];
        b.history.copy_to(&mut history[..]).cuda("cuMemcpyDtoH")?;
        stop.observe(&history[stop.seen() * batch..done * batch]);
        // One more step, after the history is read: its position is still
        // inside the cache (capacity = longest prompt + steps) and its step
        // number is past the steps read (inside the history, or past it
        // after a full run, which it leaves alone).
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
        let tokens = stop.tokens(&history, done);
        let ended = (0..batch).map(|s| stop.ended(s)).collect();
        let kv_cache_bytes = KvCache::bytes(config, batch, capacity).unwrap_or(0);
        Ok(Generation {
            tokens,
            ended,
            steps_run: done,
            logits,
            timings,
            step_mode,
            kv_cache_bytes,
            scratch_bytes: b.bytes + self.gemm.scratch_bytes() as u64,
            // The prefill's blocks run on chunks of at most
            // PREFILL_CHUNK_ROWS rows; the LM head always on one row per
            // sequence.
            prefill_paths: self.model.linear_paths(
                self.gpu,
                layout.rows().min(PREFILL_CHUNK_ROWS),
                batch,
            ),
            decode_paths: self.model.linear_paths(self.gpu, batch, batch),
            profile,
        })
    }

    fn buffers(
        &self,
        layout: &crate::batch::PrefillLayout,
        chunks: &[crate::batch::PrefillChunk],
        prompts: &[Vec<u32>],
        capacity: usize,
        steps: usize,
    ) -> Result<Buffers> {
        let c = &self.model.config;
        let batch = prompts.len();
        let n = BufferSizes::new(self.gpu, c, batch, chunks, capacity)?;
        let rope = crate::rope::table(&crate::rope::inverse_frequencies(c), capacity);
        let ids: Vec<u32> = prompts.iter().flatten().copied().collect();
        let decode_seq: Vec<u32> = (0..batch as u32).collect();
        Ok(Buffers {
            h: zeroed(n.hidden)?,
            x: zeroed(n.hidden)?,
            qkv: zeroed(n.qkv)?,
            attn: zeroed(n.attn)?,
            attn_split: zeroed(n.attn_split)?,
            attn_counters: zeroed(n.attn_counters)?,
            o: zeroed(n.hidden)?,
            gate_up: zeroed(n.gate_up)?,
            act: zeroed(n.act)?,
            last: zeroed(n.last)?,
            logits: zeroed(n.logits)?,
            probs: zeroed(n.logits)?,
            rope: upload(&rope)?,
            ids: upload(&ids)?,
            row_seq: upload(&layout.row_seq)?,
            row_pos: upload(&layout.row_pos)?,
            last_rows: upload(&layout.last_rows_in_chunks(chunks))?,
            decode_seq: upload(&decode_seq)?,
            positions: zeroed(batch)?,
            counter: zeroed(1)?,
            tokens: zeroed(batch)?,
            history: zeroed(steps * batch)?,
            cache: KvCache::new(c, batch, capacity)?,
            bytes: n.bytes(batch, ids.len(), steps),
        })
    }

    /// The largest batch whose run (KV cache of `context` positions per
    /// sequence, activations, logits) fits the GPU's free memory less
    /// `reserve` bytes (cuBLAS's workspace, the CUDA graph, fragmentation),
    /// every prompt `prompt_len` tokens; at least 1 or an error.
    pub fn max_batch(
        &self,
        prompt_len: usize,
        steps: usize,
        context: usize,
        reserve: u64,
    ) -> Result<usize> {
        let c = &self.model.config;
        let (free, _) = cust::memory::mem_get_info().cuda("cuMemGetInfo")?;
        let budget = (free as u64).saturating_sub(reserve);
        let need = |batch: usize| -> Option<u64> {
            let layout = crate::batch::PrefillLayout::new(&vec![prompt_len; batch]).ok()?;
            let chunks = layout.chunks(PREFILL_CHUNK_ROWS);
            let sizes = BufferSizes::new(self.gpu, c, batch, &chunks, context).ok()?;
            KvCache::layer_elements(c, batch, context).filter(|&e| u32::try_from(e).is_ok())?;
            Some(sizes.bytes(batch, prompt_len * batch, steps) + KvCache::bytes(c, batch, context)?)
        };
        let fits = |batch: usize| need(batch).is_some_and(|n| n <= budget);
        if !fits(1) {
            return Err(Error::Invalid(format!(
                "one sequence of context {context} does not fit the {:.2} GB free on the GPU",
                budget as f64 / 1e9
            )));
        }
        // Largest fitting batch by doubling, then bisection (need grows with
        // the batch).
        let (mut lo, mut hi) = (1usize, 2usize);
        while fits(hi) {
            lo = hi;
            hi *= 2;
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
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
        let (ids, seq, pos) = (
            b.tokens.index(..batch),
            b.decode_seq.index(..batch),
            b.positions.index(..batch),
        );
        let rows = Rows {
            count: batch,
            seq: &seq,
            pos: &pos,
        };
        self.body(b, &ids, &rows)?;
        self.head(b, false, batch, sampling, steps)?;
        kernels::advance(self.gpu, &b.positions, batch, &b.counter)
    }

    /// Enqueues the blocks for `rows` (token ids `ids`): the embedding,
    /// every block, and the final norm into `b.x`.
    fn body(&mut self, b: &mut Buffers, ids: &DeviceSlice<u32>, rows: &Rows<'_>) -> Result<()> {
        let (gpu, model) = (self.gpu, self.model);
        let c = &model.config;
        let n = rows.count;
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
            layer.qkv.forward(gemm, &b.x, n, &mut b.qkv)?;
            mark("gemm")?;
            let layouts = layer.qkv.layouts(n);
            let qkv = Parts {
                buffer: &b.qkv,
                layouts: &layouts,
            };
            kernels::rope_kv(gpu, c, rows, &qkv, &b.rope, &mut b.cache, l)?;
            mark("rope + cache")?;
            kernels::attention(
                gpu,
                c,
                rows,
                &qkv,
                &mut b.attn,
                &mut b.attn_split,
                &mut b.attn_counters,
                &b.cache,
                l,
            )?;
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
            layer.gate_up.forward(gemm, &b.x, n, &mut b.gate_up)?;
            mark("gemm")?;
            let layouts = layer.gate_up.layouts(n);
            let gate_up = Parts {
                buffer: &b.gate_up,
                layouts: &layouts,
            };
            kernels::swiglu(gpu, &gate_up, &mut b.act, n, c.intermediate)?;
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
        mark("add + norm")
    }

    /// Enqueues the LM head on `batch` normalised rows (`b.last` after a
    /// prefill, `b.x` in a decode step) and the token choice.
    fn head(
        &mut self,
        b: &mut Buffers,
        from_last: bool,
        batch: usize,
        sampling: &Sampling,
        steps: usize,
    ) -> Result<()> {
        let (gpu, model) = (self.gpu, self.model);
        let head_in: &DeviceSlice<bf16> = if from_last { &b.last } else { &b.x };
        model.lm_head().forward(
            &mut self.gemm,
            head_in,
            batch,
            LinearOut::F32(&mut b.logits),
        )?;
        if let Some(p) = &mut self.profiler {
            p.mark(gpu.stream(), "gemm")?;
        }
        let state = StepState {
            counter: &b.counter,
            tokens: &b.tokens,
            history: &b.history,
            max_steps: steps,
        };
        kernels::select(
            gpu,
            &b.logits,
            &b.probs,
            batch,
            model.config.vocab,
            sampling,
            &state,
        )
    }
}
