//! The safetensors header: parsed with every size checked, and written.
//!
//! A safetensors file is `u64 LE n`, `n` bytes of JSON, then the tensor
//! data. The JSON maps each tensor name to `{"dtype", "shape",
//! "data_offsets": [begin, end]}` (offsets into the data) and may hold a
//! `"__metadata__"` object of string values. We keep the header's bytes as
//! they are (so decompression can give them back byte for byte) and check,
//! before anything is read: the length is under [`MAX_HEADER_LEN`]; each
//! tensor's byte range matches its dtype and shape; the ranges tile the data
//! exactly, with no gap, no overlap and nothing after them (so the file is
//! exactly header + tensors, and nothing in it is left out of the
//! round trip); no name appears twice.

use std::fmt;

use safetensors::Dtype;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::container::{MAX_RANK, dtype_from_name, element_bytes};
use crate::error::{Error, Result};

/// Longest JSON header accepted (the safetensors crate's own limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Bytes of the length prefix.
pub const PREFIX_LEN: u64 = 8;

/// One tensor of the header, its offsets relative to the start of the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub begin: u64,
    pub end: u64,
}

impl TensorInfo {
    pub fn len(&self) -> u64 {
        self.end - self.begin
    }

    pub fn is_empty(&self) -> bool {
        self.begin == self.end
    }

    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed and validated header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// `__metadata__`, in the order the JSON lists it.
    pub metadata: Vec<(String, String)>,
    /// Tensors in data order (by `begin`).
    pub tensors: Vec<TensorInfo>,
}

impl Header {
    /// Bytes of tensor data the header describes.
    pub fn data_len(&self) -> u64 {
        self.tensors.last().map_or(0, |t| t.end)
    }

    /// Parses the JSON of a header whose file has `data_len` bytes after it
    /// (`None`: unknown, e.g. a header stored on its own; then the tensors
    /// must still tile `0..` their last end).
    pub fn parse(json: &[u8], data_len: Option<u64>) -> Result<Self> {
        let text = std::str::from_utf8(json).map_err(|_| invalid("the header is not UTF-8"))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let entries = de
            .deserialize_map(EntriesVisitor)
            .and_then(|e| de.end().map(|()| e))
            .map_err(|e| invalid(format!("the header is not valid JSON: {e}")))?;
        let mut header = Header::default();
        let mut seen_metadata = false;
        for (name, value) in entries {
            if name == "__metadata__" {
                if seen_metadata {
                    return Err(invalid("`__metadata__` appears twice"));
                }
                seen_metadata = true;
                header.metadata = parse_metadata(value)?;
            } else {
                header.tensors.push(parse_tensor(name, value)?);
            }
        }
        check_names(&header.tensors)?;
        header.tensors.sort_by_key(|t| (t.begin, t.end));
        check_tiling(&header.tensors, data_len)?;
        Ok(header)
    }

    /// The header as safetensors writes it: `__metadata__` first (if any),
    /// then the tensors in data order, padded with spaces to a multiple of 8
    /// bytes. Used where no original header bytes exist (tensors cast to
    /// BF16, files from container version 1); deterministic.
    pub fn to_json(&self) -> Vec<u8> {
        let quote = |s: &str| serde_json::to_string(s).expect("strings serialize");
        let mut parts = Vec::new();
        if !self.metadata.is_empty() {
            let fields: Vec<String> = self
                .metadata
                .iter()
                .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
                .collect();
            parts.push(format!("\"__metadata__\":{{{}}}", fields.join(",")));
        }
        for t in &self.tensors {
            let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
            parts.push(format!(
                "{}:{{\"dtype\":{},\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                quote(&t.name),
                quote(&t.dtype.to_string()),
                shape.join(","),
                t.begin,
                t.end
            ));
        }
        let mut json = format!("{{{}}}", parts.join(",")).into_bytes();
        let padded = json.len().next_multiple_of(PREFIX_LEN as usize);
        json.resize(padded, b' ');
        json
    }
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidSafetensors {
        reason: reason.into(),
    }
}

fn parse_metadata(value: serde_json::Value) -> Result<Vec<(String, String)>> {
    // A JSON object arrives here as serde_json's map, which loses order and
    // duplicates; metadata order only matters for headers we write
    // ourselves, and those list it in this (sorted) order.
    let serde_json::Value::Object(map) = value else {
        return Err(invalid("`__metadata__` is not an object"));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            _ => Err(invalid(format!(
                "`__metadata__` value of `{k}` is not a string"
            ))),
        })
        .collect()
}

fn parse_tensor(name: String, value: serde_json::Value) -> Result<TensorInfo> {
    let bad = |what: &str| invalid(format!("tensor `{}`: {what}", name.escape_debug()));
    let serde_json::Value::Object(fields) = value else {
        return Err(bad("its entry is not an object"));
    };
    let dtype = match fields.get("dtype") {
        Some(serde_json::Value::String(s)) => dtype_from_name(s)
            .ok_or_else(|| bad(&format!("unknown dtype `{}`", s.escape_debug())))?,
        _ => return Err(bad("no string `dtype`")),
    };
    let Some(serde_json::Value::Array(dims)) = fields.get("shape") else {
        return Err(bad("no `shape` array"));
    };
    if dims.len() > MAX_RANK {
        return Err(bad(&format!("rank {} > {MAX_RANK}", dims.len())));
    }
    let shape = dims
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| bad("`shape` holds something other than sizes"))?;
    let offsets = match fields.get("data_offsets") {
        Some(serde_json::Value::Array(o)) if o.len() == 2 => o[0].as_u64().zip(o[1].as_u64()),
        _ => None,
    };
    let Some((begin, end)) = offsets else {
        return Err(bad("`data_offsets` is not two offsets"));
    };
    let elements = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
    let want = elements.and_then(|n| element_bytes(dtype, n));
    let Some(want) = want else {
        return Err(bad(&format!("shape {shape:?} of {dtype} overflows")));
    };
    if end < begin || end - begin != want {
        return Err(bad(&format!(
            "data_offsets [{begin}, {end}] hold {} bytes, but {dtype} {shape:?} needs {want}",
            end.wrapping_sub(begin)
        )));
    }
    Ok(TensorInfo {
        name,
        dtype,
        shape,
        begin,
        end,
    })
}

