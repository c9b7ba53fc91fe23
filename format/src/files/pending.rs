//! Temporary outputs still being written, so that an interrupted run (Ctrl-C,
//! `kill`) can remove them before it exits.
//!
//! Every [`super::AtomicFile`] and [`super::AtomicDir`] is created through
//! [`create_registered`], which makes and registers it under one lock. A
//! program's signal handler calls [`remove_all`]; the `zipserv` CLI installs
//! one (SIGINT, SIGTERM, SIGHUP). Because creation and registration happen
//! together, and [`remove_all`] refuses every later creation, no temporary
//! can slip in between the clean-up and the exit. Nothing can clean up after
//! SIGKILL or a power cut: the temporary names are recognisable
//! (`.NAME.zipserv-tmp-*`) for that reason.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
}

struct Pending {
    paths: Vec<(PathBuf, Kind)>,
    /// Set by [`remove_all`]: the process is going away.
    closed: bool,
}

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    paths: Vec::new(),
    closed: false,
});

/// Runs `create` (which makes the file or directory at `path`) and registers
/// `path`, under the registry's lock; after [`remove_all`] it creates nothing
/// and fails with `ErrorKind::Interrupted`.
pub(crate) fn create_registered<T>(
    path: &Path,
    kind: Kind,
    create: impl FnOnce() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let mut pending = lock();
    if pending.closed {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "interrupted: no new output is written",
        ));
    }
    let made = create()?;
    pending.paths.push((path.to_path_buf(), kind));
    Ok(made)
}

pub(crate) fn unregister(path: &Path) {
    lock().paths.retain(|(p, _)| p != path);
}

/// Removes every temporary output this process still has and refuses new
/// ones: call it when the process is about to exit (a signal handler). Safe
/// to call from another thread while outputs are being written: a file
/// being written into a removed directory just fails.
pub fn remove_all() {
    let mut pending = lock();
    pending.closed = true;
    for (path, kind) in std::mem::take(&mut pending.paths) {
        let _ = match kind {
            Kind::File => std::fs::remove_file(&path),
            Kind::Dir => std::fs::remove_dir_all(&path),
        };
    }
}

/// Whether `path` is a registered temporary output (for tests).
pub fn is_pending(path: &Path) -> bool {
    lock().paths.iter().any(|(p, _)| p == path)
}

fn lock() -> std::sync::MutexGuard<'static, Pending> {
    // A panic while the lock was held leaves valid state: keep using it.
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}
