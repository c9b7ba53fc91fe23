//! Checks on the embedded PTX that need no GPU: the expected kernels are
//! there, the instructions the design relies on were emitted, and `ptxas`
//! assembles every kernel for sm_80 and sm_90 without local memory or spills.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use zipserv_gpu::PTX;

/// Every kernel the host launches. A kernel missing here means a launch
/// would fail at run time.
const EXPECTED_KERNELS: &[&str] = &[
    "demo_mma_16x8x16",
    "zipserv_decompress",
    "zipserv_gemm_n8",
    "zipserv_gemm_n16",
    "zipserv_gemm_n32",
];

/// Set to `1` in CI, where ptxas must be found (scripts/fetch-ptxas.sh).
const REQUIRE_PTXAS_ENV: &str = "ZIPSERV_REQUIRE_PTXAS";

#[test]
fn expected_kernels_are_exported() {
    for name in EXPECTED_KERNELS {
        assert!(
            PTX.contains(&format!(".visible .entry {name}(")),
            "kernel {name} missing from the embedded PTX"
        );
    }
}

#[test]
fn ptx_uses_tensor_core_instructions() {
    assert!(PTX.contains("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"));
    assert!(
        !PTX.contains(".target sm_80, debug"),
        "PTX still carries debug info"
    );
    // Weights stream through 16-byte loads that skip L1, compressed tiles'
    // pairs are spread with prmt, activations move with cp.async, and B
    // fragments come from ldmatrix.
    for instruction in [
        "ld.global.nc.L1::no_allocate.v4.u32",
        "prmt.b32",
        "cp.async.cg.shared.global",
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
    ] {
        assert!(PTX.contains(instruction), "PTX lacks {instruction}");
    }
}

#[test]
fn ptx_has_no_panic_paths_or_local_memory() {
    // A `.func` in the PTX is a call kept out of line, in practice a core
    // panic path (bounds or division checks) that reached a kernel; `.local`
    // is an array that left registers.
    assert!(
        !PTX.contains(".func"),
        "PTX contains a device function (a panic path?)"
    );
    assert!(!PTX.contains(".local"), "PTX uses local memory");
}

fn ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PTXAS") {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ptxas/ptxas");
    if local.exists() {
        return Some(local);
    }
    Command::new("ptxas")
        .arg("--version")
        .output()
        .ok()
        .map(|_| PathBuf::from("ptxas"))
}

/// One kernel's line from `ptxas -v`.
#[derive(Debug)]
struct Resources {
    kernel: String,
    arch: String,
    registers: u32,
    stack_frame: u32,
    spill_stores: u32,
    spill_loads: u32,
}

fn parse_ptxas_report(arch: &str, text: &str) -> Vec<Resources> {
    let mut out = Vec::new();
    let mut current: Option<Resources> = None;
    let number_before = |line: &str, unit: &str| -> u32 {
        let end = line.find(unit).unwrap();
        line[..end]
            .split_whitespace()
            .last()
            .unwrap()
            .parse()
            .unwrap()
    };
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            if let Some(r) = current.take() {
                out.push(r);
            }
            let kernel = rest.split('\'').next().unwrap().to_string();
            current = Some(Resources {
                kernel,
                arch: arch.to_string(),
                registers: 0,
                stack_frame: 0,
                spill_stores: 0,
                spill_loads: 0,
            });
        } else if let Some(r) = current.as_mut() {
            if line.contains("bytes stack frame") {
                r.stack_frame = number_before(line, "bytes stack frame");
                r.spill_stores = number_before(line, "bytes spill stores");
                r.spill_loads = number_before(line, "bytes spill loads");
            } else if line.contains("Used") && line.contains("registers") {
                r.registers = number_before(line, "registers");
            }
        }
    }
    out.extend(current);
    out
}

#[test]
fn ptxas_assembles_without_spills() {
    let Some(ptxas) = ptxas() else {
        if std::env::var(REQUIRE_PTXAS_ENV).as_deref() == Ok("1") {
            panic!("{REQUIRE_PTXAS_ENV}=1 but ptxas was not found (run scripts/fetch-ptxas.sh)");
        }
        let _ = writeln!(
            std::io::stderr(),
            "ptxas_assembles_without_spills: skipped: ptxas not found"
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("zipserv-ptx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ptx_file = dir.join("kernels.ptx");
    std::fs::write(&ptx_file, PTX).unwrap();

    let mut report = String::from(
        "| kernel | arch | registers | stack frame (B) | spill stores (B) | spill loads (B) |\n|---|---|---|---|---|---|\n",
    );
    for arch in ["sm_80", "sm_90"] {
        let out = Command::new(&ptxas)
            .args(["-v", &format!("-arch={arch}"), "-o"])
            .arg(dir.join(format!("{arch}.cubin")))
            .arg(&ptx_file)
            .output()
            .expect("run ptxas");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ptxas -arch={arch} failed:\n{text}");
        let kernels = parse_ptxas_report(arch, &text);
        for name in EXPECTED_KERNELS {
            assert!(
                kernels.iter().any(|k| k.kernel == *name),
                "{arch}: ptxas did not see kernel {name}"
            );
        }
        for k in &kernels {
            report += &format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                k.kernel, k.arch, k.registers, k.stack_frame, k.spill_stores, k.spill_loads
            );
            assert!(
                k.stack_frame == 0 && k.spill_stores == 0 && k.spill_loads == 0,
                "{arch}: kernel {} uses local memory: {k:?}",
                k.kernel
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("ptxas resource report (ptxas -v):\n{report}");
    // Keep a copy next to the build outputs, so CI can print it.
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ptxas-report.md");
    std::fs::write(target, &report).unwrap();
}
