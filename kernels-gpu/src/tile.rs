//! Access to one compressed matrix from a kernel: a lane's share of a tile,
//! and a tile's exceptions spread over the warp. The types are shared with
//! the host (which fills [`MatrixView`] for kernels that take it inside a
//! `#[repr(C)]` parameter block); the loads exist only on the GPU.

#[cfg(target_arch = "nvptx64")]
use crate::decode::{
    base_pair, decode_lane, decode_pair, device_exception_entry, patch_exponent, spread_of,
};
use crate::format::LANE_CODE_WORDS;
#[cfg(target_arch = "nvptx64")]
use crate::format::{EXC_FAR, LANE_PAIRS, LANES, SM_BYTES, SM_CHUNKS, TILE_BYTES};

#[cfg(target_arch = "nvptx64")]
const _: () = assert!(SM_CHUNKS == 4, "load_lane unrolls exactly four chunks");
#[cfg(target_arch = "nvptx64")]
use crate::ptx::{
    ballot, ld_nc_u8, ld_nc_u16, ld_nc_u32, ld_shared_u8, ld_shared_u16, ld_shared_v2,
    ld_shared_v4, ld_stream_v2, ld_stream_v4, st_shared_u16,
};

/// The sections of a compressed matrix as kernel arguments (device
/// pointers), in the field order a `#[repr(C)]` parameter block carries.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MatrixView {
    pub tiles: *const u8,
    pub exception_starts: *const u32,
    pub exceptions: *const u16,
    pub far_starts: *const u32,
    pub far_exponents: *const u8,
    /// The exception table padded to 32 bytes.
    pub exception_table: *const u8,
    pub base: u32,
    pub rows: u32,
    pub cols: u32,
    pub col_tiles: u32,
}

/// One lane's compressed data for one tile, straight from global memory.
#[derive(Clone, Copy)]
pub struct LaneTile {
    /// 64 sign+mantissa bytes; pair `p` is bytes `2p, 2p+1`.
    pub sm: [u32; 16],
    pub codes: [u32; LANE_CODE_WORDS],
}

#[cfg(target_arch = "nvptx64")]
impl LaneTile {
    /// The lane's 32 decoded BF16 pairs (exceptions still at their code-0 value).
    #[inline(always)]
    pub fn decode(&self, base: u32) -> [u32; LANE_PAIRS] {
        decode_lane(&self.sm, &self.codes, base as u8)
    }

    /// Decodes lane `lane`'s share of a tile that a bulk copy placed at
    /// `s_tile` straight from shared memory, handing each k-step's A
    /// fragment (pairs `4s .. 4s + 4`) to `put(s, fragment)` as soon as it
    /// is complete: the code words first, then one 16-byte sign+mantissa
    /// chunk (two k-steps) at a time, so at most 10 of the tile's 22 words
    /// and 8 decoded pairs are live at once ([`LaneTile::load_shared`] then
    /// [`LaneTile::decode`] holds all 22 and the 32 pairs, which the Hopper
    /// kernel's N = 256 variant cannot afford while another tile's
    /// fragments are in the tensor cores).
    ///
    /// # Safety
    /// As [`LaneTile::load_shared`].
    #[inline(always)]
    pub unsafe fn decode_shared(
        s_tile: u32,
        lane: u32,
        base: u32,
        mut put: impl FnMut(usize, [u32; 4]),
    ) {
        let base2 = base_pair(base as u8);
        let chunk = |j: usize| s_tile + (j as u32 * LANES as u32 + lane) * 16;
        // SAFETY: every offset stays inside the tile's TILE_BYTES.
        unsafe {
            let c0 = ld_shared_v4(s_tile + SM_BYTES as u32 + lane * 16);
            let c1 = ld_shared_v2(s_tile + (SM_BYTES + LANES * 16) as u32 + lane * 8);
            let codes = [c0[0], c0[1], c0[2], c0[3], c1[0], c1[1]];
            // Chunk J + 1 is loaded before chunk J's fragments go to `put`:
            // ptxas keeps a shared load above a shared store it cannot tell
            // apart from it, so loaded after them (as before) each chunk's
            // first decode waited out the load (Nsight Compute, n64_x2 at
            // N = 64: 13% of the stall samples on "short scoreboard" there).
            // Measured (v21): 0–1.5% faster, not the ~3% predicted.
            let mut sm_chunks = [[0u32; 4]; SM_CHUNKS];
            sm_chunks[0] = ld_shared_v4(chunk(0));
            seq_macro::seq!(J in 0..4 {
                if let Some(next) = sm_chunks.get_mut(J + 1) {
                    *next = ld_shared_v4(chunk(J + 1));
                }
                let sm = sm_chunks[J];
                seq_macro::seq!(H in 0..2 {
                    let first = 8 * J + 4 * H; // k-step 2J + H
                    let frag = [0usize, 1, 2, 3].map(|r| {
                        let pair = first + r;
                        decode_pair(sm[2 * H + r / 2], spread_of(pair), &codes, pair, base2)
                    });
                    put(2 * J + H, frag);
                });
            });
        }
    }

