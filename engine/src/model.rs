//! Every weight of a model on the GPU, loaded tensor by tensor from a
//! [`TensorSource`] in the requested form.

use std::collections::HashMap;

use cust::memory::DeviceBuffer;
use half::bf16;
use zipserv_format::CompressedMatrix;
use zipserv_gpu::{DeviceWeights, Gpu};

use crate::config::ModelConfig;
use crate::error::{CudaContext, Error, Result, device_sync};
use crate::linear::{Linear, LinearWeights};
use crate::plan::{self, Kind, TensorSpec};
use crate::source::{HostTensor, TensorSource};

/// How the matrices (linear layers and the embedding) are kept on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightForm {
    /// BF16, multiplied by cuBLAS. From a compressed directory the matrices
    /// are uploaded compressed and decompressed on the GPU.
    Bf16,
    /// Compressed, multiplied by ZipGEMM (or decompressed per product for
    /// large batches). BF16 sources are encoded on the host, per tensor.
    Compressed,
}

impl WeightForm {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bf16 => "bf16",
            Self::Compressed => "compressed",
        }
    }
}

/// One transformer block.
pub struct Layer {
    pub input_norm: DeviceBuffer<bf16>,
    pub post_norm: DeviceBuffer<bf16>,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

/// The model on the GPU.
pub struct Model {
    pub config: ModelConfig,
    pub form: WeightForm,
    /// The embedding (`vocab × hidden`); also the LM head when tied.
    pub embed: Linear,
    pub layers: Vec<Layer>,
    pub final_norm: DeviceBuffer<bf16>,
    /// `None` when the embeddings are tied.
    lm_head: Option<Linear>,
}

impl Model {
    /// Loads every tensor the config needs from `source`, checking names
    /// and shapes first, one tensor in host memory at a time; `progress` is
    /// told each tensor's name before it is loaded.
    pub fn load(
        gpu: &Gpu,
        source: &dyn TensorSource,
        form: WeightForm,
        mut progress: impl FnMut(&str),
    ) -> Result<Self> {
        let config = source.config().clone();
        let specs = plan::tensors(&config);
        for spec in &specs {
            match source.shape(&spec.name) {
                None => {
                    return Err(Error::Model {
                        model: source.label(),
                        reason: format!("no tensor `{}`", spec.name),
                    });
                }
                Some(got) if got != spec.shape => {
                    return Err(Error::TensorShape {
                        model: source.label(),
                        tensor: spec.name.clone(),
                        expected: spec.shape.clone(),
                        got,
                    });
                }
                Some(_) => {}
            }
        }
        let mut vectors = HashMap::new();
        let mut matrices = HashMap::new();
        for spec in &specs {
            progress(&spec.name);
            let tensor = source.load(spec)?;
            match spec.kind {
                Kind::Vector => {
                    let HostTensor::Bf16(v) = tensor else {
                        return Err(Error::Model {
                            model: source.label(),
                            reason: format!("norm weight `{}` is stored compressed", spec.name),
                        });
                    };
                    vectors.insert(
                        spec.name.clone(),
                        DeviceBuffer::from_slice(&v).cuda("cuMemAlloc")?,
                    );
                }
                Kind::Matrix | Kind::Embedding => {
                    matrices.insert(spec.name.clone(), upload_matrix(gpu, spec, tensor, form)?);
                }
            }
        }
        let mut take_matrix = |name: &str| matrices.remove(name).expect("loaded from the plan");
        let mut take_vector = |name: &str| vectors.remove(name).expect("loaded from the plan");
        let layers = (0..config.layers)
            .map(|l| {
                let mut m = |part: &str| take_matrix(&plan::layer_tensor(l, part));
                Layer {
                    q: m("self_attn.q_proj"),
                    k: m("self_attn.k_proj"),
                    v: m("self_attn.v_proj"),
                    o: m("self_attn.o_proj"),
                    gate: m("mlp.gate_proj"),
                    up: m("mlp.up_proj"),
                    down: m("mlp.down_proj"),
                    input_norm: take_vector(&plan::layer_tensor(l, "input_layernorm")),
                    post_norm: take_vector(&plan::layer_tensor(l, "post_attention_layernorm")),
                }
            })
            .collect();
        device_sync()?;
        let embed = take_matrix(plan::EMBEDDING);
        let lm_head = (!config.tie_word_embeddings).then(|| take_matrix(plan::LM_HEAD));
        Ok(Self {
            final_norm: take_vector(plan::FINAL_NORM),
            config,
            form,
            embed,
            layers,
            lm_head,
        })
    }

    /// The LM head (the embedding when tied).
    pub fn lm_head(&self) -> &Linear {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Every linear layer, the LM head last (the embedding only if tied).
    pub fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            .chain(std::iter::once(self.lm_head()))
    }

    /// Bytes of all weights on the GPU (matrices in their form, norms BF16).
    pub fn weight_bytes(&self) -> u64 {
        let matrices: usize = self
            .layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            .chain(std::iter::once(&self.embed))
            .chain(self.lm_head.as_ref())
            .map(Linear::device_bytes)
            .sum();
        let norms = 2 * self.config.hidden * (2 * self.config.layers + 1);
        (matrices + norms) as u64
    }

    /// The most weights of one linear layer (the decompress path's scratch).
    pub fn largest_matrix(&self) -> usize {
        self.linears().map(|l| l.rows * l.cols).max().unwrap_or(0)
    }
}

/// One matrix, uploaded in `form`.
fn upload_matrix(
    gpu: &Gpu,
    spec: &TensorSpec,
    tensor: HostTensor,
    form: WeightForm,
) -> Result<Linear> {
    let (rows, cols) = (spec.shape[0], spec.shape[1]);
    let weights = match (tensor, form) {
        (HostTensor::Bf16(w), WeightForm::Bf16) => {
            LinearWeights::Bf16(DeviceBuffer::from_slice(&w).cuda("cuMemAlloc")?)
        }
        (HostTensor::Bf16(w), WeightForm::Compressed) => {
            let m = CompressedMatrix::encode(&w, rows, cols)?;
            drop(w);
            LinearWeights::Compressed(DeviceWeights::upload(gpu, &m)?)
        }
        (HostTensor::Compressed(m), WeightForm::Compressed) => {
            LinearWeights::Compressed(DeviceWeights::upload(gpu, &m)?)
        }
        (HostTensor::Compressed(m), WeightForm::Bf16) => {
            // Decoded on the GPU, bit for bit, then the compressed copy goes.
            let w = DeviceWeights::upload(gpu, &m)?;
            drop(m);
            device_sync()?;
            // SAFETY: the decompression kernel writes every element.
            let mut dense =
                unsafe { DeviceBuffer::uninitialized(rows * cols) }.cuda("cuMemAlloc")?;
            zipserv_gpu::decompress(gpu, gpu.stream(), &w, &mut dense)?;
            gpu.synchronize()?;
            LinearWeights::Bf16(dense)
        }
    };
    Ok(Linear {
        name: spec.name.clone(),
        rows,
        cols,
        weights,
    })
}
