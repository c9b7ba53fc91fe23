//! Where each weight of a tile lives in the tile stream, tabulated once.

use std::sync::OnceLock;

use zipserv_kernels::format::{LANE_WEIGHTS, TILE_COLS, TILE_WEIGHTS, lane_slot, sm_byte_offset};

/// For the weight at row-major index `i` of a tile: the byte offset of its
/// sign+mantissa byte in the tile, and its code slot `lane * 64 + 2 * pair + half`.
#[derive(Clone, Copy)]
pub(crate) struct Slot {
    pub sm_offset: u16,
    pub code_slot: u16,
}

/// `slots()[i]` for every row-major index of a tile.
pub(crate) fn slots() -> &'static [Slot; TILE_WEIGHTS] {
    static TABLE: OnceLock<Box<[Slot; TILE_WEIGHTS]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new(
            [Slot {
                sm_offset: 0,
                code_slot: 0,
            }; TILE_WEIGHTS],
        );
        for (i, slot) in t.iter_mut().enumerate() {
            let (lane, pair, half) = lane_slot(i / TILE_COLS, i % TILE_COLS);
            slot.sm_offset = sm_byte_offset(lane, pair, half) as u16;
            slot.code_slot = (lane * LANE_WEIGHTS + 2 * pair + half) as u16;
        }
        t
    })
}

/// Row-major index inside the tile of each code slot (the inverse of `slots`).
pub(crate) fn row_major_of_slot() -> &'static [u16; TILE_WEIGHTS] {
    static TABLE: OnceLock<Box<[u16; TILE_WEIGHTS]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0u16; TILE_WEIGHTS]);
        for (i, slot) in slots().iter().enumerate() {
            t[slot.code_slot as usize] = i as u16;
        }
        t
    })
}
