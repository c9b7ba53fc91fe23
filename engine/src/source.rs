//! Where the weights come from, one tensor at a time, so that no model has
//! to exist whole in host memory:
//! - a Hugging Face directory: `config.json` and BF16 safetensors, one file
//!   or shards listed in `model.safetensors.index.json`;
//! - its compressed form made by `zipserv compress DIR -o OUT`: a directory
//!   with `zipserv-manifest.json` and `.zsv` files, whose matrices come out
//!   as compressed matrices (never decoded on the host);
//! - random weights for a config (`--random-weights`), each matrix drawn
//!   with trained-weight exponent statistics (`synth::trained_like`), norms
//!   1, so a 70B-shaped model is made tensor by tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::Dtype;
use serde::Deserialize;
use zipserv_format::CompressedMatrix;
use zipserv_format::container::{Encoding, ZsvFile};
use zipserv_format::convert::manifest::{self, FileKind, MANIFEST_NAME, Manifest};
use zipserv_format::st::{SafetensorsFile, TensorInfo};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::plan::{Kind, TensorSpec};

/// One tensor as the source holds it.
pub enum HostTensor {
    Bf16(Vec<bf16>),
    Compressed(CompressedMatrix),
}

/// What every weight source offers.
pub trait TensorSource {
    /// Names the model in messages.
    fn label(&self) -> String;
    fn config(&self) -> &ModelConfig;
    /// The tensor's shape, if the source holds it.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The tensor, in the form the source holds it (checked by the caller
    /// against `spec` with [`TensorSource::shape`] first).
    fn load(&self, spec: &TensorSpec) -> Result<HostTensor>;
    /// `tokenizer.json`, when the model has one.
    fn tokenizer(&self) -> Option<PathBuf>;
    /// An earlier block whose tensors block `layer` repeats exactly, if the
    /// source repeats blocks ([`RandomWeights::repeating_layers`]): the
    /// loader then prepares that block once and uploads it again.
    fn repeats_layer(&self, _layer: usize) -> Option<usize> {
        None
    }
}

/// A weight source chosen by [`Source::open`] or [`Source::random`].
pub enum Source {
    Hf(HfDir),
    Compressed(CompressedDir),
    Random(RandomWeights),
}

impl Source {
    /// A model directory: compressed when it holds `zipserv-manifest.json`,
    /// else a Hugging Face directory.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: not a model directory (a Hugging Face directory or one made by `zipserv compress`)",
                path.display()
            )));
        }
        if path.join(MANIFEST_NAME).exists() {
            CompressedDir::open(path).map(Self::Compressed)
        } else {
            HfDir::open(path).map(Self::Hf)
        }
    }

    /// Random weights for the config at `config_path`, from `seed`; with
    /// `repeat`, every block a copy of block 0
    /// ([`RandomWeights::repeating_layers`]).
    pub fn random(config_path: &Path, seed: u64, repeat: bool) -> Result<Self> {
        let mut r = RandomWeights::new(ModelConfig::from_file(config_path)?, seed);
        if repeat {
            r = r.repeating_layers();
        }
        r.label = format!("{} for {}", r.label, config_path.display());
        Ok(Self::Random(r))
    }

    pub fn as_dyn(&self) -> &dyn TensorSource {
        match self {
            Self::Hf(s) => s,
            Self::Compressed(s) => s,
            Self::Random(s) => s,
        }
    }
}

