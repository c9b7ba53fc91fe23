//! Writing outputs so that nothing is ever lost: a new file (or directory)
//! is written under a unique temporary name beside its destination, created
//! exclusively, and renamed into place only once it is complete and checked.
//!
//! What this rules out, each a way tools have destroyed data:
//! - writing over an input (`-o` naming an input, through another path, a
//!   hard link or a symbolic link): the destination's identity is compared
//!   with every input's before anything is written, and again at the rename;
//! - a fixed temporary name (`OUT.partial`) that is itself an input, or that
//!   two runs writing the same output share: names here carry the process id
//!   and a counter and are created with `O_EXCL`, so an existing file is
//!   never opened for writing;
//! - truncating or replacing a device node, FIFO or socket (`-o /dev/full`
//!   as root): the destination must be absent or a regular file;
//! - half-written outputs after an error or Ctrl-C: the temporary file is
//!   removed on drop and by [`super::pending::remove_all`].

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::input::{FileId, file_kind};
use super::pending::{self, Kind};
use crate::error::{Error, Result};

/// Checks that `output` may be written as a file by a run reading `inputs`:
/// not `-`, not a symbolic link, absent or a regular file, not one of the
/// inputs, in an existing directory.
pub fn check_output_file(output: &Path, inputs: &[FileId]) -> Result<()> {
    check_not_stdout(output)?;
    match std::fs::symlink_metadata(output) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::BadOutput {
                path: output.to_path_buf(),
                reason: "it is a symbolic link; name the file it points to".into(),
            });
        }
        Ok(m) if !m.is_file() => {
            return Err(Error::BadOutput {
                path: output.to_path_buf(),
                reason: format!("it is {}, not a regular file", file_kind(&m)),
            });
        }
        Ok(m) if inputs.contains(&FileId::of(&m)) => {
            return Err(Error::OutputIsInput {
                path: output.to_path_buf(),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(output)(e)),
    }
    check_parent(output)
}

/// Checks that `output` may be created as a directory: it must not exist.
pub fn check_output_dir(output: &Path) -> Result<()> {
    check_not_stdout(output)?;
    match std::fs::symlink_metadata(output) {
        Ok(m) => Err(Error::BadOutput {
            path: output.to_path_buf(),
            reason: format!(
                "it already exists ({}); a directory output is only ever created new, \
                 so remove it or choose another path",
                file_kind(&m)
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => check_parent(output),
        Err(e) => Err(Error::io(output)(e)),
    }
}

fn check_not_stdout(output: &Path) -> Result<()> {
    if output.as_os_str() == "-" {
        return Err(Error::BadOutput {
            path: output.to_path_buf(),
            reason: "writing to standard output is not supported (outputs are written to a \
                     temporary file and renamed into place); give a file path"
                .into(),
        });
    }
    Ok(())
}

fn check_parent(output: &Path) -> Result<()> {
    let parent = parent_dir(output);
    match std::fs::metadata(&parent) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) => Err(Error::BadOutput {
            path: output.to_path_buf(),
            reason: format!("its parent {} is {}", parent.display(), file_kind(&m)),
        }),
        Err(e) => Err(Error::BadOutput {
            path: output.to_path_buf(),
            reason: format!("its directory {} is not there ({e})", parent.display()),
        }),
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A unique temporary name beside `output`: `.NAME.zipserv-tmp-PID-N`.
fn temporary_name(output: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let Some(name) = output.file_name() else {
        return Err(Error::BadOutput {
            path: output.to_path_buf(),
            reason: "it names no file".into(),
        });
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".zipserv-tmp-{}-{n}", std::process::id()));
    Ok(parent_dir(output).join(tmp))
}

/// A file being written under a temporary name beside its destination.
/// [`AtomicFile::commit`] renames it into place; dropping it uncommitted
/// removes it.
#[derive(Debug)]
pub struct AtomicFile {
    output: PathBuf,
    tmp: PathBuf,
    /// Open until [`AtomicFile::commit`] closes it.
    file: Option<File>,
    inputs: Vec<FileId>,
    committed: bool,
}

impl AtomicFile {
    /// Checks `output` against `inputs` ([`check_output_file`]) and creates
    /// the temporary file exclusively.
    pub fn create(output: &Path, inputs: &[FileId]) -> Result<Self> {
        check_output_file(output, inputs)?;
        loop {
            let tmp = temporary_name(output)?;
            match pending::create_registered(&tmp, Kind::File, || File::create_new(&tmp)) {
                Ok(file) => {
                    return Ok(Self {
                        output: output.to_path_buf(),
                        tmp,
                        file: Some(file),
                        inputs: inputs.to_vec(),
                        committed: false,
                    });
                }
                // Left by another run (or a killed one): take the next name.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&tmp)(e)),
            }
        }
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is open until commit")
    }

    /// Where the temporary file is (for reading it back before commit).
    pub fn temporary_path(&self) -> &Path {
        &self.tmp
    }

    pub fn output(&self) -> &Path {
        &self.output
    }

    /// Flushes the file to disk and renames it to the destination, atomically
    /// replacing a regular file there (checked again not to be an input).
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("file is open until commit");
        file.sync_all().map_err(Error::io(&self.tmp))?;
        drop(file);
        check_output_file(&self.output, &self.inputs)?;
        std::fs::rename(&self.tmp, &self.output).map_err(Error::io(&self.output))?;
        self.committed = true;
        pending::unregister(&self.tmp);
        sync_dir(&parent_dir(&self.output));
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp);
            pending::unregister(&self.tmp);
        }
    }
}

