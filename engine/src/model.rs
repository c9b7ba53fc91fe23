//! Every weight of a model on the GPU, loaded tensor by tensor from a
//! [`TensorSource`] in the requested form.

use std::collections::HashMap;

use cust::memory::DeviceBuffer;
use half::bf16;
use zipserv_format::{CompressedMatrix, NotStackable};
use zipserv_gpu::{DeviceWeights, Gpu};

use crate::config::ModelConfig;
use crate::error::{CudaContext, Error, Result, device_sync};
use crate::linear::{Linear, LinearWeights, PathTaken};
use crate::plan::{self, Kind, TensorSpec};
use crate::source::{HostTensor, TensorSource};
use crate::stacked::Stacked;

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
    /// Q, K and V, in that order (see [`crate::stacked`]).
    pub qkv: Stacked,
    pub o: Linear,
    /// Gate and up, in that order.
    pub gate_up: Stacked,
    pub down: Linear,
}

impl Layer {
    fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.qkv
            .linears
            .iter()
            .chain([&self.o])
            .chain(&self.gate_up.linears)
            .chain([&self.down])
    }
}

/// Whether [`Model::load`] stacks the products that share an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stacking {
    /// Q/K/V and gate/up as one matrix each where their weights allow.
    Stack,
    /// Every projection its own matrix (for comparisons).
    Separate,
}

/// The groups of a block's matrices that read the same input, stacked in
/// this order.
const STACK_GROUPS: [(&str, &[&str]); 2] = [
    (
        "self_attn.qkv_proj",
        &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    ),
    ("mlp.gate_up_proj", &["mlp.gate_proj", "mlp.up_proj"]),
];

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
    /// Groups that could not be stacked although asked, and why.
    pub unstacked: Vec<String>,
}