/// Tensor bytes in a safetensors dtype, as BF16 (F16 and F32 rounded to
/// nearest even, as `.to(torch.bfloat16)` does).
fn to_bf16(dtype: Dtype, bytes: &[u8], name: &str, label: &str) -> Result<Vec<bf16>> {
    let words = |n: usize| bytes.chunks_exact(n);
    Ok(match dtype {
        Dtype::BF16 => words(2)
            .map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::F16 => words(2)
            .map(|b| bf16::from_f32(f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()))
            .collect(),
        Dtype::F32 => words(4)
            .map(|b| bf16::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        other => {
            return Err(Error::Model {
                model: label.into(),
                reason: format!("tensor `{name}` is {other:?}; weights must be BF16, F16 or F32"),
            });
        }
    })
}

/// A Hugging Face model directory.
pub struct HfDir {
    dir: PathBuf,
    config: ModelConfig,
    files: Vec<SafetensorsFile>,
    tensors: HashMap<String, (usize, TensorInfo)>,
}

#[derive(Deserialize)]
struct Index {
    weight_map: HashMap<String, String>,
}

impl HfDir {
    pub fn open(dir: &Path) -> Result<Self> {
        let config = ModelConfig::from_dir(dir)?;
        let label = dir.display().to_string();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let index_path = dir.join("model.safetensors.index.json");
        let mut names: Vec<String> = if index_path.exists() {
            let bytes = std::fs::read(&index_path).map_err(io(&index_path))?;
            let index: Index = serde_json::from_slice(&bytes).map_err(|e| Error::Model {
                model: label.clone(),
                reason: format!("model.safetensors.index.json: {e}"),
            })?;
            let mut files: Vec<String> = index.weight_map.into_values().collect();
            files.sort();
            files.dedup();
            for f in &files {
                if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                    return Err(Error::Model {
                        model: label.clone(),
                        reason: format!("the index names `{f}`, not a file of the directory"),
                    });
                }
            }
            files
        } else {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(io(dir))? {
                let name = entry.map_err(io(dir))?.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".safetensors") {
                    files.push(name.into_owned());
                }
            }
            files
        };
        names.sort();
        if names.is_empty() {
            return Err(Error::Model {
                model: label,
                reason: "no .safetensors file".into(),
            });
        }
        let mut files = Vec::new();
        let mut tensors = HashMap::new();
        for name in &names {
            let file = SafetensorsFile::open(&dir.join(name))?;
            for info in file.tensors() {
                tensors.insert(info.name.clone(), (files.len(), info.clone()));
            }
            files.push(file);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            files,
            tensors,
        })
    }
}

impl TensorSource for HfDir {
    fn label(&self) -> String {
        self.dir.display().to_string()
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|(_, info)| info.shape.clone())
    }

    fn load(&self, spec: &TensorSpec) -> Result<HostTensor> {
        let (file, info) = self
            .tensors
            .get(&spec.name)
            .ok_or_else(|| missing(self, spec))?;
        let bytes = self.files[*file].read(info)?;
        to_bf16(info.dtype, &bytes, &spec.name, &self.label()).map(HostTensor::Bf16)
    }

    fn tokenizer(&self) -> Option<PathBuf> {
        Some(self.dir.join("tokenizer.json")).filter(|p| p.exists())
    }
}

fn missing(source: &dyn TensorSource, spec: &TensorSpec) -> Error {
    Error::Model {
        model: source.label(),
        reason: format!("no tensor `{}`", spec.name),
    }
}

/// A directory made by `zipserv compress`.
pub struct CompressedDir {
    dir: PathBuf,
    config: ModelConfig,
    files: Vec<ZsvFile>,
    /// Tensor name → (file, entry).
    tensors: HashMap<String, (usize, usize)>,
}

impl CompressedDir {
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        let config = ModelConfig::from_dir(dir)?;
        let mut files = Vec::new();
        let mut tensors = HashMap::new();
        for entry in manifest.files.iter().filter(|f| f.kind == FileKind::Zsv) {
            let file = ZsvFile::open(manifest::join(dir, &entry.stored))?;
            for (i, t) in file.tensors().iter().enumerate() {
                tensors.insert(t.name.clone(), (files.len(), i));
            }
            files.push(file);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            files,
            tensors,
        })
    }
}

impl TensorSource for CompressedDir {
    fn label(&self) -> String {
        self.dir.display().to_string()
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let (f, i) = self.tensors.get(name)?;
        Some(self.files[*f].tensors()[*i].shape.clone())
    }

