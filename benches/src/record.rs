//! What a benchmark run found, as JSON (for tools) and markdown (for
//! people), written side by side under one file stem.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::bandwidth::{copy_bandwidth, gbps};
use super::provenance::{commit, driver_version, today_utc};
use super::table::num;
use zipserv_gpu::Gpu;
use zipserv_gpu::error::{Error, Result};

/// Bytes per bf16 element.
const BF16_BYTES: f64 = 2.0;

/// What [`Row::weights`] says for records written before the field
/// existed: those sweeps drew W as a sum of four uniforms.
pub const LEGACY_WEIGHTS: &str = "unrecorded (before the field: synthetic, sum of four uniforms)";

/// One measured case. Times are medians in µs; a path that was not
/// measured is NaN in memory and `null` in JSON. Fields added after the
/// first records default when absent (NaN, or [`LEGACY_WEIGHTS`]), so old
/// records still parse.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub split_k: usize,
    /// The fused decode + GEMM kernel.
    #[serde(with = "nan_as_null")]
    pub zipgemm_us: f64,
    /// Decompressing W to bf16, then cuBLAS on the result.
    #[serde(with = "nan_as_null")]
    pub decompress_cublas_us: f64,
    /// cuBLAS (`cublasGemmEx`, its default algorithm) on the uncompressed
    /// bf16 W.
    #[serde(with = "nan_as_null")]
    pub cublas_us: f64,
    /// Compression ratio of W: bf16 bytes / compressed bytes (every array
    /// the compressed form allocates counted).
    #[serde(with = "nan_as_null")]
    pub ratio: f64,
    /// How W was made: the synthetic generator and its seed, or
    /// `file:tensor` of a model's weights.
    #[serde(default = "legacy_weights")]
    pub weights: String,
    /// cuBLASLt on the bf16 W with the fastest of the algorithms its
    /// heuristics proposed (each timed, the winner timed again).
    #[serde(default = "nan", with = "nan_as_null")]
    pub cublaslt_us: f64,
    /// How many cuBLASLt algorithms were timed (0: cuBLASLt not run).
    #[serde(default)]
    pub cublaslt_algorithms: usize,
    /// The library's own BF16 GEMV (`zipserv_gpu::bf16_gemv`) on the bf16 W,
    /// for N up to its 8 (NaN, `null` in JSON, above).
    #[serde(default = "nan", with = "nan_as_null")]
    pub bf16_gemv_us: f64,
    /// The fastest of `cublas_us`, `cublaslt_us` and `bf16_gemv_us`: the
    /// baseline speedups are measured against.
    #[serde(default = "nan", with = "nan_as_null")]
    pub best_bf16_us: f64,
    /// Share of W's weights outside the exponent window (stored as
    /// exceptions).
    #[serde(default = "nan", with = "nan_as_null")]
    pub exception_rate: f64,
    /// Bytes of W as bf16 over the copy bandwidth: the time a kernel that
    /// only streams W once at the copy rate would take.
    #[serde(default = "nan", with = "nan_as_null")]
    pub bf16_floor_us: f64,
    /// The same for the compressed bytes of W.
    #[serde(default = "nan", with = "nan_as_null")]
    pub compressed_floor_us: f64,
    /// `bf16_floor_us / best_bf16_us`: the fraction of its floor the best
    /// bf16 path reaches (1: at the floor).
    #[serde(default = "nan", with = "nan_as_null")]
    pub best_bf16_of_floor: f64,
    /// `compressed_floor_us / zipgemm_us`.
    #[serde(default = "nan", with = "nan_as_null")]
    pub zipgemm_of_floor: f64,
    /// The decompression kernel alone (W compressed to bf16).
    #[serde(default = "nan", with = "nan_as_null")]
    pub decompress_us: f64,
    /// Its share of the copy bandwidth: compressed bytes read plus bf16
    /// bytes written, over its time, over the copy bandwidth
    /// (`(compressed_floor_us + bf16_floor_us) / decompress_us`).
    #[serde(default = "nan", with = "nan_as_null")]
    pub decompress_of_copy: f64,
}

fn nan() -> f64 {
    f64::NAN
}

fn legacy_weights() -> String {
    LEGACY_WEIGHTS.to_string()
}

/// Microseconds to move `bytes` at `gbps` GB/s (10⁹ bytes per second).
pub fn floor_us(bytes: f64, gbps: f64) -> f64 {
    bytes / gbps / 1e3
}

