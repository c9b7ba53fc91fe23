//! A Llama-family `config.json`: the fields the engine needs, checked.
//!
//! Both spellings of the rotary settings are read: `rope_theta` with an
//! optional `rope_scaling` (transformers 4), and a `rope_parameters` object
//! holding `rope_theta` and `rope_type` (transformers 5).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use zipserv_kernels::engine::attention::ATTN_MAX_HEAD_DIM;

/// How rotary frequencies are scaled for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain `θ^(-2i/d)`.
    None,
    /// Every frequency divided by `factor`.
    Linear { factor: f32 },
    /// Llama 3's: low frequencies divided by `factor`, high ones kept, a
    /// smooth blend between (transformers' `rope_type: "llama3"`).
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

/// The checked model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub layers: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub max_position_embeddings: Option<usize>,
}

/// The raw JSON, every field optional so that missing ones get a clear
/// message instead of serde's.
#[derive(Deserialize, Default)]
struct Raw {
    model_type: Option<String>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    num_hidden_layers: Option<usize>,
    vocab_size: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    #[serde(default)]
    tie_word_embeddings: bool,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
}

impl ModelConfig {
    /// Reads and checks `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&bytes, path)
    }

    /// Parses and checks the bytes of a `config.json` (`path` names it in
    /// errors).
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Config {
            path: path.to_path_buf(),
            reason,
        };
        let raw: Raw =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a model config: {e}")))?;
        if let Some(t) = &raw.model_type
            && t != "llama"
        {
            return Err(bad(format!(
                "model_type `{t}`: only the Llama architecture (`llama`) is supported"
            )));
        }
        if let Some(act) = &raw.hidden_act
            && act != "silu"
        {
            return Err(bad(format!("hidden_act `{act}`: only `silu` is supported")));
        }
        if raw.attention_bias || raw.mlp_bias {
            return Err(bad("attention or MLP biases are not supported".into()));
        }
        let need = |v: Option<usize>, name: &str| -> Result<usize> {
            match v {
                Some(n) if n > 0 => Ok(n),
                Some(_) => Err(bad(format!("`{name}` must be at least 1"))),
                None => Err(bad(format!("`{name}` is missing"))),
            }
        };
        let hidden = need(raw.hidden_size, "hidden_size")?;
        let heads = need(raw.num_attention_heads, "num_attention_heads")?;
        let kv_heads = need(
            raw.num_key_value_heads.or(raw.num_attention_heads),
            "num_key_value_heads",
        )?;
        if !heads.is_multiple_of(kv_heads) {
            return Err(bad(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )));
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if hidden.is_multiple_of(heads) => hidden / heads,
            None => {
                return Err(bad(format!(
                    "hidden_size {hidden} is not a multiple of num_attention_heads {heads}, and head_dim is missing"
                )));
            }
        };
        if head_dim == 0 || !head_dim.is_multiple_of(32) || head_dim > ATTN_MAX_HEAD_DIM as usize {
            return Err(Error::Unsupported(format!(
                "{}: head_dim {head_dim}: the attention kernel takes multiples of 32 up to {ATTN_MAX_HEAD_DIM}",
                path.display()
            )));
        }
        let rms_eps = raw.rms_norm_eps.unwrap_or(1e-6);
        if !(rms_eps > 0.0 && rms_eps.is_finite()) {
            return Err(bad(format!("rms_norm_eps {rms_eps} must be positive")));
        }
        let (rope_theta, rope_scaling) = rope(&raw, path)?;
        let config = Self {
            hidden,
            intermediate: need(raw.intermediate_size, "intermediate_size")?,
            heads,
            kv_heads,
            head_dim,
            layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            vocab: need(raw.vocab_size, "vocab_size")?,
            rms_eps: rms_eps as f32,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings,
            bos_token_id: token_ids(raw.bos_token_id.as_ref(), "bos_token_id", path)?
                .first()
                .copied(),
            eos_token_ids: token_ids(raw.eos_token_id.as_ref(), "eos_token_id", path)?,
            max_position_embeddings: raw.max_position_embeddings,
        };
        for id in config.eos_token_ids.iter().chain(&config.bos_token_id) {
            if *id as usize >= config.vocab {
                return Err(bad(format!(
                    "special token id {id} is outside the vocabulary"
                )));
            }
        }
        // Kernel indices are 32-bit: a row of logits and the embedding's
        // element count must fit.
        if u32::try_from(config.vocab * config.hidden.max(config.intermediate)).is_err() {
            return Err(Error::Unsupported(format!(
                "{}: vocab {} x hidden {} exceeds 32-bit kernel indexing",
                path.display(),
                config.vocab,
                config.hidden
            )));
        }
        Ok(config)
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// The config of a directory (its `config.json`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("config.json"))
    }
}

