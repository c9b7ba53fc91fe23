//! A Hugging Face model directory (`config.json`, tokenizer files, one or
//! sharded `*.safetensors` with `model.safetensors.index.json`, anything
//! else) ⇄ a compressed directory: every `X.safetensors` stored as `X.zsv`,
//! every other file copied as it is, and `zipserv-manifest.json` listing
//! them all with the length and CRC-32 each must come back with.
//!
//! Both directions build the whole output in a temporary directory beside
//! the destination, check every file they wrote, and rename it into place
//! last; the destination must not exist.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::file::{TensorDone, check_written, compress_into, decompress_into, verify_file};
use super::manifest::{FileEntry, FileKind, MANIFEST_NAME, Manifest, join};
use super::plan::{CompressOptions, Plan};
use crate::container::ZsvFile;
use crate::error::{Error, Result};
use crate::files::{AtomicDir, InputFile, file_kind};
use crate::st::SafetensorsFile;

/// The extension of the files that are compressed.
const SAFETENSORS_EXT: &str = ".safetensors";
/// What they are stored as.
const ZSV_EXT: &str = ".zsv";
/// Bytes per read when copying or comparing files.
const CHUNK: usize = 1 << 20;

/// What a directory conversion did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirReport {
    pub files: usize,
    /// safetensors files among them.
    pub model_files: usize,
    pub tensors: usize,
    /// Tensors stored in the tile format.
    pub compressed_tensors: usize,
    /// Bytes of every file read.
    pub input_bytes: u64,
    /// Bytes of every file decompression gives back (the input's, unless
    /// tensors were rounded to BF16).
    pub restored_bytes: u64,
    /// Bytes of every file written, the manifest included.
    pub output_bytes: u64,
    /// Files compared byte for byte with an original ([`verify_dir`]), or
    /// given back identical.
    pub identical_files: usize,
}

/// One regular file found under a directory.
struct Found {
    /// `/`-separated path relative to the root.
    rel: String,
    path: PathBuf,
    len: u64,
}

/// Every regular file under `root`, sorted by relative path. Symbolic links
/// to files are followed (Hugging Face cache snapshots are made of them);
/// anything else that is not a directory or a regular file is refused, as
/// are links to directories (they could form cycles) and names that are
/// not UTF-8 (the manifest is JSON).
fn walk(root: &Path) -> Result<Vec<Found>> {
    let meta = std::fs::metadata(root).map_err(Error::io(root))?;
    if !meta.is_dir() {
        return Err(Error::Unsupported(format!(
            "{} is {}, not a directory",
            root.display(),
            file_kind(&meta)
        )));
    }
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let entry = entry.map_err(Error::io(&dir))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                return Err(Error::Unsupported(format!(
                    "{}: the file name is not UTF-8",
                    path.display()
                )));
            };
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let link = std::fs::symlink_metadata(&path).map_err(Error::io(&path))?;
            let meta = std::fs::metadata(&path).map_err(Error::io(&path))?;
            if meta.is_dir() {
                if link.file_type().is_symlink() {
                    return Err(Error::Unsupported(format!(
                        "{}: a symbolic link to a directory is not followed",
                        path.display()
                    )));
                }
                stack.push((path, rel));
            } else if meta.is_file() {
                found.push(Found {
                    rel,
                    path,
                    len: meta.len(),
                });
            } else {
                return Err(Error::NotRegularFile {
                    path,
                    kind: file_kind(&meta),
                });
            }
        }
    }
    found.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(found)
}

/// Refuses an output directory inside the input directory (the walk would
/// find the output being written).
fn check_outside(input: &Path, output: &Path) -> Result<()> {
    let input = std::fs::canonicalize(input).map_err(Error::io(input))?;
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = std::fs::canonicalize(parent).map_err(Error::io(parent))?;
    let target = match output.file_name() {
        Some(name) => parent.join(name),
        None => parent,
    };
    if target.starts_with(&input) {
        return Err(Error::BadOutput {
            path: output.to_path_buf(),
            reason: format!("it lies inside the input directory {}", input.display()),
        });
    }
    Ok(())
}