    /// Lane `lane`'s share of a tile that a bulk copy placed, byte for
    /// byte, at `s_tile` in shared memory: the same six loads as
    /// [`MatrixView::load_lane`], each a conflict-free warp-wide access
    /// (512 or 256 contiguous bytes).
    ///
    /// # Safety
    /// `s_tile` is a 16-byte aligned shared address holding a whole tile
    /// ([`TILE_BYTES`]).
    #[inline(always)]
    pub unsafe fn load_shared(s_tile: u32, lane: u32) -> Self {
        // SAFETY: every offset stays inside the tile's TILE_BYTES.
        unsafe {
            let mut sm = [0u32; 16];
            seq_macro::seq!(J in 0..4 {
                let v = ld_shared_v4(s_tile + ((J * LANES as u32 + lane) * 16));
                sm[4 * J..4 * J + 4].copy_from_slice(&v);
            });
            let c0 = ld_shared_v4(s_tile + SM_BYTES as u32 + lane * 16);
            let c1 = ld_shared_v2(s_tile + (SM_BYTES + LANES * 16) as u32 + lane * 8);
            LaneTile {
                sm,
                codes: [c0[0], c0[1], c0[2], c0[3], c1[0], c1[1]],
            }
        }
    }
}

#[cfg(target_arch = "nvptx64")]
impl MatrixView {
    /// Issues the six loads (4 × 16 B sign+mantissa, 16 B + 8 B codes) of
    /// lane `lane` for tile `tile`; each is one coalesced warp-wide access.
    ///
    /// # Safety
    /// `tile` is a valid tile index of this matrix.
    #[inline(always)]
    pub unsafe fn load_lane(&self, tile: u32, lane: u32) -> LaneTile {
        let lane = lane as usize;
        // SAFETY: every offset stays inside the tile's TILE_BYTES.
        unsafe {
            let g_tile = self.tiles.add(tile as usize * TILE_BYTES);
            let mut sm = [0u32; 16];
            seq_macro::seq!(J in 0..4 {
                let v = ld_stream_v4(g_tile.add((J * LANES + lane) * 16));
                sm[4 * J..4 * J + 4].copy_from_slice(&v);
            });
            let c0 = ld_stream_v4(g_tile.add(SM_BYTES + lane * 16));
            let c1 = ld_stream_v2(g_tile.add(SM_BYTES + LANES * 16 + lane * 8));
            LaneTile {
                sm,
                codes: [c0[0], c0[1], c0[2], c0[3], c1[0], c1[1]],
            }
        }
    }

    /// The exception range of `tile`: three dependent-free loads.
    ///
    /// # Safety
    /// `tile` is a valid tile index of a validated matrix.
    #[inline(always)]
    pub unsafe fn tile_exceptions(&self, tile: u32) -> TileExceptions {
        // SAFETY: the caller's promise.
        unsafe { self.exception_bounds(tile).range() }
    }

