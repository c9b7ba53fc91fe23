//! The binary index at the end of a `.zsv` file: every tensor's name,
//! dtype, shape and sections, and (from version 2) the safetensors header
//! that decompression writes (docs/FORMAT.md, "Index").
//!
//! All integers are little-endian. A string is a u32 byte length and that
//! many bytes of UTF-8. A section is `offset: u64, length: u64, crc32: u32`.
//!
//! ```text
//! index v1 = u32 metadata_count, metadata_count × (string key, string value),
//!            u32 tensor_count, tensor_count × tensor
//! index v2 = section source_header, u64 source_len, u32 source_crc32,
//!            u32 tensor_count, tensor_count × tensor
//! tensor   = string name, string dtype, [v2: string source_dtype],
//!            u8 rank, rank × u64 dim, u8 encoding,
//!            encoding 0 (raw):   section data
//!            encoding 1 (tiles): u8 base, u8 table_len, table_len × u8 exponent,
//!                                section tiles, section exception_starts,
//!                                section exceptions, section far_starts,
//!                                section far_exponents
//! ```
//!
//! The parser trusts nothing: every read is bounds-checked, counts are never
//! used to reserve memory (each element read consumes index bytes, so memory
//! stays proportional to the index, itself capped by the header), every
//! size and offset is checked against the shape and the file before any
//! section is touched, and no two sections may share a byte (aliased
//! sections would let a small file expand into a huge output).

use std::collections::HashSet;

use safetensors::Dtype;
use zipserv_kernels::format::{EXC_TABLE_LEN, MAX_BASE, TILE_BYTES};

use super::dtype::{dtype_from_name, element_bytes};
use super::header::{FORMAT_VERSION, HEADER_LEN, SECTION_ALIGN};
use crate::codec::tile_count;
use crate::error::{Error, Result};

/// Largest tensor rank the index accepts.
pub const MAX_RANK: usize = 32;

const ENCODING_RAW: u8 = 0;
const ENCODING_TILES: u8 = 1;

/// A byte range of the file and the CRC-32 (IEEE) of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Section {
    pub offset: u64,
    pub len: u64,
    pub crc32: u32,
}

/// Where the parts of a compressed matrix are stored
/// (see [`crate::codec::MatrixParts`] for what each holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileSections {
    pub base: u8,
    pub exception_table: Vec<u8>,
    /// Tile stream, `TILE_BYTES` per tile.
    pub tiles: Section,
    /// u32 LE per tile, plus one.
    pub exception_starts: Section,
    /// u16 LE entries `position << 5 | index`.
    pub exceptions: Section,
    /// u32 LE per tile, plus one.
    pub far_starts: Section,
    /// One byte per far exception.
    pub far_exponents: Section,
}

impl TileSections {
    /// The five sections with their names, in file order.
    pub fn named(&self) -> [(&'static str, &Section); 5] {
        [
            ("tiles", &self.tiles),
            ("exception_starts", &self.exception_starts),
            ("exceptions", &self.exceptions),
            ("far_starts", &self.far_starts),
            ("far_exponents", &self.far_exponents),
        ]
    }
}

/// How a tensor's values are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    /// The tensor's bytes as safetensors stores them (row-major, little-endian).
    Raw(Section),
    /// A BF16 matrix in the zipserv tile format.
    Tiles(TileSections),
}

/// One tensor of the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    /// The dtype decompression gives back.
    pub dtype: Dtype,
    /// The dtype of the tensor in the file that was compressed: `dtype`,
    /// unless it was rounded to BF16 (`--cast-bf16`). Version 1 did not
    /// record it (read as `dtype`).
    pub source_dtype: Dtype,
    pub shape: Vec<usize>,
    pub encoding: Encoding,
}

impl TensorEntry {
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of the tensor as plain safetensors data.
    pub fn original_bytes(&self) -> u64 {
        element_bytes(self.dtype, self.elements() as u64).unwrap_or(0)
    }

    /// Bytes of its sections in the file, alignment padding aside.
    pub fn stored_bytes(&self) -> u64 {
        match &self.encoding {
            Encoding::Raw(s) => s.len,
            Encoding::Tiles(t) => {
                t.named().iter().map(|(_, s)| s.len).sum::<u64>() + t.exception_table.len() as u64
            }
        }
    }
}

