//! `.zsv` container and safetensors conversion: round trips (byte for byte),
//! and one negative test per error the reader and converter can report.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::PathBuf;

use half::bf16;
use safetensors::Dtype;
use zipserv_format::container::header::{HEADER_LEN, Header};
use zipserv_format::container::index::{Encoding, Index};
use zipserv_format::container::{ZsvFile, ZsvWriter};
use zipserv_format::convert::{CompressOptions, compress_file, decompress_file};
use zipserv_format::rng::SplitMix64;
use zipserv_format::st::{self as header, SafetensorsFile};
use zipserv_format::{CompressedMatrix, Error};
use zipserv_tests::st::{self, Tensor};

fn weight_like(n: usize, seed: u64) -> Vec<u16> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| bf16::from_f32(rng.next_f32_signed() * 0.04).to_bits())
        .collect()
}

/// A model with one compressible matrix (with zeros, NaN, Inf, subnormals
/// and huge values among its weights) and tensors of every other kind.
fn sample_tensors() -> Vec<Tensor> {
    let mut w = weight_like(40 * 250, 1);
    for (i, v) in [
        0x0000, 0x8000, 0x7FC0, 0xFF80, 0x0001, 0x7F7F, 0x4480, 0xC2F7,
    ]
    .into_iter()
    .enumerate()
    {
        w[i * 800 + 3] = v;
    }
    vec![
        Tensor::bf16("layer.0.weight", &[40, 250], &w),
        Tensor::bf16("layer.0.bias", &[7], &weight_like(7, 2)),
        Tensor::bf16("empty", &[0, 5], &[]),
        Tensor::bf16("scalar", &[], &[0x3F80]),
        Tensor::new("position_ids", Dtype::I64, &[3], vec![1; 24]),
        Tensor::new("mask", Dtype::U8, &[2, 3], vec![0, 1, 2, 3, 4, 5]),
        Tensor::new("fp8", Dtype::F8_E4M3, &[4], vec![9, 8, 7, 6]),
    ]
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

fn metadata() -> HashMap<String, String> {
    HashMap::from([("format".to_owned(), "pt".to_owned())])
}

/// Writes the sample model and compresses it; returns the `.zsv` path.
fn sample_zsv(dir: &Dir) -> PathBuf {
    let input = dir.join("model.safetensors");
    st::write(&input, &sample_tensors(), Some(metadata()));
    let output = dir.join("model.zsv");
    compress_file(&input, &output, CompressOptions::default(), |_| {}).unwrap();
    output
}

#[test]
fn safetensors_round_trip_is_bit_exact_and_keeps_metadata() {
    let dir = Dir::new();
    let zsv_path = sample_zsv(&dir);
    let zsv = ZsvFile::open(&zsv_path).unwrap();
    let compressed: Vec<&str> = zsv
        .tensors()
        .iter()
        .filter(|t| matches!(t.encoding, Encoding::Tiles(_)))
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(compressed, ["layer.0.weight"]);

    let back = dir.join("back.safetensors");
    decompress_file(&zsv_path, &back, |_| {}).unwrap();
    let original = std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(
        std::fs::read(&back).unwrap() == original,
        "not byte-identical"
    );
    let want: HashMap<_, _> = sample_tensors()
        .into_iter()
        .map(|t| (t.name, (t.dtype, t.shape, t.data)))
        .collect();
    assert_eq!(st::read(&back), want);
    assert_eq!(st::metadata(&back), Some(metadata()));
}

/// Round to nearest even from f32 bits, NaN kept (quieted), as the
/// reference for `--cast-bf16`.
fn bf16_rne(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return (bits >> 16) as u16 | 0x0040;
    }
    ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

#[test]
fn cast_bf16_rounds_to_nearest_even_and_keeps_nan() {
    let ties = [
        1.0 + 2f32.powi(-8),       // tie, rounds down to 1.0 (even)
        1.0 + 3.0 * 2f32.powi(-8), // tie, rounds up to even
        1.0 + 2f32.powi(-8) + 2f32.powi(-20),
        -2.5e-3,
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::MAX, // rounds to +Inf
        1e-40,    // subnormal
        0.0,
        -0.0,
        123.456,
    ];
    let mut values: Vec<f32> = ties.to_vec();
    let mut rng = SplitMix64::new(3);
    values.extend((0..20 * 130 - ties.len()).map(|_| rng.next_f32_signed() * 0.05));
    let halfs: Vec<u8> = values[..6]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let doubles: Vec<u8> = values[..6]
        .iter()
        .flat_map(|&v| f64::from(v).to_le_bytes())
        .collect();

    let dir = Dir::new();
    let input = dir.join("f32.safetensors");
    st::write(
        &input,
        &[
            Tensor::f32("w", &[20, 130], &values),
            Tensor::new("h", Dtype::F16, &[6], halfs.clone()),
            Tensor::new("d", Dtype::F64, &[2, 3], doubles),
        ],
        None,
    );
    let output = dir.join("f32.zsv");
    let cast = CompressOptions { cast_bf16: true };
    compress_file(&input, &output, cast, |_| {}).unwrap();
    let back = dir.join("back.safetensors");
    decompress_file(&output, &back, |_| {}).unwrap();
    let zsv = ZsvFile::open(&output).unwrap();
    let mut sources: Vec<String> = zsv
        .tensors()
        .iter()
        .map(|t| format!("{}:{}", t.name, t.source_dtype))
        .collect();
    sources.sort();
    assert_eq!(sources, ["d:F64", "h:F16", "w:F32"]);
    let tensors = st::read(&back);

    let bits = |name: &str| -> Vec<u16> {
        let (dtype, _, data) = &tensors[name];
        assert_eq!(*dtype, Dtype::BF16, "{name}");
        data.chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    };
    let want: Vec<u16> = values.iter().map(|&v| bf16_rne(v)).collect();
    assert_eq!(bits("w"), want);
    assert_eq!(bits("w")[..2], [0x3F80, 0x3F82]);
    assert_eq!(bits("d"), want[..6]);
    let from_half: Vec<u16> = halfs
        .chunks(2)
        .map(|c| bf16_rne(half::f16::from_le_bytes([c[0], c[1]]).to_f32()))
        .collect();
    assert_eq!(bits("h"), from_half);
}

#[test]
fn f32_without_cast_is_rejected_and_writes_nothing() {
    let dir = Dir::new();
    let input = dir.join("f32.safetensors");
    st::write(&input, &[Tensor::f32("w", &[2, 2], &[1.0; 4])], None);
    let output = dir.join("f32.zsv");
    let err = compress_file(&input, &output, CompressOptions::default(), |_| {}).unwrap_err();
    match &err {
        Error::NotBf16 { tensor, dtype } => assert_eq!((&**tensor, &**dtype), ("w", "F32")),
        other => panic!("expected NotBf16, got {other}"),
    }
    assert!(err.to_string().contains("--cast-bf16"), "{err}");
    assert!(!output.exists());
}

#[test]
fn missing_files_are_io_errors_with_their_path() {
    let dir = Dir::new();
    let missing = dir.join("missing.zsv");
    match ZsvFile::open(&missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected Io, got {:?}", other.err()),
    }
    let input = dir.join("model.safetensors");
    st::write(&input, &sample_tensors(), None);
    let unwritable = dir.join("no/such/dir/out.zsv");
    let err = compress_file(&input, &unwritable, CompressOptions::default(), |_| {}).unwrap_err();
    assert!(matches!(err, Error::BadOutput { .. }), "{err}");
    assert!(err.to_string().contains("not there"), "{err}");
}

#[test]
fn invalid_safetensors_input_is_reported() {
    let dir = Dir::new();
    let input = dir.join("bad.safetensors");
    std::fs::write(&input, b"\x10\0\0\0\0\0\0\0{\"a\": 1}").unwrap();
    let err = SafetensorsFile::open(&input).err().unwrap();
    assert!(matches!(err, Error::Safetensors { .. }), "{err}");
    std::fs::write(&input, b"\x02\0\0\0").unwrap();
    let err = SafetensorsFile::open(&input).err().unwrap();
    assert!(err.to_string().contains("too short"), "{err}");
    std::fs::write(&input, b"\xff\xff\xff\xff\0\0\0\0{}").unwrap();
    let err = SafetensorsFile::open(&input).err().unwrap();
    assert!(err.to_string().contains("limit"), "{err}");
}

fn open_bytes(bytes: Vec<u8>) -> Result<ZsvFile, Error> {
    ZsvFile::from_bytes(bytes, "test.zsv")
}

/// Reads every tensor, as `decompress` would.
fn read_all(zsv: &ZsvFile) -> Result<(), Error> {
    for t in zsv.tensors() {
        zsv.tensor_data(t)?;
    }
    Ok(())
}

fn sample_bytes() -> Vec<u8> {
    let dir = Dir::new();
    std::fs::read(sample_zsv(&dir)).unwrap()
}

#[test]
fn wrong_magic_is_not_a_zsv_file() {
    let mut bytes = sample_bytes();
    bytes[..4].copy_from_slice(b"PK\x03\x04");
    let err = open_bytes(bytes).err().unwrap();
    assert!(matches!(err, Error::BadMagic { .. }), "{err}");
    let err = open_bytes(b"{\"not\": \"zsv\"}".to_vec()).err().unwrap();
    assert!(matches!(err, Error::BadMagic { .. }), "{err}");
}

#[test]
fn other_format_versions_are_refused() {
    let mut bytes = sample_bytes();
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    match open_bytes(bytes) {
        Err(Error::UnsupportedVersion { found, supported }) => {
            assert_eq!((found, supported), (3, 2))
        }
        other => panic!("expected UnsupportedVersion, got {:?}", other.err()),
    }
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample_bytes();
    for len in 0..bytes.len() {
        let cut = bytes[..len].to_vec();
        let result = open_bytes(cut).and_then(|zsv| read_all(&zsv));
        let err = result
            .err()
            .unwrap_or_else(|| panic!("cut at {len} accepted"));
        if len >= HEADER_LEN {
            assert!(
                matches!(err, Error::Truncated { .. }),
                "cut at {len}: {err}"
            );
        }
    }
    let err = open_bytes(Vec::new()).err().unwrap();
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
}

#[test]
fn flipped_bits_fail_their_checksum() {
    let bytes = sample_bytes();
    let zsv = open_bytes(bytes.clone()).unwrap();
    let header = Header::parse(&bytes[..HEADER_LEN], bytes.len() as u64).unwrap();

    // In a tile section: the file opens, reading that tensor fails.
    let entry = zsv.tensor("layer.0.weight").unwrap();
    let Encoding::Tiles(t) = &entry.encoding else {
        panic!("not compressed")
    };
    let mut bad = bytes.clone();
    bad[t.tiles.offset as usize + 100] ^= 0x10;
    let bad = open_bytes(bad).unwrap();
    let err = read_all(&bad).unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains("layer.0.weight"), "{err}");

    // In a raw tensor.
    let entry = zsv.tensor("position_ids").unwrap();
    let Encoding::Raw(s) = &entry.encoding else {
        panic!("not raw")
    };
    let mut bad = bytes.clone();
    bad[s.offset as usize] ^= 1;
    let err = read_all(&open_bytes(bad).unwrap()).unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");

    // In the index: the file does not open.
    let mut bad = bytes.clone();
    bad[header.index_offset as usize + 5] ^= 0x80;
    let err = open_bytes(bad).err().unwrap();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
}

