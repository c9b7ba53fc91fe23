//! What to measure: GEMM shapes and batch sizes.

/// One benchmark case: `Y[N×M] = X[N×K] · W[M×K]ᵀ`, with the kernel's
/// split-K factor (1 for paths that have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub split_k: usize,
}

/// A weight matrix of a model layer, `M×K` (output × input features).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    pub name: &'static str,
    pub m: usize,
    pub k: usize,
}

/// The linear layers of Llama-3-8B with the usual fusions (q, k and v in
/// one matrix; gate and up in one).
pub const LLAMA3_8B_LAYERS: [Layer; 4] = [
    Layer {
        name: "qkv_proj",
        m: 6144,
        k: 4096,
    },
    Layer {
        name: "o_proj",
        m: 4096,
        k: 4096,
    },
    Layer {
        name: "gate_up_proj",
        m: 28672,
        k: 4096,
    },
    Layer {
        name: "down_proj",
        m: 4096,
        k: 14336,
    },
];

/// Batch sizes of decode (one token per sequence, up to 256 sequences):
/// the default of `zipserv bench --weights`.
pub const DECODE_N: [usize; 7] = [1, 8, 16, 32, 64, 128, 256];

/// Prefill chunks, where the product is bound by compute, not by reading
/// W: where decompress + cuBLAS is meant to take over.
pub const PREFILL_N: [usize; 2] = [512, 2048];

/// Tokens per batch swept for each layer: [`DECODE_N`], then [`PREFILL_N`].
pub const SWEEP_N: [usize; 9] = [1, 8, 16, 32, 64, 128, 256, 512, 2048];

/// Every [`LLAMA3_8B_LAYERS`] shape at every [`SWEEP_N`], layer by layer.
pub fn llama3_8b_sweep(split_k: usize) -> Vec<Case> {
    LLAMA3_8B_LAYERS
        .iter()
        .flat_map(|layer| {
            SWEEP_N.iter().map(move |&n| Case {
                m: layer.m,
                k: layer.k,
                n,
                split_k,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_covers_every_layer_and_batch() {
        assert_eq!(SWEEP_N[..], [&DECODE_N[..], &PREFILL_N[..]].concat());
        let cases = llama3_8b_sweep(1);
        assert_eq!(cases.len(), 36);
        assert_eq!(
            cases[0],
            Case {
                m: 6144,
                k: 4096,
                n: 1,
                split_k: 1
            }
        );
        assert_eq!(cases[35].m, 4096);
        assert_eq!(cases[35].k, 14336);
        assert_eq!(cases[35].n, 2048);
        assert_eq!(cases[8].n, 2048);
        assert_eq!(cases[9].n, 1);
        assert!(cases.iter().all(|c| c.split_k == 1));
    }
}