/// Compresses the model directory `input` into a new directory `output`.
/// `on_file` is told each file's relative path before it is converted,
/// `on_tensor` each tensor as it is written. Each safetensors file is
/// compressed as [`super::compress_file`] does, the window bases an engine's
/// stacked projections share included ([`super::stack_groups`]); groups are
/// formed within one file, so a block whose q/k/v (or gate/up) lie in two
/// shards gets no shared base (Hugging Face writes the blocks in order, so
/// only a block that a shard boundary falls into can be split).
pub fn compress_dir(
    input: &Path,
    output: &Path,
    options: CompressOptions,
    mut on_file: impl FnMut(&str),
    mut on_tensor: impl FnMut(&TensorDone),
) -> Result<DirReport> {
    let found = walk(input)?;
    crate::files::check_output_dir(output)?;
    check_outside(input, output)?;
    let mut plan = Vec::new();
    for f in &found {
        if f.rel == MANIFEST_NAME {
            return Err(Error::Unsupported(format!(
                "{} holds {MANIFEST_NAME}: it is already a compressed directory",
                input.display()
            )));
        }
        let stored = match f.rel.strip_suffix(SAFETENSORS_EXT) {
            Some(stem) => (format!("{stem}{ZSV_EXT}"), FileKind::Zsv),
            None => (f.rel.clone(), FileKind::Copy),
        };
        plan.push((f, stored));
    }
    for (f, (stored, _)) in &plan {
        if plan.iter().any(|(g, _)| g.rel == *stored && g.rel != f.rel) {
            return Err(Error::Unsupported(format!(
                "{} holds both {} and {stored}, which would be stored under one name",
                input.display(),
                f.rel
            )));
        }
    }
    if !plan.iter().any(|(_, (_, kind))| *kind == FileKind::Zsv) {
        return Err(Error::Unsupported(format!(
            "{} holds no {SAFETENSORS_EXT} file to compress",
            input.display()
        )));
    }

    let out = AtomicDir::create(output)?;
    let mut report = DirReport::default();
    let mut entries = Vec::new();
    for (f, (stored, kind)) in plan {
        on_file(&f.rel);
        let dest = prepare(out.path(), &stored)?;
        let (len, crc32, identical) = match kind {
            FileKind::Copy => {
                let (len, crc) = copy_checked(&f.path, &dest)?;
                report.output_bytes += len;
                report.restored_bytes += len;
                (len, crc, true)
            }
            FileKind::Zsv => {
                let st = SafetensorsFile::open(&f.path)?;
                let plan = Plan::new(&st, options)?;
                let mut file = File::create_new(&dest).map_err(Error::io(&dest))?;
                let r = compress_into(&st, &plan, &mut file, &dest, &mut on_tensor)?;
                file.sync_all().map_err(Error::io(&dest))?;
                drop(file);
                check_written(&dest, &plan)?;
                report.model_files += 1;
                report.tensors += r.tensors;
                report.compressed_tensors += r.compressed;
                report.output_bytes += r.output_len;
                report.restored_bytes += r.restored_len;
                (r.restored_len, r.restored_crc32, r.cast == 0)
            }
        };
        report.files += 1;
        report.input_bytes += f.len;
        entries.push(FileEntry {
            path: f.rel.clone(),
            stored,
            kind,
            len,
            crc32,
            identical,
        });
    }
    let manifest = Manifest::new(entries).to_json();
    let path = out.path().join(MANIFEST_NAME);
    write_new(&path, &manifest)?;
    report.output_bytes += manifest.len() as u64;
    out.commit()?;
    Ok(report)
}

/// Gives the model directory held by the compressed directory `input` back,
/// as a new directory `output`; every file is checked against the length and
/// CRC-32 the manifest lists before the directory is renamed into place.
pub fn decompress_dir(
    input: &Path,
    output: &Path,
    mut on_file: impl FnMut(&str),
    mut on_tensor: impl FnMut(&TensorDone),
) -> Result<DirReport> {
    let manifest = Manifest::read(input)?;
    check_complete(input, &manifest)?;
    crate::files::check_output_dir(output)?;
    check_outside(input, output)?;
    let out = AtomicDir::create(output)?;
    let mut report = DirReport::default();
    for f in &manifest.files {
        on_file(&f.path);
        let src = join(input, &f.stored);
        let dest = prepare(out.path(), &f.path)?;
        // (bytes read, bytes written, CRC-32 of what was written)
        let (read, len, crc) = match f.kind {
            FileKind::Copy => {
                let (len, crc) = copy_checked(&src, &dest)?;
                (len, len, crc)
            }
            FileKind::Zsv => {
                let zsv = ZsvFile::open(&src)?;
                let mut file = File::create_new(&dest).map_err(Error::io(&dest))?;
                let r = decompress_into(&zsv, &mut file, &dest, &mut on_tensor)?;
                file.sync_all().map_err(Error::io(&dest))?;
                report.model_files += 1;
                report.tensors += r.tensors;
                (zsv.file_len(), r.output_len, r.crc32)
            }
        };
        if (len, crc) != (f.len, f.crc32) {
            return Err(Error::Mismatch(format!(
                "{}: gave back {len} bytes with CRC-32 {crc:#010x}, the manifest lists {} bytes \
                 with {:#010x}; nothing was written",
                f.path, f.len, f.crc32
            )));
        }
        report.files += 1;
        report.input_bytes += read;
        report.output_bytes += len;
        report.restored_bytes += len;
        report.identical_files += usize::from(f.identical);
    }
    out.commit()?;
    Ok(report)
}

