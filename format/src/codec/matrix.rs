//! The compressed matrix and the checks that make an untrusted one safe to
//! decode or upload.

use zipserv_kernels::decode::exception_entry;
use zipserv_kernels::format::{
    EXC_FAR, EXC_TABLE_LEN, MAX_BASE, TILE_BYTES, TILE_COLS, TILE_ROWS, tiles_for,
};

use crate::error::{Error, Result};

/// A BF16 matrix (rows × cols, row-major) in the zipserv tile format.
///
/// Built by [`CompressedMatrix::encode`] or, from untrusted bytes, by
/// [`CompressedMatrix::from_parts`], which validates every invariant the
/// decoders and GPU kernels rely on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedMatrix {
    pub(crate) parts: MatrixParts,
}

/// The raw sections of a compressed matrix, as stored in a file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MatrixParts {
    pub rows: usize,
    pub cols: usize,
    /// Exponent of code 0; codes reach `base ..= base + 7`.
    pub base: u8,
    /// Out-of-window exponents named by exception index (at most 31).
    pub exception_table: Vec<u8>,
    /// Tile stream: tile (row tile `r`, column tile `c`) at
    /// `(r * col_tiles + c) * TILE_BYTES`.
    pub tiles: Vec<u8>,
    /// Per tile, the first index into `exceptions`; one extra final entry.
    pub exception_starts: Vec<u32>,
    /// Exception entries `position << 5 | index`, sorted by position in each tile.
    pub exceptions: Vec<u16>,
    /// Per tile, the first index into `far_exponents`; one extra final entry.
    pub far_starts: Vec<u32>,
    /// Exponents of exceptions whose index is [`EXC_FAR`], in entry order.
    pub far_exponents: Vec<u8>,
}

impl CompressedMatrix {
    /// Checks every invariant of `parts` (sizes, offsets, positions, indices)
    /// with checked arithmetic, so that decoding or launching on the result
    /// can neither index out of bounds nor read garbage.
    pub fn from_parts(parts: MatrixParts) -> Result<Self> {
        let bad = |msg: String| Err(Error::Corrupt(msg));
        let MatrixParts {
            rows, cols, base, ..
        } = parts;
        if rows == 0 || cols == 0 {
            return bad(format!("empty matrix shape {rows} x {cols}"));
        }
        if base > MAX_BASE {
            return bad(format!("window base {base} > {MAX_BASE}"));
        }
        if parts.exception_table.len() > EXC_TABLE_LEN {
            return bad(format!(
                "exception table has {} entries (max {EXC_TABLE_LEN})",
                parts.exception_table.len()
            ));
        }
        let tiles = tile_count(rows, cols)
            .ok_or_else(|| Error::Corrupt(format!("shape {rows} x {cols} overflows")))?;
        let tile_bytes = tiles.checked_mul(TILE_BYTES);
        if tile_bytes != Some(parts.tiles.len()) {
            return bad(format!(
                "tile stream is {} bytes, shape needs {tiles} tiles of {TILE_BYTES}",
                parts.tiles.len()
            ));
        }
        check_starts(
            "exception",
            &parts.exception_starts,
            tiles,
            parts.exceptions.len(),
        )?;
        check_starts(
            "far-exponent",
            &parts.far_starts,
            tiles,
            parts.far_exponents.len(),
        )?;

        let col_tiles = cols.div_ceil(TILE_COLS);
        for tile in 0..tiles {
            let (r0, c0) = (
                (tile / col_tiles) * TILE_ROWS,
                (tile % col_tiles) * TILE_COLS,
            );
            let range =
                parts.exception_starts[tile] as usize..parts.exception_starts[tile + 1] as usize;
            let mut far = 0usize;
            let mut last: Option<u16> = None;
            for &entry in &parts.exceptions[range] {
                let (row, col, index) = exception_entry(entry);
                if last.is_some_and(|l| l >> 5 >= entry >> 5) {
                    return bad(format!(
                        "tile {tile}: exception positions not strictly increasing"
                    ));
                }
                last = Some(entry);
                if r0 + row >= rows || c0 + col >= cols {
                    return bad(format!(
                        "tile {tile}: exception at ({row}, {col}) lies in the padding"
                    ));
                }
                if index == EXC_FAR {
                    far += 1;
                } else if index as usize >= parts.exception_table.len() {
                    return bad(format!(
                        "tile {tile}: exception index {index} beyond table of {}",
                        parts.exception_table.len()
                    ));
                }
            }
            let far_have = (parts.far_starts[tile + 1] - parts.far_starts[tile]) as usize;
            if far != far_have {
                return bad(format!(
                    "tile {tile}: {far} far exceptions but {far_have} far exponents"
                ));
            }
        }
        let matrix = Self { parts };
        matrix.check_padding()?;
        Ok(matrix)
    }