    fn load(&self, spec: &TensorSpec) -> Result<HostTensor> {
        let (f, i) = self
            .tensors
            .get(&spec.name)
            .ok_or_else(|| missing(self, spec))?;
        let file = &self.files[*f];
        let entry = &file.tensors()[*i];
        match entry.encoding {
            Encoding::Tiles(_) => Ok(HostTensor::Compressed(file.matrix(entry)?)),
            Encoding::Raw(_) => {
                let bytes = file.raw_data(entry)?;
                to_bf16(entry.dtype, &bytes, &spec.name, &self.label()).map(HostTensor::Bf16)
            }
        }
    }

    fn tokenizer(&self) -> Option<PathBuf> {
        Some(self.dir.join("tokenizer.json")).filter(|p| p.exists())
    }
}

/// Weights drawn for a config, never stored.
pub struct RandomWeights {
    config: ModelConfig,
    label: String,
    seed: u64,
    /// Every block a copy of block 0 (see [`RandomWeights::repeating_layers`]).
    repeat: bool,
}

impl RandomWeights {
    /// Random weights for `config` (for tests and benchmarks).
    pub fn new(config: ModelConfig, seed: u64) -> Self {
        Self {
            config,
            label: "random weights".into(),
            seed,
            repeat: false,
        }
    }

    /// The same, with every block a copy of block 0 (the embedding and LM
    /// head still their own). For speed and capacity runs of large shapes:
    /// drawing and encoding a 70B-class model tensor by tensor takes many
    /// minutes of CPU, while the GPU's work per step is the same whatever
    /// the values (every block still has its own device buffers, each far
    /// larger than L2, so no block's reads are served by another's).
    pub fn repeating_layers(mut self) -> Self {
        self.repeat = true;
        self.label = "random weights (every block a copy of block 0)".into();
        self
    }

    /// The tensor's own seed: FNV-1a of its name, mixed with the run's seed,
    /// so every tensor differs and a run is reproducible.
    fn seed_of(&self, name: &str) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^ self.seed
    }
}

