//! Building small safetensors files for tests.

use std::collections::HashMap;
use std::path::Path;

use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// One tensor to write: name, dtype, shape and little-endian bytes.
pub struct Tensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Tensor {
    pub fn new(name: &str, dtype: Dtype, shape: &[usize], data: Vec<u8>) -> Self {
        Self {
            name: name.to_owned(),
            dtype,
            shape: shape.to_vec(),
            data,
        }
    }

    pub fn bf16(name: &str, shape: &[usize], bits: &[u16]) -> Self {
        let data = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        Self::new(name, Dtype::BF16, shape, data)
    }

    pub fn f32(name: &str, shape: &[usize], values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::new(name, Dtype::F32, shape, data)
    }
}

/// Writes `tensors` (and `metadata`) as a safetensors file.
pub fn write(path: &Path, tensors: &[Tensor], metadata: Option<HashMap<String, String>>) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            let view = TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap();
            (t.name.as_str(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, metadata, path).unwrap();
}

/// Every tensor of a safetensors file: name → (dtype, shape, bytes).
pub fn read(path: &Path) -> HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.iter()
        .map(|(name, v)| {
            let entry = (v.dtype(), v.shape().to_vec(), v.data().to_vec());
            (name.to_owned(), entry)
        })
        .collect()
}

/// The `__metadata__` of a safetensors file.
pub fn metadata(path: &Path) -> Option<HashMap<String, String>> {
    let bytes = std::fs::read(path).unwrap();
    let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    m.metadata().clone()
}