/// The safetensors file that decompression writes (version 2): its header
/// JSON as a section, and the whole file's length and CRC-32, so the output
/// can be checked before it replaces anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Source {
    pub header: Section,
    pub len: u64,
    pub crc32: u32,
}

/// What the index holds, in file order of the tensors' data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// Container format version of this index (1 or 2).
    pub version: u32,
    /// Version 1: safetensors' `__metadata__` (version 2 keeps it inside
    /// `source`'s header, so it has one home).
    pub metadata: Vec<(String, String)>,
    /// Version 2: the safetensors file decompression writes.
    pub source: Option<Source>,
    pub tensors: Vec<TensorEntry>,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            version: FORMAT_VERSION,
            metadata: Vec::new(),
            source: Some(Source::default()),
            tensors: Vec::new(),
        }
    }
}

impl Index {
    /// The index bytes in the layout of `self.version` (the writer makes
    /// version 2; tests write version 1 to check that it is still read).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let string = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        let section = |out: &mut Vec<u8>, s: &Section| {
            out.extend_from_slice(&s.offset.to_le_bytes());
            out.extend_from_slice(&s.len.to_le_bytes());
            out.extend_from_slice(&s.crc32.to_le_bytes());
        };
        if self.version == 1 {
            out.extend_from_slice(&(self.metadata.len() as u32).to_le_bytes());
            for (k, v) in &self.metadata {
                string(&mut out, k);
                string(&mut out, v);
            }
        } else {
            let source = self.source.unwrap_or_default();
            section(&mut out, &source.header);
            out.extend_from_slice(&source.len.to_le_bytes());
            out.extend_from_slice(&source.crc32.to_le_bytes());
        }
        out.extend_from_slice(&(self.tensors.len() as u32).to_le_bytes());
        for t in &self.tensors {
            string(&mut out, &t.name);
            string(&mut out, &t.dtype.to_string());
            if self.version != 1 {
                string(&mut out, &t.source_dtype.to_string());
            }
            out.push(t.shape.len() as u8);
            for &d in &t.shape {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            match &t.encoding {
                Encoding::Raw(s) => {
                    out.push(ENCODING_RAW);
                    section(&mut out, s);
                }
                Encoding::Tiles(tiles) => {
                    out.push(ENCODING_TILES);
                    out.push(tiles.base);
                    out.push(tiles.exception_table.len() as u8);
                    out.extend_from_slice(&tiles.exception_table);
                    for (_, s) in tiles.named() {
                        section(&mut out, s);
                    }
                }
            }
        }
        out
    }

    /// Parses and validates an index of container `version` whose sections
    /// must lie in `HEADER_LEN..index_offset` of a file of `file_len` bytes.
    pub fn parse(bytes: &[u8], version: u32, index_offset: u64, file_len: u64) -> Result<Self> {
        let mut r = Reader { bytes, pos: 0 };
        let bounds = Bounds {
            index_offset,
            file_len,
        };
        let mut index = Index {
            version,
            metadata: Vec::new(),
            source: None,
            tensors: Vec::new(),
        };
        if version == 1 {
            let mut keys = HashSet::new();
            for _ in 0..r.u32("metadata count")? {
                let key = r.string("metadata key")?;
                let value = r.string("metadata value")?;
                if !keys.insert(key.clone()) {
                    return corrupt(format!(
                        "metadata key `{}` appears twice",
                        key.escape_debug()
                    ));
                }
                index.metadata.push((key, value));
            }
        } else {
            let header = r.section("source header")?;
            bounds.check(&header, "source header")?;
            index.source = Some(Source {
                header,
                len: r.u64("source length")?,
                crc32: r.u32("source checksum")?,
            });
        }
        let mut names = HashSet::new();
        for _ in 0..r.u32("tensor count")? {
            let entry = parse_tensor(&mut r, version, &bounds)?;
            if !names.insert(entry.name.clone()) {
                return corrupt(format!(
                    "tensor `{}` appears twice",
                    entry.name.escape_debug()
                ));
            }
            index.tensors.push(entry);
        }
        if r.pos != bytes.len() {
            return corrupt(format!(
                "{} bytes after the last tensor",
                bytes.len() - r.pos
            ));
        }
        index.check_disjoint()?;
        Ok(index)
    }

    /// Every section, with what it belongs to, in index order.
    fn sections(&self) -> Vec<(String, Section)> {
        let mut all = Vec::new();
        if let Some(source) = &self.source {
            all.push(("source header".to_string(), source.header));
        }
        for t in &self.tensors {
            let name = t.name.escape_debug();
            match &t.encoding {
                Encoding::Raw(s) => all.push((format!("tensor `{name}` section data"), *s)),
                Encoding::Tiles(tiles) => {
                    for (what, s) in tiles.named() {
                        all.push((format!("tensor `{name}` section {what}"), *s));
                    }
                }
            }
        }
        all
    }

    /// No byte of the file belongs to two sections. (Empty sections hold no
    /// bytes and may sit anywhere.)
    fn check_disjoint(&self) -> Result<()> {
        let mut all = self.sections();
        all.retain(|(_, s)| s.len > 0);
        all.sort_by_key(|(_, s)| s.offset);
        for pair in all.windows(2) {
            let ((a_name, a), (b_name, b)) = (&pair[0], &pair[1]);
            // Bounds were checked, so offset + len cannot overflow.
            if b.offset < a.offset + a.len {
                return corrupt(format!(
                    "{b_name} (bytes {}..{}) overlaps {a_name} (bytes {}..{})",
                    b.offset,
                    b.offset + b.len,
                    a.offset,
                    a.offset + a.len
                ));
            }
        }
        Ok(())
    }
}

