//! Builds the GPU kernels in `kernels-gpu` to PTX, once per image of
//! `zipserv_kernels::catalog::IMAGES` (`sm_80` for Ampere and later, and
//! `sm_90a` with the Hopper-only kernels), and hands the files to the crate
//! (`include_str!` in `src/device.rs`, through `ZIPSERV_PTX_<ARCH>`).
//!
//! rustc's `nvptx64-nvidia-cuda` target leaves LLVM bitcode inside `.rlib`s
//! and expects an external `llvm-bitcode-linker` to finish; that tool is not
//! shipped for our pinned nightly, so this script does its job with the
//! toolchain's `llvm-tools`:
//!   1. `cargo rustc` builds the kernel crate for nvptx in its own target dir;
//!   2. `llvm-ar x` pulls the bitcode objects out of it and out of the
//!      sysroot's `core`/`compiler_builtins`;
//!   3. `llvm-link` merges them (only what the kernels need from the sysroot);
//!   4. `opt` internalizes everything but the `ptx_kernel` entry points,
//!      drops debug info and optimizes;
//!   5. `llc` emits PTX for the image's `sm_XX` and PTX ISA version;
//!   6. the entry points found must be exactly the image's catalog list,
//!      and launch bounds are added to the GEMM entries.
//!
//! Which kernels go into which image is decided in the kernel crate, not
//! here: Hopper-only modules are compiled under
//! `#[cfg(target_feature = "sm_90a")]`, which rustc sets for
//! `-C target-cpu=sm_90a`.
//!
//! It also embeds the short commit hash (`ZIPSERV_BUILD_COMMIT`, "unknown"
//! outside a git checkout) for benchmark records.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use zipserv_kernels::catalog::{IMAGES, PtxImage};

const NVPTX_TARGET: &str = "nvptx64-nvidia-cuda";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let kernels_dir = manifest_dir.parent().unwrap().join("kernels-gpu");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!(
        "cargo:rerun-if-changed={}",
        kernels_dir.join("src").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        kernels_dir.join("Cargo.toml").display()
    );
    embed_git_commit(&manifest_dir);

    let sysroot = rustc_sysroot();
    let tools = sysroot.join("lib/rustlib").join(host_triple()).join("bin");
    for tool in ["llvm-ar", "llvm-link", "llvm-dis", "opt", "llc"] {
        if !tools.join(tool).exists() {
            fail(&format!(
                "{} not found: install the `llvm-tools` component (`rustup toolchain install` in the repository installs everything rust-toolchain.toml lists)",
                tools.join(tool).display()
            ));
        }
    }
    for image in &IMAGES {
        if !is_valid_arch(image.arch) {
            fail(&format!(
                "catalog arch {:?} is not of the form sm_NN or sm_NNa",
                image.arch
            ));
        }
        let ptx = build_image(&tools, &sysroot, &kernels_dir, &out_dir, image);
        println!("cargo:rustc-env={}={}", ptx_env(image.arch), ptx.display());
    }
}

/// The environment variable naming image `arch`'s PTX file, e.g.
/// `ZIPSERV_PTX_SM_90A` (the names `src/device.rs` includes).
fn ptx_env(arch: &str) -> String {
    format!("ZIPSERV_PTX_{}", arch.to_ascii_uppercase())
}

