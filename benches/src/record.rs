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

/// One measured case. Times are medians in µs; a path that was not
/// measured is NaN in memory and `null` in JSON.
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
    /// cuBLAS on the uncompressed bf16 W.
    #[serde(with = "nan_as_null")]
    pub cublas_us: f64,
    /// Compression ratio of W: bf16 bytes / compressed bytes (every array
    /// the compressed form allocates counted).
    #[serde(with = "nan_as_null")]
    pub ratio: f64,
}

impl Row {
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

    /// cuBLAS time over zipgemm time (> 1: zipgemm is faster).
    pub fn zipgemm_speedup(&self) -> f64 {
        self.cublas_us / self.zipgemm_us
    }

    /// cuBLAS time over decompress + cuBLAS time.
    pub fn decompress_cublas_speedup(&self) -> f64 {
        self.cublas_us / self.decompress_cublas_us
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
    /// row per case with the derived columns.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(md, "# Benchmark: {}\n", self.card);
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(md, "| card | {} |", self.card);
        let _ = writeln!(md, "| driver | {} |", self.driver);
        let _ = writeln!(md, "| date | {} |", self.date);
        let _ = writeln!(md, "| commit | {} |", self.commit);
        let _ = writeln!(
            md,
            "| copy bandwidth (1 GiB device-to-device, read + written bytes) | {} GB/s |\n",
            num(self.copy_gbps, 0)
        );
        let _ = writeln!(
            md,
            "Times: medians of device-event timings in µs, weights rotated past L2. \
             Speedup: cuBLAS time / the path's time. GB/s: bytes of W (compressed for zipgemm, \
             bf16 for cuBLAS) + X + Y over the time; % copy: that over the copy bandwidth. \
             n/a: not measured.\n"
        );
        let _ = writeln!(
            md,
            "| M×K | N | split-K | ratio | cuBLAS µs | cuBLAS GB/s | cuBLAS % copy \
             | zipgemm µs | zipgemm speedup | zipgemm GB/s | zipgemm % copy \
             | decompress+cuBLAS µs | decompress+cuBLAS speedup |"
        );
        let _ = writeln!(md, "|{}", "---|".repeat(13));
        for r in &self.rows {
            let _ = writeln!(
                md,
                "| {}×{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.m,
                r.k,
                r.n,
                r.split_k,
                num(r.ratio, 3),
                num(r.cublas_us, 1),
                num(r.cublas_gbps(), 0),
                num(self.pct_of_copy(r.cublas_gbps()), 0),
                num(r.zipgemm_us, 1),
                num(r.zipgemm_speedup(), 2),
                num(r.zipgemm_gbps(), 0),
                num(self.pct_of_copy(r.zipgemm_gbps()), 0),
                num(r.decompress_cublas_us, 1),
                num(r.decompress_cublas_speedup(), 2),
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

    fn sample() -> BenchRecord {
        BenchRecord {
            card: "NVIDIA H100 80GB HBM3".into(),
            driver: "580.159.04".into(),
            date: "2026-11-26".into(),
            commit: "3cd3c00".into(),
            copy_gbps: 2944.0,
            rows: vec![
                Row {
                    m: 28672,
                    k: 4096,
                    n: 1,
                    split_k: 1,
                    zipgemm_us: 60.0,
                    decompress_cublas_us: 250.0,
                    cublas_us: 82.2,
                    ratio: 1.42,
                },
                Row {
                    m: 4096,
                    k: 4096,
                    n: 16,
                    split_k: 4,
                    zipgemm_us: f64::NAN,
                    decompress_cublas_us: f64::NAN,
                    cublas_us: 16.1,
                    ratio: f64::NAN,
                },
            ],
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
        for key in [
            "m",
            "k",
            "n",
            "split_k",
            "zipgemm_us",
            "decompress_cublas_us",
            "cublas_us",
            "ratio",
        ] {
            assert!(row.get(key).is_some(), "missing rows[].{key}");
        }
        assert!(row["zipgemm_us"].is_null());
        assert!(row["ratio"].is_null());
        assert_eq!(row["cublas_us"].as_f64(), Some(16.1));
    }

    #[test]
    fn json_round_trip() {
        let record = sample();
        let back = BenchRecord::from_json(&record.to_json().unwrap()).unwrap();
        assert_eq!(back.to_json().unwrap(), record.to_json().unwrap());
        assert!(back.rows[1].zipgemm_us.is_nan());
        assert!(matches!(
            BenchRecord::from_json("{\"card\": 1}"),
            Err(Error::Format(zipserv_format::Error::Corrupt(_)))
        ));
    }

    #[test]
    fn derived_metrics() {
        let record = sample();
        let r = &record.rows[0];
        let w = 2.0 * 28672.0 * 4096.0;
        let xy = 2.0 * (4096.0 + 28672.0);
        assert!((r.zipgemm_gbps() - (w / 1.42 + xy) / 60.0 / 1e3).abs() < 1e-9);
        assert!((r.cublas_gbps() - (w + xy) / 82.2 / 1e3).abs() < 1e-9);
        assert!((r.zipgemm_speedup() - 82.2 / 60.0).abs() < 1e-12);
        assert!((r.decompress_cublas_speedup() - 82.2 / 250.0).abs() < 1e-12);
        assert!((record.pct_of_copy(1472.0) - 50.0).abs() < 1e-12);
        assert!(record.rows[1].zipgemm_gbps().is_nan());
    }

    #[test]
    fn markdown_has_a_row_per_case() {
        let md = sample().to_markdown();
        assert!(md.contains("| 28672×4096 | 1 | 1 | 1.420 | 82.2 |"), "{md}");
        assert!(md.contains("| 4096×4096 | 16 | 4 | n/a | 16.1 |"), "{md}");
        let table_lines = md
            .lines()
            .filter(|l| l.starts_with("| ") && l.contains('×'))
            .count();
        assert_eq!(table_lines, 1 + 2); // header + rows
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
