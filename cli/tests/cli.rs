//! The `zipserv` binary end to end: compress, inspect, decompress, and
//! `error: ...` with a failing exit code on bad input.

use std::path::Path;
use std::process::{Command, Output};

use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// The binary under test: the one cargo built, or `ZIPSERV_BIN` where the
/// test executable was copied to another machine without its build tree
/// (scripts/gpu-suite.sh sets it).
fn zipserv(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let bin =
        std::env::var_os("ZIPSERV_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_zipserv").into());
    let mut cmd = Command::new(bin);
    for a in args {
        cmd.arg(a);
    }
    cmd.output().expect("run zipserv")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_model(path: &Path, dtype: Dtype, rows: usize, cols: usize) {
    let width = dtype.bitsize() / 8;
    let data: Vec<u8> = (0..rows * cols * width)
        .map(|i| (i * 37 % 251) as u8 & 0x3F)
        .collect();
    let view = TensorView::new(dtype, vec![rows, cols], &data).unwrap();
    safetensors::serialize_to_file([("w", view)], None, path).unwrap();
}

#[test]
fn compress_inspect_decompress() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let zsv = dir.path().join("m.zsv");
    let back = dir.path().join("back.safetensors");
    write_model(&model, Dtype::BF16, 20, 130);

    let out = zipserv(&[&"compress", &model, &"-o", &zsv]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = zipserv(&[&"inspect", &zsv]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("[20 x 130]") && table.contains("tiles"),
        "{table}"
    );
    let out = zipserv(&[&"decompress", &zsv, &"-o", &back]);
    assert!(out.status.success(), "{}", stderr(&out));

    let read = |p: &Path| std::fs::read(p).unwrap();
    let (a, b) = (read(&model), read(&back));
    let a = safetensors::SafeTensors::deserialize(&a).unwrap();
    let b = safetensors::SafeTensors::deserialize(&b).unwrap();
    assert_eq!(a.tensor("w").unwrap(), b.tensor("w").unwrap());
}

#[test]
fn bad_input_is_an_error_message_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let f32_model = dir.path().join("f32.safetensors");
    write_model(&f32_model, Dtype::F32, 4, 4);
    let garbage = dir.path().join("garbage.zsv");
    std::fs::write(
        &garbage,
        b"definitely not a zsv file, but long enough to have a header...",
    )
    .unwrap();
    let out_path = dir.path().join("out");
    let cases: [(&[&dyn AsRef<std::ffi::OsStr>], &str); 4] = [
        (&[&"compress", &f32_model, &"-o", &out_path], "--cast-bf16"),
        (&[&"inspect", &garbage], "not a .zsv file"),
        (
            &[&"decompress", &garbage, &"-o", &out_path],
            "not a .zsv file",
        ),
        (
            &[&"inspect", &dir.path().join("missing.zsv")],
            "missing.zsv",
        ),
    ];
    for (args, expect) in cases {
        let out = zipserv(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.starts_with("error: ") && err.contains(expect), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!out_path.exists());
}
