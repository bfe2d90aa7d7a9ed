//! cuBLAS as reel's matrix product on burn-cuda (`--cuda-kernels cublas|cudnn`): one
//! `cublasGemmStridedBatchedEx` per product (f16 / bf16 / f32 in, f32 accumulation, no TF32, as
//! PyTorch's defaults), enqueued on the CUDA stream cubecl launches its kernels on (the stream
//! comes with the memory, see third_party/cubecl-cuda), so it is ordered with them without any
//! host synchronisation and needs no kernel compilation. `cuda.rs` registers it for both
//! backends.

use std::cell::RefCell;
use std::ffi::c_void;

use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cudarc::cublas::{result as cublas, sys};
use reel_core::kernels::BiasAxis;

use super::gemm_plan::{plan, GemmCall, Operand, PlanError, Trans};

/// Whether libcublas can be loaded (it is looked up as the CUDA driver is: the library search
/// path, `LD_LIBRARY_PATH`, `CUDA_PATH`).
pub fn available() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { sys::is_culib_present() }
}

thread_local! {
    static HANDLE: RefCell<Option<sys::cublasHandle_t>> = const { RefCell::new(None) };
}

/// This thread's cuBLAS handle, in the GPU's context.
fn handle() -> Result<sys::cublasHandle_t, String> {
    super::cuda::thread_handle(&HANDLE, || cublas::create_handle().map_err(|e| format!("cublasCreate: {e:?}")))
}

fn operand(t: &CubeTensor<CudaRuntime>) -> Operand {
    let (shape, strides) = (t.meta.shape(), t.meta.strides());
    Operand {
        batch: shape[0],
        rows: shape[1],
        cols: shape[2],
        batch_stride: strides[0],
        row_stride: strides[1],
        col_stride: strides[2],
    }
}

fn data_type(dtype: DType) -> Result<sys::cudaDataType, String> {
    Ok(match dtype {
        DType::F16 => sys::cudaDataType::CUDA_R_16F,
        DType::BF16 => sys::cudaDataType::CUDA_R_16BF,
        DType::F32 => sys::cudaDataType::CUDA_R_32F,
        other => return Err(format!("cuBLAS products take f16, bf16 or f32, not {other:?}")),
    })
}

fn trans(t: Trans) -> sys::cublasOperation_t {
    match t {
        Trans::N => sys::cublasOperation_t::CUBLAS_OP_N,
        Trans::T => sys::cublasOperation_t::CUBLAS_OP_T,
    }
}

/// `alpha · a · b` in `out` on cuBLAS for 3-D cubecl tensors (see
/// `reel_core::kernels::Kernels::matmul`; `out` is the operands' dtype or f32), plus `bias`
/// along the given axis of the result when there is one (`Kernels::matmul_bias`: the output
/// starts as the broadcast bias and cuBLAS accumulates onto it, `beta = 1`).
pub fn matmul(
    a: CubeTensor<CudaRuntime>,
    b: CubeTensor<CudaRuntime>,
    alpha: f32,
    out: DType,
    bias: Option<(CubeTensor<CudaRuntime>, BiasAxis)>,
) -> Result<CubeTensor<CudaRuntime>, String> {
    if a.dtype != b.dtype || !(out == a.dtype || out == DType::F32) {
        return Err(format!("matrix product of {:?} and {:?} into {out:?}", a.dtype, b.dtype));
    }
    let (ty, ty_out) = (data_type(a.dtype)?, data_type(out)?);
    let out_dtype = out;
    let (mut a, mut b) = (a, b);
    let call: GemmCall = loop {
        match plan(operand(&a), operand(&b)) {
            Ok(call) => break call,
            Err(PlanError::Layout(0)) => a = into_contiguous(a),
            Err(PlanError::Layout(_)) => b = into_contiguous(b),
            Err(PlanError::Shapes) => {
                return Err(format!("matrix product of shapes {:?} and {:?}", a.meta.shape(), b.meta.shape()))
            }
        }
    };
    let shape = Shape::new([call.batch, call.n, call.m]);
    let out = empty_device_contiguous_dtype(a.client.clone(), a.device.clone(), shape, out_dtype);
    if call.batch * call.m * call.n == 0 {
        return Ok(out);
    }
    let beta = match &bias {
        Some((bias, axis)) => {
            // The result is (batch, rows, columns) row-major.
            let (rows, cols) = (call.n, call.m);
            let (inner, channels) = match axis {
                BiasAxis::Columns => (1, cols),
                BiasAxis::Rows => (cols, rows),
            };
            super::nvrtc::fill_bias(bias, &out, inner, channels)?;
            1f32
        }
        None => 0f32,
    };
    let res = |t: &CubeTensor<CudaRuntime>| t.client.get_resource(t.handle.clone()).map_err(|e| format!("{e:?}"));
    let (ra, rb, rc) = (res(&a)?, res(&b)?, res(&out)?);
    let stream = rc.resource().stream;
    if stream.is_null() {
        return Err("cubecl gave no stream with the memory (is third_party/cubecl-cuda patched in?)".into());
    }
    let handle = handle()?;
    let int = |v: usize| i32::try_from(v).map_err(|_| format!("matrix size {v} exceeds cuBLAS's 32-bit sizes"));
    // SAFETY: the pointers come from live cubecl allocations (kept alive by `ra`/`rb`/`rc` and
    // the tensors until this call has been enqueued; cubecl only reuses memory in stream order);
    // the plan keeps every index inside the operands (tested against cuBLAS's definition in
    // gemm_plan.rs); alpha/beta are host f32 as CUBLAS_COMPUTE_32F expects.
    unsafe {
        cublas::set_stream(handle, stream as sys::cudaStream_t).map_err(|e| format!("cublasSetStream: {e:?}"))?;
        cublas::gemm_strided_batched_ex(
            handle,
            trans(call.transa),
            trans(call.transb),
            int(call.m)?,
            int(call.n)?,
            int(call.k)?,
            (&alpha) as *const f32 as *const c_void,
            // cuBLAS's first operand is the product's B.
            rb.resource().ptr as *const c_void,
            ty,
            int(call.lda)?,
            call.stride_a as i64,
            ra.resource().ptr as *const c_void,
            ty,
            int(call.ldb)?,
            call.stride_b as i64,
            (&beta) as *const f32 as *const c_void,
            rc.resource().ptr as *mut c_void,
            ty_out,
            int(call.ldc)?,
            call.stride_c as i64,
            int(call.batch)?,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
        .map_err(|e| format!("cublasGemmStridedBatchedEx: {e:?}"))?;
    }
    drop((ra, rb, rc, bias));
    Ok(out)
}
