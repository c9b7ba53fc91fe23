//! Progress bars on stderr (drawn only when stderr is a terminal).

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
