//! A model's own weights for `zipserv bench --weights`: every 2-D BF16
//! tensor of a `.zsv` container, of a BF16 `.safetensors` file, or of a
//! directory: a compressed one (its manifest's `.zsv` files) or any other
//! (its `*.zsv` / `*.safetensors` files).
//!
//! All of the benchmark's file reading is in [`for_each_matrix`], so that a
//! change of the format crate's readers touches this one function.
//! Matrices are handed over one at a time rather than returned as a list,
//! so that a model larger than host memory can still be benchmarked tensor
//! by tensor.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use half::bf16;
use safetensors::Dtype;
use zipserv_format::Error as FormatError;
use zipserv_format::codec::CompressedMatrix;
use zipserv_format::container::{Encoding, MAGIC, ZsvFile};
use zipserv_format::convert::manifest::{FileKind, MANIFEST_NAME, Manifest, join};
use zipserv_format::st::SafetensorsFile;
use zipserv_gpu::error::Result;

/// The values of one matrix as its file stores them.
pub enum MatrixData {
    /// From a safetensors file: row-major bf16.
    Bf16(Vec<bf16>),
    /// From a `.zsv` container, already compressed (and validated).
    Compressed(CompressedMatrix),
}

/// One 2-D BF16 tensor of a model's file.
pub struct FileMatrix {
    /// The file's name (without its directory).
    pub file: String,
    /// The tensor's name in the file.
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub data: MatrixData,
}

impl FileMatrix {
    /// `file:tensor`, what benchmark rows record as their weights.
    pub fn label(&self) -> String {
        format!("{}:{}", self.file, self.name)
    }
}

/// Names of eligible tensors listed in a "not found" error, at most.
const LISTED: usize = 8;

/// What a walk over the files saw besides the matrices it handed over,
/// for the error when it handed over none.
#[derive(Default)]
struct Seen {
    /// Names of the 2-D BF16 tensors.
    matrices: Vec<String>,
    /// The named tensor, when it exists but is no 2-D BF16 matrix.
    wrong_kind: Option<String>,
    /// A 2-D float tensor of another type (F16, F32, F64), if any.
    other_float: Option<String>,
}

/// Calls `each` on every non-empty 2-D BF16 tensor of `path` (only the one
/// named `tensor`, when given), in file order, and returns how many it
/// visited. `path` is a `.zsv` container (recognised by its magic bytes),
/// a safetensors file, or a directory, whose `*.zsv` and `*.safetensors`
/// files are read in name order (not its subdirectories). Tensors of
/// other types and shapes are passed over; finding no matrix at all (or
/// not the named one) is an error that says what the files hold instead.
pub fn for_each_matrix(
    path: &Path,
    tensor: Option<&str>,
    mut each: impl FnMut(FileMatrix) -> Result<()>,
) -> Result<usize> {
    let files = model_files(path)?;
    let mut seen = Seen::default();
    let mut visited = 0;
    for file in &files {
        let file_name = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let wanted = |name: &str| tensor.is_none_or(|t| t == name);
        let mut hand_over = |name: &str, rows, cols, data| {
            visited += 1;
            each(FileMatrix {
                file: file_name.clone(),
                name: name.to_string(),
                rows,
                cols,
                data,
            })
        };
        if is_zsv(file)? {
            let zsv = ZsvFile::open(file)?;
            for entry in zsv.tensors() {
                // Matrices stored raw (where tiles would not be smaller) are
                // matrices too.
                let matrix = entry.dtype == Dtype::BF16
                    && matches!(entry.shape[..], [rows, cols] if rows > 0 && cols > 0);
                if matrix {
                    seen.matrices.push(entry.name.clone());
                }
                if !wanted(&entry.name) {
                    continue;
                }
                if !matrix {
                    seen.wrong_kind = Some(describe(&entry.name, entry.dtype, &entry.shape));
                    continue;
                }
                let (rows, cols) = (entry.shape[0], entry.shape[1]);
                let data = match entry.encoding {
                    Encoding::Tiles(_) => MatrixData::Compressed(zsv.matrix(entry)?),
                    Encoding::Raw(_) => MatrixData::Bf16(
                        zsv.raw_data(entry)?
                            .chunks_exact(2)
                            .map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])))
                            .collect(),
                    ),
                };
                hand_over(&entry.name, rows, cols, data)?;
            }
        } else {
            let st = SafetensorsFile::open(file)?;
            // In file order, so the file is read front to back, one tensor
            // at a time.
            for t in st.tensors() {
                let (name, shape) = (&t.name, &t.shape[..]);
                let two_d = matches!(shape, &[rows, cols] if rows > 0 && cols > 0);
                let bf16_matrix = two_d && t.dtype == Dtype::BF16;
                if bf16_matrix {
                    seen.matrices.push(name.clone());
                } else if two_d && matches!(t.dtype, Dtype::F16 | Dtype::F32 | Dtype::F64) {
                    seen.other_float
                        .get_or_insert_with(|| describe(name, t.dtype, shape));
                }
                if !wanted(name) {
                    continue;
                }
                if !bf16_matrix {
                    seen.wrong_kind = Some(describe(name, t.dtype, shape));
                    continue;
                }
                let values = st
                    .read(t)?
                    .chunks_exact(2)
                    .map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])))
                    .collect();
                hand_over(name, shape[0], shape[1], MatrixData::Bf16(values))?;
            }
        }
    }
    if visited == 0 {
        return Err(nothing_found(path, tensor, &seen).into());
    }
    Ok(visited)
}