/// The smallest of the finite values among `values`; NaN if none is.
fn min_finite(values: &[f64]) -> f64 {
    values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NAN, f64::min)
}

impl Row {
    /// A row of shape `m×k`, batch `n`, with nothing measured yet.
    pub fn new(m: usize, k: usize, n: usize, split_k: usize, weights: impl Into<String>) -> Self {
        Self {
            m,
            k,
            n,
            split_k,
            zipgemm_us: f64::NAN,
            decompress_cublas_us: f64::NAN,
            cublas_us: f64::NAN,
            ratio: f64::NAN,
            weights: weights.into(),
            cublaslt_us: f64::NAN,
            cublaslt_algorithms: 0,
            bf16_gemv_us: f64::NAN,
            best_bf16_us: f64::NAN,
            exception_rate: f64::NAN,
            bf16_floor_us: f64::NAN,
            compressed_floor_us: f64::NAN,
            best_bf16_of_floor: f64::NAN,
            zipgemm_of_floor: f64::NAN,
            decompress_us: f64::NAN,
            decompress_of_copy: f64::NAN,
        }
    }

    /// Fills in what follows from the measured fields and the card's copy
    /// bandwidth: the best bf16 time, both floors and the fraction of each
    /// floor reached. [`crate::Runner`] calls it on every row it records.
    pub fn complete(&mut self, copy_gbps: f64) {
        self.best_bf16_us = min_finite(&[self.cublas_us, self.cublaslt_us, self.bf16_gemv_us]);
        self.bf16_floor_us = floor_us(self.weight_bytes(), copy_gbps);
        self.compressed_floor_us = floor_us(self.compressed_weight_bytes(), copy_gbps);
        self.best_bf16_of_floor = self.bf16_floor_us / self.best_bf16_us;
        self.zipgemm_of_floor = self.compressed_floor_us / self.zipgemm_us;
        self.decompress_of_copy =
            (self.compressed_floor_us + self.bf16_floor_us) / self.decompress_us;
    }

    /// Bytes of W as bf16.
    pub fn weight_bytes(&self) -> f64 {
        BF16_BYTES * self.m as f64 * self.k as f64
    }

    /// Bytes of W compressed (from the ratio).
    pub fn compressed_weight_bytes(&self) -> f64 {
        self.weight_bytes() / self.ratio
    }

    /// Bytes of X plus Y, both bf16.
    pub fn activation_bytes(&self) -> f64 {
        BF16_BYTES * self.n as f64 * (self.k + self.m) as f64
    }

    /// Effective GB/s of zipgemm: compressed W + X + Y over its time.
    pub fn zipgemm_gbps(&self) -> f64 {
        gbps(
            self.compressed_weight_bytes() + self.activation_bytes(),
            self.zipgemm_us,
        )
    }

    /// Effective GB/s of cuBLAS: bf16 W + X + Y over its time.
    pub fn cublas_gbps(&self) -> f64 {
        gbps(
            self.weight_bytes() + self.activation_bytes(),
            self.cublas_us,
        )
    }

    /// Best bf16 time over zipgemm time (> 1: zipgemm is faster than every
    /// BF16 product measured).
    pub fn zipgemm_speedup(&self) -> f64 {
        self.best_bf16_us / self.zipgemm_us
    }

    /// Best bf16 time over decompress + cuBLAS time.
    pub fn decompress_cublas_speedup(&self) -> f64 {
        self.best_bf16_us / self.decompress_cublas_us
    }

    /// cuBLAS time over zipgemm time: the figure the first records
    /// reported, flattered where cuBLAS's default algorithm is weak.
    pub fn zipgemm_speedup_vs_cublas(&self) -> f64 {
        self.cublas_us / self.zipgemm_us
    }
}

/// One benchmark run on one card.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRecord {
    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub card: String,
    /// Driver version, e.g. `580.159.04` (see [`driver_version`]).
    pub driver: String,
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// Short commit hash of the code that ran.
    pub commit: String,
    /// Device-to-device copy bandwidth, GB/s, read + written bytes.
    #[serde(with = "nan_as_null")]
    pub copy_gbps: f64,
    /// How the batches were timed (`Replay::describe`); empty in records
    /// made before the field existed, whose batches the host enqueued.
    #[serde(default)]
    pub timing: String,
    pub rows: Vec<Row>,
}

