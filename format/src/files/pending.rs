//! Temporary outputs still being written, so that an interrupted run (Ctrl-C,
//! `kill`) can remove them before it exits.
//!
//! Every [`super::AtomicFile`] and [`super::AtomicDir`] registers its
//! temporary path here while it exists. A program's signal handler calls
//! [`remove_all`]; the `zipserv` CLI installs one (SIGINT, SIGTERM, SIGHUP).
//! Nothing can clean up after SIGKILL or a power cut: the temporary names
//! are recognisable (`.NAME.zipserv-tmp-*`) for that reason.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PENDING: Mutex<Vec<(PathBuf, Kind)>> = Mutex::new(Vec::new());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
}

pub(crate) fn register(path: &Path, kind: Kind) {
    lock().push((path.to_path_buf(), kind));
}

pub(crate) fn unregister(path: &Path) {
    lock().retain(|(p, _)| p != path);
}

/// Removes every temporary output this process still has open and forgets
/// them. Safe to call from a signal-handling thread while other threads
/// write: a file being written into a removed directory just fails.
pub fn remove_all() {
    let pending = std::mem::take(&mut *lock());
    for (path, kind) in pending {
        let _ = match kind {
            Kind::File => std::fs::remove_file(&path),
            Kind::Dir => std::fs::remove_dir_all(&path),
        };
    }
}

/// Whether `path` is a registered temporary output (for tests).
pub fn is_pending(path: &Path) -> bool {
    lock().iter().any(|(p, _)| p == path)
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(PathBuf, Kind)>> {
    // A panic while the lock was held leaves a valid Vec: keep using it.
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}
