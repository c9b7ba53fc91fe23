//! Tensor maps (`CUtensorMap`) for the Hopper ZipGEMM's activation copies,
//! made by the driver's `cuTensorMapEncodeTiled` (CUDA 12.0+). cust 0.3
//! predates tensor maps, so the function is resolved here from the driver
//! library, on first use: a driver without it only loses the Hopper path.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

use libloading::Library;
use zipserv_kernels::sm90::{TensorMap, X_BOX_COLS};

use crate::driver::DRIVER_LIBRARY;
use crate::error::{Error, Result};

/// `cuTensorMapEncodeTiled` as `cuda.h` declares it; the enum arguments
/// are C enums (`int`-sized).
type EncodeTiled = unsafe extern "C" fn(
    map: *mut TensorMap,
    data_type: c_uint,
    rank: c_uint,
    global_address: *mut c_void,
    global_dim: *const u64,
    global_strides: *const u64,
    box_dim: *const u32,
    element_strides: *const u32,
    interleave: c_uint,
    swizzle: c_uint,
    l2_promotion: c_uint,
    oob_fill: c_uint,
) -> c_int;

// Enum values from `cuda.h` (CUDA 12.0 and later).
const CU_TENSOR_MAP_DATA_TYPE_BFLOAT16: c_uint = 9;
const CU_TENSOR_MAP_INTERLEAVE_NONE: c_uint = 0;
const CU_TENSOR_MAP_SWIZZLE_128B: c_uint = 3;
const CU_TENSOR_MAP_L2_PROMOTION_L2_256B: c_uint = 3;
/// Elements outside the tensor read as zero.
const CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE: c_uint = 0;

struct Encoder {
    _library: Library,
    encode: EncodeTiled,
}

fn encoder() -> Result<&'static Encoder> {
    static ENCODER: OnceLock<std::result::Result<Encoder, String>> = OnceLock::new();
    let e = ENCODER.get_or_init(|| {
        // SAFETY: the driver library, already opened by `driver::load`
        // (this takes another reference to it); the symbol has the type
        // cuda.h gives it.
        unsafe {
            let library = Library::new(DRIVER_LIBRARY).map_err(|e| e.to_string())?;
            let encode = *library
                .get::<EncodeTiled>(b"cuTensorMapEncodeTiled\0")
                .map_err(|e| format!("{DRIVER_LIBRARY} lacks cuTensorMapEncodeTiled ({e})"))?;
            Ok(Encoder {
                _library: library,
                encode,
            })
        }
    });
    e.as_ref()
        .map_err(|reason| Error::Unsupported(format!("tensor maps: {reason}")))
}

/// The tensor map of activations `X[rows][cols]` (BF16, rows `pitch_bytes`
/// apart, at device address `x`) that the Hopper ZipGEMM copies in boxes
/// of `X_BOX_COLS` columns × `box_rows` rows with the 128-byte swizzle;
/// elements past `rows` and `cols` read as zero.
pub(crate) fn activations(
    x: u64,
    rows: usize,
    cols: usize,
    pitch_bytes: usize,
    box_rows: usize,
) -> Result<TensorMap> {
    let encoder = encoder()?;
    let dims = [cols as u64, rows as u64];
    let strides = [pitch_bytes as u64];
    let boxes = [X_BOX_COLS as u32, box_rows as u32];
    let element_strides = [1u32, 1];
    let mut map = TensorMap { opaque: [0; 16] };
    // SAFETY: every pointer refers to a live local array of the length the
    // rank (2) implies; the driver only reads them and writes `map`.
    let code = unsafe {
        (encoder.encode)(
            &mut map,
            CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            2,
            x as *mut c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            element_strides.as_ptr(),
            CU_TENSOR_MAP_INTERLEAVE_NONE,
            CU_TENSOR_MAP_SWIZZLE_128B,
            CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if code != 0 {
        return Err(Error::Driver {
            call: "cuTensorMapEncodeTiled",
            code,
        });
    }
    Ok(map)
}