/// Replaces the index of `bytes` by `edit(index)`, with valid checksums, so
/// that only the validation of its contents can catch the change.
fn with_index(bytes: &[u8], edit: impl FnOnce(&mut Index)) -> Vec<u8> {
    let header = Header::parse(&bytes[..HEADER_LEN], bytes.len() as u64).unwrap();
    let start = header.index_offset as usize;
    let mut index = Index::parse(
        &bytes[start..],
        header.version,
        header.index_offset,
        bytes.len() as u64,
    )
    .unwrap();
    edit(&mut index);
    let index_bytes = index.to_bytes();
    let mut out = bytes[..start].to_vec();
    out.extend_from_slice(&index_bytes);
    let header = Header {
        version: index.version,
        index_len: index_bytes.len() as u64,
        index_crc: crc32fast::hash(&index_bytes),
        ..header
    };
    out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    out
}

/// A change to an index, for tests of its validation.
type IndexEdit = Box<dyn Fn(&mut Index)>;

#[test]
fn shapes_that_do_not_fit_their_sections_are_corrupt() {
    let bytes = sample_bytes();
    assert!(open_bytes(with_index(&bytes, |_| {})).is_ok());
    let cases: [(&str, IndexEdit); 5] = [
        (
            "section tiles",
            Box::new(|ix| {
                let t = ix
                    .tensors
                    .iter_mut()
                    .find(|t| t.name == "layer.0.weight")
                    .unwrap();
                t.shape = vec![40, 300];
            }),
        ),
        (
            "needs",
            Box::new(|ix| {
                let t = ix
                    .tensors
                    .iter_mut()
                    .find(|t| t.name == "layer.0.bias")
                    .unwrap();
                t.shape = vec![8];
            }),
        ),
        (
            "appears twice",
            Box::new(|ix| {
                let copy = ix.tensors[1].clone();
                ix.tensors.push(copy);
            }),
        ),
        (
            "tile encoding",
            Box::new(|ix| {
                let t = ix
                    .tensors
                    .iter_mut()
                    .find(|t| t.name == "layer.0.weight")
                    .unwrap();
                t.shape = vec![40 * 250];
            }),
        ),
        (
            "aligned",
            Box::new(|ix| {
                let t = ix.tensors.iter_mut().find(|t| t.name == "mask").unwrap();
                if let Encoding::Raw(s) = &mut t.encoding {
                    s.offset += 1;
                }
            }),
        ),
    ];
    for (what, edit) in cases {
        let err = open_bytes(with_index(&bytes, edit)).err().unwrap();
        assert!(
            matches!(&err, Error::Corrupt(msg) if msg.contains(what)),
            "{what}: {err}"
        );
    }
    // Same tile count, different shape: the exceptions land in the padding.
    // (In version 2 the stored safetensors header would catch the change
    // first; version 1 has none, so the tile checks must.)
    let narrower = with_index(&bytes, |ix| {
        as_version_1(ix);
        let t = ix
            .tensors
            .iter_mut()
            .find(|t| t.name == "layer.0.weight")
            .unwrap();
        t.shape = vec![40, 129];
    });
    let err = read_all(&open_bytes(narrower).unwrap()).unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
}

