//! Whole safetensors files and model directories through compression and
//! back: byte for byte on random models, and the careful-file rules of the
//! library (temporary outputs, interrupted runs, directory layouts).

use std::path::Path;

use proptest::prelude::*;
use safetensors::Dtype;
use zipserv_format::Error;
use zipserv_format::convert::manifest::{MANIFEST_NAME, Manifest};
use zipserv_format::convert::{
    CompressOptions, compress_dir, compress_file, decompress_dir, decompress_file, verify_dir,
    verify_file,
};
use zipserv_format::files::{AtomicFile, FileId};
use zipserv_format::rng::SplitMix64;
use zipserv_tests::st::{self, Tensor};

const DTYPES: [Dtype; 6] = [
    Dtype::BF16,
    Dtype::U8,
    Dtype::I64,
    Dtype::F8_E4M3,
    Dtype::BOOL,
    Dtype::I16,
];

/// A random model: BF16 matrices of random shapes (some compressible, some
/// thin), and tensors of other dtypes and ranks, empty ones included.
fn random_model(seed: u64) -> Vec<Tensor> {
    let mut rng = SplitMix64::new(seed);
    let mut r = |n: u64| rng.next_u64() % n;
    let count = 1 + r(6) as usize;
    (0..count)
        .map(|i| {
            let dtype = DTYPES[r(DTYPES.len() as u64) as usize];
            let shape: Vec<usize> = match r(4) {
                0 => vec![],
                1 => vec![r(300) as usize],
                2 => vec![1 + r(70) as usize, r(400) as usize],
                _ => vec![1 + r(3) as usize, r(5) as usize, 1 + r(9) as usize],
            };
            let n: usize = shape.iter().product::<usize>() * (dtype.bitsize() / 8);
            let data: Vec<u8> = if dtype == Dtype::BF16 {
                (0..n / 2)
                    .flat_map(|_| {
                        let v = (r(1 << 20) as f32 / (1 << 20) as f32 - 0.5) * 0.05;
                        let v = if r(50) == 0 { v * 1e-9 } else { v };
                        ((v.to_bits() >> 16) as u16).to_le_bytes()
                    })
                    .collect()
            } else if dtype == Dtype::BOOL {
                (0..n).map(|_| r(2) as u8).collect()
            } else {
                (0..n).map(|_| r(256) as u8).collect()
            };
            Tensor::new(&format!("t{i}.{}", r(1000)), dtype, &shape, data)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_models_come_back_byte_for_byte(seed in any::<u64>(), with_meta in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let (input, zsv, back) = (dir.path().join("in.safetensors"), dir.path().join("m.zsv"), dir.path().join("back.safetensors"));
        let meta = with_meta.then(|| [("format".to_string(), "pt".to_string()), ("k".into(), seed.to_string())].into());
        st::write(&input, &random_model(seed), meta);
        compress_file(&input, &zsv, CompressOptions::default(), |_| {}).unwrap();
        let r = verify_file(&input, &zsv).unwrap();
        prop_assert!(r.identical_file);
        decompress_file(&zsv, &back, |_| {}).unwrap();
        prop_assert!(std::fs::read(&input).unwrap() == std::fs::read(&back).unwrap());
    }
}

#[test]
fn verify_names_the_first_difference() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let model = random_model(11);
    st::write(&d("a.safetensors"), &model, None);
    compress_file(
        &d("a.safetensors"),
        &d("a.zsv"),
        CompressOptions::default(),
        |_| {},
    )
    .unwrap();
    let mut changed = model;
    let t = changed.iter_mut().find(|t| !t.data.is_empty()).unwrap();
    t.data[0] ^= 1;
    let name = t.name.clone();
    st::write(&d("b.safetensors"), &changed, None);
    let err = verify_file(&d("b.safetensors"), &d("a.zsv")).unwrap_err();
    assert!(err.to_string().contains(&name), "{err}");
    // In a compressed matrix (compared band by band), the byte named is the
    // first that differs, in any band: the high byte of an element far in.
    let bits: Vec<u16> = zipserv_format::synth::trained_like(48, 300, 5)
        .unwrap()
        .iter()
        .map(|w| w.to_bits())
        .collect();
    let matrix = vec![st::Tensor::bf16("w", &[48, 300], &bits)];
    st::write(&d("m.safetensors"), &matrix, None);
    let r = compress_file(
        &d("m.safetensors"),
        &d("m.zsv"),
        CompressOptions::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(r.compressed, 1);
    let mut changed = matrix;
    let byte = changed[0].data.len() - 3; // the high byte of the second-to-last element
    changed[0].data[byte] ^= 0x40;
    st::write(&d("c.safetensors"), &changed, None);
    let err = verify_file(&d("c.safetensors"), &d("m.zsv")).unwrap_err();
    let want = format!("tensor `w` at byte {byte}");
    assert!(err.to_string().contains(&want), "{err} (want {want})");
}

fn leftovers(dir: &Path) -> usize {
    zipserv_tests::leftover_temporaries(dir).len()
}

#[test]
fn an_output_is_checked_against_the_inputs_again_at_the_rename() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::write(&input, b"precious").unwrap();
    let id = FileId::of_path(&input).unwrap();
    let pending_out = AtomicFile::create(&out, &[id]).unwrap();
    // Meanwhile someone links the input to the output's name.
    std::fs::hard_link(&input, &out).unwrap();
    let err = pending_out.commit().unwrap_err();
    assert!(matches!(err, Error::OutputIsInput { .. }), "{err}");
    assert_eq!(std::fs::read(&input).unwrap(), b"precious");
    assert_eq!(leftovers(dir.path()), 0);
}

/// A Hugging Face-style directory: sharded BF16 weights, an index, config
/// and tokenizer files, a nested folder, a symbolic link to a file (as in
/// the Hugging Face cache).
fn write_model_dir(root: &Path) {
    std::fs::create_dir_all(root.join("1_Pooling")).unwrap();
    std::fs::write(root.join("config.json"), br#"{"hidden_size": 64}"#).unwrap();
    std::fs::write(root.join("1_Pooling/config.json"), b"{}").unwrap();
    std::fs::write(root.join("blob"), b"tokenizer bytes").unwrap();
    std::os::unix::fs::symlink(root.join("blob"), root.join("tokenizer.json")).unwrap();
    for shard in 0..3 {
        st::write(
            &root.join(format!("model-{shard:05}-of-00003.safetensors")),
            &random_model(100 + shard),
            Some([("format".to_string(), "pt".to_string())].into()),
        );
    }
    std::fs::write(
        root.join("model.safetensors.index.json"),
        b"{\"weight_map\":{}}",
    )
    .unwrap();
}

#[test]
fn a_sharded_directory_comes_back_file_for_file() {
    let dir = tempfile::tempdir().unwrap();
    let (model, packed, back) = (
        dir.path().join("m"),
        dir.path().join("p"),
        dir.path().join("b"),
    );
    write_model_dir(&model);
    let r = compress_dir(&model, &packed, CompressOptions::default(), |_| {}, |_| {}).unwrap();
    assert_eq!((r.files, r.model_files), (8, 3));
    let manifest = Manifest::read(&packed).unwrap();
    assert_eq!(manifest.files.len(), 8);
    verify_dir(&model, &packed, |_| {}).unwrap();
    let r = decompress_dir(&packed, &back, |_| {}, |_| {}).unwrap();
    assert_eq!(r.identical_files, 8);
    for f in &manifest.files {
        let (a, b) = (model.join(&f.path), back.join(&f.path));
        assert!(
            std::fs::read(a).unwrap() == std::fs::read(&b).unwrap(),
            "{}",
            f.path
        );
        // Links come back as the files they pointed to.
        assert!(std::fs::symlink_metadata(&b).unwrap().is_file());
    }
    assert_eq!(leftovers(dir.path()), 0);
}

#[test]
fn directories_refuse_what_they_cannot_keep() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    write_model_dir(&d("m"));
    let none = CompressOptions::default();
    let compress = |out: &str| compress_dir(&d("m"), &d(out), none, |_| {}, |_| {});

    // A symbolic link to a directory (cycles), a FIFO: refused.
    std::os::unix::fs::symlink(d("m/1_Pooling"), d("m/loop")).unwrap();
    let err = compress("p").unwrap_err();
    assert!(
        err.to_string().contains("symbolic link to a directory"),
        "{err}"
    );
    std::fs::remove_file(d("m/loop")).unwrap();

    // Two inputs that would be stored under one name.
    std::fs::write(d("m/model-00000-of-00003.zsv"), b"x").unwrap();
    let err = compress("p").unwrap_err();
    assert!(err.to_string().contains("one name"), "{err}");
    std::fs::remove_file(d("m/model-00000-of-00003.zsv")).unwrap();

    // A directory with no weights, and an already compressed one.
    std::fs::create_dir(d("empty")).unwrap();
    let err = compress_dir(&d("empty"), &d("p"), none, |_| {}, |_| {}).unwrap_err();
    assert!(err.to_string().contains("no .safetensors"), "{err}");
    compress("p").unwrap();
    let err = compress_dir(&d("p"), &d("pp"), none, |_| {}, |_| {}).unwrap_err();
    assert!(err.to_string().contains("already a compressed"), "{err}");

    // A manifest that does not match the files: nothing is written.
    let manifest = d("p").join(MANIFEST_NAME);
    let text = std::fs::read_to_string(&manifest).unwrap();
    let wrong = text.replacen("\"len\": ", "\"len\": 1", 1);
    std::fs::write(&manifest, wrong).unwrap();
    let err = decompress_dir(&d("p"), &d("b"), |_| {}, |_| {}).unwrap_err();
    assert!(matches!(err, Error::Mismatch(_)), "{err}");
    assert!(!d("b").exists());
    std::fs::write(&manifest, &text).unwrap();
    std::fs::remove_file(d("p/config.json")).unwrap();
    let err = decompress_dir(&d("p"), &d("b"), |_| {}, |_| {}).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(!d("b").exists());
    assert_eq!(leftovers(dir.path()), 0);
}