    /// The three words [`Self::tile_exceptions`] computes the range from,
    /// as loaded: for loads issued ahead of their use, where computing the
    /// count at once would wait for them there (the Hopper kernel's
    /// producer issues them before it waits for a free stage; when its
    /// consumers prefetched ranges two tiles ahead, Nsight Compute showed
    /// them stalling on that subtraction).
    ///
    /// # Safety
    /// As [`Self::tile_exceptions`].
    #[inline(always)]
    pub unsafe fn exception_bounds(&self, tile: u32) -> ExceptionBounds {
        // SAFETY: the starts arrays hold one entry per tile plus one.
        unsafe {
            ExceptionBounds {
                start: ld_nc_u32(self.exception_starts.add(tile as usize)),
                end: ld_nc_u32(self.exception_starts.add(tile as usize + 1)),
                far_start: ld_nc_u32(self.far_starts.add(tile as usize)),
            }
        }
    }

    /// Entry `i` of the tile's exceptions as a u32, or 0 past the end.
    ///
    /// # Safety
    /// `e` describes a tile of this (validated) matrix.
    #[inline(always)]
    pub unsafe fn exception(&self, e: &TileExceptions, i: u32) -> u32 {
        // SAFETY: i < count keeps the load inside the tile's range.
        if i < e.count {
            unsafe { ld_nc_u16(self.exceptions.add((e.start + i) as usize)) }
        } else {
            0
        }
    }

    /// Calls `f(slot, exponent)` for every exception of a tile (the
    /// weight's [`fragment_slot`](crate::format::fragment_slot) inside the
    /// tile), 32 at a time across the warp; `first` is this
    /// lane's entry among the first 32 (`exception(e, lane)`, which callers
    /// may have loaded early). Table exponents come from `table(index)`
    /// (global or shared memory, the caller's choice); far ones from the
    /// far-exponent array, found by counting the far entries of lower lanes.
    /// All 32 lanes must call this together; `f` runs on the lane that took
    /// the entry and must not contain warp-wide operations.
    ///
    /// # Safety
    /// `e` describes a tile of this (validated) matrix.
    #[inline(always)]
    pub unsafe fn for_each_exception(
        &self,
        e: &TileExceptions,
        first: u32,
        lane: u32,
        table: impl Fn(u32) -> u32,
        f: impl FnMut(u32, u32),
    ) {
        // SAFETY: the caller's promise.
        unsafe { self.for_each_exception_prefetched(e, first, None, lane, table, f) }
    }

    /// [`Self::for_each_exception`] with this lane's entry of the second 32
    /// (`exception(e, 32 + lane)`) loaded early too, where the caller has it
    /// (`None`: loaded after the first 32 are done, as there).
    ///
    /// # Safety
    /// As [`Self::for_each_exception`].
    #[inline(always)]
    pub unsafe fn for_each_exception_prefetched(
        &self,
        e: &TileExceptions,
        first: u32,
        second: Option<u32>,
        lane: u32,
        table: impl Fn(u32) -> u32,
        mut f: impl FnMut(u32, u32),
    ) {
        // SAFETY: entry and far loads stay inside the tile's ranges, which
        // the host validated.
        unsafe {
            // The loop body is `resolve` written out: built on `resolve`,
            // this loop spilled 4 bytes of the sm_80 image's one-n-tile
            // ZipGEMM (64-register cap), which `patch_in_shared` runs it in.
            // Lanes below this one, by arithmetic: `%lanemask_lt` is a
            // special-register read (S2R), which ptxas re-issued in every
            // batch, with its latency, where only far entries need it.
            let below = (1u32 << (lane & 31)).wrapping_sub(1);
            let mut far_next = e.far_start;
            let mut batch = 0;
            let mut entry = first;
            while batch < e.count {
                let active = batch + lane < e.count;
                let (slot, index) = device_exception_entry(entry as u16);
                let is_far = active && index == EXC_FAR;
                let far_mask = ballot(is_far);
                if active {
                    let exponent = if is_far {
                        let k = far_next + (far_mask & below).count_ones();
                        ld_nc_u8(self.far_exponents.add(k as usize))
                    } else {
                        table(u32::from(index))
                    };
                    f(slot, exponent);
                }
                far_next += far_mask.count_ones();
                batch += LANES as u32;
                entry = match second {
                    Some(second) if batch == LANES as u32 => second,
                    _ => self.exception(e, batch + lane),
                };
            }
        }
    }

