//! Streaming `.zsv` writer: sections tensor by tensor, then the safetensors
//! header that decompression writes, the index, and the header last.

use std::collections::HashSet;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use safetensors::Dtype;

use super::dtype::element_bytes;
use super::header::{HEADER_LEN, Header, SECTION_ALIGN};
use super::index::{
    Encoding, Index, MAX_RANK, Section, Source, TensorEntry, TileSections, is_castable,
};
use crate::codec::CompressedMatrix;
use crate::error::{Error, Result};

/// Writes a `.zsv` container to `out`; `path` names it in error messages.
/// Nothing is valid until [`ZsvWriter::finish`] has written the header.
pub struct ZsvWriter<W: Write + Seek> {
    out: W,
    path: PathBuf,
    pos: u64,
    index: Index,
    names: HashSet<String>,
}

impl<W: Write + Seek> ZsvWriter<W> {
    pub fn new(mut out: W, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        // A zero header until `finish`: a file cut short never passes as valid.
        out.write_all(&[0u8; HEADER_LEN])
            .map_err(Error::io(&path))?;
        Ok(Self {
            out,
            path,
            pos: HEADER_LEN as u64,
            index: Index::default(),
            names: HashSet::new(),
        })
    }

    /// Stores a tensor's bytes as they are (safetensors layout). `source`
    /// is its dtype in the compressed file: `dtype`, or F16/F32/F64 for a
    /// tensor rounded to BF16.
    pub fn add_raw(
        &mut self,
        name: &str,
        dtype: Dtype,
        source: Dtype,
        shape: &[usize],
        data: &[u8],
    ) -> Result<()> {
        self.check_name(name)?;
        check_source(name, dtype, source)?;
        if shape.len() > MAX_RANK {
            return Err(Error::Unsupported(format!(
                "tensor `{name}`: rank {} > {MAX_RANK}",
                shape.len()
            )));
        }
        let elements = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
        let want = elements.and_then(|n| element_bytes(dtype, n));
        if want != Some(data.len() as u64) {
            return Err(Error::Unsupported(format!(
                "tensor `{name}`: {} bytes do not match {dtype} {shape:?}",
                data.len()
            )));
        }
        let data = self.section(data)?;
        self.push(name, dtype, source, shape, Encoding::Raw(data));
        Ok(())
    }

    /// Stores a compressed BF16 matrix (`source`: as for [`Self::add_raw`]).
    pub fn add_matrix(
        &mut self,
        name: &str,
        source: Dtype,
        matrix: &CompressedMatrix,
    ) -> Result<()> {
        self.check_name(name)?;
        check_source(name, Dtype::BF16, source)?;
        let p = matrix.parts();
        let tiles = TileSections {
            base: p.base,
            exception_table: p.exception_table.clone(),
            tiles: self.section(&p.tiles)?,
            exception_starts: self.section(&le_bytes_u32(&p.exception_starts))?,
            exceptions: self.section(&le_bytes_u16(&p.exceptions))?,
            far_starts: self.section(&le_bytes_u32(&p.far_starts))?,
            far_exponents: self.section(&p.far_exponents)?,
        };
        self.push(
            name,
            Dtype::BF16,
            source,
            &[p.rows, p.cols],
            Encoding::Tiles(tiles),
        );
        Ok(())
    }

    /// Writes the header JSON of the safetensors file that decompression is
    /// to give back (`source_header`, listing the added tensors in the order
    /// they were added), that file's length and CRC-32, the index and the
    /// header; returns the output and the container's size.
    pub fn finish(
        mut self,
        source_header: &[u8],
        source_len: u64,
        source_crc32: u32,
    ) -> Result<(W, u64)> {
        let header = self.section(source_header)?;
        self.index.source = Some(Source {
            header,
            len: source_len,
            crc32: source_crc32,
        });
        let index = self.index.to_bytes();
        let index_section = self.section(&index)?;
        let header = Header {
            version: self.index.version,
            index_offset: index_section.offset,
            index_len: index_section.len,
            index_crc: index_section.crc32,
        };
        let io = Error::io(&self.path);
        let result = (|| {
            self.out.seek(SeekFrom::Start(0))?;
            self.out.write_all(&header.to_bytes())?;
            self.out.flush()
        })();
        result.map_err(io)?;
        Ok((self.out, self.pos))
    }

    fn check_name(&self, name: &str) -> Result<()> {
        if self.names.contains(name) {
            return Err(Error::Unsupported(format!("tensor `{name}` added twice")));
        }
        Ok(())
    }

    fn push(
        &mut self,
        name: &str,
        dtype: Dtype,
        source: Dtype,
        shape: &[usize],
        encoding: Encoding,
    ) {
        self.names.insert(name.to_owned());
        self.index.tensors.push(TensorEntry {
            name: name.to_owned(),
            dtype,
            source_dtype: source,
            shape: shape.to_vec(),
            encoding,
        });
    }

    /// Pads to the next aligned offset and writes `data` as one section.
    fn section(&mut self, data: &[u8]) -> Result<Section> {
        let offset = self.pos.next_multiple_of(SECTION_ALIGN);
        let pad = [0u8; SECTION_ALIGN as usize];
        let pad = &pad[..(offset - self.pos) as usize];
        let result = self
            .out
            .write_all(pad)
            .and_then(|()| self.out.write_all(data));
        result.map_err(Error::io(&self.path))?;
        self.pos = offset + data.len() as u64;
        Ok(Section {
            offset,
            len: data.len() as u64,
            crc32: crc32fast::hash(data),
        })
    }
}

fn check_source(name: &str, dtype: Dtype, source: Dtype) -> Result<()> {
    if source == dtype || (dtype == Dtype::BF16 && is_castable(source)) {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "tensor `{}`: {source} cannot be stored as {dtype}",
            name.escape_debug()
        )))
    }
}

fn le_bytes_u32(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn le_bytes_u16(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
