//! Checks on the embedded PTX images that need no GPU: every image holds
//! the kernels its catalog entry lists, the instructions the design relies
//! on were emitted, and `ptxas` assembles every kernel of every image (the
//! `sm_80` image for sm_80 and sm_90, the `sm_90a` image for sm_90a)
//! without local memory, spills or warnings.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use zipserv_gpu::{EmbeddedPtx, PTX_IMAGES};
use zipserv_kernels::catalog::{self, IMAGES};
use zipserv_kernels::sm90::{BLOCK_THREADS, WGMMA_GEMM_VARIANTS};

/// Set to `1` in CI, where ptxas must be found (scripts/fetch-ptxas.sh).
const REQUIRE_PTXAS_ENV: &str = "ZIPSERV_REQUIRE_PTXAS";

fn image(arch: &str) -> &'static EmbeddedPtx {
    PTX_IMAGES
        .iter()
        .find(|i| i.image.arch == arch)
        .unwrap_or_else(|| panic!("no embedded {arch} image"))
}

#[test]
fn every_catalog_image_is_embedded_with_its_kernels() {
    assert_eq!(PTX_IMAGES.len(), IMAGES.len());
    for want in &IMAGES {
        let got = image(want.arch);
        assert_eq!(got.image, want);
        assert!(
            got.ptx.contains(&format!(".target {}\n", want.arch)),
            "{}: PTX for another target, or with debug info",
            want.arch
        );
        for name in want.kernels {
            assert!(
                got.ptx.contains(&format!(".visible .entry {name}(")),
                "{}: kernel {name} missing from the embedded PTX",
                want.arch
            );
        }
    }
    // Hopper-only kernels stay out of the portable image.
    for v in &WGMMA_GEMM_VARIANTS {
        assert!(!image("sm_80").ptx.contains(v.name), "{} in sm_80", v.name);
    }
}

/// The PTX of entry `name` in `ptx`: from its `.entry` line to the next
/// entry's.
fn entry_body<'a>(ptx: &'a str, name: &str) -> &'a str {
    let start = ptx
        .find(&format!(".visible .entry {name}("))
        .unwrap_or_else(|| panic!("{name} missing"));
    let end = ptx[start + 1..]
        .find(".visible .entry ")
        .map_or(ptx.len(), |e| start + 1 + e);
    &ptx[start..end]
}

/// Each Hopper ZipGEMM holds exactly one block barrier 0 and one
/// `setmaxnreg` of each direction. Rust's inline assembly is not
/// `convergent` to LLVM, which may copy it, and the barrier beside it, into
/// each arm of a branch that diverges within a warp: a copy run by one lane
/// of a warp while the others run the other copy (both `.aligned`) hangs
/// the block. It happened with the branch that picks the tensor-map
/// publisher, threaded through the role split (`zipgemm_sm90`), and with
/// a per-lane flag in the consumers' loop (the `wgmma` counts below).
#[test]
fn hopper_kernels_keep_one_copy_of_each_aligned_block_step() {
    let ptx = image("sm_90a").ptx;
    for v in &WGMMA_GEMM_VARIANTS {
        let body = entry_body(ptx, v.name);
        let barriers = body
            .lines()
            .filter(|l| {
                let t = l.trim();
                t.starts_with("bar.sync") && t.trim_start_matches("bar.sync").trim() == "0;"
            })
            .count();
        assert_eq!(barriers, 1, "{}: {barriers} copies of bar.sync 0", v.name);
        for step in ["setmaxnreg.dec", "setmaxnreg.inc"] {
            let copies = body.matches(step).count();
            assert_eq!(copies, 1, "{}: {copies} copies of {step}", v.name);
        }
        // The warpgroup's steps: one tile's 8 k-steps, one fence and one
        // commit. A per-lane flag in the consumer loop (a timing probe
        // written as `if lane == 0`) once made LLVM peel the loop on it: 16
        // wgmmas, a copy per side of a branch inside a warp, and a hang.
        for (step, want) in [
            ("wgmma.mma_async", 8),
            ("wgmma.fence", 1),
            ("wgmma.commit_group", 1),
        ] {
            let copies = body.matches(step).count();
            assert_eq!(copies, want, "{}: {copies} copies of {step}", v.name);
        }
    }
}

/// Overlapped launches (`Gpu::set_launch_overlap`) are only safe for
/// kernels that wait for the prior grid: every `sm_90a` kernel but the
/// demos (which are never launched overlapped) must hold
/// `griddepcontrol.wait`, and the portable image, whose launches never
/// overlap, none of the Hopper-only grid-dependency instructions.
#[test]
fn every_overlappable_kernel_waits_for_the_prior_grid() {
    let ptx = image("sm_90a").ptx;
    let mut checked = 0;
    for name in catalog::SM90A.kernels {
        if *name == catalog::DEMO_MMA || *name == catalog::DEMO_WGMMA {
            continue;
        }
        assert!(
            entry_body(ptx, name).contains("griddepcontrol.wait;"),
            "{name}: no griddepcontrol.wait, so an overlapped launch could race the kernel before"
        );
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} kernels checked");
    assert!(!image("sm_80").ptx.contains("griddepcontrol"));
    assert!(!image("sm_80").ptx.contains("cp.async.bulk"));
}

