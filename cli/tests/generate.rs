//! `zipserv generate`'s answers to bad input, which come before any GPU is
//! opened, so they run everywhere: each exits non-zero with one `error:`
//! line that names the problem.

use std::path::Path;
use std::process::Command;

fn generate(args: &[&str]) -> (bool, String) {
    let bin =
        std::env::var_os("ZIPSERV_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_zipserv").into());
    let out = Command::new(bin)
        .arg("generate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(dir: &Path) -> String {
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        r#"{"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2,
        "num_hidden_layers": 1, "vocab_size": 64}"#,
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let cases: &[(&[&str], &str)] = &[
        (
            &["--model", "/nonexistent/model", "--prompt", "hi"],
            "not a model directory",
        ),
        (
            &["--model", tmp.path().to_str().unwrap(), "--prompt", "hi"],
            "no .safetensors file",
        ),
        (
            &["--random-weights", &cfg, "--prompt", "hi"],
            "has no tokenizer.json",
        ),
        (&["--random-weights", &cfg], "give a prompt"),
        (
            &["--random-weights", &cfg, "--prompt-ids", "1,x"],
            "not a token id",
        ),
        (
            &[
                "--random-weights",
                &cfg,
                "--prompt-ids",
                "1,2",
                "--batch",
                "0",
            ],
            "not a batch size",
        ),
        (
            &[
                "--random-weights",
                &cfg,
                "--prompt-ids",
                "1",
                "--temperature=-1",
            ],
            "temperature",
        ),
        (
            &[
                "--random-weights",
                &cfg,
                "--prompt-ids",
                "1",
                "--top-p",
                "0",
            ],
            "top-p",
        ),
        (
            &[
                "--random-weights",
                &cfg,
                "--prompt-ids",
                "1",
                "--batch",
                "1,2",
                "--dump-logits",
                "x",
            ],
            "one batch size",
        ),
        (
            &[
                "--random-weights",
                &cfg,
                "--prompt-ids",
                "1,2,3",
                "--max-new-tokens",
                "4",
                "--context",
                "6",
            ],
            "--context 6 is shorter than the longest prompt (3 tokens)",
        ),
        (
            &[
                "--random-weights",
                &cfg,
                "--prompt-ids",
                "1",
                "--batch",
                "max,x",
            ],
            "not a batch size (1 or more, or `max`)",
        ),
        (
            &[
                "--model",
                "/nonexistent/model",
                "--repeat-layers",
                "--prompt",
                "hi",
            ],
            "--random-weights",
        ),
        (
            &[
                "--random-weights",
                "/nonexistent/config.json",
                "--prompt-ids",
                "1",
            ],
            "/nonexistent/config.json",
        ),
    ];
    for (args, want) in cases {
        let (ok, stderr) = generate(args);
        assert!(!ok, "{args:?} succeeded");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(want),
            "{args:?}: {stderr}"
        );
    }
}
