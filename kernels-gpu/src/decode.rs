//! Pure decode functions over 32-bit words: the same code turns compressed
//! tiles into BF16 on the GPU (inside the kernels) and on the CPU (the host
//! decoder and the tests). See `format` for the layout these functions read.

use crate::format::{FIELD_PAIRS, FIELD_PAIRS_PER_WORD, LANE_CODE_WORDS, LANE_PAIRS};

const _: () = assert!(LANE_PAIRS == 32, "decode_lane unrolls exactly 32 pairs");

/// Mask of the exponent-code bits after [`pair_codes`]: the low three
/// exponent bits (7..10) of each BF16 half.
pub const PAIR_CODE_MASK: u32 = 0x0380_0380;
/// Bits kept from a spread sign+mantissa pair: sign (15) and mantissa (0..7)
/// of each half.
pub const SIGN_MANTISSA_MASK: u32 = 0x807F_807F;

/// `prmt.b32` selector that spreads sign+mantissa bytes 0 and 1 of a word
/// into the two halves of a BF16 pair: byte `b` goes to the low byte of its
/// half and its sign bit is replicated into the high byte.
pub const SPREAD_BYTES_01: u32 = 0x9180;
/// Same for bytes 2 and 3.
pub const SPREAD_BYTES_23: u32 = 0xB3A2;

/// The window base on both halves, ready to add to [`pair_codes`]:
/// `base << 7 | base << 23`.
#[inline(always)]
pub const fn base_pair(base: u8) -> u32 {
    (base as u32) << 7 | (base as u32) << 23
}

/// The byte permute of PTX `prmt.b32` in its default mode (PTX ISA
/// §9.7.8.7): result byte `i` is byte `sel[4i..4i+3]` of `{b, a}`, or that
/// byte's sign bit replicated when selector bit `4i+3` is set. On the GPU this
/// is the single instruction; on the CPU the same function in plain Rust.
#[inline(always)]
pub fn byte_perm(a: u32, b: u32, sel: u32) -> u32 {
    #[cfg(target_arch = "nvptx64")]
    {
        crate::ptx::prmt(a, b, sel)
    }
    #[cfg(not(target_arch = "nvptx64"))]
    {
        let bytes = (u64::from(b) << 32 | u64::from(a)).to_le_bytes();
        let mut out = 0u32;
        for i in 0..4 {
            let nibble = (sel >> (4 * i)) & 0xF;
            let byte = bytes[(nibble & 7) as usize];
            let v = if nibble & 8 != 0 {
                ((byte as i8) >> 7) as u8
            } else {
                byte
            };
            out |= u32::from(v) << (8 * i);
        }
        out
    }
}

/// The exponent codes of pair `pair` (0..32) of a lane, placed at bits 7..10
/// (low half) and 23..26 (high half), from the lane's six code words.
///
/// Field pairs need one shift and one mask. The two spill pairs gather their
/// bits from the spare bits 15 and 31 of three words each; they are 2 of 32
/// pairs, so their extra work is small on average.
#[inline(always)]
pub fn pair_codes(words: &[u32; LANE_CODE_WORDS], pair: usize) -> u32 {
    if pair < FIELD_PAIRS {
        let word = words[pair / FIELD_PAIRS_PER_WORD];
        let field = pair % FIELD_PAIRS_PER_WORD;
        // Field f holds the low code at bit 3f; move it to bit 7.
        let moved = if field <= 2 {
            word << (7 - 3 * field)
        } else {
            word >> (3 * field - 7)
        };
        moved & PAIR_CODE_MASK
    } else {
        let w = &words[3 * (pair - FIELD_PAIRS)..][..3];
        ((w[0] >> 8) & 0x0080_0080) | ((w[1] >> 7) & 0x0100_0100) | ((w[2] >> 6) & 0x0200_0200)
    }
}

/// The two codes of field 0 of a code word (bits 0..3 and 16..19); field
/// `f`'s are this shifted left by `3f`.
const FIELD_CODES: u32 = 0x0007_0007;

