//! `zipserv inspect`: what each tensor of a `.zsv` file (or of every `.zsv`
//! file of a compressed directory) costs and how close it comes to the
//! exponent-entropy bound.

use std::path::Path;

use zipserv_format::codec::{exponent_histogram, histogram_entropy_bits};
use zipserv_format::container::{Encoding, TensorEntry, ZsvFile};
use zipserv_format::convert::manifest::{FileKind, Manifest, join};

use super::progress::bytes_bar;
use super::{human_bytes, is_dir};
use crate::error::Result;

/// One row of the table.
struct Row {
    name: String,
    dtype: String,
    shape: String,
    encoding: &'static str,
    original: u64,
    stored: u64,
    /// For compressed matrices: weights, coverage, entropy H of the exponents.
    tiles: Option<(usize, f64, f64)>,
}

pub fn run(input: &Path) -> Result<()> {
    if !is_dir(input) {
        let zsv = ZsvFile::open(input)?;
        let rows = rows(&zsv)?;
        print_table(&rows);
        print_totals(&rows, zsv.file_len());
        return Ok(());
    }
    let manifest = Manifest::read(input)?;
    let (mut all, mut file_bytes, mut copied) = (Vec::new(), 0, 0);
    for f in &manifest.files {
        let path = join(input, &f.stored);
        match f.kind {
            FileKind::Zsv => {
                let zsv = ZsvFile::open(&path)?;
                println!("== {} (from {})", f.stored, f.path);
                let rows = rows(&zsv)?;
                print_table(&rows);
                file_bytes += zsv.file_len();
                all.extend(rows);
            }
            FileKind::Copy => copied += f.len,
        }
    }
    println!("== all {} files", manifest.files.len());
    print_totals(&all, file_bytes);
    println!("other files: {} copied as they are", human_bytes(copied));
    Ok(())
}

/// One row per tensor of `zsv`, every section read and checked.
fn rows(zsv: &ZsvFile) -> Result<Vec<Row>> {
    let total: u64 = zsv.tensors().iter().map(|t| t.original_bytes()).sum();
    let bar = bytes_bar(total, "reading");
    let mut rows = Vec::new();
    for entry in zsv.tensors() {
        bar.set_message(entry.name.escape_debug().to_string());
        rows.push(row(zsv, entry)?);
        bar.inc(entry.original_bytes());
    }
    bar.finish_and_clear();
    Ok(rows)
}

fn row(zsv: &ZsvFile, entry: &TensorEntry) -> Result<Row> {
    let shape: Vec<String> = entry.shape.iter().map(|d| d.to_string()).collect();
    let tiles = match &entry.encoding {
        Encoding::Raw(_) => {
            zsv.raw_data(entry)?; // checksum
            None
        }
        Encoding::Tiles(_) => {
            let matrix = zsv.matrix(entry)?;
            // max(0): a single-exponent matrix gives -0.0, printed "-0.000".
            // The exponent histogram band by band: no whole decoded copy.
            let mut histogram = [0u64; 256];
            matrix.decode_bands(|rows| {
                for (h, c) in histogram.iter_mut().zip(exponent_histogram(rows)) {
                    *h += c;
                }
                Ok(())
            })?;
            let entropy = histogram_entropy_bits(&histogram).max(0.0);
            let stats = matrix.stats();
            Some((entry.elements(), stats.coverage, entropy))
        }
    };
    Ok(Row {
        // Control characters would break the table's lines.
        name: entry.name.escape_debug().to_string(),
        dtype: if entry.source_dtype == entry.dtype {
            entry.dtype.to_string()
        } else {
            format!("{}<{}", entry.dtype, entry.source_dtype)
        },
        shape: format!("[{}]", shape.join(" x ")),
        encoding: if tiles.is_some() { "tiles" } else { "raw" },
        original: entry.original_bytes(),
        stored: entry.stored_bytes(),
        tiles,
    })
}

fn print_table(rows: &[Row]) {
    let name_width = rows.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
    let shape_width = rows.iter().map(|r| r.shape.len()).max().unwrap_or(5).max(5);
    let dtype_width = rows.iter().map(|r| r.dtype.len()).max().unwrap_or(5).max(5);
    println!(
        "{:<name_width$}  {:<dtype_width$}  {:<shape_width$}  {:<5}  {:>7}  {:>9}  {:>6}  {:>6}  {:>7}",
        "tensor", "dtype", "shape", "enc", "ratio", "coverage", "bits/w", "H(exp)", "bound"
    );
    for r in rows {
        let ratio = r.original as f64 / r.stored.max(1) as f64;
        let detail = match r.tiles {
            Some((weights, coverage, h)) => format!(
                "{:>8.3}%  {:>6.3}  {:>6.3}  {:>6.3}x",
                100.0 * coverage,
                8.0 * r.stored as f64 / weights as f64,
                h,
                16.0 / (8.0 + h)
            ),
            None => format!("{:>9}  {:>6}  {:>6}  {:>7}", "-", "-", "-", "-"),
        };
        println!(
            "{:<name_width$}  {:<dtype_width$}  {:<shape_width$}  {:<5}  {:>6.3}x  {detail}",
            r.name, r.dtype, r.shape, r.encoding, ratio
        );
    }
}

fn print_totals(rows: &[Row], file_len: u64) {
    let tiles: Vec<&Row> = rows.iter().filter(|r| r.tiles.is_some()).collect();
    let weights: usize = tiles.iter().map(|r| r.tiles.unwrap().0).sum();
    if weights > 0 {
        let original: u64 = tiles.iter().map(|r| r.original).sum();
        let stored: u64 = tiles.iter().map(|r| r.stored).sum();
        let in_window: f64 = tiles
            .iter()
            .map(|r| r.tiles.unwrap())
            .map(|(n, coverage, _)| n as f64 * coverage)
            .sum();
        let bound_bits: f64 = tiles
            .iter()
            .map(|r| r.tiles.unwrap())
            .map(|(n, _, h)| n as f64 * (8.0 + h))
            .sum();
        println!(
            "compressed: {} matrices, {weights} weights, {} -> {} ({:.3}x), \
             {:.3} bits/weight, coverage {:.3}%, entropy bound {:.3}x",
            tiles.len(),
            human_bytes(original),
            human_bytes(stored),
            original as f64 / stored as f64,
            8.0 * stored as f64 / weights as f64,
            100.0 * in_window / weights as f64,
            16.0 * weights as f64 / bound_bits,
        );
    }
    let raw: Vec<&Row> = rows.iter().filter(|r| r.tiles.is_none()).collect();
    println!(
        "raw: {} tensors, {}",
        raw.len(),
        human_bytes(raw.iter().map(|r| r.stored).sum())
    );
    let original: u64 = rows.iter().map(|r| r.original).sum();
    println!(
        "files: {} of tensor data in {} ({:.3}x, headers and alignment included)",
        human_bytes(original),
        human_bytes(file_len),
        original as f64 / file_len.max(1) as f64
    );
}