fn check_names(tensors: &[TensorInfo]) -> Result<()> {
    let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    match names.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(invalid(format!(
            "tensor `{}` appears twice",
            w[0].escape_debug()
        ))),
        None => Ok(()),
    }
}

/// The sorted ranges must follow each other from 0 without gap or overlap,
/// and end where the file's data ends.
fn check_tiling(tensors: &[TensorInfo], data_len: Option<u64>) -> Result<()> {
    let mut at = 0u64;
    for t in tensors {
        if t.begin != at {
            let what = if t.begin < at {
                "overlaps"
            } else {
                "leaves a gap before"
            };
            return Err(invalid(format!(
                "tensor `{}` at data bytes {}..{} {what} the previous tensor (which ends at {at})",
                t.name.escape_debug(),
                t.begin,
                t.end
            )));
        }
        at = t.end;
    }
    match data_len {
        Some(len) if len != at => Err(invalid(format!(
            "the tensors cover {at} bytes of data, but the file has {len} after its header"
        ))),
        _ => Ok(()),
    }
}

/// Collects a JSON object's entries in order, keeping duplicates (serde's
/// maps would silently keep the last).
struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Vec<(String, serde_json::Value)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
            entries.push((k, v));
        }
        Ok(entries)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom("the header is null, not an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str, data_len: u64) -> Result<Header> {
        Header::parse(json.as_bytes(), Some(data_len))
    }

    #[test]
    fn tensors_come_back_in_data_order_and_round_trip() {
        let json = r#"{"b":{"dtype":"BF16","shape":[2,3],"data_offsets":[4,16]},
            "__metadata__":{"format":"pt"},
            "a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let h = parse(json, 16).unwrap();
        let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(h.metadata, [("format".to_string(), "pt".to_string())]);
        let again = Header::parse(&h.to_json(), Some(16)).unwrap();
        assert_eq!(again, h);
        assert_eq!(h.to_json().len() % 8, 0);
    }

    #[test]
    fn every_inconsistency_is_refused() {
        let t = |offsets: &str, shape: &str, dtype: &str| {
            format!(r#"{{"t":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}"#)
        };
        let cases = [
            (t("[0,8]", "[2]", "F32"), 8, None),
            (t("[0,4]", "[2]", "F32"), 4, Some("needs 8")),
            (t("[4,12]", "[2]", "F32"), 12, Some("gap")),
            (t("[0,8]", "[2]", "F32"), 9, Some("the file has 9")),
            (t("[8,0]", "[2]", "F32"), 8, Some("hold")),
            (t("[0,8]", "[2]", "Q4"), 8, Some("unknown dtype")),
            (t("[0,8]", "[-2]", "F32"), 8, Some("shape")),
            (
                t("[0,8]", "[18446744073709551615,2]", "F32"),
                8,
                Some("overflows"),
            ),
            (t("[0]", "[2]", "F32"), 8, Some("two offsets")),
            ("[]".to_string(), 0, Some("JSON")),
            ("{".to_string(), 0, Some("JSON")),
            ("{} x".to_string(), 0, Some("JSON")),
            (r#"{"a":1}"#.to_string(), 0, Some("not an object")),
            (
                r#"{"__metadata__":{"k":1}}"#.to_string(),
                0,
                Some("not a string"),
            ),
        ];
        for (json, len, want) in cases {
            let got = parse(&json, len);
            match want {
                None => assert!(got.is_ok(), "{json}: {got:?}"),
                Some(w) => {
                    let e = got.expect_err(&json).to_string();
                    assert!(e.contains(w), "{json}: {e}");
                }
            }
        }
    }

    #[test]
    fn duplicates_and_overlaps_are_refused() {
        let dup = r#"{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},
                      "t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
        assert!(parse(dup, 2).unwrap_err().to_string().contains("twice"));
        let overlap = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},
                          "b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#;
        assert!(
            parse(overlap, 3)
                .unwrap_err()
                .to_string()
                .contains("overlaps")
        );
        let meta2 = r#"{"__metadata__":{},"__metadata__":{}}"#;
        assert!(parse(meta2, 0).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn names_with_control_characters_survive() {
        let h = Header {
            metadata: vec![("k\"\n".into(), "v\u{1}".into())],
            tensors: vec![TensorInfo {
                name: "a\tb\u{7f}".into(),
                dtype: Dtype::U8,
                shape: vec![3],
                begin: 0,
                end: 3,
            }],
        };
        assert_eq!(Header::parse(&h.to_json(), Some(3)).unwrap(), h);
    }
}
