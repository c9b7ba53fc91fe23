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

/// One live-table line's cells, each with its width (see [`live_header`]).
fn cells(items: [(String, usize); 17]) -> String {
    let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q] =
        items.map(|(t, w)| format!("{t:>w$}"));
    format!("{a} {b} {c} {d} {e} | {f} {g} {h} {i} | {j} {k} {l} {m} | {n} {o} | {p} {q}")
}

/// Column widths of the live table, in order.
const WIDTHS: [usize; 17] = [12, 4, 3, 5, 5, 8, 8, 7, 4, 8, 7, 4, 7, 10, 7, 10, 5];

/// The live table's column heads (see [`live_line`]).
pub fn live_header() -> String {
    let heads = [
        "M x K",
        "N",
        "sK",
        "ratio",
        "exc%",
        "cuBLAS",
        "cuBLASLt",
        "floor",
        "%fl",
        "zipgemm",
        "floor",
        "%fl",
        "speedup",
        "dec+cuBLAS",
        "speedup",
        "decompress",
        "%copy",
    ];
    cells(std::array::from_fn(|i| (heads[i].to_string(), WIDTHS[i])))
}

/// One row of the live table: times in µs for cuBLAS, cuBLASLt, zipgemm
/// and decompress + cuBLAS; the bf16 floor and the best bf16 path's
/// percentage of it, the compressed floor and zipgemm's percentage of it;
/// speedups over the best bf16 path.
pub fn live_line(row: &Row) -> String {
    let values = [
        format!("{}x{}", row.m, row.k),
        row.n.to_string(),
        row.split_k.to_string(),
        num(row.ratio, 2),
        num(100.0 * row.exception_rate, 2),
        num(row.cublas_us, 1),
        num(row.cublaslt_us, 1),
        num(row.bf16_floor_us, 1),
        num(100.0 * row.best_bf16_of_floor, 0),
        num(row.zipgemm_us, 1),
        num(row.compressed_floor_us, 1),
        num(100.0 * row.zipgemm_of_floor, 0),
        num(row.zipgemm_speedup(), 2),
        num(row.decompress_cublas_us, 1),
        num(row.decompress_cublas_speedup(), 2),
        num(row.decompress_us, 1),
        num(100.0 * row.decompress_of_copy, 0),
    ];
    cells(std::array::from_fn(|i| (values[i].clone(), WIDTHS[i])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_line_up_with_the_header() {
        let mut row = Row::new(28672, 4096, 16, 2, "synthetic");
        row.zipgemm_us = 61.0;
        row.cublas_us = 82.9;
        row.cublaslt_us = 80.5;
        row.ratio = 1.42;
        row.exception_rate = 0.0161;
        row.complete(2944.0);
        let line = live_line(&row);
        assert_eq!(line.chars().count(), live_header().chars().count());
        assert!(line.contains("28672x4096"), "{line}");
        assert!(line.contains("n/a"), "{line}"); // decompress + cuBLAS
        assert!(line.contains("1.32"), "{line}"); // 80.5 / 61.0
        assert!(line.contains("1.61"), "{line}"); // exceptions, %
        assert!(line.contains(" 99 "), "{line}"); // 79.8 / 80.5
    }

    #[test]
    fn num_formats_missing_values() {
        assert_eq!(num(f64::NAN, 1), "n/a");
        assert_eq!(num(f64::INFINITY, 1), "n/a");
        assert_eq!(num(2.345, 1), "2.3");
    }
}
