//! `zipserv-manifest.json`: what a compressed model directory holds and what
//! decompression must give back.
//!
//! ```json
//! {"format": "zipserv-model-directory", "version": 1,
//!  "files": [
//!   {"path": "config.json", "stored": "config.json", "kind": "copy",
//!    "len": 706, "crc32": 1234},
//!   {"path": "model-00001-of-00002.safetensors",
//!    "stored": "model-00001-of-00002.zsv", "kind": "zsv",
//!    "len": 4943000000, "crc32": 5678, "identical": true}]}
//! ```
//!
//! `path` is where decompression writes the file (relative, `/`-separated),
//! `stored` where the compressed directory holds it, `len` and `crc32` the
//! length and CRC-32 of the file decompression writes, so every file is
//! checked before the directory is renamed into place. `identical` is false
//! only for a safetensors file whose tensors were rounded to BF16.
//!
//! The parser trusts nothing: the file is capped at [`MAX_MANIFEST_LEN`],
//! paths must be relative, normal and unique, and every file of the
//! directory must be listed (or decompression would drop it silently).

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::files::InputFile;

/// The manifest's file name, at the top of a compressed directory.
pub const MANIFEST_NAME: &str = "zipserv-manifest.json";
/// Its `format` tag.
pub const MANIFEST_FORMAT: &str = "zipserv-model-directory";
/// The manifest version this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// Largest manifest accepted (millions of files' worth).
pub const MAX_MANIFEST_LEN: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// Stored as it is.
    Copy,
    /// A safetensors file stored as `.zsv`.
    Zsv,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub stored: String,
    pub kind: FileKind,
    pub len: u64,
    pub crc32: u32,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub identical: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Manifest {
    pub fn new(files: Vec<FileEntry>) -> Self {
        Self {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            files,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(self).expect("manifests serialize");
        json.push(b'\n');
        json
    }

    /// Parses and checks a manifest's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| Error::Corrupt(format!("{MANIFEST_NAME}: {reason}"));
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a valid manifest: {e}")))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(bad(format!(
                "format `{}` is not `{MANIFEST_FORMAT}`",
                manifest.format.escape_debug()
            )));
        }
        if manifest.version != MANIFEST_VERSION {
            return Err(Error::Unsupported(format!(
                "{MANIFEST_NAME} version {} (this build reads version {MANIFEST_VERSION})",
                manifest.version
            )));
        }
        let (mut paths, mut stored) = (HashSet::new(), HashSet::new());
        for f in &manifest.files {
            check_relative(&f.path)
                .map_err(|r| bad(format!("path `{}` {r}", f.path.escape_debug())))?;
            check_relative(&f.stored)
                .map_err(|r| bad(format!("stored path `{}` {r}", f.stored.escape_debug())))?;
            if f.stored == MANIFEST_NAME {
                return Err(bad(format!("`{MANIFEST_NAME}` is listed as a stored file")));
            }
            if !paths.insert(f.path.as_str()) {
                return Err(bad(format!("`{}` is listed twice", f.path.escape_debug())));
            }
            if !stored.insert(f.stored.as_str()) {
                return Err(bad(format!(
                    "stored file `{}` is listed twice",
                    f.stored.escape_debug()
                )));
            }
            if f.kind == FileKind::Copy && (f.path != f.stored || !f.identical) {
                return Err(bad(format!(
                    "copied file `{}` must be stored under its own name",
                    f.path.escape_debug()
                )));
            }
        }
        check_no_nesting(manifest.files.iter().map(|f| f.path.as_str())).map_err(bad)?;
        check_no_nesting(manifest.files.iter().map(|f| f.stored.as_str())).map_err(bad)?;
        Ok(manifest)
    }

    /// Reads `dir/zipserv-manifest.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_NAME);
        if !path.exists() {
            return Err(Error::Unsupported(format!(
                "{} has no {MANIFEST_NAME}: it is not a directory made by `zipserv compress`",
                dir.display()
            )));
        }
        let input = InputFile::open(&path)?;
        if input.len > MAX_MANIFEST_LEN {
            return Err(Error::Corrupt(format!(
                "{}: {} bytes exceeds the {MAX_MANIFEST_LEN}-byte limit",
                path.display(),
                input.len
            )));
        }
        let bytes = input.read_vec(0, input.len as usize, MANIFEST_NAME)?;
        Self::parse(&bytes).map_err(|e| match e {
            Error::Corrupt(m) => Error::Corrupt(format!("{}: {m}", dir.display())),
            other => other,
        })
    }
}

