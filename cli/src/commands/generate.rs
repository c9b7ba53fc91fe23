//! `zipserv generate`: text from a Llama-family model on the GPU, from BF16
//! weights (cuBLAS) or compressed weights (ZipGEMM), with the prefill time,
//! decode speed and GPU memory it took.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use zipserv_engine::generate::StepMode;
use zipserv_engine::linear::describe_paths;
use zipserv_engine::model::Stacking;
use zipserv_engine::source::Source;
use zipserv_engine::tokenizer::Tokenizer;
use zipserv_engine::{Generator, Model, RunOptions, Sampling, WeightForm};
use zipserv_gpu::{Gpu, LaunchOrder};

use super::human_bytes;
use crate::error::{CliError, Result};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Weights {
    Bf16,
    Compressed,
}

/// `--launch-overlap`: whether each kernel may start while the one before
/// it on the stream still runs (`zipserv_gpu::Gpu::set_launch_overlap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LaunchOverlap {
    /// On where the device supports it (Hopper with the sm_90a image), off
    /// elsewhere; the run's report says which.
    Auto,
    /// On, or an error where unsupported.
    On,
    Off,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A Hugging Face model directory (config.json, tokenizer.json, BF16
    /// safetensors) or a directory made by `zipserv compress`.
    #[arg(
        long,
        required_unless_present = "random_weights",
        conflicts_with = "random_weights"
    )]
    model: Option<PathBuf>,
    /// Random weights (trained-like exponents) for the model this
    /// config.json describes, drawn tensor by tensor; prompts as ids.
    #[arg(long, value_name = "CONFIG")]
    random_weights: Option<PathBuf>,
    /// Seed of --random-weights.
    #[arg(long, default_value_t = 0)]
    weights_seed: u64,
    /// With --random-weights: draw block 0 only and make every other block
    /// a copy of it (own GPU buffers, same values), for 70B-class shapes
    /// whose drawing would take many CPU minutes.
    #[arg(long)]
    repeat_layers: bool,
    /// A prompt; repeat for several sequences.
    #[arg(long, conflicts_with_all = ["prompt_ids", "random_prompt"])]
    prompt: Vec<String>,
    /// Prompts as token ids: comma-separated, sequences separated by `;`
    /// (e.g. `1,2,3;4,5`).
    #[arg(long, conflicts_with = "random_prompt")]
    prompt_ids: Option<String>,
    /// A prompt of this many random token ids (from --seed), for speed runs.
    #[arg(long, value_name = "LEN")]
    random_prompt: Option<usize>,
    /// Sequences to run at once; the prompts are repeated in turn to fill
    /// the batch (default: one per prompt). A list (`1,8,32`) runs each
    /// batch size in turn with the model loaded once.
    #[arg(long)]
    batch: Option<String>,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Generate --max-new-tokens for every sequence, past its EOS (speed
    /// runs); by default a sequence ends at the first EOS id of
    /// config.json it generates, and the run once every sequence has.
    #[arg(long)]
    ignore_eos: bool,
    /// How the GPU holds the matrices (default: compressed for a compressed
    /// directory, else bf16).
    #[arg(long, value_enum)]
    weights: Option<Weights>,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Launch the decode step kernel by kernel instead of as a CUDA graph.
    #[arg(long)]
    no_graph: bool,
    /// KV cache positions per sequence (default: the longest prompt plus
    /// --max-new-tokens).
    #[arg(long, value_name = "POSITIONS")]
    context: Option<usize>,
    /// Keep Q/K/V and gate/up as separate products instead of stacking
    /// each group into one matrix (for comparisons).
    #[arg(long)]
    no_stack: bool,
    /// Let each kernel start while the kernel before it still runs (the
    /// next product fetches its first weights meanwhile).
    #[arg(long, value_enum, default_value_t = LaunchOverlap::Auto)]
    launch_overlap: LaunchOverlap,
    /// After the run, time one more decode step kernel by kernel with an
    /// event after each launch, and print where its time went.
    #[arg(long)]
    profile_step: bool,
    /// Write every step's logits: little-endian f32, [step][sequence][vocab].
    #[arg(long, value_name = "FILE")]
    dump_logits: Option<PathBuf>,
    /// Write tokens, timings and memory as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    device: u32,
}

fn engine(e: zipserv_engine::Error) -> CliError {
    match e {
        zipserv_engine::Error::Gpu(g) => CliError::Gpu(g),
        zipserv_engine::Error::Format(f) => CliError::Format(f),
        other => CliError::Usage(other.to_string()),
    }
}

/// `1,2,3;4,5` → [[1, 2, 3], [4, 5]].
fn parse_ids(text: &str) -> Result<Vec<Vec<u32>>> {
    text.split(';')
        .map(|seq| {
            seq.split(',')
                .map(|t| {
                    t.trim().parse::<u32>().map_err(|_| {
                        CliError::Usage(format!("--prompt-ids: `{}` is not a token id", t.trim()))
                    })
                })
                .collect()
        })
        .collect()
}

