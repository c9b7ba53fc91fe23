//! Launches of the engine kernels (`zipserv_kernels::engine`), each with
//! its buffers checked against the shapes before anything is enqueued, on
//! the GPU's stream.

use cust::memory::{DevicePointer, DeviceSlice};
use half::bf16;
use zipserv_gpu::Gpu;
use zipserv_kernels::engine::attention::{
    ATTN_MIN_BLOCKS_PER_SM, ATTN_THREADS, AttnShape, attention_counters, attention_splits,
    attention_workspace_words,
};
use zipserv_kernels::engine::attention_mma::{
    MMA_ATTN_THREADS, MmaAttnCarveout, mma_attn_blocks_per_sm, mma_attn_carveout, mma_attn_kernel,
    mma_attn_smem_bytes,
};
use zipserv_kernels::engine::embedding::EMBED_TILE_WARPS;
use zipserv_kernels::engine::{ELEMENT_THREADS, ROPE_ROW_BLOCKS, ROW_THREADS};
use zipserv_kernels::format::{TILE_COLS, tiles_for};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::linear::{Linear, LinearWeights};
use crate::sampling::Sampling;
use crate::stacked::PartLayout;

/// `launch!(gpu, kernel, grid, block, shared, (args...))`: launches the
/// engine kernel `kernel` of the GPU's image on its stream, in the GPU's
/// launch order (overlapped with the kernel before where the device allows
/// it; every engine kernel waits for its predecessor first). Used inside
/// `unsafe`, with the safety of `zipserv_gpu::launch::launch_raw`.
macro_rules! launch {
    ($gpu:expr, $name:ident, $grid:expr, $block:expr, $shared:expr, ($($arg:expr),* $(,)?)) => {
        launch!($gpu, name stringify!($name), $grid, $block, $shared, ($($arg),*))
    };
    // The kernel's name as an expression (a `&'static str`).
    ($gpu:expr, name $name:expr, $grid:expr, $block:expr, $shared:expr, ($($arg:expr),* $(,)?)) => {{
        let gpu: &Gpu = $gpu;
        let kernel = gpu.kernel($name)?;
        zipserv_gpu::launch_kernel!(
            kernel,
            $grid,
            $block,
            $shared,
            gpu.stream().as_inner(),
            gpu.launch_order(),
            ($($arg),*)
        )
        .map_err(Error::from)
    }};
}

fn check(what: &str, have: usize, want: usize) -> Result<()> {
    if have < want {
        return Err(Error::Invalid(format!(
            "kernel launch: {what} holds {have} elements, {want} needed"
        )));
    }
    Ok(())
}

fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::Unsupported(format!("{what} = {v} exceeds the kernels' 32-bit indexing"))
    })
}

/// The row-per-block grid for `rows` rows.
fn rows_grid(rows: usize) -> Result<u32> {
    if rows == 0 {
        return Err(Error::Invalid("kernel launch with no rows".into()));
    }
    u32_of("rows", rows)
}

/// `out[r] = table[ids[r]]` for `rows` ids, from the embedding matrix in
/// either form. The kernels trap on an id outside the table, which callers
/// check first.
pub fn embed(
    gpu: &Gpu,
    table: &Linear,
    ids: &DeviceSlice<u32>,
    rows: usize,
    out: &mut DeviceSlice<bf16>,
) -> Result<()> {
    let cols = table.cols;
    check("token ids", ids.len(), rows)?;
    check("embedding output", out.len(), rows * cols)?;
    let grid = rows_grid(rows)?;
    let (vocab, cols32) = (u32_of("vocab", table.rows)?, u32_of("hidden", cols)?);
    u32_of("embedding elements", table.rows * cols)?;
    match &table.weights {
        LinearWeights::Bf16(w) => {
            // SAFETY: the table holds vocab × cols, ids and out were checked.
            unsafe {
                launch!(
                    gpu,
                    engine_embed,
                    grid,
                    ROW_THREADS,
                    0,
                    (
                        w.as_device_ptr(),
                        ids.as_device_ptr(),
                        vocab,
                        cols32,
                        out.as_device_ptr()
                    )
                )
            }
        }
        LinearWeights::Compressed(w) => {
            let s = w.sections();
            let col_tiles = tiles_for(cols, TILE_COLS) as u32;
            let groups = col_tiles.div_ceil(EMBED_TILE_WARPS);
            // SAFETY: the matrix was validated before upload; ids and out
            // were checked; block size matches EMBED_TILE_WARPS.
            unsafe {
                launch!(
                    gpu,
                    engine_embed_compressed,
                    (grid, groups),
                    32 * EMBED_TILE_WARPS,
                    0,
                    (
                        s.tiles,
                        s.exception_starts,
                        s.exceptions,
                        s.far_starts,
                        s.far_exponents,
                        s.exception_table,
                        u32::from(s.base),
                        vocab,
                        cols32,
                        col_tiles,
                        ids.as_device_ptr(),
                        out.as_device_ptr()
                    )
                )
            }
        }
    }
}

