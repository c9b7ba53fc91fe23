//! `zipserv bench`: time one GEMM shape (the paper's `test_mm M K N SplitK`),
//! or the Llama-3-8B sweep, for ZipGEMM, decompress + cuBLAS and cuBLAS, and
//! write the record under `--out`.

use std::io::Write;
use std::path::PathBuf;

use crate::error::{CliError, Result};
use zipserv_benches::{
    BenchRecord, Case, FullBench, TimingOptions, llama3_8b_sweep, run_benchmark,
};
use zipserv_gpu::{Cublas, Gpu};

/// Arguments of `zipserv bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Rows of W (output features); with K and N, one case.
    #[arg(required_unless_present = "sweep", conflicts_with = "sweep")]
    pub m: Option<usize>,
    /// Columns of W (input features).
    #[arg(required_unless_present = "sweep")]
    pub k: Option<usize>,
    /// Rows of X (tokens in the batch).
    #[arg(required_unless_present = "sweep")]
    pub n: Option<usize>,
    /// Run the Llama-3-8B layer shapes at N = 1 … 256 instead of one case.
    #[arg(long)]
    pub sweep: bool,
    /// K slices of the ZipGEMM kernel; 0 chooses from the shape and the
    /// number of multiprocessors.
    #[arg(long, default_value_t = 0)]
    pub split_k: usize,
    /// Timed iterations per path (the median is reported).
    #[arg(long, default_value_t = 100)]
    pub iters: usize,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Directory for the JSON record and its markdown table.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    pub device: u32,
}

impl BenchArgs {
    /// The cases to run, with every dimension checked to be at least 1.
    pub fn cases(&self) -> Result<Vec<Case>> {
        let positive = |name: &str, value: usize| {
            if value == 0 {
                Err(CliError::Usage(format!("{name} must be at least 1")))
            } else {
                Ok(value)
            }
        };
        let split_k = self.split_k;
        if self.sweep {
            return Ok(llama3_8b_sweep(split_k));
        }
        match (self.m, self.k, self.n) {
            (Some(m), Some(k), Some(n)) => Ok(vec![Case {
                m: positive("M", m)?,
                k: positive("K", k)?,
                n: positive("N", n)?,
                split_k,
            }]),
            _ => Err(CliError::Usage("give M K N, or --sweep".to_string())),
        }
    }

    pub fn timing(&self) -> Result<TimingOptions> {
        if self.iters == 0 {
            return Err(CliError::Usage("--iters must be at least 1".into()));
        }
        Ok(TimingOptions {
            warmup: self.warmup,
            iters: self.iters,
        })
    }
}

/// Runs the benchmark on the GPU and writes its record.
pub fn run(args: &BenchArgs) -> Result<()> {
    let cases = args.cases()?;
    let timing = args.timing()?;
    let gpu = Gpu::new(args.device)?;
    let blas = Cublas::new(&gpu)?;
    let record = BenchRecord::detect(&gpu)?;
    let mut stdout = std::io::stdout().lock();
    let mut bench = FullBench::new(&gpu, &blas, timing);
    let record = run_benchmark(record, &cases, &mut stdout, |case| bench.run(case))?;
    let (json, md) = record.write(&args.out)?;
    writeln!(stdout, "wrote {} and {}", json.display(), md.display())
        .map_err(zipserv_format::Error::io("<stdout>"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(argv: &[&str]) -> std::result::Result<BenchArgs, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
            .map(|w| w.args)
    }

    #[test]
    fn one_case() {
        let args = parse(&["4096", "14336", "16", "--split-k", "2", "--iters", "50"]).unwrap();
        assert_eq!(
            args.cases().unwrap(),
            [Case {
                m: 4096,
                k: 14336,
                n: 16,
                split_k: 2
            }]
        );
        assert_eq!(args.timing().unwrap().iters, 50);
        assert_eq!(args.out, PathBuf::from("bench/results"));
    }

    #[test]
    fn sweep() {
        let args = parse(&["--sweep", "--out", "elsewhere"]).unwrap();
        assert_eq!(args.cases().unwrap().len(), 28);
        assert_eq!(args.out, PathBuf::from("elsewhere"));
    }

    #[test]
    fn bad_command_lines() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["4096", "4096"]).is_err());
        assert!(parse(&["--sweep", "4096", "4096", "1"]).is_err());
        assert!(parse(&["4096", "x", "1"]).is_err());
        let zero = parse(&["4096", "0", "1"]).unwrap();
        assert!(matches!(zero.cases(), Err(CliError::Usage(_))));
        let no_iters = parse(&["4096", "4096", "1", "--iters", "0"]).unwrap();
        assert!(matches!(no_iters.timing(), Err(CliError::Usage(_))));
    }
}
