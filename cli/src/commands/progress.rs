//! Progress bars on stderr (drawn only when stderr is a terminal).

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting `total` bytes of tensor data.
pub fn bytes_bar(total: u64, verb: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = format!(
        "{verb} {{bar:40}} {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}, {{eta}}) {{wide_msg}}"
    );
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("static progress template")
            .progress_chars("=> "),
    );
    bar
}

/// Bytes the bar will count for `input`: the file's size, or for a
/// directory the sizes of its `.safetensors` / `.zsv` files (0 when unknown:
/// the bar then just counts).
pub fn input_bytes(input: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| {
                let path = e.path();
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => walk(&path),
                    _ if matches!(
                        path.extension().and_then(|x| x.to_str()),
                        Some("safetensors" | "zsv")
                    ) =>
                    {
                        std::fs::metadata(&path).map_or(0, |m| m.len())
                    }
                    _ => 0,
                }
            })
            .sum()
    }
    match std::fs::metadata(input) {
        Ok(m) if m.is_dir() => walk(input),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}