/// `out[i] = src[rows[i]]` (`cols` BF16 per row) for `n` row indices below
/// `src_rows`.
pub fn gather_rows(
    gpu: &Gpu,
    src: &DeviceSlice<bf16>,
    src_rows: usize,
    cols: usize,
    rows: &DeviceSlice<u32>,
    n: usize,
    out: &mut DeviceSlice<bf16>,
) -> Result<()> {
    check("gather source", src.len(), src_rows * cols)?;
    check("gather indices", rows.len(), n)?;
    check("gather output", out.len(), n * cols)?;
    let grid = rows_grid(n)?;
    // SAFETY: the embedding kernel with the source as its table: indices
    // ≥ src_rows trap.
    unsafe {
        launch!(
            gpu,
            engine_embed,
            grid,
            ROW_THREADS,
            0,
            (
                src.as_device_ptr(),
                rows.as_device_ptr(),
                u32_of("rows", src_rows)?,
                u32_of("cols", cols)?,
                out.as_device_ptr()
            )
        )
    }
}

/// `h += delta` (if given), then `out = rmsnorm(h) ⊙ weight`, row by row.
#[allow(clippy::too_many_arguments)]
pub fn add_rmsnorm(
    gpu: &Gpu,
    h: &mut DeviceSlice<bf16>,
    delta: Option<&DeviceSlice<bf16>>,
    weight: &DeviceSlice<bf16>,
    out: &mut DeviceSlice<bf16>,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<()> {
    check("residual stream", h.len(), rows * cols)?;
    if let Some(d) = delta {
        check("residual delta", d.len(), rows * cols)?;
    }
    check("norm weight", weight.len(), cols)?;
    check("norm output", out.len(), rows * cols)?;
    u32_of("norm elements", rows * cols)?;
    let grid = rows_grid(rows)?;
    let delta = delta.map_or(DevicePointer::null(), |d| d.as_device_ptr());
    // SAFETY: lengths checked above; `out` is a different buffer from `h`.
    unsafe {
        launch!(
            gpu,
            engine_add_rmsnorm,
            grid,
            ROW_THREADS,
            0,
            (
                h.as_device_ptr(),
                delta,
                weight.as_device_ptr(),
                out.as_device_ptr(),
                u32_of("cols", cols)?,
                eps
            )
        )
    }
}

/// Token rows of one launch: each row's sequence and position, on the GPU.
pub struct Rows<'a> {
    pub count: usize,
    pub seq: &'a DeviceSlice<u32>,
    pub pos: &'a DeviceSlice<u32>,
}

/// A stacked product's output for `count` rows and where each part's
/// values lie in it (see [`crate::stacked`]).
pub struct Parts<'a> {
    pub buffer: &'a DeviceSlice<bf16>,
    pub layouts: &'a [PartLayout],
}