/// Decodes BF16 pair `pair` (0..32) of a lane, one A-fragment register:
/// `sm_word` holds its two sign+mantissa bytes among four, `spread` picks
/// them ([`SPREAD_BYTES_01`] or [`SPREAD_BYTES_23`]), `codes` are the
/// lane's six code words, `base2` comes from [`base_pair`]. The result is
/// `(spread & SIGN_MANTISSA_MASK) | (pair_codes(codes, pair) + base2)`.
///
/// Computed as `((spread & SIGN_MANTISSA_MASK) | base2) + codes`, with the
/// codes masked where they lie in their word and shifted into place by the
/// add: four instructions per field pair on the GPU (`prmt`; `lop3`
/// keeping sign and mantissa and setting the base; `lop3` masking the
/// field; `lea` shifting and adding), where extracting the codes first and
/// adding the base to them took five (SASS of commit 2c0991b). A base plus
/// a code is at most 255, so the add never carries out of the exponent.
#[inline(always)]
pub fn decode_pair(
    sm_word: u32,
    spread: u32,
    codes: &[u32; LANE_CODE_WORDS],
    pair: usize,
    base2: u32,
) -> u32 {
    let with_base = (byte_perm(sm_word, 0, spread) & SIGN_MANTISSA_MASK) | base2;
    if pair < FIELD_PAIRS {
        let field = pair % FIELD_PAIRS_PER_WORD;
        let at_field = codes[pair / FIELD_PAIRS_PER_WORD] & (FIELD_CODES << (3 * field));
        // Field f's low code sits at bit 3f and goes to bit 7.
        if field <= 2 {
            shl_add(at_field, (7 - 3 * field) as u32, with_base)
        } else {
            shr_add(at_field, (3 * field - 7) as u32, with_base)
        }
    } else {
        with_base.wrapping_add(pair_codes(codes, pair))
    }
}

/// `(a << k) + b`: one instruction on the GPU (see `ptx::shl_add`).
#[inline(always)]
fn shl_add(a: u32, k: u32, b: u32) -> u32 {
    #[cfg(target_arch = "nvptx64")]
    {
        crate::ptx::shl_add(a, k, b)
    }
    #[cfg(not(target_arch = "nvptx64"))]
    {
        (a << k).wrapping_add(b)
    }
}

/// `(a >> k) + b`: one instruction on the GPU (see `ptx::shr_add`).
#[inline(always)]
fn shr_add(a: u32, k: u32, b: u32) -> u32 {
    #[cfg(target_arch = "nvptx64")]
    {
        crate::ptx::shr_add(a, k, b)
    }
    #[cfg(not(target_arch = "nvptx64"))]
    {
        (a >> k).wrapping_add(b)
    }
}

/// Decodes all 32 pairs of a lane's tile data: `sm` is the lane's 64
/// sign+mantissa bytes as 16 little-endian words (pair `p` uses bytes `2p`,
/// `2p + 1`), `codes` its six code words.
///
/// Written out with `seq!` rather than a loop: on the GPU the arrays must
/// stay in registers, which needs every index to be a constant; LLVM left a
/// 32-iteration loop rolled and spilled the arrays to local memory.
#[inline(always)]
pub fn decode_lane(sm: &[u32; 16], codes: &[u32; LANE_CODE_WORDS], base: u8) -> [u32; LANE_PAIRS] {
    let base2 = base_pair(base);
    let mut out = [0u32; LANE_PAIRS];
    seq_macro::seq!(P in 0..32 {
        out[P] = lane_pair(sm, codes, P, base2);
    });
    out
}

/// Decodes pair `pair` (0..32) of a lane's tile data; see [`decode_lane`].
#[inline(always)]
pub fn lane_pair(sm: &[u32; 16], codes: &[u32; LANE_CODE_WORDS], pair: usize, base2: u32) -> u32 {
    decode_pair(sm[pair / 2], spread_of(pair), codes, pair, base2)
}

/// The [`byte_perm`] selector of pair `pair`'s two bytes in its
/// sign+mantissa word.
#[inline(always)]
pub const fn spread_of(pair: usize) -> u32 {
    if pair.is_multiple_of(2) {
        SPREAD_BYTES_01
    } else {
        SPREAD_BYTES_23
    }
}

/// Puts an exception's true exponent into a BF16 value decoded with code 0.
#[inline(always)]
pub const fn patch_exponent(decoded: u16, exponent: u8) -> u16 {
    (decoded & 0x807F) | ((exponent as u16) << 7)
}

/// Splits an exception entry (file form) into (row, column) inside its
/// tile and the exception-table index.
#[inline(always)]
pub const fn exception_entry(entry: u16) -> (usize, usize, u16) {
    let (slot, index) = device_exception_entry(entry);
    let pos = slot as usize;
    (
        pos / crate::format::TILE_COLS,
        pos % crate::format::TILE_COLS,
        index,
    )
}

