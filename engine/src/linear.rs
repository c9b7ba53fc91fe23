//! One linear layer, `Y[N×out] = X[N×in] · Wᵀ`, whatever form its weights
//! take, and the choice of kernel for it.

use cust::memory::{DeviceBuffer, DeviceSlice};
use half::bf16;
use zipserv_gpu::{
    Bf16Path, Cublas, DeviceWeights, GemmOutput, GemmPath, GemmWorkspace, Gpu, bf16_gemv,
};

use crate::error::{CudaContext, Error, Result};

/// A linear layer's weight matrix on the GPU.
pub enum LinearWeights {
    /// Row-major BF16 (`out × in`), multiplied by the library's GEMV or
    /// cuBLAS.
    Bf16(DeviceBuffer<bf16>),
    /// Compressed, multiplied by ZipGEMM or decompressed for cuBLAS.
    Compressed(DeviceWeights),
}

/// The kernel(s) a linear layer runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearPath {
    /// cuBLAS on BF16 weights.
    Cublas,
    /// The library's BF16 GEMV (`zipserv_gpu::bf16_gemv`, decode batches up
    /// to 8) on BF16 weights.
    Gemv,
    /// ZipGEMM: decode in registers fused with the product.
    Fused,
    /// The decompression kernel into a BF16 scratch matrix, then cuBLAS.
    DecompressCublas,
}

/// Which path an `m × k` linear layer takes for `n` activation rows on
/// `gpu`: for BF16 weights the GPU crate's choice between its GEMV and
/// cuBLAS (`Gpu::bf16_path`); for compressed ones its measured choice per
/// shape and card (`zipserv_gpu::compressed_path`).
pub fn choose_path(
    gpu: &zipserv_gpu::Gpu,
    compressed: bool,
    m: usize,
    k: usize,
    n: usize,
) -> LinearPath {
    path_for(gpu.has_wgmma(), gpu.bf16_path(), compressed, m, k, n)
}

/// [`choose_path`] on a card with (`wgmma`) or without the Hopper ZipGEMM.
fn path_for(
    wgmma: bool,
    bf16: Bf16Path,
    compressed: bool,
    m: usize,
    k: usize,
    n: usize,
) -> LinearPath {
    if !compressed {
        return match bf16.uses_gemv(m, k, n) {
            true => LinearPath::Gemv,
            false => LinearPath::Cublas,
        };
    }
    match zipserv_gpu::compressed_path(wgmma, m, k, n) {
        zipserv_gpu::CompressedPath::Fused => LinearPath::Fused,
        zipserv_gpu::CompressedPath::DecompressThenBlas => LinearPath::DecompressCublas,
    }
}

/// A product's path and, where it is fused, the ZipGEMM kernel the library
/// picks for its shape and batch (`zipserv_gpu::GemmPath::resolve`:
/// `Gemv`, `MmaSync` or `Wgmma`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathTaken {
    pub path: LinearPath,
    pub kernel: Option<GemmPath>,
}

impl PathTaken {
    /// The path `gpu` takes for an `m × k` layer and `n` activation rows.
    pub fn choose(gpu: &Gpu, compressed: bool, m: usize, k: usize, n: usize) -> Self {
        let path = choose_path(gpu, compressed, m, k, n);
        let kernel = (path == LinearPath::Fused).then(|| gpu.gemm_path().resolve(gpu, m, k, n));
        Self { path, kernel }
    }
}

impl std::fmt::Display for PathTaken {
    /// `Fused mma.sync`, `Fused gemv`, `Fused wgmma`, or the path alone.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kernel = match self.kernel {
            None => return write!(f, "{:?}", self.path),
            Some(GemmPath::Gemv) => "gemv",
            Some(GemmPath::MmaSync) => "mma.sync",
            Some(GemmPath::Wgmma) => "wgmma",
            Some(GemmPath::Auto) => "auto",
        };
        write!(f, "{:?} {kernel}", self.path)
    }
}

