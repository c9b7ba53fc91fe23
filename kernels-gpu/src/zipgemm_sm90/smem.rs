//! Shared-memory addresses of one block, from `sm90::SmemLayout`.

use crate::format::TILE_BYTES;
use crate::ptx::dynamic_shared_memory;
use crate::sm90::{
    A_STAGE_BYTES, ENTRY_SLOT_BYTES, MBARRIER_BYTES, RANGE_RECORD_BYTES, SWIZZLE_ATOM_BYTES,
    SmemLayout, UNIT_ROW_TILES, W_STAGE_BYTES, WgmmaGemmVariant,
};

/// A block's regions as shared-window addresses. Stage addresses are
/// computed from the stage index, never taken from an indexed array (an
/// indexed array would go to local memory).
#[derive(Clone, Copy)]
pub(super) struct Smem {
    /// Base, aligned to a swizzle atom (the layout's offsets are relative
    /// to it; the host requests the slack).
    base: u32,
    layout: SmemLayout,
}

impl Smem {
    #[inline(always)]
    pub(super) fn new(v: &WgmmaGemmVariant) -> Self {
        let atom = SWIZZLE_ATOM_BYTES as u32;
        Self {
            base: (dynamic_shared_memory() + atom - 1) & !(atom - 1),
            layout: SmemLayout::of(v),
        }
    }

    /// Activations of stage `stage`: [`crate::sm90::X_BOXES`] boxes of
    /// `n_tile` rows × 128 B.
    #[inline(always)]
    pub(super) fn x(&self, stage: u32) -> u32 {
        self.base + (self.layout.x + stage as usize * self.layout.x_stage) as u32
    }

    /// Compressed tile `t` (0..8, the unit's row tiles) of stage `stage`.
    #[inline(always)]
    pub(super) fn w(&self, stage: u32, t: u32) -> u32 {
        self.base + (self.layout.w + stage as usize * W_STAGE_BYTES) as u32 + t * TILE_BYTES as u32
    }

    /// Consumer warp `warp`'s A stage.
    #[inline(always)]
    pub(super) fn a(&self, warp: u32) -> u32 {
        self.base + self.layout.a as u32 + warp * A_STAGE_BYTES as u32
    }

    /// Staged exception entries of row tile `t` of stage `stage`.
    #[inline(always)]
    pub(super) fn entries(&self, stage: u32, t: u32) -> u32 {
        let slot = stage * UNIT_ROW_TILES + t;
        self.base + self.layout.entries as u32 + slot * ENTRY_SLOT_BYTES as u32
    }

    /// Exception range record of row tile `t` of stage `stage`.
    #[inline(always)]
    pub(super) fn record(&self, stage: u32, t: u32) -> u32 {
        let slot = stage * UNIT_ROW_TILES + t;
        self.base + self.layout.records as u32 + slot * RANGE_RECORD_BYTES as u32
    }

    #[inline(always)]
    pub(super) fn table(&self) -> u32 {
        self.base + self.layout.table as u32
    }

    #[inline(always)]
    pub(super) fn flag(&self) -> u32 {
        self.base + self.layout.flag as u32
    }

    /// Barrier completed when stage `stage`'s compressed tiles, their
    /// staged exception entries and range records have landed (one arrival
    /// per row tile of the unit).
    #[inline(always)]
    pub(super) fn full_w(&self, stage: u32) -> u32 {
        self.barrier(self.layout.full_w, stage)
    }

    /// Barrier completed when stage `stage`'s activations have landed.
    #[inline(always)]
    pub(super) fn full_x(&self, stage: u32) -> u32 {
        self.barrier(self.layout.full_x, stage)
    }

    /// Barrier completed when every consumer has decoded its tile of stage
    /// `stage` (the tile slots may be refilled).
    #[inline(always)]
    pub(super) fn empty_w(&self, stage: u32) -> u32 {
        self.barrier(self.layout.empty_w, stage)
    }

    /// Barrier completed when the `wgmma`s reading stage `stage`'s
    /// activations are complete in every consumer.
    #[inline(always)]
    pub(super) fn empty_x(&self, stage: u32) -> u32 {
        self.barrier(self.layout.empty_x, stage)
    }

    #[inline(always)]
    fn barrier(&self, array: usize, stage: u32) -> u32 {
        self.base + array as u32 + stage * MBARRIER_BYTES as u32
    }
}