impl BenchRecord {
    /// A record without rows, dated today, with the running commit.
    pub fn new(card: impl Into<String>, driver: impl Into<String>, copy_gbps: f64) -> Self {
        Self {
            card: card.into(),
            driver: driver.into(),
            date: today_utc(),
            commit: commit(),
            copy_gbps,
            timing: String::new(),
            rows: Vec::new(),
        }
    }

    /// A record for `gpu`: its name and driver, and its copy bandwidth,
    /// measured now (allocates 2 GiB for a moment).
    pub fn detect(gpu: &Gpu) -> Result<Self> {
        let copy = copy_bandwidth(gpu)?;
        Ok(Self::new(
            gpu.info().name.clone(),
            driver_version(gpu.info()),
            copy,
        ))
    }

    /// `gbps` as a percentage of the copy bandwidth.
    pub fn pct_of_copy(&self, gbps: f64) -> f64 {
        100.0 * gbps / self.copy_gbps
    }

    /// `<date>-<card-slug>-<commit>`, e.g. `2026-11-26-nvidia-h100-80gb-hbm3-3cd3c00`.
    pub fn file_stem(&self) -> String {
        format!(
            "{}-{}-{}",
            slug(&self.date),
            slug(&self.card),
            slug(&self.commit)
        )
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| {
            zipserv_format::Error::Corrupt(format!("benchmark record as JSON: {e}")).into()
        })
    }

    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| zipserv_format::Error::Corrupt(format!("benchmark record: {e}")).into())
    }

    /// The record as a markdown report: provenance, method, then one table
    /// row per case with the derived columns. When every row's weights
    /// were made the same way, that is said once above the table; otherwise
    /// each row names its weights.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let shared_weights = match self.rows.first() {
            Some(first) if self.rows.iter().all(|r| r.weights == first.weights) => {
                Some(first.weights.as_str())
            }
            _ => None,
        };
        // Writing to a String cannot fail.
        let _ = writeln!(md, "# Benchmark: {}\n", self.card);
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(md, "| card | {} |", self.card);
        let _ = writeln!(md, "| driver | {} |", self.driver);
        let _ = writeln!(md, "| date | {} |", self.date);
        let _ = writeln!(md, "| commit | {} |", self.commit);
        let _ = writeln!(
            md,
            "| copy bandwidth (1 GiB device-to-device, read + written bytes) | {} GB/s |",
            num(self.copy_gbps, 0)
        );
        if let Some(weights) = shared_weights {
            let _ = writeln!(md, "| weights | {weights} |");
        }
        if !self.timing.is_empty() {
            let _ = writeln!(md, "| timing | {} |", self.timing);
        }
        let _ = writeln!(
            md,
            "\nTimes: medians of device-event timings in µs, weights rotated past L2. \
             Best BF16: the fastest of cuBLAS (`cublasGemmEx`), cuBLASLt (fastest of its \
             heuristics' algorithms) and, for N ≤ 8, the library's BF16 GEMV. Speedup: best BF16 time / the path's time. Floors: bytes \
             of W (bf16, or compressed) / copy bandwidth; % of floor: floor / the path's time \
             (best BF16 against the bf16 floor, zipgemm against the compressed floor). \
             Exceptions: share of W's weights outside the exponent window. n/a: not measured.\n"
        );
        let weights_head = if shared_weights.is_none() {
            "| weights "
        } else {
            ""
        };
        let _ = writeln!(
            md,
            "{weights_head}| M×K | N | split-K | ratio | exceptions % | cuBLAS µs | cuBLASLt µs \
             | BF16 GEMV µs | best BF16 µs | BF16 floor µs | best BF16 % of floor | zipgemm µs \
             | compressed floor µs | zipgemm % of floor | zipgemm speedup \
             | decompress+cuBLAS µs | decompress+cuBLAS speedup | decompress µs \
             | decompress % of copy |"
        );
        let columns = 19 + usize::from(shared_weights.is_none());
        let _ = writeln!(md, "|{}", "---|".repeat(columns));
        for r in &self.rows {
            if shared_weights.is_none() {
                let _ = write!(md, "| {} ", r.weights);
            }
            let _ = writeln!(
                md,
                "| {}×{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.m,
                r.k,
                r.n,
                r.split_k,
                num(r.ratio, 3),
                num(100.0 * r.exception_rate, 2),
                num(r.cublas_us, 1),
                num(r.cublaslt_us, 1),
                num(r.bf16_gemv_us, 1),
                num(r.best_bf16_us, 1),
                num(r.bf16_floor_us, 1),
                num(100.0 * r.best_bf16_of_floor, 0),
                num(r.zipgemm_us, 1),
                num(r.compressed_floor_us, 1),
                num(100.0 * r.zipgemm_of_floor, 0),
                num(r.zipgemm_speedup(), 2),
                num(r.decompress_cublas_us, 1),
                num(r.decompress_cublas_speedup(), 2),
                num(r.decompress_us, 1),
                num(100.0 * r.decompress_of_copy, 0),
            );
        }
        md
    }

    /// Writes `<stem>.json` and `<stem>.md` into `dir` (created if needed)
    /// and returns their paths. An existing result is never overwritten:
    /// a second run with the same stem gets `-2`, `-3`, … appended.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let io = |path: &Path| {
            let io = zipserv_format::Error::io(path.to_path_buf());
            move |source| Error::from(io(source))
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let stem = self.file_stem();
        let (json_path, md_path) = (1..=1000)
            .map(|i| match i {
                1 => stem.clone(),
                _ => format!("{stem}-{i}"),
            })
            .map(|s| (dir.join(format!("{s}.json")), dir.join(format!("{s}.md"))))
            .find(|(j, m)| !j.exists() && !m.exists())
            .ok_or_else(|| {
                let exists = std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "1000 results with this stem already exist",
                );
                Error::from(zipserv_format::Error::io(dir.join(&stem))(exists))
            })?;
        let mut json = self.to_json()?;
        json.push('\n');
        std::fs::write(&json_path, json).map_err(io(&json_path))?;
        std::fs::write(&md_path, self.to_markdown()).map_err(io(&md_path))?;
        Ok((json_path, md_path))
    }
}