/// Random ids in `0..vocab` (SplitMix64 from `seed`).
fn random_ids(len: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) % vocab as u64) as u32
        })
        .collect()
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let sampling = Sampling::new(args.temperature, args.top_p, args.seed).map_err(engine)?;
    // (clap's `requires` did not fire beside --model's conflict rule.)
    if args.repeat_layers && args.random_weights.is_none() {
        return Err(CliError::Usage(
            "--repeat-layers copies block 0 of --random-weights; it needs --random-weights".into(),
        ));
    }
    let source = match (&args.model, &args.random_weights) {
        (Some(dir), _) => Source::open(dir),
        (None, Some(config)) => Source::random(config, args.weights_seed, args.repeat_layers),
        (None, None) => unreachable!("clap requires one"),
    }
    .map_err(engine)?;
    let src = source.as_dyn();
    let config = src.config().clone();
    let tokenizer = match src.tokenizer() {
        Some(path) => Some(Tokenizer::from_file(&path).map_err(engine)?),
        None => None,
    };
    let prompts: Vec<Vec<u32>> = if let Some(ids) = &args.prompt_ids {
        parse_ids(ids)?
    } else if let Some(len) = args.random_prompt {
        vec![random_ids(len, config.vocab, args.seed)]
    } else if !args.prompt.is_empty() {
        let Some(tok) = &tokenizer else {
            return Err(CliError::Usage(
                "the model has no tokenizer.json: give the prompt with --prompt-ids".into(),
            ));
        };
        args.prompt
            .iter()
            .map(|p| tok.encode(p))
            .collect::<std::result::Result<_, _>>()
            .map_err(engine)?
    } else {
        return Err(CliError::Usage(
            "give a prompt: --prompt TEXT, --prompt-ids IDS or --random-prompt LEN".into(),
        ));
    };
    if let Some(empty) = prompts.iter().position(Vec::is_empty) {
        return Err(CliError::Usage(format!("prompt {empty} has no tokens")));
    }
    let batches = match &args.batch {
        Some(list) => parse_batches(list)?,
        None => vec![BatchSize::Fixed(prompts.len())],
    };
    if batches.len() > 1 && args.dump_logits.is_some() {
        return Err(CliError::Usage("--dump-logits takes one batch size".into()));
    }
    let form = match args.weights {
        Some(Weights::Bf16) => WeightForm::Bf16,
        Some(Weights::Compressed) => WeightForm::Compressed,
        None if matches!(source, Source::Compressed(_)) => WeightForm::Compressed,
        None => WeightForm::Bf16,
    };

    // Checked here too (the engine refuses it as well), so a bad --context
    // costs no GPU start and no model load.
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if let Some(c) = args.context
        && c < longest + args.max_new_tokens
    {
        return Err(CliError::Usage(format!(
            "--context {c} is shorter than the longest prompt ({longest} tokens) plus --max-new-tokens {}",
            args.max_new_tokens
        )));
    }
    let mut gpu = Gpu::new(args.device)?;
    match args.launch_overlap {
        LaunchOverlap::On => gpu.set_launch_overlap(true)?,
        // Unsupported here means off, which the report prints.
        LaunchOverlap::Auto => gpu.set_launch_overlap(true).unwrap_or(()),
        LaunchOverlap::Off => gpu.set_launch_overlap(false)?,
    }
    let gpu = gpu;
    let t0 = std::time::Instant::now();
    let mut loaded = 0usize;
    let stacking = if args.no_stack {
        Stacking::Separate
    } else {
        Stacking::Stack
    };
    let model = Model::load(&gpu, src, form, stacking, |_| loaded += 1).map_err(engine)?;
    let load_s = t0.elapsed().as_secs_f64();
    let mut generator = Generator::new(&gpu, &model).map_err(engine)?;
    let options = RunOptions {
        max_new_tokens: args.max_new_tokens,
        sampling,
        graph: !args.no_graph,
        keep_logits: args.dump_logits.is_some(),
        profile_step: args.profile_step,
        context: args.context,
        stop_tokens: if args.ignore_eos {
            Vec::new()
        } else {
            config.eos_token_ids.clone()
        },
    };
    let mut records = Vec::new();
    for &size in &batches {
        let batch = match size {
            BatchSize::Fixed(b) => b,
            BatchSize::Max => {
                let longest = prompts.iter().map(Vec::len).max().unwrap_or(1);
                let context = args.context.unwrap_or(longest + args.max_new_tokens);
                let b = generator
                    .max_batch(longest, args.max_new_tokens, context, MAX_BATCH_RESERVE)
                    .map_err(engine)?;
                println!(
                    "largest batch that fits: {b} (context {context}, {longest}-token prompts, {:.1} GB kept free)",
                    MAX_BATCH_RESERVE as f64 / 1e9
                );
                b
            }
        };
        let prompts: Vec<Vec<u32>> = (0..batch)
            .map(|i| prompts[i % prompts.len()].clone())
            .collect();
        let out = generator.run(&prompts, &options).map_err(engine)?;
        report(
            &gpu,
            src.label(),
            &config,
            &model,
            form,
            load_s,
            loaded,
            &tokenizer,
            &prompts,
            args,
            &out,
        )?;
        if let Some(path) = &args.dump_logits {
            write_logits(path, &out.logits)?;
        }
        records.push(record(
            &gpu,
            src.label(),
            &config,
            &model,
            form,
            load_s,
            &prompts,
            &out,
        ));
    }
    if let Some(path) = &args.json {
        let json = if records.len() == 1 {
            records.remove(0)
        } else {
            serde_json::Value::Array(records)
        };
        write_file(
            path,
            serde_json::to_string_pretty(&json)
                .expect("serializes")
                .as_bytes(),
        )?;
    }
    Ok(())
}