impl Parts<'_> {
    /// Part `i` as a pointer and row stride, checked to hold `rows` rows of
    /// `width` values inside the buffer.
    fn part(
        &self,
        i: usize,
        rows: usize,
        width: usize,
        what: &str,
    ) -> Result<(DevicePointer<bf16>, u32)> {
        let l = self.layouts[i];
        if l.stride < width {
            return Err(Error::Invalid(format!(
                "kernel launch: {what} rows of {} values hold {width}",
                l.stride
            )));
        }
        let end = l.offset + (rows - 1) * l.stride + width;
        check(what, self.buffer.len(), end)?;
        u32_of(what, end)?;
        // SAFETY: offset < end ≤ len, checked above.
        let ptr = unsafe { self.buffer.as_device_ptr().add(l.offset) };
        Ok((ptr, u32_of("row stride", l.stride)?))
    }
}

/// RoPE on the queries (in place) and keys of a Q/K/V product, and the
/// keys and values into layer `layer` of the cache at each row's position.
#[allow(clippy::too_many_arguments)]
pub fn rope_kv(
    gpu: &Gpu,
    config: &ModelConfig,
    rows: &Rows<'_>,
    qkv: &Parts<'_>,
    table: &DeviceSlice<f32>,
    cache: &mut KvCache,
    layer: usize,
) -> Result<()> {
    let n = rows.count;
    check("row sequences", rows.seq.len(), n)?;
    check("row positions", rows.pos.len(), n)?;
    let grid = rows_grid(n)?;
    let (q, q_stride) = qkv.part(0, n, config.q_dim(), "queries")?;
    let (k, k_stride) = qkv.part(1, n, config.kv_dim(), "keys")?;
    let (v, v_stride) = qkv.part(2, n, config.kv_dim(), "values")?;
    if k_stride != v_stride {
        return Err(Error::Invalid(format!(
            "kernel launch: key rows of {k_stride} values, value rows of {v_stride}"
        )));
    }
    check(
        "rotary table",
        table.len(),
        cache.capacity * config.head_dim,
    )?;
    let (ck, cv) = (&cache.k[layer], &cache.v[layer]);
    // SAFETY: every part was checked to hold its rows at its stride; the
    // kernel traps on a sequence or position outside the cache.
    unsafe {
        launch!(
            gpu,
            engine_rope_kv,
            (grid, ROPE_ROW_BLOCKS),
            ROW_THREADS,
            0,
            (
                q,
                k,
                v,
                q_stride,
                k_stride,
                rows.seq.as_device_ptr(),
                rows.pos.as_device_ptr(),
                table.as_device_ptr(),
                ck.as_device_ptr(),
                cv.as_device_ptr(),
                config.heads as u32,
                config.kv_heads as u32,
                config.head_dim as u32,
                u32_of("cache capacity", cache.capacity)?,
                u32_of("cache sequences", cache.sequences)?
            )
        )
    }
}

/// Which attention kernel a launch takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnKernel {
    /// `engine_attention`: blocks of query-head chunks, any head
    /// dimension that is a multiple of 32 up to 256.
    Heads(AttnShape),
    /// `engine_attention_mma_d*` (`attention_mma.rs`): one warp per (row,
    /// KV head, split) on the tensor cores, head dimensions 64 and 128, up
    /// to 16 query heads per KV head.
    Mma(&'static str),
}

/// Environment variable choosing the attention kernel: `auto` (default:
/// the tensor-core kernel where it covers the shape), `heads` or `mma`
/// (an error where it does not cover the shape); for benchmarks comparing
/// the two.
pub const ATTENTION_ENV: &str = "ZIPSERV_ATTENTION";

/// Which attention kernel [`attention_plan`] takes ([`ATTENTION_ENV`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnChoice {
    /// The tensor-core kernel where it covers the shape, else the other.
    Auto,
    /// Always `engine_attention`.
    Heads,
    /// Always the tensor-core kernel (an error where it does not apply).
    Mma,
}

/// The process-wide choice: 0 unset (read [`ATTENTION_ENV`] first), else
/// 1 + the choice's index.
static ATTN_CHOICE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
const ATTN_CHOICES: [AttnChoice; 3] = [AttnChoice::Auto, AttnChoice::Heads, AttnChoice::Mma];