/// The files to read: `path` itself; a compressed directory's `.zsv`
/// files in its manifest's order; or another directory's `*.zsv` and
/// `*.safetensors` files in name order.
fn model_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(FormatError::io(path))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    if path.join(MANIFEST_NAME).exists() {
        let manifest = Manifest::read(path)?;
        return Ok(manifest
            .files
            .iter()
            .filter(|f| f.kind == FileKind::Zsv)
            .map(|f| join(path, &f.stored))
            .collect());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(FormatError::io(path))? {
        let entry = entry.map_err(FormatError::io(path))?;
        let file = entry.path();
        let model = file
            .extension()
            .is_some_and(|e| e == "zsv" || e == "safetensors");
        if model && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(FormatError::NotFound(format!(
            "{}: no .zsv or .safetensors files in this directory",
            path.display()
        ))
        .into());
    }
    Ok(files)
}

/// Whether `file` starts with the `.zsv` magic bytes.
fn is_zsv(file: &Path) -> Result<bool> {
    let mut head = [0u8; MAGIC.len()];
    let mut f = File::open(file).map_err(FormatError::io(file))?;
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]).map_err(FormatError::io(file))? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got == head.len() && head == MAGIC)
}

fn describe(name: &str, dtype: Dtype, shape: &[usize]) -> String {
    format!("`{name}` is {dtype} {shape:?}")
}