/// Turns a version 2 index into the version 1 layout (metadata in the
/// index, no stored safetensors header).
fn as_version_1(ix: &mut Index) {
    ix.version = 1;
    ix.source = None;
    ix.metadata = vec![("format".into(), "pt".into())];
    for t in &mut ix.tensors {
        t.source_dtype = t.dtype;
    }
}

#[test]
fn sections_shared_by_two_tensors_are_corrupt() {
    // Aliased sections let a small file decompress into a huge one.
    let bytes = sample_bytes();
    let aliased = with_index(&bytes, |ix| {
        let data = ix
            .tensors
            .iter()
            .find_map(|t| match (&t.name[..], &t.encoding) {
                ("layer.0.bias", Encoding::Raw(s)) => Some(*s),
                _ => None,
            })
            .unwrap();
        let t = ix.tensors.iter_mut().find(|t| t.name == "scalar").unwrap();
        t.shape = vec![7];
        t.encoding = Encoding::Raw(data);
        as_version_1(ix);
    });
    let err = open_bytes(aliased).err().unwrap();
    assert!(err.to_string().contains("overlaps"), "{err}");
}

#[test]
fn a_stored_header_that_disagrees_with_the_index_is_corrupt() {
    let bytes = sample_bytes();
    let renamed = with_index(&bytes, |ix| ix.tensors[0].name = "other".into());
    let err = open_bytes(renamed).err().unwrap();
    assert!(
        matches!(&err, Error::Corrupt(m) if m.contains("source header")),
        "{err}"
    );
    let longer = with_index(&bytes, |ix| ix.source.as_mut().unwrap().len += 1);
    let err = open_bytes(longer).err().unwrap();
    assert!(err.to_string().contains("source length"), "{err}");
}

