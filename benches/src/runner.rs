//! Running a list of cases and printing the table as it fills.

use std::io::Write;

use super::record::{BenchRecord, Row};
use super::sweep::Case;
use super::table::{live_header, live_line, num};
use zipserv_gpu::error::{Error, Result, Shape};

/// Runs `run_case` on every case in order, printing a live table to `out`
/// (a line as each case finishes), and returns `record` with the rows
/// appended. Stops at the first failing case. A row whose shape is not its
/// case's is an error, so a closure cannot file results under wrong shapes.
pub fn run_benchmark<W, F>(
    mut record: BenchRecord,
    cases: &[Case],
    out: &mut W,
    mut run_case: F,
) -> Result<BenchRecord>
where
    W: Write,
    F: FnMut(&Case) -> Result<Row>,
{
    let io = |source| {
        Error::from(zipserv_format::Error::io("<benchmark table output>")(
            source,
        ))
    };
    writeln!(
        out,
        "{} | driver {} | commit {} | {} | copy bandwidth {} GB/s | {} cases",
        record.card,
        record.driver,
        record.commit,
        record.date,
        num(record.copy_gbps, 0),
        cases.len()
    )
    .map_err(io)?;
    writeln!(out, "{}", live_header()).map_err(io)?;
    out.flush().map_err(io)?;
    for case in cases {
        let row = run_case(case)?;
        // split_k 0 asks for the automatic choice, which the row reports.
        let got = [
            row.m,
            row.k,
            row.n,
            if case.split_k == 0 { 0 } else { row.split_k },
        ];
        let want = [case.m, case.k, case.n, case.split_k];
        if got != want {
            return Err(Error::ShapeMismatch {
                what: "benchmark row (M, K, N, split-K)",
                expected: Shape(want.to_vec()),
                got: Shape(got.to_vec()),
            });
        }
        writeln!(out, "{}", live_line(&row, record.copy_gbps)).map_err(io)?;
        out.flush().map_err(io)?;
        record.rows.push(row);
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama3_8b_sweep;

    fn fake_row(case: &Case) -> Row {
        Row {
            m: case.m,
            k: case.k,
            n: case.n,
            split_k: case.split_k,
            zipgemm_us: f64::NAN,
            decompress_cublas_us: f64::NAN,
            cublas_us: (case.m * case.k) as f64 / 1e6,
            ratio: f64::NAN,
        }
    }

    #[test]
    fn runs_every_case_and_prints_a_line_each() {
        let cases = llama3_8b_sweep(1);
        let mut out = Vec::new();
        let record = BenchRecord::new("Test Card", "1.2.3", 3000.0);
        let record = run_benchmark(record, &cases, &mut out, |c| Ok(fake_row(c))).unwrap();
        assert_eq!(record.rows.len(), cases.len());
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2 + cases.len());
        assert!(text.starts_with("Test Card | driver 1.2.3"), "{text}");
    }

    #[test]
    fn stops_at_the_first_error() {
        let cases = llama3_8b_sweep(1);
        let mut calls = 0;
        let result = run_benchmark(
            BenchRecord::new("c", "d", 1.0),
            &cases,
            &mut std::io::sink(),
            |c| {
                calls += 1;
                if calls == 3 {
                    Err(Error::Unsupported("boom".into()))
                } else {
                    Ok(fake_row(c))
                }
            },
        );
        assert!(matches!(result, Err(Error::Unsupported(_))));
        assert_eq!(calls, 3);
    }

    #[test]
    fn rejects_rows_for_another_shape() {
        let cases = llama3_8b_sweep(1);
        let result = run_benchmark(
            BenchRecord::new("c", "d", 1.0),
            &cases,
            &mut std::io::sink(),
            |c| {
                let mut row = fake_row(c);
                row.n += 1;
                Ok(row)
            },
        );
        assert!(matches!(result, Err(Error::ShapeMismatch { .. })));
    }
}
