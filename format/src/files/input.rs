//! Opening inputs: regular files only, never blocking, never unbounded.
//!
//! A path on the command line can name anything: a FIFO (opening it for
//! reading blocks until a writer appears), a character device such as
//! `/dev/zero` (endless) or `/dev/urandom` (endless and slow), a directory.
//! Every input is opened with `O_NONBLOCK`, which makes `open` of a FIFO
//! return at once and does nothing to regular files, and then checked with
//! `fstat` on the open descriptor (not the path, so a file swapped in
//! between cannot slip through) to be a regular file.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The identity of a file on its file system, to tell whether two paths are
/// the same file (hard links, symbolic links, `./a` and `a`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    device: u64,
    inode: u64,
}

impl FileId {
    pub fn of(metadata: &Metadata) -> Self {
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
        }
    }

    /// The identity of whatever `path` names now, if it exists.
    pub fn of_path(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self::of(&m))
    }
}

/// An opened regular file with its length and identity.
#[derive(Debug)]
pub struct InputFile {
    pub file: File,
    pub path: PathBuf,
    pub len: u64,
    pub id: FileId,
}

impl InputFile {
    /// Opens `path` for reading if it is a regular file (symbolic links are
    /// followed); anything else is refused with a message saying what it is.
    pub fn open(path: &Path) -> Result<Self> {
        let file = open_nonblocking(path).map_err(Error::io(path))?;
        let metadata = file.metadata().map_err(Error::io(path))?;
        if !metadata.is_file() {
            return Err(Error::NotRegularFile {
                path: path.to_path_buf(),
                kind: file_kind(&metadata),
            });
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len: metadata.len(),
            id: FileId::of(&metadata),
        })
    }

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with
    /// [`Error::Truncated`] (the file shrank under us) or an I/O error.
    pub fn read_at(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.len) {
            return Err(Error::Truncated {
                what: what.to_string(),
                start: offset,
                end: end.unwrap_or(u64::MAX),
                len: self.len,
            });
        }
        read_exact_at(&self.file, buf, offset).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::Truncated {
                what: format!("{what} (the file shrank while it was read)"),
                start: offset,
                end: offset + buf.len() as u64,
                len: self.len,
            },
            _ => Error::io(&self.path)(e),
        })
    }

    /// `len` bytes at `offset` in a new buffer (the caller has bounded `len`).
    pub fn read_vec(&self, offset: u64, len: usize, what: &str) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_at(offset, &mut buf, what)?;
        Ok(buf)
    }
}

fn open_nonblocking(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset)
}

/// What kind of file `metadata` describes, in words for an error message.
pub fn file_kind(metadata: &Metadata) -> &'static str {
    let t = metadata.file_type();
    if t.is_dir() {
        return "a directory";
    }
    if t.is_symlink() {
        return "a symbolic link";
    }
    if t.is_char_device() {
        return "a character device";
    }
    if t.is_block_device() {
        return "a block device";
    }
    if t.is_fifo() {
        return "a FIFO (named pipe)";
    }
    if t.is_socket() {
        return "a socket";
    }
    if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}
