//! The tensors a config needs, by their Hugging Face names, with shapes: the
//! load is checked against this list before anything reaches the GPU.

use crate::config::ModelConfig;

/// What a tensor is for, which decides how it is stored on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A matrix of a linear layer (`out × in`), compressed in compressed runs.
    Matrix,
    /// The token embedding (`vocab × hidden`): compressed in compressed runs
    /// too (rows are decoded straight from the tiles), and the LM head's
    /// matrix when the embeddings are tied.
    Embedding,
    /// A norm weight (1-D), always BF16.
    Vector,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: Kind,
}

/// The linear layers of one block, in the order a forward pass uses them.
pub const LAYER_MATRICES: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

pub const EMBEDDING: &str = "model.embed_tokens.weight";
pub const FINAL_NORM: &str = "model.norm.weight";
pub const LM_HEAD: &str = "lm_head.weight";

/// Name of a block's tensor: `model.layers.{layer}.{part}.weight`.
pub fn layer_tensor(layer: usize, part: &str) -> String {
    format!("model.layers.{layer}.{part}.weight")
}

/// Names of every tensor of block `layer`, as [`tensors`] lists them.
pub fn layer_tensor_names(layer: usize) -> Vec<String> {
    ["input_layernorm", "post_attention_layernorm"]
        .into_iter()
        .chain(LAYER_MATRICES)
        .map(|part| layer_tensor(layer, part))
        .collect()
}

/// Shape (`out × in`) of a block's matrix.
pub fn matrix_shape(config: &ModelConfig, part: &str) -> [usize; 2] {
    let (h, i) = (config.hidden, config.intermediate);
    match part {
        "self_attn.q_proj" => [config.q_dim(), h],
        "self_attn.k_proj" | "self_attn.v_proj" => [config.kv_dim(), h],
        "self_attn.o_proj" => [h, config.q_dim()],
        "mlp.gate_proj" | "mlp.up_proj" => [i, h],
        "mlp.down_proj" => [h, i],
        other => unreachable!("not a layer matrix: {other}"),
    }
}

/// Every tensor of the model, embedding first, then the blocks in order,
/// then the final norm and (unless tied) the LM head.
pub fn tensors(config: &ModelConfig) -> Vec<TensorSpec> {
    let mut out = vec![TensorSpec {
        name: EMBEDDING.into(),
        shape: vec![config.vocab, config.hidden],
        kind: Kind::Embedding,
    }];
    let vector = |name: String| TensorSpec {
        name,
        shape: vec![config.hidden],
        kind: Kind::Vector,
    };
    for layer in 0..config.layers {
        out.push(vector(layer_tensor(layer, "input_layernorm")));
        out.push(vector(layer_tensor(layer, "post_attention_layernorm")));
        for part in LAYER_MATRICES {
            out.push(TensorSpec {
                name: layer_tensor(layer, part),
                shape: matrix_shape(config, part).to_vec(),
                kind: Kind::Matrix,
            });
        }
    }
    out.push(vector(FINAL_NORM.into()));
    if !config.tie_word_embeddings {
        out.push(TensorSpec {
            name: LM_HEAD.into(),
            shape: vec![config.vocab, config.hidden],
            kind: Kind::Matrix,
        });
    }
    out
}

/// BF16 bytes of all the model's weights.
pub fn bf16_bytes(config: &ModelConfig) -> u64 {
    tensors(config)
        .iter()
        .map(|t| 2 * t.shape.iter().product::<usize>() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn llama3_8b() -> ModelConfig {
        ModelConfig::from_json(
            br#"{"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
            "num_key_value_heads": 8, "num_hidden_layers": 32, "vocab_size": 128256}"#,
            Path::new("c.json"),
        )
        .unwrap()
    }

    #[test]
    fn llama3_8b_has_its_parameter_count() {
        let c = llama3_8b();
        let t = tensors(&c);
        assert_eq!(t.len(), 1 + 32 * 9 + 2);
        let params: usize = t.iter().map(|t| t.shape.iter().product::<usize>()).sum();
        // Llama-3-8B: 8,030,261,248 parameters.
        assert_eq!(params, 8_030_261_248);
        assert_eq!(bf16_bytes(&c), 2 * 8_030_261_248);
        let k = t
            .iter()
            .find(|t| t.name == "model.layers.3.self_attn.k_proj.weight")
            .unwrap();
        assert_eq!(
            (k.shape.as_slice(), k.kind),
            (&[1024, 4096][..], Kind::Matrix)
        );
    }

    #[test]
    fn tied_models_have_no_lm_head() {
        let mut c = llama3_8b();
        c.tie_word_embeddings = true;
        assert!(tensors(&c).iter().all(|t| t.name != LM_HEAD));
        assert_eq!(tensors(&c)[0].kind, Kind::Embedding);
    }
}
