//! `zipserv` command-line tool.

mod commands;
mod error;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "zipserv",
    version,
    about = "Lossless BF16 weight compression for fast GPU inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compress a safetensors file: 2-D BF16 tensors into the tile format,
    /// every other tensor stored as it is.
    Compress {
        /// Input `.safetensors` file.
        input: PathBuf,
        /// Output `.zsv` file.
        #[arg(short, long)]
        output: PathBuf,
        /// Round F16/F32/F64 tensors to BF16 (nearest even) instead of
        /// rejecting them.
        #[arg(long)]
        cast_bf16: bool,
    },
    /// Write a `.zsv` file back as safetensors, bit for bit.
    Decompress {
        /// Input `.zsv` file.
        input: PathBuf,
        /// Output `.safetensors` file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Per-tensor table of a `.zsv` file: shape, ratio, coverage, bits per
    /// weight, exponent entropy and the ratio bound 16 / (8 + H).
    Inspect {
        /// Input `.zsv` file.
        input: PathBuf,
    },
    /// Run one tensor-core tile on the GPU and check it against the CPU.
    Demo {
        /// CUDA device ordinal.
        #[arg(long, default_value_t = 0)]
        device: u32,
        /// Seed for the random inputs (default: fresh each run).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Print the embedded PTX (for inspection with ptxas / cuobjdump).
    Ptx,
    /// Time GEMM paths on the GPU (`bench M K N`, `bench --sweep`, or
    /// `bench --weights FILE [N ...]` on a model's own tensors) and write a
    /// JSON record with a markdown table.
    Bench(commands::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compress {
            input,
            output,
            cast_bf16,
        } => commands::compress::run(&input, &output, cast_bf16),
        Command::Decompress { input, output } => commands::decompress::run(&input, &output),
        Command::Inspect { input } => commands::inspect::run(&input),
        Command::Demo { device, seed } => commands::demo::run(device, seed),
        Command::Ptx => {
            print!("{}", zipserv_gpu::PTX);
            Ok(())
        }
        Command::Bench(args) => commands::bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
