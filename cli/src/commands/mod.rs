//! The subcommands of the `zipserv` binary, one module each.

pub mod bench;
pub mod compress;
pub mod decompress;
pub mod demo;
pub mod generate;
pub mod inspect;
mod progress;
pub mod verify;

/// Whether `path` names a directory (following symbolic links); anything
/// else, including a path that does not exist, is handled as a file so that
/// the error names the problem.
pub fn is_dir(path: &std::path::Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_dir())
}

/// Bytes in a human unit (decimal, as file managers show them).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
