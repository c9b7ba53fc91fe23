//! The KV cache: per layer, one BF16 buffer of keys and one of values,
//! `[sequence][kv_head][position][head_dim]` (see
//! [`zipserv_kernels::engine::rope::cache_offset`]), sized for the run.

use cust::memory::DeviceBuffer;
use half::bf16;

use crate::config::ModelConfig;
use crate::error::{CudaContext, Error, Result};

pub struct KvCache {
    pub k: Vec<DeviceBuffer<bf16>>,
    pub v: Vec<DeviceBuffer<bf16>>,
    pub sequences: usize,
    /// Positions per sequence.
    pub capacity: usize,
}

impl KvCache {
    /// Elements of one layer's K (or V) buffer.
    pub fn layer_elements(
        config: &ModelConfig,
        sequences: usize,
        capacity: usize,
    ) -> Option<usize> {
        sequences
            .checked_mul(config.kv_dim())?
            .checked_mul(capacity)
    }

    /// Bytes of the whole cache.
    pub fn bytes(config: &ModelConfig, sequences: usize, capacity: usize) -> Option<u64> {
        let per_layer = Self::layer_elements(config, sequences, capacity)? as u64;
        per_layer.checked_mul(2 * 2 * config.layers as u64)
    }

    /// A zeroed cache for `sequences` sequences of up to `capacity`
    /// positions each.
    pub fn new(config: &ModelConfig, sequences: usize, capacity: usize) -> Result<Self> {
        let elements = Self::layer_elements(config, sequences, capacity)
            .filter(|&e| u32::try_from(e).is_ok())
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "a KV cache of {sequences} sequences x {capacity} positions exceeds 32-bit indexing per layer"
                ))
            })?;
        let buffer = || DeviceBuffer::<bf16>::zeroed(elements).cuda("cuMemAlloc");
        let mut k = Vec::with_capacity(config.layers);
        let mut v = Vec::with_capacity(config.layers);
        for _ in 0..config.layers {
            k.push(buffer()?);
            v.push(buffer()?);
        }
        Ok(Self {
            k,
            v,
            sequences,
            capacity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn llama3_8b_cache_is_128_kib_per_token() {
        let c = ModelConfig::from_json(
            br#"{"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
            "num_key_value_heads": 8, "num_hidden_layers": 32, "vocab_size": 128256}"#,
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(KvCache::bytes(&c, 1, 1), Some(128 * 1024));
        assert_eq!(KvCache::bytes(&c, 64, 640), Some(64 * 640 * 128 * 1024));
        assert_eq!(KvCache::layer_elements(&c, usize::MAX, 2), None);
    }
}