/// A directory being filled under a temporary name beside its destination,
/// which must not exist. [`AtomicDir::commit`] renames it into place;
/// dropping it uncommitted removes it with everything in it.
#[derive(Debug)]
pub struct AtomicDir {
    output: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl AtomicDir {
    pub fn create(output: &Path) -> Result<Self> {
        check_output_dir(output)?;
        loop {
            let tmp = temporary_name(output)?;
            match pending::create_registered(&tmp, Kind::Dir, || std::fs::create_dir(&tmp)) {
                Ok(()) => {
                    return Ok(Self {
                        output: output.to_path_buf(),
                        tmp,
                        committed: false,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&tmp)(e)),
            }
        }
    }

    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn output(&self) -> &Path {
        &self.output
    }

    /// Renames the directory into place; fails, leaving nothing behind, if
    /// something appeared at the destination meanwhile.
    pub fn commit(mut self) -> Result<()> {
        sync_dir(&self.tmp);
        rename_no_replace(&self.tmp, &self.output)?;
        self.committed = true;
        pending::unregister(&self.tmp);
        sync_dir(&parent_dir(&self.output));
        Ok(())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
            pending::unregister(&self.tmp);
        }
    }
}

/// `rename` that fails instead of replacing an existing destination
/// (`renameat2` with `RENAME_NOREPLACE`; a plain `rename` would silently
/// replace an empty directory that appeared at the destination).
fn rename_no_replace(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes());
    let (Ok(from_c), Ok(to_c)) = (c(from), c(to)) else {
        return Err(Error::BadOutput {
            path: to.to_path_buf(),
            reason: "the path contains a NUL byte".into(),
        });
    };
    // SAFETY: two NUL-terminated paths that live across the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // File systems (or kernels) without RENAME_NOREPLACE: check, then
        // rename; the window between the two is the best they allow.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            check_output_dir(to)?;
            std::fs::rename(from, to).map_err(Error::io(to))
        }
        Some(libc::EEXIST) => Err(Error::BadOutput {
            path: to.to_path_buf(),
            reason: "it appeared while the output was being written; nothing was replaced".into(),
        }),
        _ => Err(Error::io(to)(err)),
    }
}

/// Makes a rename durable (best effort: some file systems refuse to sync a
/// directory, and the data itself was already synced).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
