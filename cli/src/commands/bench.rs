//! `zipserv bench`: time one GEMM shape (the paper's `test_mm M K N SplitK`)
//! at one or more batch sizes, the Llama-3-8B sweep, or every 2-D BF16
//! tensor of a model's own weights, for ZipGEMM, decompress + cuBLAS,
//! cuBLAS and cuBLASLt, and write the record under `--out`.

use std::io::Write;
use std::path::PathBuf;

use crate::error::{CliError, Result};
use zipserv_benches::{
    BenchRecord, BenchWeights, Case, DECODE_N, FullBench, Replay, Runner, TimingOptions,
    for_each_matrix, llama3_8b_sweep,
};
use zipserv_gpu::{Cublas, CublasLt, Gpu};

/// `--timing`: see [`BenchArgs::timing`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TimingMode {
    Graph,
    Launches,
}

/// Arguments of `zipserv bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// `M K N [N ...]`: one shape (W is M×K, X is N×K) at one or more
    /// batch sizes; with `--weights`, only the batch sizes N to time each
    /// tensor at (default: 1 8 16 32 64 128 256).
    #[arg(value_name = "M K N... | N...")]
    pub dims: Vec<usize>,
    /// Run the Llama-3-8B layer shapes at N = 1 … 256 and the prefill
    /// sizes 512 and 2048 on trained-like synthetic weights.
    #[arg(long, conflicts_with = "weights")]
    pub sweep: bool,
    /// Time every 2-D BF16 tensor of a model's own weights: a `.zsv` file,
    /// a BF16 `.safetensors` file, or a directory of such files.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// With `--weights`: only the tensor of this name.
    #[arg(long, value_name = "NAME", requires = "weights")]
    pub tensor: Option<String>,
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
    /// How each timed batch of launches is sent: `graph` (captured once,
    /// replayed: the GPU's time) or `launches` (enqueued call by call: the
    /// host's time where a call costs it more than the GPU, as cuBLAS's do
    /// at small shapes; the method of records before this option).
    #[arg(long, value_enum, default_value_t = TimingMode::Graph)]
    pub timing: TimingMode,
    /// Directory for the JSON record and its markdown table.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    pub device: u32,
}

/// What a `zipserv bench` command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Cases on synthetic weights (one shape, or the sweep).
    Cases(Vec<Case>),
    /// Every matrix of a model's files (or the one named) at each batch
    /// size.
    Weights {
        path: PathBuf,
        tensor: Option<String>,
        batches: Vec<usize>,
        split_k: usize,
    },
}

impl BenchArgs {
    /// The plan, with every dimension and batch size checked to be at
    /// least 1.
    pub fn plan(&self) -> Result<Plan> {
        let usage = |msg: &str| Err(CliError::Usage(msg.to_string()));
        let positive = |name: &str, value: usize| {
            if value == 0 {
                Err(CliError::Usage(format!("{name} must be at least 1")))
            } else {
                Ok(value)
            }
        };
        let split_k = self.split_k;
        // Batch sizes, each at least 1 and none twice.
        let batches = |ns: &[usize]| -> Result<Vec<usize>> {
            let mut seen = std::collections::HashSet::new();
            ns.iter()
                .map(|&n| match positive("N", n)? {
                    n if !seen.insert(n) => Err(CliError::Usage(format!("N = {n} is given twice"))),
                    n => Ok(n),
                })
                .collect()
        };
        if let Some(path) = &self.weights {
            return Ok(Plan::Weights {
                path: path.clone(),
                tensor: self.tensor.clone(),
                batches: if self.dims.is_empty() {
                    DECODE_N.to_vec()
                } else {
                    batches(&self.dims)?
                },
                split_k,
            });
        }
        if self.sweep {
            if !self.dims.is_empty() {
                return usage("--sweep takes no M K N");
            }
            return Ok(Plan::Cases(llama3_8b_sweep(split_k)));
        }
        match self.dims[..] {
            [m, k, ref ns @ ..] if !ns.is_empty() => {
                let (m, k) = (positive("M", m)?, positive("K", k)?);
                Ok(Plan::Cases(
                    batches(ns)?
                        .into_iter()
                        .map(|n| Case { m, k, n, split_k })
                        .collect(),
                ))
            }
            _ => usage("give M K N [N ...], --sweep, or --weights FILE [N ...]"),
        }
    }

    pub fn timing(&self) -> Result<TimingOptions> {
        if self.iters == 0 {
            return Err(CliError::Usage("--iters must be at least 1".into()));
        }
        Ok(TimingOptions {
            warmup: self.warmup,
            iters: self.iters,
            replay: match self.timing {
                TimingMode::Graph => Replay::Graph,
                TimingMode::Launches => Replay::Launches,
            },
        })
    }
}