impl Model {
    /// Loads every tensor the config needs from `source`, checking names
    /// and shapes first, one tensor in host memory at a time (the parts of
    /// one stacked group together); `progress` is told each tensor's name
    /// before it is loaded.
    pub fn load(
        gpu: &Gpu,
        source: &dyn TensorSource,
        form: WeightForm,
        stacking: Stacking,
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
        let specs: HashMap<String, TensorSpec> =
            specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        let mut loader = Loader {
            gpu,
            source,
            form,
            stacking,
            specs: &specs,
            progress: &mut progress,
            unstacked: Vec::new(),
        };
        let embed = loader.matrix(plan::EMBEDDING)?;
        let embed = loader.upload(&embed)?;
        // Layers a source repeats are prepared once (read, stacked, encoded)
        // and uploaded again for each copy.
        let mut prepared: HashMap<usize, PreparedLayer> = HashMap::new();
        let mut layers = Vec::with_capacity(config.layers);
        for l in 0..config.layers {
            let original = source.repeats_layer(l).filter(|r| prepared.contains_key(r));
            let layer = match original {
                Some(r) => {
                    for name in plan::layer_tensor_names(l) {
                        (loader.progress)(&name);
                    }
                    loader.upload_layer(&prepared[&r])?
                }
                None => {
                    let p = loader.prepare_layer(l)?;
                    let layer = loader.upload_layer(&p)?;
                    if (l + 1..config.layers).any(|later| source.repeats_layer(later) == Some(l)) {
                        prepared.insert(l, p);
                    }
                    layer
                }
            };
            layers.push(layer);
        }
        drop(prepared);
        let final_norm = loader.vector(plan::FINAL_NORM)?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            let head = loader.matrix(plan::LM_HEAD)?;
            Some(loader.upload(&head)?)
        };
        let unstacked = loader.unstacked;
        device_sync()?;
        Ok(Self {
            final_norm,
            config,
            form,
            embed,
            layers,
            lm_head,
            unstacked,
        })
    }

    /// Q/K/V and gate/up groups that run as one product.
    pub fn stacked_groups(&self) -> usize {
        self.layers
            .iter()
            .map(|l| usize::from(l.qkv.is_stacked()) + usize::from(l.gate_up.is_stacked()))
            .sum()
    }

    /// The LM head (the embedding when tied).
    pub fn lm_head(&self) -> &Linear {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// The kernel each product of a block takes for `n` activation rows,
    /// and the LM head for `head_n`, products of one path (and fused
    /// kernel) together in model order: e.g. `[(Gemv, ["qkv", "o",
    /// "gate/up"]), (Cublas, ["down", "lm head"])]`.
    pub fn linear_paths(
        &self,
        gpu: &Gpu,
        n: usize,
        head_n: usize,
    ) -> Vec<(PathTaken, Vec<&'static str>)> {
        let Some(layer) = self.layers.first() else {
            return Vec::new();
        };
        let products = [
            ("qkv", &layer.qkv.linears[0], n),
            ("o", &layer.o, n),
            ("gate/up", &layer.gate_up.linears[0], n),
            ("down", &layer.down, n),
            ("lm head", self.lm_head(), head_n),
        ];
        let mut paths: Vec<(PathTaken, Vec<&'static str>)> = Vec::new();
        for (name, linear, n) in products {
            let path = PathTaken::choose(gpu, linear.is_compressed(), linear.rows, linear.cols, n);
            match paths.iter_mut().find(|(p, _)| *p == path) {
                Some((_, names)) => names.push(name),
                None => paths.push((path, vec![name])),
            }
        }
        paths
    }

    /// Every linear layer, the LM head last (the embedding only if tied).
    pub fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.layers
            .iter()
            .flat_map(Layer::linears)
            .chain(std::iter::once(self.lm_head()))
    }

    /// Bytes of all weights on the GPU (matrices in their form, norms BF16).
    pub fn weight_bytes(&self) -> u64 {
        let matrices: usize = self
            .layers
            .iter()
            .flat_map(Layer::linears)
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

/// A matrix ready to upload: encoded already when the GPU holds it
/// compressed; compressed (decoded on the GPU) or BF16 for the BF16 form.
struct Prepared {
    spec: TensorSpec,
    tensor: HostTensor,
}

/// A stacked group's matrices (one when stacked) and its parts' rows.
struct PreparedGroup {
    part_rows: Vec<usize>,
    matrices: Vec<Prepared>,
}

/// One block's tensors, ready to upload.
struct PreparedLayer {
    input_norm: Vec<bf16>,
    post_norm: Vec<bf16>,
    qkv: PreparedGroup,
    o: Prepared,
    gate_up: PreparedGroup,
    down: Prepared,
}

/// What loading one model needs at hand.
struct Loader<'a, P: FnMut(&str)> {
    gpu: &'a Gpu,
    source: &'a dyn TensorSource,
    form: WeightForm,
    stacking: Stacking,
    specs: &'a HashMap<String, TensorSpec>,
    progress: &'a mut P,
    unstacked: Vec<String>,
}

impl<P: FnMut(&str)> Loader<'_, P> {
    fn read(&mut self, name: &str) -> Result<(TensorSpec, HostTensor)> {
        (self.progress)(name);
        let spec = self.specs[name].clone();
        let tensor = self.source.load(&spec)?;
        Ok((spec, tensor))
    }

    /// A norm weight, on the host.
    fn vector_host(&mut self, name: &str) -> Result<Vec<bf16>> {
        match self.read(name)?.1 {
            HostTensor::Bf16(v) => Ok(v),
            HostTensor::Compressed(_) => Err(Error::Model {
                model: self.source.label(),
                reason: format!("norm weight `{name}` is stored compressed"),
            }),
        }
    }

    fn vector(&mut self, name: &str) -> Result<DeviceBuffer<bf16>> {
        let v = self.vector_host(name)?;
        DeviceBuffer::from_slice(&v).cuda("cuMemAlloc")
    }

    /// A matrix, read and prepared for the form.
    fn matrix(&mut self, name: &str) -> Result<Prepared> {
        let (spec, tensor) = self.read(name)?;
        self.prepare(spec, tensor)
    }

    fn prepare(&self, spec: TensorSpec, tensor: HostTensor) -> Result<Prepared> {
        let tensor = match (tensor, self.form) {
            (HostTensor::Bf16(w), WeightForm::Compressed) => {
                HostTensor::Compressed(CompressedMatrix::encode(&w, spec.shape[0], spec.shape[1])?)
            }
            (t, _) => t,
        };
        Ok(Prepared { spec, tensor })
    }

    /// A group of a layer's matrices, stacked unless refused or turned off.
    fn group(
        &mut self,
        layer: usize,
        (stacked_name, parts): (&str, &[&str]),
    ) -> Result<PreparedGroup> {
        let mut members = Vec::with_capacity(parts.len());
        for part in parts {
            members.push(self.read(&plan::layer_tensor(layer, part))?);
        }
        let part_rows: Vec<usize> = members.iter().map(|(s, _)| s.shape[0]).collect();
        let members = match self.stacking {
            Stacking::Separate => members,
            Stacking::Stack => match stack(&plan::layer_tensor(layer, stacked_name), members) {
                Ok((spec, tensor)) => {
                    return Ok(PreparedGroup {
                        part_rows,
                        matrices: vec![self.prepare(spec, tensor)?],
                    });
                }
                Err((members, why)) => {
                    self.unstacked.push(format!(
                        "{}: {why}",
                        plan::layer_tensor(layer, stacked_name)
                    ));
                    members
                }
            },
        };
        let matrices = members
            .into_iter()
            .map(|(spec, tensor)| self.prepare(spec, tensor))
            .collect::<Result<Vec<_>>>()?;
        Ok(PreparedGroup {
            part_rows,
            matrices,
        })
    }

    fn prepare_layer(&mut self, l: usize) -> Result<PreparedLayer> {
        Ok(PreparedLayer {
            input_norm: self.vector_host(&plan::layer_tensor(l, "input_layernorm"))?,
            post_norm: self.vector_host(&plan::layer_tensor(l, "post_attention_layernorm"))?,
            qkv: self.group(l, STACK_GROUPS[0])?,
            o: self.matrix(&plan::layer_tensor(l, "self_attn.o_proj"))?,
            gate_up: self.group(l, STACK_GROUPS[1])?,
            down: self.matrix(&plan::layer_tensor(l, "mlp.down_proj"))?,
        })
    }

    fn upload_group(&self, g: &PreparedGroup) -> Result<Stacked> {
        let linears = g
            .matrices
            .iter()
            .map(|m| self.upload(m))
            .collect::<Result<Vec<_>>>()?;
        Ok(if linears.len() == 1 && g.part_rows.len() > 1 {
            Stacked::one(
                g.part_rows.clone(),
                linears.into_iter().next().expect("one"),
            )
        } else {
            Stacked::separate(linears)
        })
    }

    fn upload_layer(&self, p: &PreparedLayer) -> Result<Layer> {
        Ok(Layer {
            input_norm: DeviceBuffer::from_slice(&p.input_norm).cuda("cuMemAlloc")?,
            post_norm: DeviceBuffer::from_slice(&p.post_norm).cuda("cuMemAlloc")?,
            qkv: self.upload_group(&p.qkv)?,
            o: self.upload(&p.o)?,
            gate_up: self.upload_group(&p.gate_up)?,
            down: self.upload(&p.down)?,
        })
    }

    /// One prepared matrix onto the GPU in the loader's form.
    fn upload(&self, p: &Prepared) -> Result<Linear> {
        let gpu = self.gpu;
        let (rows, cols) = (p.spec.shape[0], p.spec.shape[1]);
        let weights = match (&p.tensor, self.form) {
            (HostTensor::Bf16(w), WeightForm::Bf16) => {
                LinearWeights::Bf16(DeviceBuffer::from_slice(w).cuda("cuMemAlloc")?)
            }
            (HostTensor::Compressed(m), WeightForm::Compressed) => {
                LinearWeights::Compressed(DeviceWeights::upload(gpu, m)?)
            }
            (HostTensor::Compressed(m), WeightForm::Bf16) => {
                // Decoded on the GPU, bit for bit, then the compressed copy goes.
                let w = DeviceWeights::upload(gpu, m)?;
                // SAFETY: the decompression kernel writes every element.
                let mut dense =
                    unsafe { DeviceBuffer::uninitialized(rows * cols) }.cuda("cuMemAlloc")?;
                zipserv_gpu::decompress(gpu, gpu.stream(), &w, &mut dense)?;
                gpu.synchronize()?;
                LinearWeights::Bf16(dense)
            }
            (HostTensor::Bf16(_), WeightForm::Compressed) => {
                return Err(Error::Invalid(format!(
                    "{}: a BF16 matrix reached a compressed upload unencoded",
                    p.spec.name
                )));
            }
        };
        Ok(Linear {
            name: p.spec.name.clone(),
            rows,
            cols,
            weights,
        })
    }
}