    /// Patches every exception of a tile decoded into shared memory, whose
    /// element in fragment slot `slot` is the BF16 at shared address
    /// `at(slot)`;
    /// `first` and `second` are this lane's entries among the first 32 and
    /// the next 32 (`exception(e, lane)`, `exception(e, 32 + lane)`).
    ///
    /// A tile with more than 32 exceptions (at 1.6% a 2048-weight tile
    /// averages ~33) has its first two batches patched at once: both
    /// exponents looked up, both slots read, then both written, so the two
    /// chains of dependent latency (entry → address and exponent → read →
    /// write) overlap instead of running one after the other (Nsight
    /// Compute: the patch loop held ~15% of the Hopper kernel's stall
    /// samples). Two lanes never share a slot: each position has one entry.
    /// The rest, if any, 32 at a time. All 32 lanes call this together.
    ///
    /// # Safety
    /// As [`Self::for_each_exception`]; `at` gives this warp's tile's
    /// addresses in shared memory.
    #[cfg(target_arch = "nvptx64")]
    #[inline(always)]
    pub unsafe fn patch_in_shared(
        &self,
        e: &TileExceptions,
        first: u32,
        second: u32,
        lane: u32,
        table: impl Fn(u32) -> u32,
        at: impl Fn(u32) -> u32,
    ) {
        let rmw = |a: u32, exponent: u32| {
            // SAFETY: `a` is a slot of the tile (the caller's promise).
            unsafe { st_shared_u16(a, patch_exponent(ld_shared_u16(a), exponent as u8)) }
        };
        // SAFETY: the caller's promise; as `for_each_exception_prefetched`.
        unsafe {
            // The sm_80 image patches one batch at a time: there ptxas
            // spilled 4 bytes of the one-n-tile `mma.sync` ZipGEMM (its
            // 64-register cap) with the code below, and such cards are not
            // measured.
            if !cfg!(target_feature = "sm_90a") {
                self.for_each_exception_prefetched(
                    e,
                    first,
                    Some(second),
                    lane,
                    table,
                    |slot, x| rmw(at(slot), x),
                );
                return;
            }
            // Warp-uniform: every lane holds the same count.
            if e.count <= LANES as u32 {
                let x = self.resolve(e, first, 0, e.far_start, lane, &table);
                if x.active {
                    rmw(at(x.slot), x.exponent);
                }
                return;
            }
            let x0 = self.resolve(e, first, 0, e.far_start, lane, &table);
            let far1 = e.far_start + x0.far_in_batch;
            let x1 = self.resolve(e, second, LANES as u32, far1, lane, &table);
            // Every lane has an entry in the first batch (count > 32).
            let (a0, a1) = (at(x0.slot), at(x1.slot));
            let v0 = ld_shared_u16(a0);
            let v1 = if x1.active { ld_shared_u16(a1) } else { 0 };
            st_shared_u16(a0, patch_exponent(v0, x0.exponent as u8));
            if x1.active {
                st_shared_u16(a1, patch_exponent(v1, x1.exponent as u8));
            }
            let mut far_next = far1 + x1.far_in_batch;
            let mut batch = 2 * LANES as u32;
            while batch < e.count {
                let entry = self.exception(e, batch + lane);
                let x = self.resolve(e, entry, batch, far_next, lane, &table);
                if x.active {
                    rmw(at(x.slot), x.exponent);
                }
                far_next += x.far_in_batch;
                batch += LANES as u32;
            }
        }
    }

    /// This lane's exception in batch `batch` (entries `batch .. batch +
    /// 32` of the tile; `entry` is the lane's, `far_next` the first far
    /// exponent of the batch): see [`Resolved`]. Table exponents come from
    /// `table(index)`; far ones from the far-exponent array, found by
    /// counting the far entries of lower lanes. All 32 lanes call it.
    ///
    /// # Safety
    /// As [`Self::for_each_exception`].
    #[inline(always)]
    unsafe fn resolve(
        &self,
        e: &TileExceptions,
        entry: u32,
        batch: u32,
        far_next: u32,
        lane: u32,
        table: &impl Fn(u32) -> u32,
    ) -> Resolved {
        let active = batch + lane < e.count;
        let (slot, index) = device_exception_entry(entry as u16);
        let is_far = active && index == EXC_FAR;
        let far_mask = ballot(is_far);
        // Lanes below this one, by arithmetic: `%lanemask_lt` is a
        // special-register read (S2R), which ptxas re-issued in every
        // batch, with its latency, where only far entries need it.
        let below = (1u32 << (lane & 31)).wrapping_sub(1);
        let exponent = if !active {
            0
        } else if is_far {
            let k = far_next + (far_mask & below).count_ones();
            // SAFETY: far entries stay inside the tile's far exponents
            // (host-validated).
            unsafe { ld_nc_u8(self.far_exponents.add(k as usize)) }
        } else {
            table(u32::from(index))
        };
        Resolved {
            active,
            slot,
            exponent,
            far_in_batch: far_mask.count_ones(),
        }
    }
}