/// The error for a walk that found nothing to benchmark.
fn nothing_found(path: &Path, tensor: Option<&str>, seen: &Seen) -> FormatError {
    let place = path.display();
    let message = match (tensor, &seen.wrong_kind) {
        (Some(_), Some(wrong)) => {
            format!("{place}: tensor {wrong}, not a non-empty 2-D BF16 matrix")
        }
        (Some(name), None) if !seen.matrices.is_empty() => {
            let mut listed = seen.matrices[..seen.matrices.len().min(LISTED)].join(", ");
            if seen.matrices.len() > LISTED {
                listed.push_str(&format!(", … ({} in all)", seen.matrices.len()));
            }
            format!("{place}: no tensor named `{name}`; its 2-D BF16 tensors are {listed}")
        }
        (Some(name), None) => format!("{place}: no tensor named `{name}`"),
        (None, _) => match &seen.other_float {
            Some(float) => format!(
                "{place}: no 2-D BF16 tensors ({float}); make a BF16 copy with \
                 `zipserv compress --cast-bf16` and benchmark the .zsv"
            ),
            None => format!("{place}: no 2-D BF16 tensors"),
        },
    };
    FormatError::NotFound(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;
    use zipserv_format::convert::{CompressOptions, compress_file};
    use zipserv_format::rng::SplitMix64;
    use zipserv_gpu::Error;

    fn bf16_values(len: usize, seed: u64) -> Vec<bf16> {
        let mut rng = SplitMix64::new(seed);
        (0..len)
            .map(|_| bf16::from_f32(rng.next_f32_signed() * 0.05))
            .collect()
    }

    fn le_bytes(values: &[bf16]) -> Vec<u8> {
        values
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes())
            .collect()
    }

    /// Writes a safetensors file of `(name, dtype, shape, bytes)`.
    fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(&str, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    /// One visit: file, name, rows, cols, values decoded to bf16.
    type Visit = (String, String, usize, usize, Vec<bf16>);

    /// Every visit of a walk.
    fn visit(path: &Path, tensor: Option<&str>) -> Result<Vec<Visit>> {
        let mut got = Vec::new();
        let count = for_each_matrix(path, tensor, |m| {
            let values = match &m.data {
                MatrixData::Bf16(v) => v.clone(),
                MatrixData::Compressed(c) => c.decode(),
            };
            assert_eq!(values.len(), m.rows * m.cols);
            got.push((m.file.clone(), m.name.clone(), m.rows, m.cols, values));
            Ok(())
        })?;
        assert_eq!(count, got.len());
        Ok(got)
    }

    /// `a.safetensors`: two BF16 matrices (one of odd shape), a bias and
    /// position ids; returns the matrices' values.
    fn models(dir: &Path) -> (Vec<bf16>, Vec<bf16>) {
        let (q, o) = (bf16_values(48 * 250, 1), bf16_values(7 * 33, 2));
        write(
            &dir.join("a.safetensors"),
            &[
                ("layer.q", Dtype::BF16, vec![48, 250], le_bytes(&q)),
                ("layer.bias", Dtype::BF16, vec![48], le_bytes(&q[..48])),
                ("ids", Dtype::I64, vec![1, 4], vec![0; 32]),
                ("layer.o", Dtype::BF16, vec![7, 33], le_bytes(&o)),
            ],
        );
        (q, o)
    }

    #[test]
    fn reads_bf16_safetensors_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let (q, o) = models(dir.path());
        let mut got = visit(&dir.path().join("a.safetensors"), None).unwrap();
        // The order is the file's, which its writer chose; sort by name.
        got.sort_by(|a, b| a.1.cmp(&b.1));
        let heads: Vec<(&str, &str, usize, usize)> = got
            .iter()
            .map(|g| (g.0.as_str(), g.1.as_str(), g.2, g.3))
            .collect();
        assert_eq!(
            heads,
            [
                ("a.safetensors", "layer.o", 7, 33),
                ("a.safetensors", "layer.q", 48, 250)
            ]
        );
        assert!(got[0].4 == o && got[1].4 == q, "values differ");
        let one = visit(&dir.path().join("a.safetensors"), Some("layer.o")).unwrap();
        assert_eq!(one.len(), 1);
        assert!(one[0].4 == o, "values differ");
    }

    #[test]
    fn reads_zsv_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (q, o) = models(dir.path());
        let zsv = dir.path().join("b.zsv");
        let input = dir.path().join("a.safetensors");
        compress_file(&input, &zsv, CompressOptions::default(), |_| {}).unwrap();
        let mut got = visit(&zsv, None).unwrap();
        got.sort_by(|a, b| a.1.cmp(&b.1));
        let names: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
        assert_eq!(names, ["layer.o", "layer.q"]);
        assert!(got[0].4 == o && got[1].4 == q, "values differ");
        // Compressed matrices come as they are stored.
        for_each_matrix(&zsv, Some("layer.q"), |m| {
            assert!(matches!(m.data, MatrixData::Compressed(_)));
            assert_eq!(m.label(), "b.zsv:layer.q");
            Ok(())
        })
        .unwrap();

        // A directory: its model files in name order, other files ignored.
        std::fs::write(dir.path().join("README.txt"), "not a model").unwrap();
        std::fs::create_dir(dir.path().join("sub.safetensors")).unwrap();
        let all = visit(dir.path(), None).unwrap();
        let files: Vec<&str> = all.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(files, ["a.safetensors", "a.safetensors", "b.zsv", "b.zsv"]);
        // A .zsv is known by its magic bytes, whatever its name.
        std::fs::copy(&zsv, dir.path().join("renamed.bin")).unwrap();
        assert_eq!(
            visit(&dir.path().join("renamed.bin"), None).unwrap().len(),
            2
        );
    }

    /// The message of a walk's error.
    fn error(path: &Path, tensor: Option<&str>) -> String {
        match visit(path, tensor) {
            Err(Error::Format(e)) => e.to_string(),
            Err(e) => panic!("unexpected error kind: {e}"),
            Ok(v) => panic!("expected an error, visited {}", v.len()),
        }
    }

    #[test]
    fn says_what_is_there_instead() {
        let dir = tempfile::tempdir().unwrap();
        models(dir.path());
        let a = dir.path().join("a.safetensors");
        let e = error(&a, Some("nope"));
        assert!(e.contains("no tensor named `nope`"), "{e}");
        assert!(e.contains("layer.o, layer.q"), "{e}");
        let e = error(&a, Some("layer.bias"));
        assert!(e.contains("`layer.bias` is BF16 [48]"), "{e}");
        assert!(e.contains("not a non-empty 2-D BF16 matrix"), "{e}");

        let f32_model = dir.path().join("f32.safetensors");
        write(&f32_model, &[("w", Dtype::F32, vec![2, 3], vec![0; 24])]);
        let e = error(&f32_model, None);
        assert!(e.contains("no 2-D BF16 tensors (`w` is F32 [2, 3])"), "{e}");
        assert!(e.contains("--cast-bf16"), "{e}");

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(error(&empty, None).contains("no .zsv or .safetensors files"));
        let e = error(&dir.path().join("missing.zsv"), None);
        assert!(e.contains("missing.zsv"), "{e}");
        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"definitely not a model").unwrap();
        let e = error(&junk, None);
        assert!(e.contains("not a valid safetensors file"), "{e}");
    }

    #[test]
    fn errors_of_the_visitor_stop_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        models(dir.path());
        let mut calls = 0;
        let result = for_each_matrix(&dir.path().join("a.safetensors"), None, |_| {
            calls += 1;
            Err(Error::Unsupported("stop".into()))
        });
        assert!(matches!(result, Err(Error::Unsupported(_))));
        assert_eq!(calls, 1);
    }
}
