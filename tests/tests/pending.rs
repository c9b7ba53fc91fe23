//! The registry of temporary outputs that a signal handler empties. In a
//! test binary of its own: `pending::remove_all` removes every temporary
//! output of the process, which would break tests running beside it.

use std::path::Path;

use zipserv_format::files::{AtomicDir, AtomicFile, pending};

fn leftovers(dir: &Path) -> usize {
    zipserv_tests::leftover_temporaries(dir).len()
}

#[test]
fn temporary_outputs_are_unique_registered_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    let a = AtomicFile::create(&out, &[]).unwrap();
    let b = AtomicFile::create(&out, &[]).unwrap();
    assert_ne!(a.temporary_path(), b.temporary_path());
    assert!(pending::is_pending(a.temporary_path()) && pending::is_pending(b.temporary_path()));
    assert_eq!(leftovers(dir.path()), 2);
    let gone = a.temporary_path().to_path_buf();
    drop(a);
    assert_eq!(leftovers(dir.path()), 1);
    assert!(!pending::is_pending(&gone));
    // What a signal handler does: remove everything still pending.
    let d = AtomicDir::create(&dir.path().join("outdir")).unwrap();
    std::fs::write(d.path().join("x"), b"x").unwrap();
    pending::remove_all();
    assert_eq!(leftovers(dir.path()), 0);
    drop((b, d));
    assert!(!out.exists());
}