/// Steps 1–6 for one image, in its own directory; returns the PTX file.
fn build_image(
    tools: &Path,
    sysroot: &Path,
    kernels_dir: &Path,
    out_dir: &Path,
    image: &PtxImage,
) -> PathBuf {
    let arch = image.arch;
    let work = out_dir.join(arch);
    let rlib = build_kernel_rlib(kernels_dir, &work, arch);
    let objects_dir = work.join("ptx-objects");
    let _ = fs::remove_dir_all(&objects_dir);
    let ours = extract_bitcode(tools, &rlib, &objects_dir.join("kernels"));
    let nvptx_lib = sysroot.join("lib/rustlib").join(NVPTX_TARGET).join("lib");
    let mut sysroot_objects = Vec::new();
    for prefix in ["libcore-", "libcompiler_builtins-"] {
        let lib = find_rlib(&nvptx_lib, prefix);
        sysroot_objects.extend(extract_bitcode(tools, &lib, &objects_dir.join(prefix)));
    }

    let linked = work.join("kernels.linked.bc");
    let mut link = Command::new(tools.join("llvm-link"));
    link.args(&ours)
        .arg("--only-needed")
        .args(&sysroot_objects)
        .arg("-o")
        .arg(&linked);
    run(&mut link, "llvm-link");

    // One list (the catalog) for what each image exports: a kernel missing
    // from it, or one the catalog names that is not compiled in, fails here.
    let kernels = kernel_names(tools, &linked);
    let mut listed: Vec<String> = image.kernels.iter().map(|k| k.to_string()).collect();
    listed.sort();
    if kernels != listed {
        fail(&format!(
            "{arch}: the kernels' entry points {kernels:?} differ from the catalog's list {listed:?} (kernels-gpu/src/catalog.rs)"
        ));
    }

    let optimized = work.join("kernels.opt.bc");
    let mut opt = Command::new(tools.join("opt"));
    opt.arg("--strip-debug")
        .arg(format!(
            "--internalize-public-api-list={}",
            kernels.join(",")
        ))
        .arg("-passes=internalize,globaldce,default<O3>")
        // Register arrays indexed by small constant-trip loops (n-tiles,
        // fragment elements) must be fully unrolled or they go to local
        // memory; the default threshold leaves some of them rolled.
        .arg("-unroll-threshold=1000")
        .arg(&linked)
        .arg("-o")
        .arg(&optimized);
    run(&mut opt, "opt");

    let ptx = work.join("kernels.ptx");
    let mut llc = Command::new(tools.join("llc"));
    llc.arg(format!("-mcpu={arch}"))
        .arg(format!("-mattr=+{}", image.ptx_isa))
        .arg("-O3")
        .arg(&optimized)
        .arg("-o")
        .arg(&ptx);
    run(&mut llc, "llc");
    let text = fs::read_to_string(&ptx).unwrap_or_else(|e| fail(&format!("reading PTX: {e}")));
    fs::write(&ptx, add_launch_bounds(&text, image))
        .unwrap_or_else(|e| fail(&format!("writing PTX: {e}")));
    ptx
}

/// Adds launch bounds (PTX ISA §11.4.2–3, `.maxntid` and `.minnctapersm`)
/// to the GEMM entries of `image` and to decode attention, which Rust has no
/// attribute for: they follow the parameter list of each `.entry`. The
/// `mma.sync` variants and attention get the blocks per multiprocessor
/// their registers are fitted to; the Hopper ones `blocks_per_sm` blocks of
/// `sm90::BLOCK_THREADS`, which also gives ptxas the register cap at entry
/// that `setmaxnreg` needs.
fn add_launch_bounds(ptx: &str, image: &PtxImage) -> String {
    use zipserv_kernels::launch::{GEMM_VARIANTS, GEMM_WARPS};
    use zipserv_kernels::sm90::{BLOCK_THREADS, WGMMA_GEMM_VARIANTS};
    let bounds = GEMM_VARIANTS
        .iter()
        .map(|v| (v.name, 32 * GEMM_WARPS, v.min_blocks_per_sm))
        .chain(
            WGMMA_GEMM_VARIANTS
                .iter()
                .map(|v| (v.name, BLOCK_THREADS, v.blocks_per_sm)),
        );
    use zipserv_kernels::engine::attention::{ATTN_MIN_BLOCKS_PER_SM, ATTN_THREADS};
    let bounds = bounds.chain([("engine_attention", ATTN_THREADS, ATTN_MIN_BLOCKS_PER_SM)]);
    use zipserv_kernels::catalog::GEMV_BF16;
    use zipserv_kernels::launch::{GEMV_MIN_BLOCKS_PER_SM, GEMV_WARPS};
    let bounds = bounds.chain([(GEMV_BF16, 32 * GEMV_WARPS, GEMV_MIN_BLOCKS_PER_SM)]);
    use zipserv_kernels::launch::ZIPGEMV_VARIANTS;
    let bounds = bounds.chain(
        ZIPGEMV_VARIANTS
            .iter()
            .map(|v| (v.name, 32 * GEMV_WARPS, v.min_blocks_per_sm)),
    );
    // The decompression kernel's bound is fitted to Hopper's image; the
    // portable one (56 registers) would spill under it.
    use zipserv_kernels::launch::{DECOMPRESS_MIN_BLOCKS_PER_SM_90A, DECOMPRESS_WARPS};
    let decompress = (image.arch == "sm_90a").then_some((
        "zipserv_decompress",
        32 * DECOMPRESS_WARPS,
        DECOMPRESS_MIN_BLOCKS_PER_SM_90A,
    ));
    let bounds = bounds.chain(decompress);
    let mut out = ptx.to_string();
    for (name, threads, blocks) in bounds {
        if !image.kernels.contains(&name) {
            continue;
        }
        let entry = format!(".entry {name}(");
        let Some(start) = out.find(&entry) else {
            fail(&format!("{}: PTX lacks {entry}", image.arch));
        };
        let Some(close) = out[start..].find("\n)") else {
            fail(&format!("PTX: no parameter list end after {entry}"));
        };
        let at = start + close + 2;
        out.insert_str(
            at,
            &format!("\n.maxntid {threads}, 1, 1\n.minnctapersm {blocks}"),
        );
    }
    out
}

