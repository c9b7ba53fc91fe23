//! Text formatting shared by the live table and the markdown report.

use super::record::Row;

/// `value` with `decimals` decimals, or `n/a` when it is not a number
/// (a path that was not measured).
pub(crate) fn num(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "n/a".to_string()
    }
}

/// The live table's column heads (see [`live_line`]).
pub fn live_header() -> String {
    format!(
        "{:>12} {:>4} {:>3} {:>5} | {:>9} {:>6} {:>5} | {:>9} {:>6} {:>5} {:>7} | {:>10} {:>7}",
        "M x K",
        "N",
        "sK",
        "ratio",
        "cuBLAS µs",
        "GB/s",
        "%copy",
        "zipgemm",
        "GB/s",
        "%copy",
        "speedup",
        "dec+cuBLAS",
        "speedup"
    )
}

/// One row of the live table: times in µs, effective GB/s and % of the
/// copy bandwidth for cuBLAS and zipgemm, speedups over cuBLAS.
pub fn live_line(row: &Row, copy_gbps: f64) -> String {
    let pct = |gbps: f64| num(100.0 * gbps / copy_gbps, 0);
    format!(
        "{:>12} {:>4} {:>3} {:>5} | {:>9} {:>6} {:>5} | {:>9} {:>6} {:>5} {:>7} | {:>10} {:>7}",
        format!("{}x{}", row.m, row.k),
        row.n,
        row.split_k,
        num(row.ratio, 2),
        num(row.cublas_us, 1),
        num(row.cublas_gbps(), 0),
        pct(row.cublas_gbps()),
        num(row.zipgemm_us, 1),
        num(row.zipgemm_gbps(), 0),
        pct(row.zipgemm_gbps()),
        num(row.zipgemm_speedup(), 2),
        num(row.decompress_cublas_us, 1),
        num(row.decompress_cublas_speedup(), 2),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_line_up_with_the_header() {
        let row = Row {
            m: 28672,
            k: 4096,
            n: 16,
            split_k: 2,
            zipgemm_us: 61.0,
            decompress_cublas_us: f64::NAN,
            cublas_us: 82.9,
            ratio: 1.42,
        };
        let line = live_line(&row, 2944.0);
        assert_eq!(line.chars().count(), live_header().chars().count());
        assert!(line.contains("28672x4096"), "{line}");
        assert!(line.contains("n/a"), "{line}");
        assert!(line.contains("1.36"), "{line}"); // 82.9 / 61.0
    }

    #[test]
    fn num_formats_missing_values() {
        assert_eq!(num(f64::NAN, 1), "n/a");
        assert_eq!(num(f64::INFINITY, 1), "n/a");
        assert_eq!(num(2.345, 1), "2.3");
    }
}
