//! Constants and geometry of the compressed weight format (docs/FORMAT.md),
//! shared by the GPU kernels and the host codec so they are defined once.
//!
//! A matrix `W` (M rows × K columns, BF16, row-major) is cut into tiles of
//! [`TILE_ROWS`] × [`TILE_COLS`]. One warp decodes one tile: each of its 32
//! lanes owns the 64 weights it needs for eight `mma.m16n8k16` A fragments
//! (one per 16-column k-step). Every weight keeps its sign+mantissa byte;
//! its exponent becomes a 3-bit code `c` with `exponent = base + c`. Weights
//! whose exponent lies outside `[base, base + 7]` are exceptions: they are
//! stored with code 0 and listed, per tile, with their true exponent.

/// Rows of a tile: the M extent of one `mma.m16n8k16` A fragment.
pub const TILE_ROWS: usize = 16;
/// Columns of a tile: eight 16-column k-steps.
pub const TILE_COLS: usize = 128;
/// Weights in one tile.
pub const TILE_WEIGHTS: usize = TILE_ROWS * TILE_COLS;
/// Lanes of the warp that decodes a tile.
pub const LANES: usize = 32;
/// Weights each lane decodes per tile (8 k-steps × 8 A-fragment elements).
pub const LANE_WEIGHTS: usize = TILE_WEIGHTS / LANES;
/// BF16 pairs per lane per tile; one pair fills one 32-bit A-fragment register.
pub const LANE_PAIRS: usize = LANE_WEIGHTS / 2;
/// k-steps (16 columns each) in a tile.
pub const K_STEPS: usize = TILE_COLS / 16;

/// Bytes of sign+mantissa per tile (one byte per weight).
pub const SM_BYTES: usize = TILE_WEIGHTS;
/// Sign+mantissa bytes of one lane, fetched as [`SM_CHUNKS`] 16-byte loads.
pub const LANE_SM_BYTES: usize = LANE_WEIGHTS;
/// 16-byte sign+mantissa chunks per lane. Chunk `j` of lane `l` sits at byte
/// `(j * LANES + l) * 16` of the tile, so each load instruction of the warp
/// reads 512 contiguous bytes.
pub const SM_CHUNKS: usize = LANE_SM_BYTES / 16;

/// 32-bit code words per lane per tile (3 bits × 64 weights = 192 bits).
pub const LANE_CODE_WORDS: usize = LANE_WEIGHTS * 3 / 32;
/// Bytes of exponent codes per tile. Lane `l`'s words 0..4 are the 16 bytes at
/// `SM_BYTES + l * 16`; its words 4..6 the 8 bytes at `SM_BYTES + 512 + l * 8`.
pub const CODE_BYTES: usize = LANES * LANE_CODE_WORDS * 4;
/// Bytes of one tile in the tile stream.
pub const TILE_BYTES: usize = SM_BYTES + CODE_BYTES;

/// Pairs whose codes sit in ordinary fields: five per code word, the code of
/// the pair's low half at bits `3f..3f+3` and of its high half 16 bits above.
pub const FIELD_PAIRS_PER_WORD: usize = 5;
/// Pairs stored in fields; the remaining two pairs of a lane ("spill pairs")
/// are spread over the spare bits 15 and 31 of the code words, one bit per
/// word, three words per pair.
pub const FIELD_PAIRS: usize = FIELD_PAIRS_PER_WORD * LANE_CODE_WORDS;

/// Exponent values one code can reach: `base + 0 ..= base + 7`.
pub const WINDOW: u32 = 8;
/// Largest window base: `base + 7` must still be a valid exponent (≤ 255).
pub const MAX_BASE: u8 = 255 - (WINDOW as u8 - 1);

/// Exception entry: `position << 5 | index`, `position = row * TILE_COLS + col`
/// inside the tile (11 bits). In device memory the position is the weight's
/// fragment slot instead ([`device_entry`]).
pub const EXC_INDEX_BITS: u32 = 5;
/// Out-of-window exponents a matrix can name through its exception table.
pub const EXC_TABLE_LEN: usize = 31;
/// Exception index meaning "exponent stored in the far-exponent byte array".
pub const EXC_FAR: u16 = 31;

const _: () = assert!(TILE_ROWS == 16 && TILE_COLS.is_multiple_of(16));
const _: () = assert!(LANE_WEIGHTS == 64 && LANE_PAIRS == 32);
const _: () = assert!(LANE_SM_BYTES.is_multiple_of(16));
const _: () = assert!(LANE_CODE_WORDS == 6 && FIELD_PAIRS == 30);
// The spare bits (2 per word) hold exactly the pairs the fields cannot.
const _: () = assert!(2 * LANE_CODE_WORDS == 6 * (LANE_PAIRS - FIELD_PAIRS));
const _: () = assert!(TILE_BYTES.is_multiple_of(16));
const _: () = assert!(TILE_WEIGHTS <= 1 << (16 - EXC_INDEX_BITS));
const _: () = assert!(EXC_TABLE_LEN == EXC_FAR as usize);