#[test]
fn version_1_files_are_read_and_decompress_the_same_every_time() {
    let dir = Dir::new();
    let v2 = std::fs::read(sample_zsv(&dir)).unwrap();
    let v1 = with_index(&v2, as_version_1);
    let path = dir.join("v1.zsv");
    std::fs::write(&path, &v1).unwrap();
    let zsv = ZsvFile::open(&path).unwrap();
    assert_eq!((zsv.version(), zsv.output_crc32()), (1, None));
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    decompress_file(&path, &a, |_| {}).unwrap();
    decompress_file(&path, &b, |_| {}).unwrap();
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    let want: HashMap<_, _> = sample_tensors()
        .into_iter()
        .map(|t| (t.name, (t.dtype, t.shape, t.data)))
        .collect();
    assert_eq!(st::read(&a), want);
    assert_eq!(st::metadata(&a), Some(metadata()));
}

#[test]
fn a_damaged_first_tensor_stops_decompression_there() {
    // Defect 9: a file corrupt in its first tensor used to be written whole
    // before the error was reported.
    let dir = Dir::new();
    let zsv_path = sample_zsv(&dir);
    let mut bytes = std::fs::read(&zsv_path).unwrap();
    let zsv = open_bytes(bytes.clone()).unwrap();
    let first = &zsv.tensors()[0];
    let s = match &first.encoding {
        Encoding::Raw(s) => *s,
        Encoding::Tiles(t) => t.tiles,
    };
    bytes[s.offset as usize] ^= 1;
    std::fs::write(&zsv_path, bytes).unwrap();
    let mut written = 0;
    let back = dir.join("back.safetensors");
    let err = decompress_file(&zsv_path, &back, |_| written += 1).unwrap_err();
    assert!(err.to_string().contains(&first.name), "{err}");
    assert_eq!(written, 0);
    assert!(!back.exists());
}

