//! Running cases and printing the table as it fills.

use std::io::Write;

use super::record::{BenchRecord, Row};
use super::sweep::Case;
use super::table::{live_header, live_line, num};
use zipserv_gpu::error::{Error, Result, Shape};

/// A benchmark in progress: the record so far and the live table on `out`.
/// Cases can be added one at a time (a model's tensors are read one after
/// the other), each printed as it finishes.
pub struct Runner<'o, W: Write> {
    record: BenchRecord,
    out: &'o mut W,
}

fn io_error(source: std::io::Error) -> Error {
    Error::from(zipserv_format::Error::io("<benchmark table output>")(
        source,
    ))
}

impl<'o, W: Write> Runner<'o, W> {
    /// Prints the provenance line (ending with `what`, e.g. `36 cases`)
    /// and the table's header.
    pub fn start(record: BenchRecord, out: &'o mut W, what: &str) -> Result<Self> {
        writeln!(
            out,
            "{} | driver {} | commit {} | {} | copy bandwidth {} GB/s | {what}",
            record.card,
            record.driver,
            record.commit,
            record.date,
            num(record.copy_gbps, 0),
        )
        .map_err(io_error)?;
        writeln!(out, "{}", live_header()).map_err(io_error)?;
        out.flush().map_err(io_error)?;
        Ok(Self { record, out })
    }

    /// A line of its own in the table (e.g. which tensor follows).
    pub fn note(&mut self, text: &str) -> Result<()> {
        writeln!(self.out, "{text}").map_err(io_error)?;
        self.out.flush().map_err(io_error)
    }

    /// Runs `run_case` on `case`, completes its row (best bf16 time,
    /// floors; [`Row::complete`]), prints it and adds it to the record. A
    /// row whose shape is not its case's is an error, so a closure cannot
    /// file results under wrong shapes.
    pub fn run(
        &mut self,
        case: &Case,
        run_case: impl FnOnce(&Case) -> Result<Row>,
    ) -> Result<&Row> {
        let mut row = run_case(case)?;
        // split_k 0 asks for the automatic choice, which the row reports. A
        // requested split the kernel cannot make (more slices than the
        // shape has column tiles, or shares than one launch may have) runs
        // with fewer slices: the row records those and a note says so.
        let clamped = case.split_k != 0 && (1..case.split_k).contains(&row.split_k);
        let got = [
            row.m,
            row.k,
            row.n,
            if case.split_k == 0 || clamped {
                case.split_k
            } else {
                row.split_k
            },
        ];
        let want = [case.m, case.k, case.n, case.split_k];
        if got != want {
            return Err(Error::ShapeMismatch {
                what: "benchmark row (M, K, N, split-K)",
                expected: Shape(want.to_vec()),
                got: Shape(got.to_vec()),
            });
        }
        if clamped {
            self.note(&format!(
                "{}x{} N={}: split-K {} asked, {} run (the most this shape and N allow)",
                row.m, row.k, row.n, case.split_k, row.split_k
            ))?;
        }
        row.complete(self.record.copy_gbps);
        writeln!(self.out, "{}", live_line(&row)).map_err(io_error)?;
        self.out.flush().map_err(io_error)?;
        self.record.rows.push(row);
        Ok(self.record.rows.last().expect("just pushed"))
    }

    /// The record with every row run so far.
    pub fn finish(self) -> BenchRecord {
        self.record
    }
}

/// Runs `run_case` on every case in order through a [`Runner`] on `out`
/// and returns `record` with the rows appended. Stops at the first failing
/// case.
pub fn run_benchmark<W, F>(
    record: BenchRecord,
    cases: &[Case],
    out: &mut W,
    mut run_case: F,
) -> Result<BenchRecord>
where
    W: Write,
    F: FnMut(&Case) -> Result<Row>,
{
    let mut runner = Runner::start(record, out, &format!("{} cases", cases.len()))?;
    for case in cases {
        runner.run(case, &mut run_case)?;
    }
    Ok(runner.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama3_8b_sweep;

    fn fake_row(case: &Case) -> Row {
        let mut row = Row::new(case.m, case.k, case.n, case.split_k, "fake");
        row.cublas_us = (case.m * case.k) as f64 / 1e6;
        row
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
        assert!(text.lines().next().unwrap().ends_with("36 cases"), "{text}");
        // Every row was completed: floors and the best bf16 time.
        assert!(record.rows.iter().all(|r| r.bf16_floor_us > 0.0));
        assert!(record.rows.iter().all(|r| r.best_bf16_us == r.cublas_us));
    }

    #[test]
    fn runner_takes_cases_one_at_a_time_with_notes() {
        let mut out = Vec::new();
        let record = BenchRecord::new("c", "d", 1000.0);
        let mut runner = Runner::start(record, &mut out, "weights model.zsv").unwrap();
        runner.note("tensor a (64x128)").unwrap();
        let case = Case {
            m: 64,
            k: 128,
            n: 8,
            split_k: 0,
        };
        // split-K 0 (automatic): the row may report what was chosen.
        let row = runner
            .run(&case, |c| {
                let mut row = fake_row(c);
                row.split_k = 3;
                Ok(row)
            })
            .unwrap();
        assert_eq!(row.split_k, 3);
        let record = runner.finish();
        assert_eq!(record.rows.len(), 1);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].ends_with("| weights model.zsv"), "{text}");
        assert_eq!(lines[2], "tensor a (64x128)");
        assert!(lines[3].contains("64x128"), "{text}");
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
    fn a_requested_split_the_kernel_lowers_is_recorded_with_a_note() {
        let mut out = Vec::new();
        let mut runner = Runner::start(BenchRecord::new("c", "d", 1.0), &mut out, "x").unwrap();
        let case = Case {
            m: 28672,
            k: 4096,
            n: 256,
            split_k: 24,
        };
        let row = runner
            .run(&case, |c| {
                let mut row = fake_row(c);
                row.split_k = 19;
                Ok(row)
            })
            .unwrap();
        assert_eq!(row.split_k, 19);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("28672x4096 N=256: split-K 24 asked, 19 run"),
            "{text}"
        );
        // More slices than asked is still an error.
        let mut sink = std::io::sink();
        let mut runner = Runner::start(BenchRecord::new("c", "d", 1.0), &mut sink, "x").unwrap();
        let more = runner.run(&case, |c| {
            let mut row = fake_row(c);
            row.split_k = 25;
            Ok(row)
        });
        assert!(matches!(more, Err(Error::ShapeMismatch { .. })));
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