#[test]
fn ptx_uses_tensor_core_instructions() {
    // Every image: weights stream through 16-byte loads that skip L1,
    // compressed tiles' pairs are spread with prmt, activations move with
    // cp.async, B fragments come from ldmatrix, and mma.sync multiplies.
    for embedded in &PTX_IMAGES {
        for instruction in [
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
            "ld.global.nc.L1::no_allocate.v4.u32",
            "prmt.b32",
            "cp.async.cg.shared.global",
            "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
        ] {
            assert!(
                embedded.ptx.contains(instruction),
                "{}: PTX lacks {instruction}",
                embedded.image.arch
            );
        }
    }
    // The Hopper image: register-A wgmma at every compiled N, bulk and
    // tensor copies on mbarriers, register reallocation.
    let sm90 = image("sm_90a").ptx;
    for v in &WGMMA_GEMM_VARIANTS {
        let wgmma = format!(
            "wgmma.mma_async.sync.aligned.m64n{}k16.f32.bf16.bf16",
            v.n_tile
        );
        assert!(sm90.contains(&wgmma), "sm_90a PTX lacks {wgmma}");
    }
    for instruction in [
        "wgmma.fence.sync.aligned",
        "wgmma.commit_group.sync.aligned",
        "wgmma.wait_group.sync.aligned",
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes",
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes",
        "mbarrier.try_wait.parity.shared::cta.b64",
        "mbarrier.arrive.expect_tx.shared::cta.b64",
        "fence.proxy.tensormap::generic.acquire.gpu",
        "setmaxnreg.inc.sync.aligned.u32",
        "setmaxnreg.dec.sync.aligned.u32",
    ] {
        assert!(sm90.contains(instruction), "sm_90a PTX lacks {instruction}");
    }
    // Launch bounds (build.rs): the register cap setmaxnreg needs.
    for v in &WGMMA_GEMM_VARIANTS {
        let entry = entry_body(sm90, v.name);
        let body = &entry[..entry.find('{').unwrap()];
        assert!(
            body.contains(&format!(".maxntid {BLOCK_THREADS}, 1, 1"))
                && body.contains(&format!(".minnctapersm {}", v.blocks_per_sm)),
            "{}: launch bounds missing",
            v.name
        );
    }
}

#[test]
fn ptx_has_no_panic_paths_or_local_memory() {
    // A `.func` in the PTX is a call kept out of line, in practice a core
    // panic path (bounds or division checks) that reached a kernel; `.local`
    // is an array that left registers.
    for embedded in &PTX_IMAGES {
        let arch = embedded.image.arch;
        assert!(
            !embedded.ptx.contains(".func"),
            "{arch}: PTX contains a device function (a panic path?)"
        );
        assert!(
            !embedded.ptx.contains(".local"),
            "{arch}: PTX uses local memory"
        );
    }
    assert_eq!(catalog::image("sm_90a"), Some(&catalog::SM90A));
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

/// The targets each image is assembled for: the portable image for Ampere
/// and (as the driver would JIT it) Hopper, the Hopper image for itself.
fn ptxas_targets(arch: &str) -> &'static [&'static str] {
    match arch {
        "sm_80" => &["sm_80", "sm_90"],
        "sm_90a" => &["sm_90a"],
        other => panic!("no ptxas targets for image {other}"),
    }
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

    let mut report = String::from(
        "| kernel | image | arch | registers | stack frame (B) | spill stores (B) | spill loads (B) |\n|---|---|---|---|---|---|---|\n",
    );
    for embedded in &PTX_IMAGES {
        let image = embedded.image.arch;
        let ptx_file = dir.join(format!("{image}.ptx"));
        std::fs::write(&ptx_file, embedded.ptx).unwrap();
        for arch in ptxas_targets(image) {
            let out = Command::new(&ptxas)
                .args(["-v", &format!("-arch={arch}"), "-o"])
                .arg(dir.join(format!("{image}-{arch}.cubin")))
                .arg(&ptx_file)
                .output()
                .expect("run ptxas");
            let text = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "ptxas -arch={arch} ({image} image) failed:\n{text}"
            );
            // e.g. wgmma serialised because its registers were touched in
            // flight, or setmaxnreg ignored: correct code, lost speed.
            let warnings: Vec<&str> = text.lines().filter(|l| l.contains("warning")).collect();
            assert!(
                warnings.is_empty(),
                "ptxas -arch={arch} ({image} image) warns:\n{}",
                warnings.join("\n")
            );
            let kernels = parse_ptxas_report(arch, &text);
            for name in embedded.image.kernels {
                assert!(
                    kernels.iter().any(|k| k.kernel == *name),
                    "{image} image, {arch}: ptxas did not see kernel {name}"
                );
            }
            for k in &kernels {
                report += &format!(
                    "| {} | {} | {} | {} | {} | {} | {} |\n",
                    k.kernel,
                    image,
                    k.arch,
                    k.registers,
                    k.stack_frame,
                    k.spill_stores,
                    k.spill_loads
                );
                assert!(
                    k.stack_frame == 0 && k.spill_stores == 0 && k.spill_loads == 0,
                    "{image} image, {arch}: kernel {} uses local memory: {k:?}",
                    k.kernel
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("ptxas resource report (ptxas -v):\n{report}");
    // Keep a copy next to the build outputs, so CI can print it; a test
    // executable copied to another machine (the GPU bundle) has no build
    // tree there, and prints the report only.
    let target_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    if target_dir.is_dir() {
        std::fs::write(target_dir.join("ptxas-report.md"), &report).unwrap();
    } else {
        println!(
            "(no build tree at {}: report not saved)",
            target_dir.display()
        );
    }
}