/// Splits an exception entry in its device form
/// ([`device_entry`](crate::format::device_entry)) into the weight's
/// fragment slot and the exception-table index. The same bit split as
/// [`exception_entry`]; only what the position means differs.
#[inline(always)]
pub const fn device_exception_entry(entry: u16) -> (u32, u16) {
    let slot = (entry >> crate::format::EXC_INDEX_BITS) as u32;
    let index = entry & ((1 << crate::format::EXC_INDEX_BITS) - 1);
    (slot, index)
}

/// Encoder side of [`pair_codes`]: packs a lane's 64 codes (index
/// `2 * pair + half`, values 0..8) into its six code words.
pub fn pack_lane_codes(codes: &[u8; 64]) -> [u32; LANE_CODE_WORDS] {
    let mut words = [0u32; LANE_CODE_WORDS];
    for pair in 0..LANE_PAIRS {
        let lo = u32::from(codes[2 * pair]);
        let hi = u32::from(codes[2 * pair + 1]);
        if pair < FIELD_PAIRS {
            let shift = 3 * (pair % FIELD_PAIRS_PER_WORD);
            words[pair / FIELD_PAIRS_PER_WORD] |= (lo << shift) | (hi << (shift + 16));
        } else {
            let first = 3 * (pair - FIELD_PAIRS);
            for bit in 0..3 {
                words[first + bit] |= ((lo >> bit) & 1) << 15 | ((hi >> bit) & 1) << 31;
            }
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_perm_follows_ptx_semantics() {
        let a = 0x8311_22F4;
        let b = 0x7766_5544;
        assert_eq!(byte_perm(a, b, 0x3210), a);
        assert_eq!(byte_perm(a, b, 0x7654), b);
        // Sign replication of byte 3 (0x83 → 0xFF) and byte 1 (0x22 → 0x00).
        assert_eq!(byte_perm(a, b, 0xB9B9), 0xFF00_FF00);
        assert_eq!(byte_perm(a, b, 0x9180), 0x0022_FFF4);
    }

    #[test]
    fn codes_round_trip_through_pack_and_extract() {
        let mut state = 0x1234_5678u32;
        for _ in 0..1000 {
            let mut codes = [0u8; 64];
            for c in codes.iter_mut() {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *c = (state >> 29) as u8;
            }
            let words = pack_lane_codes(&codes);
            for p in 0..LANE_PAIRS {
                let got = pair_codes(&words, p);
                let want = u32::from(codes[2 * p]) << 7 | u32::from(codes[2 * p + 1]) << 23;
                assert_eq!(got, want, "pair {p}");
            }
        }
    }

    /// `decode_pair` is `(spread & SIGN_MANTISSA_MASK) | (pair_codes + base2)`
    /// for every pair, base and (random) word.
    #[test]
    fn decode_pair_is_its_definition_for_every_pair() {
        let mut state = 0x9E37_79B9u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state
        };
        for base in [0u8, 1, 7, 100, 121, 200, 248] {
            for _ in 0..200 {
                let codes: [u32; LANE_CODE_WORDS] = core::array::from_fn(|_| next());
                let word = next();
                for pair in 0..LANE_PAIRS {
                    let spread = spread_of(pair);
                    let want = (byte_perm(word, 0, spread) & SIGN_MANTISSA_MASK)
                        | (pair_codes(&codes, pair) + base_pair(base));
                    let got = decode_pair(word, spread, &codes, pair, base_pair(base));
                    assert_eq!(got, want, "base {base} pair {pair}");
                }
            }
        }
    }

    #[test]
    fn decode_pair_rebuilds_every_sign_mantissa_and_code() {
        for base in [0u8, 1, 100, 120, 248] {
            for sm in 0..=255u32 {
                for code in 0..8u32 {
                    let word = sm | (sm ^ 0x5A) << 8;
                    // Pair 0: field 0 of word 0.
                    let mut codes = [0u32; LANE_CODE_WORDS];
                    codes[0] = code | (7 - code) << 16;
                    let pair = decode_pair(word, SPREAD_BYTES_01, &codes, 0, base_pair(base));
                    let expect = |sm: u32, c: u32| {
                        (sm & 0x80) << 8 | (u32::from(base) + c) << 7 | (sm & 0x7F)
                    };
                    assert_eq!(pair & 0xFFFF, expect(sm, code));
                    assert_eq!(pair >> 16, expect(sm ^ 0x5A, 7 - code));
                }
            }
        }
    }
}