/// Number of tiles along one dimension (rounding up; padding is internal).
#[inline]
pub const fn tiles_for(len: usize, tile: usize) -> usize {
    len.div_ceil(tile)
}

/// Row/column of the weight held by lane `lane` in half `half` (0 = low 16
/// bits) of its pair `pair`, relative to the tile origin.
///
/// Pair `p` is k-step `p / 4`, A-fragment register `p % 4`; registers follow
/// PTX ISA §9.7.14.5.8 (m16n8k16 A fragment, 16-bit types): `a0` is (row
/// `g`, columns `2t, 2t+1`), `a1` row `g + 8`, `a2` columns `+8`, `a3` both,
/// where `g = lane / 4`, `t = lane % 4`.
#[inline(always)]
pub const fn pair_position(lane: usize, pair: usize, half: usize) -> (usize, usize) {
    let g = lane / 4;
    let t = lane % 4;
    let step = pair / 4;
    let reg = pair % 4;
    let row = g + 8 * (reg & 1);
    let col = step * 16 + 2 * t + 8 * (reg >> 1) + half;
    (row, col)
}

/// Inverse of [`pair_position`]: which lane, pair and half hold (row, col).
#[inline(always)]
pub const fn lane_slot(row: usize, col: usize) -> (usize, usize, usize) {
    let g = row % 8;
    let step = col / 16;
    let in_step = col % 16;
    let t = (in_step % 8) / 2;
    let reg = (row / 8) | ((in_step / 8) << 1);
    let half = in_step % 2;
    (g * 4 + t, step * 4 + reg, half)
}

/// Byte offset, inside the tile, of the sign+mantissa byte of (lane, pair, half).
#[inline(always)]
pub const fn sm_byte_offset(lane: usize, pair: usize, half: usize) -> usize {
    let byte = 2 * pair + half; // 0..64 within the lane
    ((byte / 16) * LANES + lane) * 16 + byte % 16
}

/// Slot of (row, col) when a tile is held in fragment order, the order of
/// the kernels' A stages: 16-byte A fragment `k-step · 32 + lane` (four
/// 32-bit pairs), so slot `((pair / 4) · 32 + lane) · 8 + (pair % 4) · 2 +
/// half` of [`lane_slot`]. It is a permutation of the 11 position bits.
#[inline(always)]
pub const fn fragment_slot(row: usize, col: usize) -> usize {
    let (lane, pair, half) = lane_slot(row, col);
    ((pair / 4) * LANES + lane) * 8 + (pair % 4) * 2 + half
}

/// Inverse of [`fragment_slot`]: the (row, col) held at `slot`.
#[inline(always)]
pub const fn slot_position(slot: usize) -> (usize, usize) {
    let (half, reg) = (slot % 2, (slot / 2) % 4);
    let (lane, step) = ((slot / 8) % LANES, slot / (8 * LANES));
    pair_position(lane, 4 * step + reg, half)
}

/// The device form of exception entry `entry`: its position replaced by
/// the weight's [`fragment_slot`], its index kept. The GEMM kernels patch
/// decoded tiles held in fragment order, where a slot is the address
/// itself; turning a row-major position into that address took ~13
/// instructions per entry on the GPU (a bit permutation), here done once
/// per matrix at upload (v17: 1–2% off every Hopper and `mma.sync` time,
/// H200). Entry order (which pairs far entries with their exponents) is
/// unchanged.
#[inline(always)]
pub const fn device_entry(entry: u16) -> u16 {
    let (row, col, index) = crate::decode::exception_entry(entry);
    let slot = fragment_slot(row, col);
    (slot as u16) << EXC_INDEX_BITS | index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_slots_are_a_permutation_of_positions() {
        let mut seen = [false; TILE_WEIGHTS];
        for row in 0..TILE_ROWS {
            for col in 0..TILE_COLS {
                let slot = fragment_slot(row, col);
                assert!(slot < TILE_WEIGHTS && !seen[slot], "({row}, {col})");
                seen[slot] = true;
                assert_eq!(slot_position(slot), (row, col));
            }
        }
    }

    #[test]
    fn fragment_slot_is_where_the_lane_keeps_the_weight() {
        for lane in 0..LANES {
            for pair in 0..LANE_PAIRS {
                for half in 0..2 {
                    let (row, col) = pair_position(lane, pair, half);
                    // Byte offset in the A stage: fragment, register, half.
                    let byte = ((pair / 4) * LANES + lane) * 16 + (pair % 4) * 4 + half * 2;
                    assert_eq!(2 * fragment_slot(row, col), byte);
                }
            }
        }
    }

    #[test]
    fn device_entries_keep_the_index_and_move_the_position() {
        for position in 0..TILE_WEIGHTS as u16 {
            for index in [0u16, 7, EXC_FAR] {
                let entry = position << EXC_INDEX_BITS | index;
                let d = device_entry(entry);
                assert_eq!(d & ((1 << EXC_INDEX_BITS) - 1), index);
                let (row, col) = slot_position((d >> EXC_INDEX_BITS) as usize);
                assert_eq!(row * TILE_COLS + col, position as usize);
            }
        }
    }
}