/// Sets the attention kernel of every later launch in this process (over
/// [`ATTENTION_ENV`]); for tests and benchmarks comparing the two.
pub fn set_attention_choice(choice: AttnChoice) {
    let index = ATTN_CHOICES.iter().position(|&c| c == choice).unwrap_or(0);
    ATTN_CHOICE.store(1 + index as u8, std::sync::atomic::Ordering::Relaxed);
}

/// The current choice: set, or [`ATTENTION_ENV`] (read at the first call).
pub fn attention_choice() -> Result<AttnChoice> {
    let stored = ATTN_CHOICE.load(std::sync::atomic::Ordering::Relaxed);
    if stored > 0 {
        return Ok(ATTN_CHOICES[(stored - 1) as usize % ATTN_CHOICES.len()]);
    }
    let choice = match std::env::var(ATTENTION_ENV).as_deref() {
        Err(_) | Ok("auto") => AttnChoice::Auto,
        Ok("heads") => AttnChoice::Heads,
        Ok("mma") => AttnChoice::Mma,
        Ok(other) => {
            return Err(Error::Unsupported(format!(
                "{ATTENTION_ENV}={other:?}: expected auto, heads or mma"
            )));
        }
    };
    set_attention_choice(choice);
    Ok(choice)
}

/// How one attention launch is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionPlan {
    pub kernel: AttnKernel,
    /// Splits of the positions (grid z).
    pub splits: usize,
    /// Grid y: KV heads, times the head chunks of [`AttnKernel::Heads`].
    pub grid_y: usize,
    /// The shared-memory carveout of [`AttnKernel::Mma`] (None for the
    /// other kernel, which takes the driver's).
    pub carveout: Option<MmaAttnCarveout>,
}

/// Blocks of `kernel` that run at once on `gpu`: the block-per-chunk
/// kernel is compiled for [`ATTN_MIN_BLOCKS_PER_SM`] per multiprocessor
/// (which its registers also make the most); the tensor-core kernel's
/// one-warp blocks are bounded by their shared memory under `carveout`.
pub fn attention_wave(
    gpu: &Gpu,
    kernel: AttnKernel,
    head_dim: usize,
    carveout: Option<MmaAttnCarveout>,
) -> usize {
    let per_sm = match (kernel, carveout) {
        (AttnKernel::Mma(_), Some(c)) => mma_attn_blocks_per_sm(head_dim as u32, c),
        _ => ATTN_MIN_BLOCKS_PER_SM,
    };
    gpu.info().multiprocessors as usize * per_sm as usize
}

/// How attention's launch for `rows` rows is shaped on `gpu`: the kernel
/// ([`ATTENTION_ENV`], else the tensor-core one where it covers the head
/// dimension and group), its grid, and the position splits that fill one
/// wave of it.
pub fn attention_plan(
    gpu: &Gpu,
    config: &ModelConfig,
    rows: usize,
    capacity: usize,
) -> Result<AttentionPlan> {
    let group = config.heads / config.kv_heads.max(1);
    let head_dim = u32_of("head_dim", config.head_dim)?;
    let group32 = u32_of("group", group)?;
    let mma = mma_attn_kernel(head_dim, group32);
    let kernel = match (attention_choice()?, mma) {
        (AttnChoice::Auto | AttnChoice::Mma, Some(name)) => AttnKernel::Mma(name),
        (AttnChoice::Mma, None) => {
            return Err(Error::Unsupported(format!(
                "{ATTENTION_ENV}=mma: the tensor-core attention covers head_dim 64 and 128 with \
                 at most 16 query heads per KV head, not head_dim {} with {group}",
                config.head_dim
            )));
        }
        _ => AttnKernel::Heads(AttnShape::new(head_dim, group32).ok_or_else(|| {
            Error::Unsupported(format!(
                "attention with head_dim {} (a multiple of 32 up to 256 is supported)",
                config.head_dim
            ))
        })?),
    };
    let grid_y = match kernel {
        AttnKernel::Heads(shape) => config.kv_heads * shape.head_chunks as usize,
        AttnKernel::Mma(_) => config.kv_heads,
    };
    let carveout = matches!(kernel, AttnKernel::Mma(_)).then(|| mma_attn_carveout(rows));
    let wave = attention_wave(gpu, kernel, config.head_dim, carveout);
    Ok(AttentionPlan {
        kernel,
        splits: attention_splits(rows * grid_y, capacity, wave),
        grid_y,
        carveout,
    })
}

