//! Which kernels each embedded PTX image exports. The build script builds
//! every image in [`IMAGES`] (and checks that each listed entry point is
//! in it), the host loads the one that fits the card, and the PTX tests
//! assemble every image and look for every name: one list for all three.
//!
//! Kernels that use Hopper-only instructions (`wgmma`, `setmaxnreg`, TMA)
//! are compiled only into the `sm_90a` image: their modules carry
//! `#[cfg(target_feature = "sm_90a")]`, which rustc sets for
//! `-C target-cpu=sm_90a` (and not for `sm_80`). The `sm_80` image runs on
//! Ampere, Ada, and on Hopper as the fallback when the driver cannot load
//! the `sm_90a` image.

use crate::launch::{GEMM_VARIANTS, ZIPGEMV_VARIANTS};
use crate::sm90::WGMMA_GEMM_VARIANTS;

/// One PTX image the host embeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtxImage {
    /// `-C target-cpu` for rustc, `-mcpu` for llc, `.target` of the PTX.
    pub arch: &'static str,
    /// PTX ISA version, as an llc feature (`-mattr=+ptxNN`). The kernels
    /// use cache hints (`L1::no_allocate`) that need 7.4; CUDA 12 drivers
    /// accept 7.8. Hopper's tensor-map proxy fence needs 8.3 (CUDA 12.3).
    pub ptx_isa: &'static str,
    /// The compute capabilities whose driver runs this image: at least
    /// `min_cc`, and exactly it when `exact` (arch-specific `sm_90a` code
    /// runs on compute capability 9.0 only).
    pub min_cc: (u32, u32),
    pub exact: bool,
    /// Every entry point the host may launch from this image.
    pub kernels: &'static [&'static str],
}

impl PtxImage {
    /// Whether a card of compute capability `cc` runs this image.
    pub const fn runs_on(&self, cc: (u32, u32)) -> bool {
        if self.exact {
            cc.0 == self.min_cc.0 && cc.1 == self.min_cc.1
        } else {
            cc.0 > self.min_cc.0 || (cc.0 == self.min_cc.0 && cc.1 >= self.min_cc.1)
        }
    }

    /// Whether this image holds the Hopper ZipGEMM.
    pub fn has_wgmma(&self) -> bool {
        self.kernels.contains(&WGMMA_GEMM_VARIANTS[0].name)
    }
}

/// The one-tile `mma.sync` proof of the toolchain.
pub const DEMO_MMA: &str = "demo_mma_16x8x16";
/// The one-warpgroup `wgmma` proof (sm_90a only).
pub const DEMO_WGMMA: &str = "demo_wgmma_m64n64k64";
pub const DECOMPRESS: &str = "zipserv_decompress";
/// The BF16 matrix-vector product of decode batches (`gemv`).
pub const GEMV_BF16: &str = "zipserv_gemv_bf16";

/// Copies activations to a buffer whose row pitch TMA accepts (sm_90a).
pub const X_PITCH: &str = "zipserv_x_pitch";

/// The inference engine's kernels (`engine/`), in both images.
pub const ENGINE: [&str; 10] = [
    "engine_embed",
    "engine_embed_compressed",
    "engine_add_rmsnorm",
    "engine_rope_kv",
    "engine_attention",
    "engine_attention_mma_d64",
    "engine_attention_mma_d128",
    "engine_swiglu",
    "engine_select",
    "engine_advance",
];

/// Ampere and later; Hopper's fallback.
pub const SM80: PtxImage = PtxImage {
    arch: "sm_80",
    ptx_isa: "ptx78",
    min_cc: (8, 0),
    exact: false,
    kernels: &[
        DEMO_MMA,
        DECOMPRESS,
        GEMV_BF16,
        ZIPGEMV_VARIANTS[0].name,
        ZIPGEMV_VARIANTS[1].name,
        GEMM_VARIANTS[0].name,
        GEMM_VARIANTS[1].name,
        GEMM_VARIANTS[2].name,
        GEMM_VARIANTS[3].name,
        ENGINE[0],
        ENGINE[1],
        ENGINE[2],
        ENGINE[3],
        ENGINE[4],
        ENGINE[5],
        ENGINE[6],
        ENGINE[7],
        ENGINE[8],
        ENGINE[9],
    ],
};

/// Hopper (compute capability 9.0): everything in [`SM80`] plus the
/// `wgmma` kernels.
pub const SM90A: PtxImage = PtxImage {
    arch: "sm_90a",
    ptx_isa: "ptx83",
    min_cc: (9, 0),
    exact: true,
    kernels: &[
        DEMO_MMA,
        DECOMPRESS,
        GEMV_BF16,
        ZIPGEMV_VARIANTS[0].name,
        ZIPGEMV_VARIANTS[1].name,
        GEMM_VARIANTS[0].name,
        GEMM_VARIANTS[1].name,
        GEMM_VARIANTS[2].name,
        GEMM_VARIANTS[3].name,
        DEMO_WGMMA,
        X_PITCH,
        WGMMA_GEMM_VARIANTS[0].name,
        WGMMA_GEMM_VARIANTS[1].name,
        WGMMA_GEMM_VARIANTS[2].name,
        WGMMA_GEMM_VARIANTS[3].name,
        WGMMA_GEMM_VARIANTS[4].name,
        WGMMA_GEMM_VARIANTS[5].name,
        ENGINE[0],
        ENGINE[1],
        ENGINE[2],
        ENGINE[3],
        ENGINE[4],
        ENGINE[5],
        ENGINE[6],
        ENGINE[7],
        ENGINE[8],
        ENGINE[9],
    ],
};

/// Every image, in the order the host prefers them.
pub const IMAGES: [PtxImage; 2] = [SM90A, SM80];

/// Image `arch`, if it is one of [`IMAGES`].
pub fn image(arch: &str) -> Option<&'static PtxImage> {
    IMAGES.iter().find(|i| i.arch == arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_pick_by_compute_capability() {
        assert!(SM90A.runs_on((9, 0)));
        assert!(!SM90A.runs_on((8, 9)) && !SM90A.runs_on((10, 0)));
        assert!(SM80.runs_on((8, 0)) && SM80.runs_on((8, 6)) && SM80.runs_on((9, 0)));
        assert!(!SM80.runs_on((7, 5)));
        assert!(SM90A.has_wgmma() && !SM80.has_wgmma());
        // The sm_90a image is a superset: Hopper never loses a kernel.
        for k in SM80.kernels {
            assert!(SM90A.kernels.contains(k), "{k}");
        }
    }
}