/// `paths` as the report prints them: one path alone by its name
/// (`Fused mma.sync`), several with the products each takes
/// (`Gemv (qkv, o, gate/up), Cublas (down, lm head)`).
pub fn describe_paths(paths: &[(PathTaken, Vec<&str>)]) -> String {
    match paths {
        [(path, _)] => format!("{path}"),
        _ => paths
            .iter()
            .map(|(path, names)| format!("{path} ({})", names.join(", ")))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A linear layer: its weights and shape.
pub struct Linear {
    pub name: String,
    /// Output features (rows of W).
    pub rows: usize,
    /// Input features (columns of W).
    pub cols: usize,
    pub weights: LinearWeights,
}

/// Where a linear layer writes `Y` (`N × rows`, row-major).
pub enum LinearOut<'a> {
    Bf16(&'a mut DeviceSlice<bf16>),
    F32(&'a mut DeviceSlice<f32>),
}

impl<'a> From<LinearOut<'a>> for GemmOutput<'a> {
    fn from(y: LinearOut<'a>) -> Self {
        match y {
            LinearOut::Bf16(y) => GemmOutput::Bf16(y),
            LinearOut::F32(y) => GemmOutput::F32(y),
        }
    }
}

/// What every linear layer shares: cuBLAS, ZipGEMM's split-K workspace and
/// the BF16 scratch matrix of the decompress path. One per stream.
pub struct Gemm<'gpu> {
    gpu: &'gpu Gpu,
    blas: Cublas<'gpu>,
    workspace: GemmWorkspace,
    scratch: Option<DeviceBuffer<bf16>>,
}

impl<'gpu> Gemm<'gpu> {
    pub fn new(gpu: &'gpu Gpu) -> Result<Self> {
        Ok(Self {
            gpu,
            blas: Cublas::new(gpu)?,
            workspace: GemmWorkspace::default(),
            scratch: None,
        })
    }

    /// Makes sure the decompress path has room for `elements` weights, so
    /// nothing is allocated inside a CUDA graph capture.
    pub fn reserve_scratch(&mut self, elements: usize) -> Result<()> {
        if self.scratch.as_ref().is_none_or(|s| s.len() < elements) {
            // SAFETY: every element the decompress path reads was written by
            // the decompression kernel just before.
            self.scratch =
                Some(unsafe { DeviceBuffer::uninitialized(elements) }.cuda("cuMemAlloc")?);
        }
        Ok(())
    }

    /// Bytes of the decompress path's scratch matrix.
    pub fn scratch_bytes(&self) -> usize {
        self.scratch.as_ref().map_or(0, |s| 2 * s.len())
    }
}

impl Linear {
    pub fn is_compressed(&self) -> bool {
        matches!(self.weights, LinearWeights::Compressed(_))
    }

    /// Bytes of the weights on the GPU.
    pub fn device_bytes(&self) -> usize {
        match &self.weights {
            LinearWeights::Bf16(w) => 2 * w.len(),
            LinearWeights::Compressed(w) => w.device_bytes(),
        }
    }

    /// Enqueues `Y = X · Wᵀ` for `n` rows of `x` on the GPU's stream and
    /// returns the path taken. `x` and `y` may be longer than `n` rows.
    pub fn forward(
        &self,
        gemm: &mut Gemm<'_>,
        x: &DeviceSlice<bf16>,
        n: usize,
        y: LinearOut<'_>,
    ) -> Result<LinearPath> {
        let (m, k) = (self.rows, self.cols);
        let short = |what: &str, have: usize, want: usize| {
            Error::Invalid(format!(
                "{}: {what} holds {have} elements, {n} rows need {want}",
                self.name
            ))
        };
        if n == 0 {
            return Err(Error::Invalid(format!("{}: no activation rows", self.name)));
        }
        if x.len() < n * k {
            return Err(short("the input", x.len(), n * k));
        }
        let y_len = match &y {
            LinearOut::Bf16(y) => y.len(),
            LinearOut::F32(y) => y.len(),
        };
        if y_len < n * m {
            return Err(short("the output", y_len, n * m));
        }
        let x = x.index(..n * k);
        let gpu = gemm.gpu;
        let path = choose_path(gpu, self.is_compressed(), m, k, n);
        let stream = gpu.stream();
        match (&self.weights, path) {
            (LinearWeights::Compressed(w), LinearPath::Fused) => {
                let out = GemmOutput::from(y);
                zipserv_gpu::zipgemm(gpu, stream, w, &x, n, out, None, &mut gemm.workspace)?;
            }
            (LinearWeights::Compressed(w), _) => {
                let Some(scratch) = gemm.scratch.as_mut().filter(|s| s.len() >= m * k) else {
                    return Err(Error::Invalid(format!(
                        "{}: no decompression scratch of {} weights reserved",
                        self.name,
                        m * k
                    )));
                };
                let mut dense = scratch.index(..m * k);
                zipserv_gpu::decompress(gpu, stream, w, &mut dense)?;
                // SAFETY: the buffers live in the model and the workspace
                // for the whole run; the stream orders the decompression
                // before the product and the product before any reuse.
                unsafe { blas_linear(&gemm.blas, stream, &dense, &x, y, m, k, n)? };
            }
            (LinearWeights::Bf16(w), LinearPath::Gemv) => {
                bf16_gemv(gpu, stream, w, m, k, &x, n, GemmOutput::from(y))?;
            }
            (LinearWeights::Bf16(w), _) => {
                // SAFETY: as above.
                unsafe { blas_linear(&gemm.blas, stream, w, &x, y, m, k, n)? };
            }
        }
        Ok(path)
    }
}

/// cuBLAS on exactly `n` rows.
///
/// # Safety
/// As [`Cublas::linear`].
#[allow(clippy::too_many_arguments)]
unsafe fn blas_linear(
    blas: &Cublas<'_>,
    stream: &cust::stream::Stream,
    w: &DeviceSlice<bf16>,
    x: &DeviceSlice<bf16>,
    y: LinearOut<'_>,
    m: usize,
    k: usize,
    n: usize,
) -> Result<()> {
    // SAFETY: the caller's promise.
    unsafe {
        match y {
            LinearOut::Bf16(y) => blas.linear(stream, w, x, &mut y.index(..n * m), m, k, n)?,
            LinearOut::F32(y) => blas.linear(stream, w, x, &mut y.index(..n * m), m, k, n)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_described_by_product() {
        let taken = |path, kernel| PathTaken { path, kernel };
        let one = [(
            taken(LinearPath::Fused, Some(GemmPath::MmaSync)),
            vec!["qkv", "o"],
        )];
        assert_eq!(describe_paths(&one), "Fused mma.sync");
        let two = [
            (taken(LinearPath::Gemv, None), vec!["qkv", "o", "gate/up"]),
            (taken(LinearPath::Cublas, None), vec!["down", "lm head"]),
        ];
        assert_eq!(
            describe_paths(&two),
            "Gemv (qkv, o, gate/up), Cublas (down, lm head)"
        );
        let fused = [
            (
                taken(LinearPath::Fused, Some(GemmPath::Gemv)),
                vec!["qkv", "o"],
            ),
            (
                taken(LinearPath::Fused, Some(GemmPath::Wgmma)),
                vec!["gate/up"],
            ),
            (taken(LinearPath::DecompressCublas, None), vec!["down"]),
        ];
        assert_eq!(
            describe_paths(&fused),
            "Fused gemv (qkv, o), Fused wgmma (gate/up), DecompressCublas (down)"
        );
        assert_eq!(describe_paths(&[]), "");
    }

    #[test]
    fn path_choice() {
        let (ffn, attn) = ((14336, 4096), (4096, 4096));
        let path_for =
            |wgmma, compressed, m, k, n| path_for(wgmma, Bf16Path::Auto, compressed, m, k, n);
        // BF16 decode batches up to 8 take the library's GEMV, unless told
        // to use cuBLAS; larger ones cuBLAS.
        let up = (28672, 4096);
        assert_eq!(path_for(true, false, up.0, up.1, 1), LinearPath::Gemv);
        assert_eq!(path_for(false, false, up.0, up.1, 8), LinearPath::Gemv);
        assert_eq!(path_for(true, false, up.0, up.1, 9), LinearPath::Cublas);
        // The down projection's long rows stay on cuBLAS (measured).
        assert_eq!(path_for(true, false, 4096, 14336, 1), LinearPath::Cublas);
        assert_eq!(
            super::path_for(true, Bf16Path::Cublas, false, up.0, up.1, 1),
            LinearPath::Cublas
        );
        assert_eq!(
            path_for(false, false, ffn.0, ffn.1, 4096),
            LinearPath::Cublas
        );
        assert_eq!(path_for(true, true, ffn.0, ffn.1, 1), LinearPath::Fused);
        // A decode batch of 64 stays fused on Hopper (wgmma), not elsewhere.
        assert_eq!(path_for(true, true, ffn.0, ffn.1, 64), LinearPath::Fused);
        assert_eq!(
            path_for(false, true, ffn.0, ffn.1, 64),
            LinearPath::DecompressCublas
        );
        assert_eq!(
            path_for(true, true, attn.0, attn.1, 256),
            LinearPath::DecompressCublas
        );
        // A 512-token prefill decompresses first.
        assert_eq!(
            path_for(true, true, attn.0, attn.1, 512),
            LinearPath::DecompressCublas
        );
    }
}
