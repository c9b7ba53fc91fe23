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
    /// Compress a safetensors file (to a `.zsv` file) or a Hugging Face
    /// model directory (to a new directory): 2-D BF16 tensors into the tile
    /// format where that is smaller, every other tensor and file as it is.
    Compress {
        /// Input `.safetensors` file or model directory.
        input: PathBuf,
        /// Output `.zsv` file (replaced atomically if it exists), or for a
        /// directory input a new directory.
        #[arg(short, long)]
        output: PathBuf,
        /// Round F16/F32/F64 tensors to BF16 (nearest even) instead of
        /// rejecting them.
        #[arg(long)]
        cast_bf16: bool,
    },
    /// Give back the safetensors file (or model directory) a `.zsv` file (or
    /// compressed directory) holds, byte for byte.
    Decompress {
        /// Input `.zsv` file or compressed directory.
        input: PathBuf,
        /// Output `.safetensors` file (replaced atomically if it exists), or
        /// for a directory input a new directory.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Per-tensor table of a `.zsv` file or compressed directory: shape,
    /// ratio, coverage, bits per weight, exponent entropy and the ratio bound
    /// 16 / (8 + H).
    Inspect {
        /// Input `.zsv` file or compressed directory.
        input: PathBuf,
    },
    /// Check that a compressed file or directory gives back its original
    /// (tensors rounded by --cast-bf16: their rounding), without writing
    /// anything.
    Verify {
        /// The original `.safetensors` file or model directory.
        original: PathBuf,
        /// Its compressed form.
        compressed: PathBuf,
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
    /// Generate text with a Llama-family model on the GPU, from BF16 weights
    /// (cuBLAS) or compressed weights (ZipGEMM), and report prefill time,
    /// decode speed and GPU memory.
    Generate(Box<commands::generate::GenerateArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ctrl-C, SIGTERM or SIGHUP while an output is being written: remove the
    // temporary files and directories, then exit as interrupted.
    let handler = ctrlc::set_handler(|| {
        zipserv_format::files::pending::remove_all();
        eprintln!("interrupted: nothing was written");
        std::process::exit(130);
    });
    if let Err(e) = handler {
        eprintln!("error: cannot install the interrupt handler: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Compress {
            input,
            output,
            cast_bf16,
        } => commands::compress::run(&input, &output, cast_bf16),
        Command::Decompress { input, output } => commands::decompress::run(&input, &output),
        Command::Inspect { input } => commands::inspect::run(&input),
        Command::Verify {
            original,
            compressed,
        } => commands::verify::run(&original, &compressed),
        Command::Demo { device, seed } => commands::demo::run(device, seed),
        Command::Ptx => {
            print!("{}", zipserv_gpu::PTX);
            Ok(())
        }
        Command::Bench(args) => commands::bench::run(&args),
        Command::Generate(args) => commands::generate::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