#[test]
fn decode_into_a_wrong_buffer_is_a_shape_mismatch() {
    let m = CompressedMatrix::encode(&[bf16::ONE; 6], 2, 3).unwrap();
    let err = m.decode_into(&mut [bf16::ZERO; 5]).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

#[test]
fn writer_rejects_data_that_does_not_match_the_shape() {
    let mut w = ZsvWriter::new(Cursor::new(Vec::new()), "mem.zsv").unwrap();
    let i32 = Dtype::I32;
    let err = w.add_raw("x", i32, i32, &[3], &[0; 8]).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    w.add_raw("x", i32, i32, &[2], &[0; 8]).unwrap();
    let err = w.add_raw("x", i32, i32, &[2], &[0; 8]).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    let err = w.add_raw("y", i32, Dtype::F32, &[2], &[0; 8]).unwrap_err();
    assert!(err.to_string().contains("cannot be stored"), "{err}");
}

/// Round trip of one matrix through the codec and an in-memory container.
fn container_round_trip(bits: &[u16], rows: usize, cols: usize) -> Result<(), String> {
    let weights: &[bf16] = bytemuck::cast_slice(bits);
    let m = CompressedMatrix::encode(weights, rows, cols).map_err(|e| e.to_string())?;
    let mut w = ZsvWriter::new(Cursor::new(Vec::new()), "mem.zsv").unwrap();
    w.add_matrix("m", Dtype::BF16, &m).unwrap();
    let json = one_matrix_header(rows, cols);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&(json.len() as u64).to_le_bytes());
    crc.update(&json);
    crc.update(bytemuck::cast_slice(bits));
    let restored_len = 8 + json.len() as u64 + 2 * bits.len() as u64;
    let (cursor, len) = w.finish(&json, restored_len, crc.finalize()).unwrap();
    let bytes = cursor.into_inner();
    assert_eq!(bytes.len() as u64, len);
    let zsv = open_bytes(bytes).map_err(|e| e.to_string())?;
    let back = zsv.matrix(&zsv.tensors()[0]).map_err(|e| e.to_string())?;
    if back != m {
        return Err("matrix changed through the container".into());
    }
    let decoded = back.decode();
    let decoded: &[u16] = bytemuck::cast_slice(&decoded);
    match (0..bits.len()).find(|&i| decoded[i] != bits[i]) {
        Some(i) => Err(format!(
            "element {i}: {:#06x} -> {:#06x}",
            bits[i], decoded[i]
        )),
        None => Ok(()),
    }
}

mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// A shape and that many weights: any bit pattern, or weight-like values
    /// with a sprinkling of arbitrary patterns.
    fn matrix() -> impl Strategy<Value = (usize, usize, Vec<u16>)> {
        (1..70usize, 1..300usize, any::<bool>(), any::<u64>()).prop_flat_map(
            |(rows, cols, any_bits, seed)| {
                let n = rows * cols;
                let bits = if any_bits {
                    vec(any::<u16>(), n).boxed()
                } else {
                    vec((any::<u16>(), 0..40u8), n)
                        .prop_map(move |v| {
                            let like = weight_like(v.len(), seed);
                            v.iter()
                                .zip(like)
                                .map(|(&(raw, pick), w)| if pick == 0 { raw } else { w })
                                .collect()
                        })
                        .boxed()
                };
                (Just(rows), Just(cols), bits)
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn matrices_round_trip_through_the_container((rows, cols, bits) in matrix()) {
            prop_assert_eq!(container_round_trip(&bits, rows, cols), Ok(()));
        }
    }
}

/// The safetensors header of one BF16 matrix `m`.
fn one_matrix_header(rows: usize, cols: usize) -> Vec<u8> {
    header::Header {
        metadata: vec![],
        tensors: vec![header::TensorInfo {
            name: "m".into(),
            dtype: Dtype::BF16,
            shape: vec![rows, cols],
            begin: 0,
            end: 2 * (rows * cols) as u64,
        }],
    }
    .to_json()
}

#[test]
fn fuzz_seeds_stay_valid() {
    // The fuzzer starts from these files (embedded, so the test runs from
    // any directory); they must keep opening and decoding: `small.zsv` is a
    // format version 1 file, `small-v2.zsv` version 2.
    let seeds: [(&str, &[u8], u32); 2] = [
        (
            "small.zsv",
            include_bytes!("../../fuzz/seeds/zsv_parse/small.zsv"),
            1,
        ),
        (
            "small-v2.zsv",
            include_bytes!("../../fuzz/seeds/zsv_parse/small-v2.zsv"),
            2,
        ),
    ];
    for (name, bytes, version) in seeds {
        let zsv = ZsvFile::from_bytes(bytes.to_vec(), name).unwrap();
        assert_eq!(zsv.version(), version, "{name}");
        read_all(&zsv).unwrap();
    }
}

#[test]
fn decompressing_a_damaged_file_fails_and_leaves_no_output() {
    let dir = Dir::new();
    let zsv_path = sample_zsv(&dir);
    let mut bytes = std::fs::read(&zsv_path).unwrap();
    let zsv = open_bytes(bytes.clone()).unwrap();
    let Encoding::Tiles(t) = &zsv.tensor("layer.0.weight").unwrap().encoding else {
        panic!("not compressed")
    };
    bytes[t.exceptions.offset as usize] ^= 4;
    std::fs::write(&zsv_path, bytes).unwrap();

    let back = dir.join("back.safetensors");
    let err = decompress_file(&zsv_path, &back, |_| {}).unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    assert!(!back.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.0.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "model.safetensors" && n != "model.zsv")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