    /// The padding of edge tiles must decode to finite values: the GEMM
    /// multiplies padded weights by zero-filled activations, and a NaN or Inf
    /// there would poison real outputs.
    fn check_padding(&self) -> Result<()> {
        let p = &self.parts;
        if p.base < MAX_BASE {
            return Ok(()); // base + 7 < 255: no code can reach Inf/NaN.
        }
        let mut out = [0u16; crate::codec::decode::TILE_SCRATCH];
        for tile in 0..self.tile_count() {
            let (rt, ct) = (tile / self.col_tiles(), tile % self.col_tiles());
            let edge = (rt + 1) * TILE_ROWS > p.rows || (ct + 1) * TILE_COLS > p.cols;
            if !edge {
                continue;
            }
            self.decode_tile_raw(tile, &mut out);
            for (i, &v) in out.iter().enumerate() {
                let (row, col) = (
                    rt * TILE_ROWS + i / TILE_COLS,
                    ct * TILE_COLS + i % TILE_COLS,
                );
                if (row >= p.rows || col >= p.cols) && (v >> 7) & 0xFF == 0xFF {
                    return Err(Error::Corrupt(format!(
                        "tile {tile}: padding decodes to Inf/NaN"
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.parts.rows
    }

    pub fn cols(&self) -> usize {
        self.parts.cols
    }

    pub fn base(&self) -> u8 {
        self.parts.base
    }

    pub fn parts(&self) -> &MatrixParts {
        &self.parts
    }

    pub fn into_parts(self) -> MatrixParts {
        self.parts
    }

    pub fn row_tiles(&self) -> usize {
        tiles_for(self.parts.rows, TILE_ROWS)
    }

    pub fn col_tiles(&self) -> usize {
        tiles_for(self.parts.cols, TILE_COLS)
    }

    pub fn tile_count(&self) -> usize {
        self.row_tiles() * self.col_tiles()
    }

    /// Bytes of all sections together (what a GPU reads or a file stores,
    /// headers aside).
    pub fn compressed_bytes(&self) -> usize {
        let p = &self.parts;
        p.tiles.len()
            + 4 * (p.exception_starts.len() + p.far_starts.len())
            + 2 * p.exceptions.len()
            + p.far_exponents.len()
            + p.exception_table.len()
    }

    /// The fewest bytes any `rows × cols` matrix takes in the tile format
    /// (the tile stream and the two offset arrays; no exceptions), or `None`
    /// on overflow. Tiles pad to 16 × 128, so thin or tiny matrices can be
    /// far larger compressed than raw: callers compare before encoding.
    pub fn min_compressed_bytes(rows: usize, cols: usize) -> Option<usize> {
        let tiles = tile_count(rows, cols)?;
        let stream = tiles.checked_mul(TILE_BYTES)?;
        stream.checked_add(tiles.checked_add(1)?.checked_mul(8)?)
    }

    /// Bytes of the same matrix as plain BF16.
    pub fn original_bytes(&self) -> usize {
        2 * self.parts.rows * self.parts.cols
    }
}

pub(crate) fn tile_count(rows: usize, cols: usize) -> Option<usize> {
    tiles_for(rows, TILE_ROWS).checked_mul(tiles_for(cols, TILE_COLS))
}

fn check_starts(what: &str, starts: &[u32], tiles: usize, len: usize) -> Result<()> {
    if starts.len() != tiles + 1 {
        return Err(Error::Corrupt(format!(
            "{what} offsets: {} entries for {tiles} tiles",
            starts.len()
        )));
    }
    if starts[0] != 0 || starts[tiles] as usize != len {
        return Err(Error::Corrupt(format!(
            "{what} offsets do not span 0..{len}"
        )));
    }
    if starts.windows(2).any(|w| w[0] > w[1]) {
        return Err(Error::Corrupt(format!("{what} offsets decrease")));
    }
    Ok(())
}