/// `rope_theta` and the scaling, from either spelling.
fn rope(raw: &Raw, path: &Path) -> Result<(f32, RopeScaling)> {
    let bad = |reason: String| Error::Config {
        path: PathBuf::from(path),
        reason,
    };
    let params = raw
        .rope_parameters
        .as_ref()
        .or(raw.rope_scaling.as_ref())
        .filter(|v| !v.is_null());
    let theta = raw
        .rope_theta
        .or_else(|| {
            params
                .and_then(|p| p.get("rope_theta"))
                .and_then(Value::as_f64)
        })
        .unwrap_or(10000.0);
    if !(theta > 0.0 && theta.is_finite()) {
        return Err(bad(format!("rope_theta {theta} must be positive")));
    }
    let Some(p) = params else {
        return Ok((theta as f32, RopeScaling::None));
    };
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let number = |name: &str| -> Result<f32> {
        match p.get(name).and_then(Value::as_f64) {
            Some(v) if v > 0.0 && v.is_finite() => Ok(v as f32),
            Some(v) => Err(bad(format!("rope scaling `{name}` {v} must be positive"))),
            None => Err(bad(format!("rope scaling of type `{kind}` lacks `{name}`"))),
        }
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: number("factor")?,
        },
        "llama3" => {
            let s = RopeScaling::Llama3 {
                factor: number("factor")?,
                low_freq_factor: number("low_freq_factor")?,
                high_freq_factor: number("high_freq_factor")?,
                original_max_position_embeddings: number("original_max_position_embeddings")?,
            };
            if let RopeScaling::Llama3 {
                low_freq_factor,
                high_freq_factor,
                ..
            } = s
                && high_freq_factor <= low_freq_factor
            {
                return Err(bad(format!(
                    "llama3 rope scaling: high_freq_factor {high_freq_factor} must exceed low_freq_factor {low_freq_factor}"
                )));
            }
            s
        }
        other => {
            return Err(Error::Unsupported(format!(
                "{}: rope scaling `{other}` (supported: default, linear, llama3)",
                path.display()
            )));
        }
    };
    Ok((theta as f32, scaling))
}

/// A token id field: absent/null, one integer, or a list of integers.
fn token_ids(v: Option<&Value>, name: &str, path: &Path) -> Result<Vec<u32>> {
    let one = |v: &Value| -> Result<u32> {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Error::Config {
                path: path.to_path_buf(),
                reason: format!("`{name}` holds {v}, not a token id"),
            })
    };
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ModelConfig> {
        ModelConfig::from_json(json.as_bytes(), Path::new("config.json"))
    }

    const SMOLLM2: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9,
        "num_key_value_heads": 3, "num_hidden_layers": 30, "vocab_size": 49152,
        "rms_norm_eps": 1e-05, "rope_theta": 100000, "rope_scaling": null,
        "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "max_position_embeddings": 8192, "torch_dtype": "bfloat16"}"#;

    #[test]
    fn smollm2_config() {
        let c = parse(SMOLLM2).unwrap();
        assert_eq!(
            (c.hidden, c.intermediate, c.heads, c.kv_heads),
            (576, 1536, 9, 3)
        );
        assert_eq!((c.head_dim, c.layers, c.vocab), (64, 30, 49152));
        assert_eq!((c.q_dim(), c.kv_dim()), (576, 192));
        assert_eq!(c.rope_theta, 100000.0);
        assert_eq!(c.rope_scaling, RopeScaling::None);
        assert!(c.tie_word_embeddings);
        assert_eq!(
            (c.bos_token_id, c.eos_token_ids.clone()),
            (Some(1), vec![2])
        );
        assert!((c.rms_eps - 1e-5).abs() < 1e-12);
    }

    #[test]
    fn llama3_config_with_scaling_and_eos_list() {
        let c = parse(
            r#"{"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
            "num_key_value_heads": 8, "num_hidden_layers": 32, "vocab_size": 128256,
            "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "bos_token_id": 128000,
            "eos_token_id": [128001, 128008, 128009],
            "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 8192, "rope_type": "llama3"}}"#,
        )
        .unwrap();
        assert_eq!(c.head_dim, 128);
        assert_eq!(c.eos_token_ids, [128001, 128008, 128009]);
        assert_eq!(
            c.rope_scaling,
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0
            }
        );
    }

    #[test]
    fn transformers_5_rope_parameters() {
        let c = parse(
            r#"{"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
            "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 1000,
            "rope_parameters": {"rope_theta": 31337.0, "rope_type": "default"}}"#,
        )
        .unwrap();
        assert_eq!((c.rope_theta, c.kv_heads), (31337.0, 2));
        assert_eq!(c.rope_scaling, RopeScaling::None);
        assert!(!c.tie_word_embeddings);
        assert_eq!(c.bos_token_id, None);
        // Without kv heads, every head is its own KV head.
        let c = parse(
            r#"{"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
            "num_hidden_layers": 2, "vocab_size": 1000}"#,
        )
        .unwrap();
        assert_eq!((c.kv_heads, c.rope_theta), (4, 10000.0));
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let base = r#""hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "vocab_size": 1000"#;
        let err = |extra: &str| {
            parse(&format!("{{{base}, {extra}}}"))
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#""num_attention_heads": 4, "num_key_value_heads": 3"#).contains("multiple"));
        assert!(err(r#""num_attention_heads": 16"#).contains("head_dim 16"));
        assert!(err(r#""num_attention_heads": 4, "model_type": "gpt2""#).contains("model_type"));
        assert!(err(r#""num_attention_heads": 4, "hidden_act": "gelu""#).contains("silu"));
        assert!(err(r#""num_attention_heads": 4, "rms_norm_eps": 0"#).contains("rms_norm_eps"));
        assert!(
            err(r#""num_attention_heads": 4, "rope_scaling": {"rope_type": "yarn", "factor": 2}"#)
                .contains("yarn")
        );
        assert!(
            err(
                r#""num_attention_heads": 4, "rope_scaling": {"rope_type": "llama3", "factor": 8}"#
            )
            .contains("low_freq_factor")
        );
        assert!(err(r#""num_attention_heads": 4, "eos_token_id": 5000"#).contains("outside"));
        assert!(err(r#""num_attention_heads": 4, "eos_token_id": "x""#).contains("not a token id"));
        assert!(
            parse(r#"{"hidden_size": 256}"#)
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
        assert!(
            parse("not json")
                .unwrap_err()
                .to_string()
                .contains("not a model config")
        );
    }
}