/// The text of each sequence (up to its first EOS), then the run's numbers.
#[allow(clippy::too_many_arguments)]
fn report(
    gpu: &Gpu,
    label: String,
    config: &zipserv_engine::ModelConfig,
    model: &Model,
    form: WeightForm,
    load_s: f64,
    loaded: usize,
    tokenizer: &Option<Tokenizer>,
    prompts: &[Vec<u32>],
    args: &GenerateArgs,
    out: &zipserv_engine::Generation,
) -> Result<()> {
    for (i, (prompt, tokens)) in prompts.iter().zip(&out.tokens).enumerate() {
        let end = tokens
            .iter()
            .position(|t| config.eos_token_ids.contains(t))
            .unwrap_or(tokens.len());
        match tokenizer {
            Some(tok) => {
                let text = tok.decode(&tokens[..end]).map_err(engine)?;
                let prompt_text = tok.decode(prompt).map_err(engine)?;
                println!("[{i}] {prompt_text}{text}");
            }
            None => println!("[{i}] {:?}", &tokens[..end]),
        }
    }
    let t = &out.timings;
    let info = gpu.info();
    println!("---");
    println!(
        "model: {label} ({} layers, hidden {}, {} heads / {} KV heads, vocab {}); weights {} on {}",
        config.layers,
        config.hidden,
        config.heads,
        config.kv_heads,
        config.vocab,
        form.name(),
        info.name
    );
    println!(
        "batch {}, prompt tokens {}, new tokens {} each{}; linear path: prefill {}, decode {}",
        prompts.len(),
        prompts.iter().map(Vec::len).sum::<usize>(),
        args.max_new_tokens,
        ended_note(&out.ended, out.steps_run, args.max_new_tokens),
        describe_paths(&out.prefill_paths),
        describe_paths(&out.decode_paths)
    );
    println!(
        "load: {load_s:.2} s ({loaded} tensors; Q/K/V and gate/up stacked in {} of {} groups)",
        model.stacked_groups(),
        2 * config.layers
    );
    for why in &model.unstacked {
        println!("not stacked: {why}");
    }
    println!(
        "prefill: {:.2} ms (prompt in, first token out)",
        1e3 * t.prefill_s
    );
    match (out.tokens_per_s(), out.ms_per_step()) {
        (Some(tps), Some(ms)) => println!(
            "decode: {tps:.1} tokens/s, {ms:.3} ms per token per sequence ({} steps after the first; first step + capture {:.2} ms)",
            t.steady_steps,
            1e3 * t.first_step_s
        ),
        _ => println!("decode: too few steps to time (give --max-new-tokens 3 or more)"),
    }
    match &out.step_mode {
        StepMode::Graph => println!("decode step: CUDA graph replays"),
        StepMode::Eager(why) => println!("decode step: kernel by kernel ({why})"),
    }
    println!(
        "launch overlap: {}",
        match gpu.launch_order() {
            LaunchOrder::Overlapped => "on (each kernel may start while the one before ends)",
            LaunchOrder::AfterPrevious => "off",
        }
    );
    if let Some(p) = &out.profile {
        let parts: Vec<String> = p
            .parts
            .iter()
            .map(|(kind, ms)| format!("{kind} {ms:.3} ms ({:.0}%)", 100.0 * ms / p.total_ms()))
            .collect();
        println!(
            "profiled decode step (kernel by kernel, an event after each launch): {:.3} ms: {}",
            p.total_ms(),
            parts.join(", ")
        );
    }
    println!(
        "GPU memory: weights {} ({} as BF16), KV cache {}, activations and scratch {}",
        human_bytes(model.weight_bytes()),
        human_bytes(zipserv_engine::plan::bf16_bytes(config)),
        human_bytes(out.kv_cache_bytes),
        human_bytes(out.scratch_bytes)
    );
    Ok(())
}

