//! Model directories built from the fuzzer's bytes, through the directory
//! readers: `compress_dir` then `verify_dir` and `decompress_dir` (which
//! must give every file back byte for byte), or, for inputs that carry their
//! own `zipserv-manifest.json`, `decompress_dir` on them as they are. Every
//! call must end in a result or an error, never a panic, a hang, a file
//! written outside its output, or a leftover temporary.
//!
//! Input layout: one mode byte, then entries `u8 name_len, name, u24 LE
//! data_len, data` until the bytes run out. Names are reduced to safe
//! relative paths (at most 3 levels of `[A-Za-z0-9._-]`), so every file
//! lands inside the fuzz case's temporary directory.

#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use zipserv_format::convert::{CompressOptions, compress_dir, decompress_dir, verify_dir};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let root = tempfile::tempdir().expect("temporary directory");
    let input = root.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let mut files = Vec::new();
    while let Some((name, contents, tail)) = entry(rest) {
        rest = tail;
        let Some(rel) = safe_path(name) else { continue };
        let path = input.join(&rel);
        if path.exists() || path.ancestors().skip(1).any(|p| p.is_file()) {
            continue;
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        files.push(rel);
    }
    let (out, back) = (root.path().join("out"), root.path().join("back"));
    if mode & 1 == 0 {
        let cast = CompressOptions {
            cast_bf16: mode & 2 != 0,
        };
        if compress_dir(&input, &out, cast, |_| {}, |_| {}).is_ok() {
            verify_dir(&input, &out, |_| {}).expect("a compressed directory verifies");
            decompress_dir(&out, &back, |_| {}, |_| {})
                .expect("a compressed directory decompresses");
            if !cast.cast_bf16 {
                for rel in &files {
                    let (a, b) = (
                        std::fs::read(input.join(rel)).unwrap(),
                        std::fs::read(back.join(rel)).unwrap(),
                    );
                    assert!(a == b, "{} differs", rel.display());
                }
            }
        }
    } else if decompress_dir(&input, &back, |_| {}, |_| {}).is_err() {
        assert!(!back.exists());
    }
    for entry in std::fs::read_dir(root.path()).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            ["in", "out", "back"].iter().any(|n| name == *n),
            "left behind: {name:?}"
        );
    }
});

/// The next entry and the bytes after it.
fn entry(bytes: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (&name_len, rest) = bytes.split_first()?;
    let (name, rest) = rest.split_at_checked(name_len as usize)?;
    let (len, rest) = rest.split_first_chunk::<3>()?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], 0]) as usize;
    let (contents, rest) = rest.split_at_checked(len.min(rest.len()))?;
    Some((name, contents, rest))
}

/// `name` as a relative path of at most 3 plain components, or `None`.
fn safe_path(name: &[u8]) -> Option<PathBuf> {
    let text = String::from_utf8_lossy(name);
    let parts: Vec<String> = text
        .split('/')
        .map(|c| {
            c.chars()
                .filter(|ch| ch.is_ascii_alphanumeric() || "._-".contains(*ch))
                .collect::<String>()
        })
        .filter(|c| !c.is_empty() && c != "." && c != "..")
        .take(3)
        .collect();
    (!parts.is_empty()).then(|| parts.iter().fold(PathBuf::new(), |p, c| p.join(c)))
}