impl TensorSource for RandomWeights {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        crate::plan::tensors(&self.config)
            .into_iter()
            .find(|t| t.name == name)
            .map(|t| t.shape)
    }

    fn load(&self, spec: &TensorSpec) -> Result<HostTensor> {
        Ok(HostTensor::Bf16(match spec.kind {
            Kind::Vector => vec![bf16::ONE; spec.shape.iter().product()],
            Kind::Matrix | Kind::Embedding => zipserv_format::synth::trained_like(
                spec.shape[0],
                spec.shape[1],
                self.seed_of(&spec.name),
            )?,
        }))
    }

    fn tokenizer(&self) -> Option<PathBuf> {
        None
    }

    fn repeats_layer(&self, layer: usize) -> Option<usize> {
        (self.repeat && layer > 0).then_some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const CONFIG: &str = r#"{"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2,
        "num_key_value_heads": 1, "num_hidden_layers": 1, "vocab_size": 64,
        "tie_word_embeddings": true}"#;

    fn write_st(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views: BTreeMap<String, safetensors::tensor::TensorView> = tensors
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.to_string(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(&views, None, path).unwrap();
    }

    /// A tensor's test values: trained-like matrices (so that they
    /// compress), norms 0.25 · i.
    fn values(spec: &TensorSpec) -> Vec<u8> {
        let v: Vec<bf16> = match spec.kind {
            Kind::Vector => (0..spec.shape[0])
                .map(|i| bf16::from_f32(i as f32 * 0.25))
                .collect(),
            _ => zipserv_format::synth::trained_like(spec.shape[0], spec.shape[1], 1).unwrap(),
        };
        v.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Every tensor the plan lists, in a sharded directory.
    fn sharded_model(dir: &Path) {
        std::fs::write(dir.join("config.json"), CONFIG).unwrap();
        let config = ModelConfig::from_dir(dir).unwrap();
        let specs = crate::plan::tensors(&config);
        let (a, b) = specs.split_at(4);
        let mut map = serde_json::Map::new();
        for (file, part) in [
            ("model-00001-of-00002.safetensors", a),
            ("model-00002-of-00002.safetensors", b),
        ] {
            let data: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = part
                .iter()
                .map(|s| (s.name.as_str(), Dtype::BF16, s.shape.clone(), values(s)))
                .collect();
            write_st(&dir.join(file), &data);
            for s in part {
                map.insert(s.name.clone(), file.into());
            }
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }

    #[test]
    fn sharded_directory_serves_every_tensor() {
        let tmp = tempfile::tempdir().unwrap();
        sharded_model(tmp.path());
        let source = Source::open(tmp.path()).unwrap();
        let s = source.as_dyn();
        for spec in crate::plan::tensors(s.config()) {
            assert_eq!(s.shape(&spec.name).unwrap(), spec.shape);
            let HostTensor::Bf16(v) = s.load(&spec).unwrap() else {
                panic!("BF16 expected")
            };
            let bytes: Vec<u8> = v.iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(bytes, values(&spec), "{}", spec.name);
        }
        assert!(s.tokenizer().is_none());
    }

    #[test]
    fn f32_tensors_are_rounded_and_ints_refused() {
        let bytes: Vec<u8> = [1.0f32, 1.0 + 1.0 / 256.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let v = to_bf16(Dtype::F32, &bytes, "t", "m").unwrap();
        assert_eq!(v, [bf16::ONE, bf16::ONE]); // 1 + 2^-8 is halfway: to even
        let e = to_bf16(Dtype::I32, &bytes, "t", "m")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be BF16"), "{e}");
    }

    #[test]
    fn compressed_directory_gives_compressed_matrices() {
        let tmp = tempfile::tempdir().unwrap();
        let (hf, out) = (tmp.path().join("hf"), tmp.path().join("zsv"));
        std::fs::create_dir(&hf).unwrap();
        sharded_model(&hf);
        zipserv_format::convert::compress_dir(&hf, &out, Default::default(), |_| {}, |_| {})
            .unwrap();
        let source = Source::open(&out).unwrap();
        let s = source.as_dyn();
        let specs = crate::plan::tensors(s.config());
        let emb = s.load(&specs[0]).unwrap();
        assert!(matches!(emb, HostTensor::Compressed(ref m) if m.rows() == 64 && m.cols() == 128));
        let norm = specs.iter().find(|t| t.kind == Kind::Vector).unwrap();
        assert!(matches!(s.load(norm).unwrap(), HostTensor::Bf16(ref v) if v.len() == 128));
    }

    #[test]
    fn random_weights_are_reproducible_and_distinct() {
        let config = ModelConfig::from_json(CONFIG.as_bytes(), Path::new("c")).unwrap();
        let r = RandomWeights::new(config.clone(), 5);
        let specs = crate::plan::tensors(&config);
        let get = |r: &RandomWeights, i: usize| match r.load(&specs[i]).unwrap() {
            HostTensor::Bf16(v) => v,
            HostTensor::Compressed(_) => unreachable!(),
        };
        let q = specs
            .iter()
            .position(|s| s.name.ends_with("q_proj.weight"))
            .unwrap();
        let k = specs
            .iter()
            .position(|s| s.name.ends_with("k_proj.weight"))
            .unwrap();
        assert_eq!(get(&r, q), get(&RandomWeights::new(config.clone(), 5), q));
        assert_ne!(get(&r, q)[..128], get(&r, k)[..128]);
        assert_ne!(get(&r, q), get(&RandomWeights::new(config, 6), q));
        let norm = specs.iter().position(|s| s.kind == Kind::Vector).unwrap();
        assert!(get(&r, norm).iter().all(|&v| v == bf16::ONE));
    }

    #[test]
    fn not_a_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Source::open(&tmp.path().join("nope"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a model directory"), "{err}");
        let err = Source::open(tmp.path()).err().unwrap().to_string();
        assert!(err.contains("config.json"), "{err}");
    }
}
