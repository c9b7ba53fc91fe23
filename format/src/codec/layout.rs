//! Where each weight of a tile lives in the tile stream, tabulated once.

use std::sync::OnceLock;

use zipserv_kernels::format::{
    LANE_PAIRS, LANE_WEIGHTS, TILE_COLS, TILE_WEIGHTS, lane_slot, pair_position, sm_byte_offset,
};

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

/// Both halves of a pair are neighbours in one row (columns `2t + h`), so a
/// decoded pair lands in row-major order as one 32-bit store. For each
/// `lane * 32 + pair`: the row-major index of its low half, divided by two.
pub(crate) fn row_major_pair_of_slot() -> &'static [u16; TILE_WEIGHTS / 2] {
    static TABLE: OnceLock<Box<[u16; TILE_WEIGHTS / 2]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0u16; TILE_WEIGHTS / 2]);
        for (i, pair_slot) in t.iter_mut().enumerate() {
            let (row, col) = pair_position(i / LANE_PAIRS, i % LANE_PAIRS, 0);
            debug_assert_eq!(
                pair_position(i / LANE_PAIRS, i % LANE_PAIRS, 1),
                (row, col + 1)
            );
            *pair_slot = ((row * TILE_COLS + col) / 2) as u16;
        }
        t
    })
}