/// Checks that the compressed directory `compressed` gives back the model
/// directory `original`: the same files, every copied file identical, every
/// safetensors file as [`verify_file`] checks it.
pub fn verify_dir(
    original: &Path,
    compressed: &Path,
    mut on_file: impl FnMut(&str),
) -> Result<DirReport> {
    let manifest = Manifest::read(compressed)?;
    check_complete(compressed, &manifest)?;
    let found = walk(original)?;
    let listed: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    if let Some(f) = found.iter().find(|f| !listed.contains(&f.rel.as_str())) {
        return Err(Error::Mismatch(format!(
            "{} is in {} but not in {}",
            f.rel,
            original.display(),
            compressed.display()
        )));
    }
    let mut report = DirReport::default();
    for f in &manifest.files {
        on_file(&f.path);
        let (orig, stored) = (join(original, &f.path), join(compressed, &f.stored));
        if !orig.exists() {
            return Err(Error::Mismatch(format!(
                "{} is in {} but not in {}",
                f.path,
                compressed.display(),
                original.display()
            )));
        }
        match f.kind {
            FileKind::Copy => {
                compare_files(&orig, &stored)?;
                report.identical_files += 1;
            }
            FileKind::Zsv => {
                let r = verify_file(&orig, &stored)?;
                report.model_files += 1;
                report.tensors += r.tensors;
                report.identical_files += usize::from(r.identical_file);
            }
        }
        report.files += 1;
    }
    Ok(report)
}

/// Every file of a compressed directory is listed in its manifest, and
/// every listed file is there.
fn check_complete(dir: &Path, manifest: &Manifest) -> Result<()> {
    let found = walk(dir)?;
    for f in &found {
        if f.rel != MANIFEST_NAME && !manifest.files.iter().any(|m| m.stored == f.rel) {
            return Err(Error::Corrupt(format!(
                "{}: {} is not listed in {MANIFEST_NAME}",
                dir.display(),
                f.rel
            )));
        }
    }
    for m in &manifest.files {
        if !found.iter().any(|f| f.rel == m.stored) {
            return Err(Error::Corrupt(format!(
                "{}: {MANIFEST_NAME} lists {}, which is missing",
                dir.display(),
                m.stored
            )));
        }
    }
    Ok(())
}

/// `rel` under `root`, with its parent directories created below `root`
/// (never `root` itself: if an interrupt removed the temporary root, writing
/// into it must fail rather than make it again).
fn prepare(root: &Path, rel: &str) -> Result<PathBuf> {
    let parts: Vec<&str> = rel.split('/').collect();
    let mut dir = root.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(Error::io(&dir)(e)),
        }
    }
    Ok(join(root, rel))
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create_new(path).map_err(Error::io(path))?;
    f.write_all(bytes).map_err(Error::io(path))?;
    f.sync_all().map_err(Error::io(path))
}

/// Copies `src` to the new file `dest` and reads the copy back; returns
/// the length and CRC-32, which both passes must agree on.
fn copy_checked(src: &Path, dest: &Path) -> Result<(u64, u32)> {
    let input = InputFile::open(src)?;
    let mut out = File::create_new(dest).map_err(Error::io(dest))?;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    while at < input.len {
        let n = CHUNK.min((input.len - at) as usize);
        input.read_at(at, &mut buf[..n], "file")?;
        crc.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(Error::io(dest))?;
        at += n as u64;
    }
    out.sync_all().map_err(Error::io(dest))?;
    let written = crc.finalize();
    let (len, reread) = crc_of(dest)?;
    if (len, reread) != (input.len, written) {
        return Err(Error::Mismatch(format!(
            "{}: the copy of {} does not read back the same",
            dest.display(),
            src.display()
        )));
    }
    Ok((len, written))
}

fn crc_of(path: &Path) -> Result<(u64, u32)> {
    let mut f = File::open(path).map_err(Error::io(path))?;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(Error::io(path))?;
        if n == 0 {
            return Ok((len, crc.finalize()));
        }
        crc.update(&buf[..n]);
        len += n as u64;
    }
}

/// Byte-for-byte comparison of two regular files.
fn compare_files(a: &Path, b: &Path) -> Result<()> {
    let (fa, fb) = (InputFile::open(a)?, InputFile::open(b)?);
    if fa.len != fb.len {
        return Err(Error::Mismatch(format!(
            "{} has {} bytes, {} has {}",
            a.display(),
            fa.len,
            b.display(),
            fb.len
        )));
    }
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut at = 0u64;
    while at < fa.len {
        let n = CHUNK.min((fa.len - at) as usize);
        fa.read_at(at, &mut ba[..n], "file")?;
        fb.read_at(at, &mut bb[..n], "file")?;
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Err(Error::Mismatch(format!(
                "{} and {} differ at byte {}",
                a.display(),
                b.display(),
                at + i as u64
            )));
        }
        at += n as u64;
    }
    Ok(())
}