/// What a split attention launch of `rows` rows needs beside its output:
/// f32 words of workspace and u32 arrival counters (both 0 without splits).
pub fn attention_scratch(
    gpu: &Gpu,
    config: &ModelConfig,
    rows: usize,
    capacity: usize,
) -> Result<(usize, usize)> {
    let plan = attention_plan(gpu, config, rows, capacity)?;
    Ok(scratch_of(config, rows, &plan))
}

/// [`attention_scratch`] for a launch already planned.
fn scratch_of(config: &ModelConfig, rows: usize, plan: &AttentionPlan) -> (usize, usize) {
    (
        attention_workspace_words(rows, config.heads, config.head_dim, plan.splits),
        // One counter per (row, grid y), as both kernels index them.
        attention_counters(rows, plan.grid_y, 1, plan.splits),
    )
}

/// Causal GQA attention of each row (its rotated queries, part 0 of `qkv`)
/// against its sequence's cached positions `0..=pos`, from layer `layer`
/// of the cache; `splits` (see [`attention_plan`]) use `workspace` and
/// `counters` (zero; the kernel leaves them zero), as
/// [`attention_scratch`] sizes them.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    gpu: &Gpu,
    config: &ModelConfig,
    rows: &Rows<'_>,
    qkv: &Parts<'_>,
    out: &mut DeviceSlice<bf16>,
    workspace: &mut DeviceSlice<f32>,
    counters: &mut DeviceSlice<u32>,
    cache: &KvCache,
    layer: usize,
) -> Result<()> {
    let n = rows.count;
    check("row sequences", rows.seq.len(), n)?;
    check("row positions", rows.pos.len(), n)?;
    check("attention output", out.len(), n * config.q_dim())?;
    u32_of("attention output", n * config.q_dim())?;
    let (q, q_stride) = qkv.part(0, n, config.q_dim(), "queries")?;
    let plan = attention_plan(gpu, config, n, cache.capacity)?;
    let (words, arrivals) = scratch_of(config, n, &plan);
    check("attention workspace", workspace.len(), words)?;
    u32_of("attention workspace", words)?;
    check("attention counters", counters.len(), arrivals)?;
    let grid = (
        rows_grid(n)?,
        u32_of("attention blocks", plan.grid_y)?,
        plan.splits as u32,
    );
    let scale = 1.0 / (config.head_dim as f32).sqrt();
    let (q_heads, head_dim) = (config.heads as u32, config.head_dim as u32);
    let (name, threads, shared) = match plan.kernel {
        AttnKernel::Heads(_) => ("engine_attention", ATTN_THREADS, 0),
        AttnKernel::Mma(name) => (name, MMA_ATTN_THREADS, mma_attn_smem_bytes(head_dim)),
    };
    if let (AttnKernel::Mma(name), Some(carveout)) = (plan.kernel, plan.carveout) {
        // Set at each launch (a plain attribute write): prefill and decode
        // launches of one run take different ones, and the first of each
        // runs before the decode step is captured in a graph.
        gpu.kernel(name)?.prefer_shared_carveout(carveout.percent)?;
    }
    // SAFETY: lengths checked above; the kernel traps on a sequence or
    // position outside the cache, or a shape it does not cover; rope_kv
    // filled the cache up to each row's position earlier on this stream;
    // the grid and (dynamic) shared memory are the plan's kernel's.
    unsafe {
        launch!(
            gpu,
            name name,
            grid,
            threads,
            shared,
            (
                q,
                q_stride,
                out.as_device_ptr(),
                workspace.as_device_ptr(),
                counters.as_device_ptr(),
                rows.seq.as_device_ptr(),
                rows.pos.as_device_ptr(),
                cache.k[layer].as_device_ptr(),
                cache.v[layer].as_device_ptr(),
                q_heads,
                u32_of("kv_heads", config.kv_heads)?,
                head_dim,
                u32_of("cache capacity", cache.capacity)?,
                u32_of("cache sequences", cache.sequences)?,
                scale
            )
        )
    }
}