/// Runs the benchmark on the GPU and writes its record.
pub fn run(args: &BenchArgs) -> Result<()> {
    let plan = args.plan()?;
    let timing = args.timing()?;
    if let Plan::Weights { path, .. } = &plan {
        // Say so now if the weights are not there, not after the GPU's
        // set-up and the copy-bandwidth measurement.
        std::fs::metadata(path).map_err(zipserv_format::Error::io(path))?;
    }
    let gpu = Gpu::new(args.device)?;
    let blas = Cublas::new(&gpu)?;
    let lt = CublasLt::new(&gpu)?;
    let mut record = BenchRecord::detect(&gpu)?;
    record.timing = timing.replay.describe().to_string();
    let mut stdout = std::io::stdout().lock();
    let mut bench = FullBench::new(&gpu, &blas, &lt, timing);
    let record = match plan {
        Plan::Cases(cases) => {
            let what = format!("{} cases", cases.len());
            let mut runner = Runner::start(record, &mut stdout, &what)?;
            for case in &cases {
                runner.run(case, |c| bench.run(c))?;
            }
            runner.finish()
        }
        Plan::Weights {
            path,
            tensor,
            batches,
            split_k,
        } => {
            let what = format!("weights {}", path.display());
            let mut runner = Runner::start(record, &mut stdout, &what)?;
            for_each_matrix(&path, tensor.as_deref(), |matrix| {
                let weights = BenchWeights::from_file(matrix)?;
                runner.note(&format!(
                    "{} ({}x{}, ratio {:.3}, {:.2}% exceptions)",
                    weights.label(),
                    weights.rows(),
                    weights.cols(),
                    weights.ratio(),
                    100.0 * weights.exception_rate()
                ))?;
                for &n in &batches {
                    let case = Case {
                        m: weights.rows(),
                        k: weights.cols(),
                        n,
                        split_k,
                    };
                    runner.run(&case, |c| bench.run_on(&weights, c))?;
                }
                Ok(())
            })?;
            runner.finish()
        }
    };
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

    fn plan(argv: &[&str]) -> Result<Plan> {
        parse(argv).expect("parses").plan()
    }

    #[test]
    fn one_case() {
        let args = parse(&["4096", "14336", "16", "--split-k", "2", "--iters", "50"]).unwrap();
        assert_eq!(
            args.plan().unwrap(),
            Plan::Cases(vec![Case {
                m: 4096,
                k: 14336,
                n: 16,
                split_k: 2
            }])
        );
        assert_eq!(args.timing().unwrap().iters, 50);
        assert_eq!(args.out, PathBuf::from("bench/results"));
        // One shape at several batch sizes.
        let Plan::Cases(cases) = plan(&["28672", "4096", "1", "64", "2048"]).unwrap() else {
            panic!("a list of cases");
        };
        let shapes: Vec<(usize, usize, usize)> = cases.iter().map(|c| (c.m, c.k, c.n)).collect();
        assert_eq!(
            shapes,
            [(28672, 4096, 1), (28672, 4096, 64), (28672, 4096, 2048)]
        );
    }

    #[test]
    fn sweep() {
        let args = parse(&["--sweep", "--out", "elsewhere"]).unwrap();
        let Plan::Cases(cases) = args.plan().unwrap() else {
            panic!("the sweep is a list of cases");
        };
        assert_eq!(cases.len(), 36);
        assert!(cases.iter().any(|c| c.n == 2048));
        assert_eq!(args.out, PathBuf::from("elsewhere"));
    }

    #[test]
    fn weights() {
        assert_eq!(
            plan(&["--weights", "model.zsv"]).unwrap(),
            Plan::Weights {
                path: "model.zsv".into(),
                tensor: None,
                batches: DECODE_N.to_vec(),
                split_k: 0,
            }
        );
        assert_eq!(
            plan(&[
                "--weights",
                "llama/",
                "--tensor",
                "model.layers.0.mlp.down_proj.weight",
                "1",
                "16",
                "2048",
                "--split-k",
                "4",
            ])
            .unwrap(),
            Plan::Weights {
                path: "llama/".into(),
                tensor: Some("model.layers.0.mlp.down_proj.weight".into()),
                batches: vec![1, 16, 2048],
                split_k: 4,
            }
        );
        // One N alone is a batch size, not a shape.
        let Plan::Weights { batches, .. } = plan(&["--weights", "m.zsv", "8"]).unwrap() else {
            panic!("weights plan");
        };
        assert_eq!(batches, [8]);
    }

    #[test]
    fn bad_command_lines() {
        assert!(matches!(plan(&[]), Err(CliError::Usage(_))));
        assert!(matches!(plan(&["4096", "4096"]), Err(CliError::Usage(_))));
        assert!(matches!(
            plan(&["4096", "4096", "1", "1"]),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            plan(&["4096", "4096", "1", "0"]),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            plan(&["--sweep", "4096", "4096", "1"]),
            Err(CliError::Usage(_))
        ));
        assert!(parse(&["4096", "x", "1"]).is_err());
        assert!(matches!(plan(&["4096", "0", "1"]), Err(CliError::Usage(_))));
        let no_iters = parse(&["4096", "4096", "1", "--iters", "0"]).unwrap();
        assert!(matches!(no_iters.timing(), Err(CliError::Usage(_))));
        // --tensor needs --weights; --weights and --sweep exclude each other.
        assert!(parse(&["--tensor", "a", "4096", "4096", "1"]).is_err());
        assert!(parse(&["--sweep", "--weights", "m.zsv"]).is_err());
        assert!(matches!(
            plan(&["--weights", "m.zsv", "0"]),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            plan(&["--weights", "m.zsv", "8", "8"]),
            Err(CliError::Usage(_))
        ));
        assert!(parse(&["--weights", "m.zsv", "-1"]).is_err());
    }
}
