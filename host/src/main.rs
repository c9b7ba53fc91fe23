//! `zipserv` command-line tool.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zipserv::gpu::{Gpu, run_demo_mma};

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
    /// Time GEMM paths on the GPU (`bench M K N` or `bench --sweep`) and
    /// write a JSON record with a markdown table.
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> zipserv::Result<()> {
    match cli.command {
        Command::Demo { device, seed } => {
            let gpu = Gpu::new(device)?;
            let seed = seed.unwrap_or_else(zipserv::rng::fresh_seed);
            let info = gpu.info();
            println!(
                "device {device}: {} (sm_{}{}, {} SMs, CUDA {}.{} driver), PTX built for {}",
                info.name,
                info.compute_capability.0,
                info.compute_capability.1,
                info.multiprocessors,
                info.cuda_driver_version.0,
                info.cuda_driver_version.1,
                zipserv::gpu::PTX_ARCH
            );
            let report = run_demo_mma(&gpu, seed)?;
            println!(
                "demo mma.sync m16n8k16 bf16 (seed {seed}): max |err| {:.3e}, relative error {:.3e} vs f64 CPU reference: OK",
                report.max_abs_err, report.rel_err
            );
        }
        Command::Ptx => print!("{}", zipserv::gpu::PTX),
        Command::Bench(args) => cli::bench::run(&args)?,
    }
    Ok(())
}
