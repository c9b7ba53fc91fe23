//! The `zipserv` binary end to end: compress, inspect, verify, decompress,
//! and for every kind of bad input or careless use, an `error: ...` with a
//! failing exit code and nothing lost (docs/TESTING.md lists the cases).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// The binary under test: the one cargo built, or `ZIPSERV_BIN` where the
/// test executable was copied to another machine without its build tree
/// (scripts/gpu-suite.sh sets it).
fn bin() -> PathBuf {
    std::env::var_os("ZIPSERV_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_zipserv").into())
        .into()
}

fn zipserv(args: &[&dyn AsRef<OsStr>]) -> Output {
    let mut cmd = Command::new(bin());
    for a in args {
        cmd.arg(a);
    }
    // Nothing from the caller's environment may be needed (no CUDA paths).
    cmd.env_remove("LD_LIBRARY_PATH");
    cmd.output().expect("run zipserv")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs and expects `error: ...` containing `expect`, exit code 1, no panic.
fn fails(args: &[&dyn AsRef<OsStr>], expect: &str) {
    let out = zipserv(args);
    let err = stderr(&out);
    let shown: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
    assert_eq!(out.status.code(), Some(1), "{shown:?}: {err}");
    assert!(
        err.starts_with("error: ") && err.contains(expect),
        "{shown:?}: expected {expect:?} in {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

fn succeeds(args: &[&dyn AsRef<OsStr>]) -> String {
    let out = zipserv(args);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// Weight-like BF16 bits (a narrow band of exponents, some outliers).
fn weights(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .flat_map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
            let v = if i % 211 == 0 { v * 1e-5 } else { v };
            ((v.to_bits() >> 16) as u16).to_le_bytes()
        })
        .collect()
}

/// Writes a safetensors file of `(name, dtype, shape, bytes)` tensors.
fn write_st(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let metadata = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize_to_file(views, Some(metadata), path).unwrap();
}

/// A small model with one compressible 32×256 matrix.
fn write_model(path: &Path) {
    write_st(
        path,
        &[
            ("w", Dtype::BF16, vec![32, 256], weights(32 * 256, 1)),
            ("b", Dtype::BF16, vec![5], weights(5, 2)),
        ],
    );
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Temporary files or directories a run left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("zipserv-tmp"))
        .collect()
}

#[test]
fn compress_inspect_verify_decompress_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (model, zsv) = (dir.path().join("m.safetensors"), dir.path().join("m.zsv"));
    write_model(&model);
    succeeds(&[&"compress", &model, &"-o", &zsv]);
    let table = succeeds(&[&"inspect", &zsv]);
    assert!(
        table.contains("[32 x 256]") && table.contains("tiles"),
        "{table}"
    );
    let verified = succeeds(&[&"verify", &model, &zsv]);
    assert!(verified.contains("byte for byte"), "{verified}");
    // Decompressing twice gives the original, byte for byte, both times
    // (defect 8: metadata order used to vary from run to run).
    for name in ["back1.safetensors", "back2.safetensors"] {
        let back = dir.path().join(name);
        succeeds(&[&"decompress", &zsv, &"-o", &back]);
        assert!(read(&back) == read(&model), "{name} differs from the input");
    }
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn an_output_never_overwrites_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    write_model(&d("a.safetensors"));
    let original = read(&d("a.safetensors"));
    // Defect 1: the same path, another spelling of it, a hard link and a
    // symbolic link to the input are all refused, and the input survives.
    std::fs::hard_link(d("a.safetensors"), d("hard.zsv")).unwrap();
    std::os::unix::fs::symlink(d("a.safetensors"), d("soft.zsv")).unwrap();
    let same = dir.path().join(".").join("a.safetensors");
    for out in [d("a.safetensors"), same, d("hard.zsv")] {
        fails(
            &[&"compress", &d("a.safetensors"), &"-o", &out],
            "also an input",
        );
    }
    fails(
        &[&"compress", &d("a.safetensors"), &"-o", &d("soft.zsv")],
        "symbolic link",
    );
    assert!(read(&d("a.safetensors")) == original);

    succeeds(&[&"compress", &d("a.safetensors"), &"-o", &d("a.zsv")]);
    let zsv = read(&d("a.zsv"));
    fails(
        &[&"decompress", &d("a.zsv"), &"-o", &d("a.zsv")],
        "also an input",
    );
    assert!(read(&d("a.zsv")) == zsv);

    // Inputs named like the temporary files of older versions are just
    // inputs: `compress m.zsv.partial -o m.zsv` used to truncate its input.
    std::fs::copy(d("a.safetensors"), d("m.zsv.partial")).unwrap();
    succeeds(&[&"compress", &d("m.zsv.partial"), &"-o", &d("m.zsv")]);
    assert!(read(&d("m.zsv.partial")) == original);
    std::fs::copy(d("a.zsv"), d("r.st.partial")).unwrap();
    succeeds(&[&"decompress", &d("r.st.partial"), &"-o", &d("r.st")]);
    assert!(read(&d("r.st.partial")) == zsv && read(&d("r.st")) == original);

    // An existing unrelated output is replaced (atomically).
    std::fs::write(d("old.zsv"), b"old").unwrap();
    succeeds(&[&"compress", &d("a.safetensors"), &"-o", &d("old.zsv")]);
    assert!(read(&d("old.zsv")) == zsv);
    assert!(leftovers(dir.path()).is_empty());
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Runs `zipserv` and fails the test if it has not finished in 20 s (a
/// read of /dev/zero or a FIFO used to run forever or block).
fn within_time(args: &[&dyn AsRef<OsStr>]) -> Output {
    let mut cmd = Command::new(bin());
    for a in args {
        cmd.arg(a);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
            panic!("zipserv {args:?} still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn special_files_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let model = dir.path().join("m.safetensors");
    write_model(&model);
    let out = dir.path().join("out.zsv");
    // Defect 2: inputs that never end or block.
    for (input, kind) in [
        (Path::new("/dev/zero"), "character device"),
        (Path::new("/dev/urandom"), "character device"),
        (fifo.as_path(), "FIFO"),
    ] {
        for cmd in ["inspect", "decompress", "compress"] {
            let args: &[&dyn AsRef<OsStr>] = if cmd == "inspect" {
                &[&cmd, &input]
            } else {
                &[&cmd, &input, &"-o", &out]
            };
            let o = within_time(args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{cmd} {}: {err}", input.display());
            assert!(err.contains(kind), "{cmd} {}: {err}", input.display());
        }
    }
    // Defect 3: outputs that are devices, FIFOs, standard output or `-`.
    for (output, expect) in [
        (Path::new("/dev/full"), "character device"),
        (Path::new("/dev/null"), "character device"),
        (Path::new("/dev/stdout"), "symbolic link"),
        (fifo.as_path(), "FIFO"),
        (Path::new("-"), "standard output"),
        (dir.path(), "directory"),
    ] {
        fails(&[&"compress", &model, &"-o", &output], expect);
    }
    use std::os::unix::fs::FileTypeExt;
    for dev in ["/dev/full", "/dev/null"] {
        let t = std::fs::metadata(dev).unwrap().file_type();
        assert!(t.is_char_device(), "{dev} is no longer a device");
    }
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // Defect 10: a directory that is not a compressed model says so.
    fails(
        &[&"decompress", &dir.path(), &"-o", &out],
        "zipserv-manifest.json",
    );
    fails(&[&"inspect", &dir.path()], "zipserv-manifest.json");
    assert!(!out.exists());
}

#[test]
fn two_runs_writing_one_output_both_leave_a_valid_file() {
    // Defect 4: they used to share one temporary name.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    write_st(
        &model,
        &[("w", Dtype::BF16, vec![512, 1024], weights(512 * 1024, 3))],
    );
    let out = dir.path().join("m.zsv");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            Command::new(bin())
                .args([
                    OsStr::new("compress"),
                    model.as_os_str(),
                    "-o".as_ref(),
                    out.as_os_str(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let o = run.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    succeeds(&[&"verify", &model, &out]);
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn an_interrupted_run_leaves_nothing_behind() {
    // Defect 5: Ctrl-C used to leave a partial output or a hidden
    // temporary file of the output's size.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("big.safetensors");
    let n = 48 << 20; // 96 MB of BF16: long enough to interrupt
    write_st(
        &model,
        &[("w", Dtype::BF16, vec![n / 4096, 4096], weights(n, 5))],
    );
    let model_dir = dir.path().join("model");
    std::fs::create_dir(&model_dir).unwrap();
    std::fs::copy(&model, model_dir.join("model.safetensors")).unwrap();
    for (input, signal) in [
        (&model, libc::SIGINT),
        (&model, libc::SIGTERM),
        (&model_dir, libc::SIGINT),
    ] {
        let out = dir.path().join("big.zsv");
        let mut child = Command::new(bin())
            .args([
                OsStr::new("compress"),
                input.as_os_str(),
                "-o".as_ref(),
                out.as_os_str(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until its temporary file (or directory) exists, then
        // interrupt it.
        let start = Instant::now();
        while leftovers(dir.path()).is_empty() && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        if status.success() {
            // Finished before the signal arrived: the output must be whole.
            eprintln!("signal {signal}: the run finished first");
            succeeds(&[&"verify", input, &out]);
            let _ = std::fs::remove_file(&out);
            let _ = std::fs::remove_dir_all(&out);
        } else {
            assert_eq!(status.code(), Some(130), "signal {signal}");
            assert!(!out.exists());
        }
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );
    }
}

#[test]
fn thin_and_tiny_matrices_are_never_larger_than_raw() {
    // Defect 6: 1×1000000 became 11× larger, 1000000×1 88×, 1×1 1500×.
    let dir = tempfile::tempdir().unwrap();
    for shape in [[1, 1_000_000], [1_000_000, 1], [1, 1], [3, 5000], [16, 128]] {
        let n = shape[0] * shape[1];
        let model = dir.path().join("thin.safetensors");
        let out = dir.path().join("thin.zsv");
        write_st(&model, &[("w", Dtype::BF16, shape.to_vec(), weights(n, 7))]);
        succeeds(&[&"compress", &model, &"-o", &out]);
        let (a, b) = (read(&model).len(), read(&out).len());
        // Raw storage costs the container's header, index and alignment.
        assert!(b <= a + 1024, "{shape:?}: {a} -> {b} bytes");
        succeeds(&[&"verify", &model, &out]);
    }
}

#[test]
fn inspect_escapes_names_and_prints_no_negative_zero() {
    // Defect 10: control characters broke the table; a one-exponent matrix
    // printed its entropy as -0.000.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let ones: Vec<u8> = (0..64 * 128)
        .flat_map(|_| 0x3F80u16.to_le_bytes())
        .collect();
    write_st(
        &model,
        &[("bad\nname\t\u{1b}[31m", Dtype::BF16, vec![64, 128], ones)],
    );
    let out = dir.path().join("m.zsv");
    succeeds(&[&"compress", &model, &"-o", &out]);
    let table = succeeds(&[&"inspect", &out]);
    assert!(table.contains(r"bad\nname\t\u{1b}[31m"), "{table}");
    assert!(
        !table.contains('\u{1b}') && !table.contains("-0.000"),
        "{table}"
    );
}

#[test]
fn bad_input_is_an_error_message_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let f32_model = dir.path().join("f32.safetensors");
    write_st(&f32_model, &[("w", Dtype::F32, vec![4, 4], vec![0; 64])]);
    let garbage = dir.path().join("garbage.zsv");
    std::fs::write(
        &garbage,
        b"definitely not a zsv file, but long enough to have a header...",
    )
    .unwrap();
    let out_path = dir.path().join("out");
    fails(&[&"compress", &f32_model, &"-o", &out_path], "--cast-bf16");
    fails(&[&"inspect", &garbage], "not a .zsv file");
    fails(
        &[&"decompress", &garbage, &"-o", &out_path],
        "not a .zsv file",
    );
    fails(
        &[&"inspect", &dir.path().join("missing.zsv")],
        "missing.zsv",
    );
    fails(
        &[&"compress", &garbage, &"-o", &out_path],
        "not a valid safetensors",
    );
    fails(
        &[&"verify", &f32_model, &dir.path()],
        "two files or two directories",
    );
    assert!(!out_path.exists());
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn gpu_commands_without_a_driver_say_so() {
    // Without the NVIDIA driver the binary still starts (it does not link
    // libcuda) and GPU commands fail with a clear message; on a GPU machine
    // the demo runs.
    let out = zipserv(&[&"demo"]);
    let err = stderr(&out);
    if out.status.success() {
        assert!(stdout(&out).contains("OK"), "{}", stdout(&out));
    } else {
        assert!(
            err.contains("no CUDA driver found") || err.contains("no CUDA device"),
            "{err}"
        );
    }
}

#[test]
fn a_model_directory_round_trips_file_for_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let model = d("model");
    std::fs::create_dir_all(model.join("1_Pooling")).unwrap();
    std::fs::write(model.join("config.json"), br#"{"model_type": "llama"}"#).unwrap();
    std::fs::write(model.join("tokenizer.json"), b"{}").unwrap();
    std::fs::write(model.join("1_Pooling/config.json"), b"{\"x\": 1}").unwrap();
    for i in 1..=2 {
        let name = format!("model-0000{i}-of-00002.safetensors");
        write_st(
            &model.join(name),
            &[(
                &format!("layers.{i}.w"),
                Dtype::BF16,
                vec![64, 256],
                weights(64 * 256, i),
            )],
        );
    }
    std::fs::write(
        model.join("model.safetensors.index.json"),
        br#"{"weight_map": {}}"#,
    )
    .unwrap();
    let msg = succeeds(&[&"compress", &model, &"-o", &d("packed")]);
    assert!(msg.contains("6 files (2 safetensors"), "{msg}");
    assert!(d("packed/model-00001-of-00002.zsv").exists());
    assert!(d("packed/zipserv-manifest.json").exists());
    let table = succeeds(&[&"inspect", &d("packed")]);
    assert!(table.contains("layers.2.w"), "{table}");
    succeeds(&[&"verify", &model, &d("packed")]);
    succeeds(&[&"decompress", &d("packed"), &"-o", &d("back")]);
    for f in [
        "config.json",
        "tokenizer.json",
        "1_Pooling/config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(
            read(&model.join(f)) == read(&d("back").join(f)),
            "{f} differs"
        );
    }
    // A directory output is only ever created new, and never inside the input.
    fails(
        &[&"compress", &model, &"-o", &d("packed")],
        "already exists",
    );
    fails(
        &[&"compress", &model, &"-o", &model.join("inside")],
        "inside the input",
    );
    // A file that is not listed would be lost: refused.
    std::fs::write(d("packed/extra.bin"), b"?").unwrap();
    fails(
        &[&"decompress", &d("packed"), &"-o", &d("back2")],
        "not listed",
    );
    assert!(!d("back2").exists());
    assert!(leftovers(dir.path()).is_empty());
}