/// How many sequences ended at EOS and where the run stopped, if any did.
fn ended_note(ended: &[bool], steps_run: usize, max_new_tokens: usize) -> String {
    let n = ended.iter().filter(|&&e| e).count();
    match (n, steps_run < max_new_tokens) {
        (0, _) => String::new(),
        (_, true) => format!(
            " at most ({n} of {} ended at EOS; the run stopped after {steps_run} steps)",
            ended.len()
        ),
        (_, false) => format!(" at most ({n} of {} ended at EOS)", ended.len()),
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    gpu: &Gpu,
    label: String,
    config: &zipserv_engine::ModelConfig,
    model: &Model,
    form: WeightForm,
    load_s: f64,
    prompts: &[Vec<u32>],
    out: &zipserv_engine::Generation,
) -> serde_json::Value {
    let t = &out.timings;
    serde_json::json!({
        "model": label,
        "weights": form.name(),
        "device": gpu.info().name,
        "commit": zipserv_gpu::BUILD_COMMIT,
        "batch": prompts.len(),
        "prompts": prompts,
        "tokens": out.tokens,
        "ended_at_eos": out.ended,
        "steps_run": out.steps_run,
        "vocab": config.vocab,
        "prefill_s": t.prefill_s,
        "first_step_s": t.first_step_s,
        "steady_s": t.steady_s,
        "steady_steps": t.steady_steps,
        "tokens_per_s": out.tokens_per_s(),
        "ms_per_step": out.ms_per_step(),
        "graph": matches!(out.step_mode, StepMode::Graph),
        "launch_overlap": gpu.launch_order() == LaunchOrder::Overlapped,
        "stacked_groups": model.stacked_groups(),
        "step_mode": format!("{:?}", out.step_mode),
        "weight_bytes": model.weight_bytes(),
        "bf16_weight_bytes": zipserv_engine::plan::bf16_bytes(config),
        "kv_cache_bytes": out.kv_cache_bytes,
        "scratch_bytes": out.scratch_bytes,
        "load_s": load_s,
        "profile_ms": out.profile.as_ref().map(|p| p.parts.iter().map(|(k, ms)| (k.to_string(), *ms)).collect::<std::collections::BTreeMap<_, _>>()),
    })
}

/// `8` or `1,8,32` → batch sizes, each at least 1.
/// A `--batch` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchSize {
    Fixed(usize),
    /// The largest batch whose KV cache and activations fit the GPU.
    Max,
}

fn parse_batches(text: &str) -> Result<Vec<BatchSize>> {
    text.split(',')
        .map(|t| match t.trim() {
            "max" => Ok(BatchSize::Max),
            t => match t.parse::<usize>() {
                Ok(b) if b > 0 => Ok(BatchSize::Fixed(b)),
                _ => Err(CliError::Usage(format!(
                    "--batch: `{t}` is not a batch size (1 or more, or `max`)"
                ))),
            },
        })
        .collect()
}

/// GPU memory `--batch max` leaves free: cuBLAS's workspace, the CUDA
/// graph and allocation granularity.
const MAX_BATCH_RESERVE: u64 = 1 << 30;

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error| CliError::Usage(format!("{}: {e}", path.display()));
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(bytes).map_err(io)
}

fn write_logits(path: &Path, steps: &[Vec<f32>]) -> Result<()> {
    let bytes: Vec<u8> = steps
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write_file(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_ids_parse_per_sequence() {
        assert_eq!(
            parse_ids("1,2,3;4, 5").unwrap(),
            vec![vec![1, 2, 3], vec![4, 5]]
        );
        assert!(parse_ids("1,x").is_err());
        assert!(parse_ids("1,,2").is_err());
    }

    #[test]
    fn batch_lists() {
        use BatchSize::{Fixed, Max};
        assert_eq!(
            parse_batches("1, 8,32").unwrap(),
            [Fixed(1), Fixed(8), Fixed(32)]
        );
        assert_eq!(parse_batches("max,1").unwrap(), [Max, Fixed(1)]);
        assert!(parse_batches("maxi").is_err());
        assert!(parse_batches("0").is_err());
        assert!(parse_batches("1,,2").is_err());
    }

    #[test]
    fn random_prompts_stay_in_the_vocabulary() {
        let ids = random_ids(1000, 17, 3);
        assert!(ids.iter().all(|&t| t < 17));
        assert_eq!(ids, random_ids(1000, 17, 3));
        assert_ne!(ids, random_ids(1000, 17, 4));
    }
}