/// A path inside a directory: relative, `/`-separated, no `.`, `..`, empty
/// or backslash-holding components, no NUL.
fn check_relative(path: &str) -> std::result::Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    if path.contains('\0') || path.contains('\\') {
        return Err("holds a NUL or a backslash");
    }
    if path.starts_with('/') {
        return Err("is absolute");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("is not a plain relative path");
    }
    let p = Path::new(path);
    if !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err("is not a plain relative path");
    }
    Ok(())
}

/// No listed path is a directory of another (`a` and `a/b`): a file and a
/// directory cannot share a name.
fn check_no_nesting<'a>(paths: impl Iterator<Item = &'a str>) -> std::result::Result<(), String> {
    let mut sorted: Vec<&str> = paths.collect();
    sorted.sort_unstable();
    for pair in sorted.windows(2) {
        if let Some(rest) = pair[1].strip_prefix(pair[0])
            && rest.starts_with('/')
        {
            return Err(format!(
                "`{}` is both a file and the directory of `{}`",
                pair[0].escape_debug(),
                pair[1].escape_debug()
            ));
        }
    }
    Ok(())
}

/// `rel` (checked by [`check_relative`]) under `root`.
pub fn join(root: &Path, rel: &str) -> PathBuf {
    rel.split('/').fold(root.to_path_buf(), |p, c| p.join(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, stored: &str, kind: FileKind) -> FileEntry {
        FileEntry {
            path: path.into(),
            stored: stored.into(),
            kind,
            len: 1,
            crc32: 2,
            identical: true,
        }
    }

    #[test]
    fn round_trips() {
        let m = Manifest::new(vec![
            entry("config.json", "config.json", FileKind::Copy),
            entry("a/model.safetensors", "a/model.zsv", FileKind::Zsv),
        ]);
        assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn bad_manifests_are_refused() {
        let with = |files: Vec<FileEntry>| Manifest::parse(&Manifest::new(files).to_json());
        let c = FileKind::Copy;
        for (files, want) in [
            (vec![entry("../x", "../x", c)], "relative"),
            (vec![entry("/etc/x", "/etc/x", c)], "absolute"),
            (vec![entry("a//b", "a//b", c)], "relative"),
            (vec![entry("a/./b", "a/./b", c)], "relative"),
            (vec![entry("", "", c)], "empty"),
            (vec![entry("a\\b", "a\\b", c)], "backslash"),
            (vec![entry("x", "x", c), entry("x", "y", c)], "twice"),
            (
                vec![
                    entry("x", "y", FileKind::Zsv),
                    entry("z", "y", FileKind::Zsv),
                ],
                "twice",
            ),
            (vec![entry("x", "y", c)], "own name"),
            (
                vec![entry("a", "a", c), entry("a/b", "a/b", c)],
                "both a file",
            ),
            (
                vec![entry("m", MANIFEST_NAME, FileKind::Zsv)],
                "stored file",
            ),
        ] {
            let e = with(files).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        assert!(Manifest::parse(b"{}").is_err());
        assert!(
            Manifest::parse(
                br#"{"format":"zipserv-model-directory","version":1,"files":[],"x":1}"#
            )
            .is_err()
        );
        let v2 = br#"{"format":"zipserv-model-directory","version":2,"files":[]}"#;
        assert!(matches!(Manifest::parse(v2), Err(Error::Unsupported(_))));
        let other = br#"{"format":"other","version":1,"files":[]}"#;
        assert!(
            Manifest::parse(other)
                .unwrap_err()
                .to_string()
                .contains("format")
        );
    }
}