/// Lowercase ASCII letters and digits, every other run of characters one
/// `-`, none at the ends; `unknown` if nothing is left.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "unknown".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Non-finite floats (unmeasured paths) as JSON `null`, and back as NaN.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            s.serialize_f64(*value)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of a row.
    const ROW_FIELDS: [&str; 20] = [
        "m",
        "k",
        "n",
        "split_k",
        "zipgemm_us",
        "decompress_cublas_us",
        "cublas_us",
        "ratio",
        "weights",
        "cublaslt_us",
        "cublaslt_algorithms",
        "bf16_gemv_us",
        "best_bf16_us",
        "exception_rate",
        "bf16_floor_us",
        "compressed_floor_us",
        "best_bf16_of_floor",
        "zipgemm_of_floor",
        "decompress_us",
        "decompress_of_copy",
    ];

    fn sample() -> BenchRecord {
        let mut big = Row::new(28672, 4096, 1, 1, "synthetic, seed 1");
        big.zipgemm_us = 60.0;
        big.decompress_cublas_us = 250.0;
        big.cublas_us = 82.2;
        big.cublaslt_us = 80.0;
        big.cublaslt_algorithms = 16;
        big.ratio = 1.42;
        big.exception_rate = 0.0161;
        big.complete(2944.0);
        let mut small = Row::new(4096, 4096, 16, 4, "synthetic, seed 1");
        small.cublas_us = 16.1;
        small.complete(2944.0);
        BenchRecord {
            card: "NVIDIA H100 80GB HBM3".into(),
            driver: "580.159.04".into(),
            date: "2026-11-26".into(),
            commit: "3cd3c00".into(),
            copy_gbps: 2944.0,
            timing: "each batch replayed as one CUDA graph".into(),
            rows: vec![big, small],
        }
    }

    #[test]
    fn json_keeps_field_names_and_writes_null_for_nan() {
        let json = sample().to_json().unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        for key in ["card", "driver", "date", "commit", "copy_gbps", "rows"] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        let row = &value["rows"][1];
        // (serde_json's map lists keys sorted.)
        let keys: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut want = ROW_FIELDS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
        assert!(row["zipgemm_us"].is_null());
        assert!(row["ratio"].is_null());
        assert!(row["cublaslt_us"].is_null());
        assert!(row["compressed_floor_us"].is_null());
        assert_eq!(row["cublas_us"].as_f64(), Some(16.1));
        assert_eq!(row["best_bf16_us"].as_f64(), Some(16.1));
        assert_eq!(row["weights"].as_str(), Some("synthetic, seed 1"));
    }

    #[test]
    fn json_round_trip() {
        let record = sample();
        let back = BenchRecord::from_json(&record.to_json().unwrap()).unwrap();
        // serde_json may parse a float one unit in the last place off.
        let same = |a: f64, b: f64| (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12 * b.abs();
        for (a, b) in back.rows.iter().zip(&record.rows) {
            assert_eq!((a.m, a.k, a.n, a.split_k), (b.m, b.k, b.n, b.split_k));
            assert_eq!(a.weights, b.weights);
            for (x, y) in [
                (a.zipgemm_us, b.zipgemm_us),
                (a.decompress_cublas_us, b.decompress_cublas_us),
                (a.cublas_us, b.cublas_us),
                (a.ratio, b.ratio),
                (a.cublaslt_us, b.cublaslt_us),
                (a.best_bf16_us, b.best_bf16_us),
                (a.exception_rate, b.exception_rate),
                (a.bf16_floor_us, b.bf16_floor_us),
                (a.compressed_floor_us, b.compressed_floor_us),
                (a.best_bf16_of_floor, b.best_bf16_of_floor),
                (a.zipgemm_of_floor, b.zipgemm_of_floor),
            ] {
                assert!(same(x, y), "{x} != {y}");
            }
        }
        assert!(back.rows[1].zipgemm_us.is_nan());
        assert_eq!(back.rows[0].cublaslt_algorithms, 16);
        assert_eq!(back.rows[0].best_bf16_us, 80.0);
        assert!(matches!(
            BenchRecord::from_json("{\"card\": 1}"),
            Err(Error::Format(zipserv_format::Error::Corrupt(_)))
        ));
    }

    #[test]
    fn records_from_before_the_new_fields_still_parse() {
        let old = include_str!("../../bench/results/2026-11-27-nvidia-h200-e9fbe96.json");
        let record = BenchRecord::from_json(old).unwrap();
        assert_eq!(record.card, "NVIDIA H200");
        assert!(!record.rows.is_empty());
        let row = &record.rows[0];
        assert_eq!((row.m, row.k, row.n), (6144, 4096, 1));
        assert!(row.cublas_us > 0.0 && row.zipgemm_us > 0.0);
        assert_eq!(row.weights, LEGACY_WEIGHTS);
        for missing in [
            row.cublaslt_us,
            row.best_bf16_us,
            row.exception_rate,
            row.bf16_floor_us,
            row.zipgemm_of_floor,
        ] {
            assert!(missing.is_nan());
        }
        assert_eq!(row.cublaslt_algorithms, 0);
        // Written again, they carry the new fields (as null).
        let again: serde_json::Value = serde_json::from_str(&record.to_json().unwrap()).unwrap();
        assert!(again["rows"][0]["cublaslt_us"].is_null());
        assert!(record.to_markdown().contains("| 6144×4096 | 1 |"));
    }

    #[test]
    fn derived_metrics() {
        let record = sample();
        let r = &record.rows[0];
        let w = 2.0 * 28672.0 * 4096.0;
        let xy = 2.0 * (4096.0 + 28672.0);
        assert!((r.zipgemm_gbps() - (w / 1.42 + xy) / 60.0 / 1e3).abs() < 1e-9);
        assert!((r.cublas_gbps() - (w + xy) / 82.2 / 1e3).abs() < 1e-9);
        // Speedups are against the better bf16 baseline (cuBLASLt here).
        assert_eq!(r.best_bf16_us, 80.0);
        assert!((r.zipgemm_speedup() - 80.0 / 60.0).abs() < 1e-12);
        assert!((r.decompress_cublas_speedup() - 80.0 / 250.0).abs() < 1e-12);
        assert!((r.zipgemm_speedup_vs_cublas() - 82.2 / 60.0).abs() < 1e-12);
        assert!((record.pct_of_copy(1472.0) - 50.0).abs() < 1e-12);
        assert!(record.rows[1].zipgemm_gbps().is_nan());
        assert!(record.rows[1].zipgemm_speedup().is_nan());
    }

    #[test]
    fn floors() {
        // 234.9 MB of bf16 at 2944 GB/s: 79.78 µs; compressed 1.42x smaller.
        let r = &sample().rows[0];
        let w = 2.0 * 28672.0 * 4096.0;
        assert!((r.bf16_floor_us - w / 2944e3).abs() < 1e-9);
        assert!(
            (r.bf16_floor_us - 79.783).abs() < 1e-3,
            "{}",
            r.bf16_floor_us
        );
        assert!((r.compressed_floor_us - r.bf16_floor_us / 1.42).abs() < 1e-9);
        assert!((r.best_bf16_of_floor - r.bf16_floor_us / 80.0).abs() < 1e-12);
        assert!((r.zipgemm_of_floor - r.compressed_floor_us / 60.0).abs() < 1e-12);
        assert!((floor_us(3e9, 3000.0) - 1000.0).abs() < 1e-9);
        // Only cuBLAS measured: it is the best; nothing compressed: NaN.
        let small = &sample().rows[1];
        assert_eq!(small.best_bf16_us, 16.1);
        assert!(small.compressed_floor_us.is_nan() && small.zipgemm_of_floor.is_nan());
        assert!((small.bf16_floor_us - 2.0 * 4096.0 * 4096.0 / 2944e3).abs() < 1e-9);
        // The library's GEMV counts among the baselines where it ran.
        let mut gemv = sample().rows[0].clone();
        gemv.bf16_gemv_us = 70.0;
        gemv.complete(2944.0);
        assert_eq!(gemv.best_bf16_us, 70.0);
        // Neither baseline: no best.
        let mut none = Row::new(8, 8, 1, 1, "x");
        none.complete(1000.0);
        assert!(none.best_bf16_us.is_nan() && none.best_bf16_of_floor.is_nan());
        assert!(none.bf16_floor_us > 0.0);
    }

    #[test]
    fn markdown_has_a_row_per_case() {
        let md = sample().to_markdown();
        assert!(
            md.contains(
                "| 28672×4096 | 1 | 1 | 1.420 | 1.61 | 82.2 | 80.0 | n/a | 80.0 | 79.8 | 100 | 60.0 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 4096×4096 | 16 | 4 | n/a | n/a | 16.1 | n/a | n/a | 16.1 |"),
            "{md}"
        );
        assert!(md.contains("| weights | synthetic, seed 1 |"), "{md}");
        let table_lines = md
            .lines()
            .filter(|l| l.starts_with("| ") && l.contains('×'))
            .count();
        assert_eq!(table_lines, 1 + 2); // header + rows
        // Rows with different weights name theirs in a first column.
        let mut mixed = sample();
        mixed.rows[1].weights = "model.zsv:layer.0".into();
        let md = mixed.to_markdown();
        assert!(!md.contains("| weights | synthetic, seed 1 |"), "{md}");
        assert!(
            md.contains("| model.zsv:layer.0 | 4096×4096 | 16 |"),
            "{md}"
        );
        assert!(md.contains("| weights | M×K |"), "{md}");
    }

    #[test]
    fn slugs_and_stem() {
        assert_eq!(slug("NVIDIA H100 80GB HBM3"), "nvidia-h100-80gb-hbm3");
        assert_eq!(slug("  --NVIDIA  H200 (141GB)-- "), "nvidia-h200-141gb");
        assert_eq!(slug("../../etc"), "etc");
        assert_eq!(slug(""), "unknown");
        assert_eq!(
            sample().file_stem(),
            "2026-11-26-nvidia-h100-80gb-hbm3-3cd3c00"
        );
    }

    #[test]
    fn write_never_overwrites() {
        let dir = std::env::temp_dir().join(format!(
            "zipserv-bench-test-{}-{}",
            std::process::id(),
            zipserv_format::rng::fresh_seed()
        ));
        let record = sample();
        let (j1, m1) = record.write(&dir).unwrap();
        let (j2, m2) = record.write(&dir).unwrap();
        assert_eq!(
            j1.file_name().unwrap(),
            "2026-11-26-nvidia-h100-80gb-hbm3-3cd3c00.json"
        );
        assert_eq!(
            m1.file_name().unwrap(),
            "2026-11-26-nvidia-h100-80gb-hbm3-3cd3c00.md"
        );
        assert_eq!(
            j2.file_name().unwrap(),
            "2026-11-26-nvidia-h100-80gb-hbm3-3cd3c00-2.json"
        );
        assert!(m2.exists());
        let back = BenchRecord::from_json(&std::fs::read_to_string(&j1).unwrap()).unwrap();
        assert_eq!(back.rows.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