fn corrupt<T>(msg: String) -> Result<T> {
    Err(Error::Corrupt(format!("index: {msg}")))
}

/// Where sections may lie.
struct Bounds {
    index_offset: u64,
    file_len: u64,
}

fn parse_tensor(r: &mut Reader, version: u32, bounds: &Bounds) -> Result<TensorEntry> {
    let raw_name = r.string("tensor name")?;
    let dtype = r.dtype(&raw_name, "dtype")?;
    let source_dtype = if version == 1 {
        dtype
    } else {
        r.dtype(&raw_name, "source dtype")?
    };
    // For messages: names may hold control characters.
    let name = raw_name.escape_debug().to_string();
    let rank = r.u8("rank")? as usize;
    if rank > MAX_RANK {
        return corrupt(format!("tensor `{name}`: rank {rank} > {MAX_RANK}"));
    }
    let mut shape = Vec::with_capacity(rank);
    for _ in 0..rank {
        let dim = r.u64("dimension")?;
        let Ok(dim) = usize::try_from(dim) else {
            return corrupt(format!("tensor `{name}`: dimension {dim} too large"));
        };
        shape.push(dim);
    }
    let elements = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| element_bytes(dtype, n as u64).is_some());
    let Some(elements) = elements else {
        return corrupt(format!("tensor `{name}`: shape {shape:?} overflows"));
    };
    let section = |r: &mut Reader, what: &str| -> Result<Section> {
        let s = r.section("section")?;
        bounds.check(&s, &format!("tensor `{name}` section {what}"))?;
        Ok(s)
    };
    let encoding = match r.u8("encoding")? {
        ENCODING_RAW => {
            let data = section(r, "data")?;
            let want = element_bytes(dtype, elements as u64).unwrap();
            if data.len != want {
                return corrupt(format!(
                    "tensor `{name}`: {} data bytes, but {dtype} {shape:?} needs {want}",
                    data.len
                ));
            }
            Encoding::Raw(data)
        }
        ENCODING_TILES => {
            if dtype != Dtype::BF16 || rank != 2 || elements == 0 {
                return corrupt(format!(
                    "tensor `{name}`: tile encoding needs a non-empty 2-D BF16 tensor, \
                     not {dtype} {shape:?}"
                ));
            }
            let base = r.u8("window base")?;
            if base > MAX_BASE {
                return corrupt(format!("tensor `{name}`: window base {base} > {MAX_BASE}"));
            }
            let table_len = r.u8("exception table length")? as usize;
            if table_len > EXC_TABLE_LEN {
                return corrupt(format!(
                    "tensor `{name}`: exception table of {table_len} > {EXC_TABLE_LEN}"
                ));
            }
            let exception_table = r.take(table_len, "exception table")?.to_vec();
            let t = TileSections {
                base,
                exception_table,
                tiles: section(r, "tiles")?,
                exception_starts: section(r, "exception_starts")?,
                exceptions: section(r, "exceptions")?,
                far_starts: section(r, "far_starts")?,
                far_exponents: section(r, "far_exponents")?,
            };
            check_tile_sizes(&name, &shape, &t)?;
            Encoding::Tiles(t)
        }
        other => return corrupt(format!("tensor `{name}`: unknown encoding {other}")),
    };
    if source_dtype != dtype && !(dtype == Dtype::BF16 && is_castable(source_dtype)) {
        return corrupt(format!(
            "tensor `{name}`: stored as {dtype} from {source_dtype}, but only F16/F32/F64 are cast (to BF16)"
        ));
    }
    Ok(TensorEntry {
        name: raw_name,
        dtype,
        source_dtype,
        shape,
        encoding,
    })
}