/// A group's parts, stacked on the host without decoding: BF16 rows
/// concatenated, compressed matrices joined tile stream by tile stream.
/// Returns the stacked tensor's spec and the tensor, or the parts back with
/// the reason they cannot be joined.
#[allow(clippy::type_complexity)]
fn stack(
    group_name: &str,
    members: Vec<(TensorSpec, HostTensor)>,
) -> std::result::Result<(TensorSpec, HostTensor), (Vec<(TensorSpec, HostTensor)>, String)> {
    let rows: usize = members.iter().map(|(s, _)| s.shape[0]).sum();
    let cols = members[0].0.shape[1];
    let spec = TensorSpec {
        name: group_name.to_string(),
        shape: vec![rows, cols],
        kind: Kind::Matrix,
    };
    let tensor = if members
        .iter()
        .all(|(_, t)| matches!(t, HostTensor::Bf16(_)))
    {
        let mut all = Vec::with_capacity(rows * cols);
        for (_, t) in &members {
            if let HostTensor::Bf16(w) = t {
                all.extend_from_slice(w);
            }
        }
        HostTensor::Bf16(all)
    } else {
        let parts: Option<Vec<&CompressedMatrix>> = members
            .iter()
            .map(|(_, t)| match t {
                HostTensor::Compressed(m) => Some(m),
                HostTensor::Bf16(_) => None,
            })
            .collect();
        let Some(parts) = parts else {
            return Err((members, "some parts are BF16, some compressed".into()));
        };
        match CompressedMatrix::stack_rows(&parts) {
            Ok(m) => HostTensor::Compressed(m),
            Err(why) => {
                let why: NotStackable = why;
                return Err((members, why.to_string()));
            }
        }
    };
    Ok((spec, tensor))
}