/// One lane's exception of a batch: whether the lane has one, its place in
/// the tile, its true exponent; and how many far entries the whole batch
/// holds (where the next batch's far exponents start).
#[cfg(target_arch = "nvptx64")]
#[derive(Clone, Copy)]
struct Resolved {
    active: bool,
    slot: u32,
    exponent: u32,
    far_in_batch: u32,
}

/// A tile's exception bounds as stored: its entries are `start .. end`,
/// its far exponents start at `far_start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceptionBounds {
    pub start: u32,
    pub end: u32,
    pub far_start: u32,
}

impl ExceptionBounds {
    #[inline(always)]
    pub const fn range(self) -> TileExceptions {
        TileExceptions {
            start: self.start,
            count: self.end - self.start,
            far_start: self.far_start,
        }
    }
}

/// Where a tile's exceptions are: entries `start .. start + count`, and the
/// first of its far exponents.
#[derive(Clone, Copy, Debug)]
pub struct TileExceptions {
    pub start: u32,
    pub count: u32,
    pub far_start: u32,
}

/// Writes the true exponent of each exception of a tile into the warp's A
/// stage at `s_a`, one decoded tile parked in shared memory in fragment
/// order (the A fragment of k-step `j` of lane `l` at byte `(j * 32 + l) *
/// 16`, so slot `s` at byte `2s`; [`MatrixView::patch_in_shared`]; `entry` and `second`:
/// this lane's entries among the first 32 and the next 32). `s_table` is
/// the exception table in shared memory. All 32 lanes call this together.
///
/// # Safety
/// `e` describes a tile of `view` (validated); `s_a` is this warp's A stage
/// (4 KB) and `s_table` 32 readable bytes, both in shared memory.
#[cfg(target_arch = "nvptx64")]
#[inline(always)]
pub unsafe fn patch_a_stage(
    view: &MatrixView,
    e: &TileExceptions,
    entry: u32,
    second: u32,
    lane: u32,
    s_table: u32,
    s_a: u32,
) {
    // SAFETY: stage offsets stay inside the 4 KB stage; the table lies in
    // shared memory (the caller's promise).
    unsafe {
        let table = |index: u32| ld_shared_u8(s_table + index);
        view.patch_in_shared(e, entry, second, lane, table, |slot| s_a + 2 * slot);
    }
}

/// Copies the matrix's exception table (32 bytes: [`MatrixView`]'s
/// `exception_table`) to `s_table` in shared memory, repeated over
/// `GEMM_TABLE_BYTES`: thread `tid` of the block copies one word, threads
/// from `GEMM_TABLE_BYTES / 4` on none. The block synchronizes before
/// [`patch_a_stage`] reads it.
///
/// # Safety
/// `table` holds the 32-byte padded table of a validated matrix; `s_table`
/// is a 4-byte aligned shared address with `GEMM_TABLE_BYTES` writable.
#[cfg(target_arch = "nvptx64")]
#[inline(always)]
pub unsafe fn stage_exception_table(table: *const u8, s_table: u32, tid: u32) {
    use crate::launch::GEMM_TABLE_BYTES;
    if tid < (GEMM_TABLE_BYTES / 4) as u32 {
        // SAFETY: word tid % 8 lies in the 32-byte table; the store in the
        // caller's shared range.
        unsafe {
            crate::ptx::st_shared_u32(
                s_table + 4 * tid,
                ld_nc_u32((table as *const u32).add(tid as usize % 8)),
            )
        };
    }
}