/// `out = silu(gate) ⊙ up` for `rows` rows of `cols` values, gate and up
/// parts 0 and 1 of a gate/up product.
pub fn swiglu(
    gpu: &Gpu,
    gate_up: &Parts<'_>,
    out: &mut DeviceSlice<bf16>,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let (gate, g_stride) = gate_up.part(0, rows, cols, "gate")?;
    let (up, u_stride) = gate_up.part(1, rows, cols, "up")?;
    if g_stride != u_stride {
        return Err(Error::Invalid(format!(
            "kernel launch: gate rows of {g_stride} values, up rows of {u_stride}"
        )));
    }
    check("swiglu output", out.len(), rows * cols)?;
    let len32 = u32_of("swiglu elements", rows * cols)?;
    let blocks = len32.div_ceil(ELEMENT_THREADS).clamp(1, 65535 * 8);
    // SAFETY: both parts were checked to hold `rows` rows at their stride.
    unsafe {
        launch!(
            gpu,
            engine_swiglu,
            blocks,
            ELEMENT_THREADS,
            0,
            (
                gate,
                up,
                out.as_device_ptr(),
                len32,
                u32_of("swiglu columns", cols)?,
                g_stride
            )
        )
    }
}

/// The decode state the selection and advance kernels share, on the GPU.
pub struct StepState<'a> {
    /// `[0]`: the step counter (history row to write).
    pub counter: &'a DeviceSlice<u32>,
    /// Each sequence's next input token (written here).
    pub tokens: &'a DeviceSlice<u32>,
    /// `max_steps × batch` chosen tokens.
    pub history: &'a DeviceSlice<u32>,
    pub max_steps: usize,
}

/// Chooses each of `batch` sequences' next token from `logits` (`batch ×
/// vocab` f32); `probs` is scratch of the same size.
pub fn select(
    gpu: &Gpu,
    logits: &DeviceSlice<f32>,
    probs: &DeviceSlice<f32>,
    batch: usize,
    vocab: usize,
    sampling: &Sampling,
    state: &StepState<'_>,
) -> Result<()> {
    check("logits", logits.len(), batch * vocab)?;
    check("sampling scratch", probs.len(), batch * vocab)?;
    check("step counter", state.counter.len(), 1)?;
    check("next tokens", state.tokens.len(), batch)?;
    check(
        "token history",
        state.history.len(),
        state.max_steps * batch,
    )?;
    u32_of("logits", batch * vocab)?;
    let grid = rows_grid(batch)?;
    // SAFETY: lengths checked above.
    unsafe {
        launch!(
            gpu,
            engine_select,
            grid,
            ROW_THREADS,
            0,
            (
                logits.as_device_ptr(),
                vocab as u32,
                probs.as_device_ptr(),
                sampling.temperature,
                sampling.top_p,
                sampling.seed,
                state.counter.as_device_ptr(),
                state.tokens.as_device_ptr(),
                state.history.as_device_ptr(),
                u32_of("steps", state.max_steps)?
            )
        )
    }
}

/// Moves every sequence's position and the step counter on by one.
pub fn advance(
    gpu: &Gpu,
    positions: &DeviceSlice<u32>,
    batch: usize,
    counter: &DeviceSlice<u32>,
) -> Result<()> {
    check("positions", positions.len(), batch)?;
    check("step counter", counter.len(), 1)?;
    let batch32 = u32_of("batch", batch)?;
    let blocks = batch32.div_ceil(ROW_THREADS).max(1);
    // SAFETY: lengths checked above.
    unsafe {
        launch!(
            gpu,
            engine_advance,
            blocks,
            ROW_THREADS,
            0,
            (positions.as_device_ptr(), batch32, counter.as_device_ptr())
        )
    }
}