/// Sets `ZIPSERV_BUILD_COMMIT` to `git rev-parse --short HEAD`, and asks to
/// be rerun when HEAD or the branch it names moves. Only files that exist
/// are watched: cargo reruns a script on every build for a missing one.
fn embed_git_commit(manifest_dir: &Path) {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .current_dir(manifest_dir)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ZIPSERV_BUILD_COMMIT={commit}");
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    let watched = std::iter::once("HEAD".to_string()).chain(branch);
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
            && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

fn is_valid_arch(arch: &str) -> bool {
    let Some(rest) = arch.strip_prefix("sm_") else {
        return false;
    };
    let digits = rest.strip_suffix('a').unwrap_or(rest);
    digits.len() >= 2 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Builds `kernels-gpu` for nvptx with a separate target directory, so the
/// outer cargo's lock on `target/` is not contended.
fn build_kernel_rlib(kernels_dir: &Path, out_dir: &Path, arch: &str) -> PathBuf {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = out_dir.join("nvptx-target");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(kernels_dir)
        .args(["rustc", "--lib", "--release", "--target", NVPTX_TARGET])
        .arg("--manifest-path")
        .arg(kernels_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--", "-C"])
        .arg(format!("target-cpu={arch}"))
        .args(["-C", "codegen-units=1"]);
    // The outer build's flags and wrappers (e.g. clippy's) are for the host;
    // they must not leak into the device build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    run(
        &mut cmd,
        "cargo rustc (kernels-gpu for nvptx64-nvidia-cuda)",
    );
    target_dir
        .join(NVPTX_TARGET)
        .join("release")
        .join("libzipserv_kernels.rlib")
}

/// Unpacks the LLVM bitcode members of an rlib (skipping its `lib.rmeta`).
fn extract_bitcode(tools: &Path, rlib: &Path, dir: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new(tools.join("llvm-ar"));
    cmd.current_dir(dir).arg("x").arg(rlib);
    run(&mut cmd, "llvm-ar x");
    let mut objects: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some(OsStr::new("o")))
        .collect();
    objects.sort();
    if objects.is_empty() {
        fail(&format!("{} holds no bitcode objects", rlib.display()));
    }
    objects
}

fn find_rlib(dir: &Path, prefix: &str) -> PathBuf {
    let found = fs::read_dir(dir).ok().and_then(|entries| {
        entries.map(|e| e.unwrap().path()).find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(".rlib")
        })
    });
    found.unwrap_or_else(|| {
        fail(&format!(
            "no {prefix}*.rlib in {}: add the nvptx64-nvidia-cuda target to the toolchain",
            dir.display()
        ))
    })
}

/// Names of the `ptx_kernel` functions defined in a bitcode module: those
/// stay exported, everything else is internalized.
fn kernel_names(tools: &Path, bitcode: &Path) -> Vec<String> {
    let out = Command::new(tools.join("llvm-dis"))
        .arg(bitcode)
        .arg("-o")
        .arg("-")
        .output()
        .unwrap_or_else(|e| fail(&format!("llvm-dis: {e}")));
    if !out.status.success() {
        fail(&format!(
            "llvm-dis failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let ir = String::from_utf8_lossy(&out.stdout);
    let mut names: Vec<String> = ir
        .lines()
        .filter(|l| l.starts_with("define ") && l.contains(" ptx_kernel "))
        .filter_map(|l| {
            let at = l.find('@')?;
            let rest = &l[at + 1..];
            Some(rest[..rest.find('(')?].to_string())
        })
        .collect();
    names.sort();
    names
}

fn rustc_sysroot() -> PathBuf {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .unwrap_or_else(|e| fail(&format!("rustc --print sysroot: {e}")));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn host_triple() -> String {
    env::var("HOST").unwrap()
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| fail(&format!("{what}: could not start: {e}")));
    if !out.status.success() {
        // Kernel compile errors come through here: show them as rustc wrote them.
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        fail(&format!("{what} failed ({})", out.status));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: building the GPU kernels: {msg}");
    std::process::exit(1);
}