/// The dtypes `--cast-bf16` rounds to BF16.
pub fn is_castable(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F16 | Dtype::F32 | Dtype::F64)
}

/// Section sizes that follow from the shape (the contents are checked by
/// `CompressedMatrix::from_parts` when the tensor is read).
fn check_tile_sizes(name: &str, shape: &[usize], t: &TileSections) -> Result<()> {
    let tiles = tile_count(shape[0], shape[1]).map(|n| n as u64);
    let want_tiles = tiles.and_then(|n| n.checked_mul(TILE_BYTES as u64));
    let want_starts = tiles.and_then(|n| n.checked_add(1)?.checked_mul(4));
    let (Some(want_tiles), Some(want_starts)) = (want_tiles, want_starts) else {
        return corrupt(format!("tensor `{name}`: shape {shape:?} overflows"));
    };
    for (what, section, want) in [
        ("tiles", &t.tiles, want_tiles),
        ("exception_starts", &t.exception_starts, want_starts),
        ("far_starts", &t.far_starts, want_starts),
    ] {
        if section.len != want {
            return corrupt(format!(
                "tensor `{name}`: section {what} is {} bytes, shape {shape:?} needs {want}",
                section.len
            ));
        }
    }
    if !t.exceptions.len.is_multiple_of(2) {
        return corrupt(format!(
            "tensor `{name}`: section exceptions has an odd length {}",
            t.exceptions.len
        ));
    }
    Ok(())
}

impl Bounds {
    fn check(&self, s: &Section, what: &str) -> Result<()> {
        if s.offset < HEADER_LEN as u64 || !s.offset.is_multiple_of(SECTION_ALIGN) {
            return corrupt(format!(
                "{what}: offset {} is not an aligned offset past the header",
                s.offset
            ));
        }
        let end = s.offset.checked_add(s.len);
        match end {
            Some(end) if end <= self.index_offset => Ok(()),
            Some(end) if end <= self.file_len => corrupt(format!(
                "{what}: bytes {}..{end} overlap the index",
                s.offset
            )),
            _ => Err(Error::Truncated {
                what: what.to_string(),
                start: s.offset,
                end: end.unwrap_or(u64::MAX),
                len: self.file_len,
            }),
        }
    }
}

/// Bounds-checked little-endian reads from the index bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return corrupt(format!(
                "{what} at index byte {} runs past the end of the index ({} bytes)",
                self.pos,
                self.bytes.len()
            ));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn section(&mut self, what: &str) -> Result<Section> {
        Ok(Section {
            offset: self.u64(&format!("{what} offset"))?,
            len: self.u64(&format!("{what} length"))?,
            crc32: self.u32(&format!("{what} checksum"))?,
        })
    }

    fn dtype(&mut self, tensor: &str, what: &str) -> Result<Dtype> {
        let name = self.string(what)?;
        dtype_from_name(&name).map_or_else(
            || {
                corrupt(format!(
                    "tensor `{}`: unknown {what} `{}`",
                    tensor.escape_debug(),
                    name.escape_debug()
                ))
            },
            Ok,
        )
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u32(what)? as usize;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => corrupt(format!("{what} is not UTF-8")),
        }
    }
}
