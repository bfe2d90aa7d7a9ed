//! cuBLAS as reel's matrix product on burn-cuda (`--cuda-kernels cublas|cudnn`): one
//! `cublasGemmStridedBatchedEx` per product (`cublasGemmEx` for a batch of one) (f16 / bf16 / f32 in, f32 accumulation, no TF32, as
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

use super::cuda::{device_memory, tensor_memory};
use super::gemm_plan::{plan, projection, GemmCall, Operand, PlanError, Trans};

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
    // The result is (batch, rows, columns) row-major.
    let (rows, cols) = (call.n, call.m);
    let (inner, channels) = match bias.as_ref().map(|(_, axis)| *axis) {
        Some(BiasAxis::Rows) => (cols, rows),
        _ => (1, cols),
    };
    let beta = super::nvrtc::start_from_bias(bias.as_ref().map(|(b, _)| b), &out, inner, channels)?;
    let ((pa, _, ga), (pb, _, gb), (pc, stream, gc)) = (tensor_memory(&a)?, tensor_memory(&b)?, tensor_memory(&out)?);
    // SAFETY: live cubecl allocations (kept alive by the guards and the tensors until this call
    // has been enqueued; cubecl only reuses memory in stream order) laid out as planned.
    unsafe { enqueue(stream, &call, [pa, pb, pc], [ty, ty_out], alpha, beta)? };
    drop((ga, gb, gc, bias));
    Ok(out)
}

/// The sizes of a 2-D operand.
fn matrix_dims(t: &CubeTensor<CudaRuntime>) -> Result<[usize; 2], String> {
    <[usize; 2]>::try_from(t.meta.shape().to_vec()).map_err(|d| format!("linear layer operand of shape {d:?}"))
}

/// A 2-D tensor as a product operand (no batch), at its strides.
fn matrix(t: &CubeTensor<CudaRuntime>) -> Result<Operand, String> {
    let ([rows, cols], s) = (matrix_dims(t)?, t.meta.strides());
    Ok(Operand { batch: 1, rows, cols, batch_stride: 0, row_stride: s[0], col_stride: s[1] })
}

/// `x` as the input of [`projection`] products by `w`: as it is when cuBLAS can read it, else
/// copied to row-major once.
fn projection_input(x: CubeTensor<CudaRuntime>, w: &CubeTensor<CudaRuntime>, total: usize) -> Result<CubeTensor<CudaRuntime>, String> {
    Ok(match projection(matrix(&x)?, matrix(w)?, total) {
        Err(PlanError::Layout(0)) => into_contiguous(x),
        _ => x,
    })
}

/// `x (rows, in)` times each `w_i (out_i, in)` transposed (bias-free linear layers), written
/// side by side into one row-major `(rows, Σ out_i)` result: one cuBLAS product per weight, each
/// into its column block (`ldc` = the whole row), in one custom operation.
pub fn linears(x: CubeTensor<CudaRuntime>, weights: Vec<CubeTensor<CudaRuntime>>) -> Result<CubeTensor<CudaRuntime>, String> {
    let [rows, d_in] = matrix_dims(&x)?;
    let ty = data_type(x.dtype)?;
    let mut outs = Vec::with_capacity(weights.len());
    for w in &weights {
        let [d_out, w_in] = matrix_dims(w)?;
        if w_in != d_in || w.dtype != x.dtype {
            return Err(format!("projection of ({rows}, {d_in}) {:?} by a ({d_out}, {w_in}) {:?} weight", x.dtype, w.dtype));
        }
        outs.push(d_out);
    }
    if outs.is_empty() {
        return Err("projections without weights".into());
    }
    let total: usize = outs.iter().sum();
    let out = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([rows, total]), x.dtype);
    if rows * total == 0 {
        return Ok(out);
    }
    let x = projection_input(x, &weights[0], total)?;
    let xop = matrix(&x)?;
    let elem = x.dtype.size();
    let (px, _, gx) = tensor_memory(&x)?;
    let (pc, stream, gc) = tensor_memory(&out)?;
    let mut guards = Vec::with_capacity(weights.len());
    let mut at = 0;
    for (w, d_out) in weights.iter().zip(outs) {
        let call = projection(xop, matrix(w)?, total).map_err(|e| format!("projection product: {e:?}"))?;
        let (pw, _, gw) = tensor_memory(w)?;
        // SAFETY: live allocations (held by the guards until every product is enqueued): x and
        // w as planned, and column block `at .. at + d_out` of each row of the result.
        unsafe { enqueue(stream, &call, [px, pw, pc + (at * elem) as u64], [ty, ty], 1.0, 0.0)? };
        guards.push(gw);
        at += d_out;
    }
    drop((gx, gc, guards, weights));
    Ok(out)
}

/// `x (rows, in) · wᵀ + bias + residual (rows, out)` on cuBLAS for a linear layer's weight
/// `w (out, in)`: the output starts as `residual + bias` (reel's kernel) and the product
/// accumulates onto it (`beta = 1`), so the residual add is no operation of its own.
pub fn linear_add(
    x: CubeTensor<CudaRuntime>,
    w: CubeTensor<CudaRuntime>,
    bias: Option<CubeTensor<CudaRuntime>>,
    residual: CubeTensor<CudaRuntime>,
) -> Result<CubeTensor<CudaRuntime>, String> {
    let ([rows, d_in], [d_out, w_in], [r_rows, r_cols]) = (matrix_dims(&x)?, matrix_dims(&w)?, matrix_dims(&residual)?);
    if w_in != d_in || (r_rows, r_cols) != (rows, d_out) || w.dtype != x.dtype || residual.dtype != x.dtype {
        return Err(format!("linear of ({rows}, {d_in}) {:?} by ({d_out}, {w_in}) {:?} onto ({r_rows}, {r_cols}) {:?}", x.dtype, w.dtype, residual.dtype));
    }
    let ty = data_type(x.dtype)?;
    let out = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([rows, d_out]), x.dtype);
    if rows * d_out == 0 {
        return Ok(out);
    }
    let (residual, bias) = (super::cuda::contiguous(residual), bias.map(super::cuda::contiguous));
    super::nvrtc::start_from_residual(&residual, bias.as_ref(), &out, d_out)?;
    let x = projection_input(x, &w, d_out)?;
    let call = projection(matrix(&x)?, matrix(&w)?, d_out).map_err(|e| format!("linear product: {e:?}"))?;
    let ((px, _, gx), (pw, _, gw), (pc, stream, gc)) = (tensor_memory(&x)?, tensor_memory(&w)?, tensor_memory(&out)?);
    // SAFETY: live allocations held by the guards (and the tensors) until enqueued: x and w as
    // planned, the contiguous result starting as residual + bias on the same stream.
    unsafe { enqueue(stream, &call, [px, pw, pc], [ty, ty], 1.0, 1.0)? };
    drop((gx, gw, gc, residual, bias));
    Ok(out)
}

/// Enqueues `call` on `stream`: `ptrs` = the product's A, B and the row-major result C (device
/// addresses), `types` = the operands' and the result's data types, `alpha · A · B + beta · C`.
///
/// # Safety
/// The addresses must be live device memory holding the operands as `call` describes them
/// (tested against cuBLAS's definition in gemm_plan.rs), until the call has run on `stream`.
pub unsafe fn enqueue(
    stream: cudarc::driver::sys::CUstream,
    call: &GemmCall,
    [a, b, c]: [u64; 3],
    [ty, ty_out]: [sys::cudaDataType; 2],
    alpha: f32,
    beta: f32,
) -> Result<(), String> {
    let handle = handle()?;
    let int = |v: usize| i32::try_from(v).map_err(|_| format!("matrix size {v} exceeds cuBLAS's 32-bit sizes"));
    // SAFETY: as the caller promises; alpha/beta are host f32 as CUBLAS_COMPUTE_32F expects.
    unsafe {
        cublas::set_stream(handle, stream as sys::cudaStream_t).map_err(|e| format!("cublasSetStream: {e:?}"))?;
        if call.batch == 1 {
            // One product: the plain GEMM entry point, as PyTorch calls it for a linear layer
            // (the strided-batched one may pick batched kernels for a batch of one).
            return cublas::gemm_ex(
                handle,
                trans(call.transa),
                trans(call.transb),
                int(call.m)?,
                int(call.n)?,
                int(call.k)?,
                (&alpha) as *const f32 as *const c_void,
                b as *const c_void,
                ty,
                int(call.lda)?,
                a as *const c_void,
                ty,
                int(call.ldb)?,
                (&beta) as *const f32 as *const c_void,
                c as *mut c_void,
                ty_out,
                int(call.ldc)?,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
            .map_err(|e| format!("cublasGemmEx: {e:?}"));
        }
        cublas::gemm_strided_batched_ex(
            handle,
            trans(call.transa),
            trans(call.transb),
            int(call.m)?,
            int(call.n)?,
            int(call.k)?,
            (&alpha) as *const f32 as *const c_void,
            // cuBLAS's first operand is the product's B.
            b as *const c_void,
            ty,
            int(call.lda)?,
            call.stride_a as i64,
            a as *const c_void,
            ty,
            int(call.ldb)?,
            call.stride_b as i64,
            (&beta) as *const f32 as *const c_void,
            c as *mut c_void,
            ty_out,
            int(call.ldc)?,
            call.stride_c as i64,
            int(call.batch)?,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
        .map_err(|e| format!("cublasGemmStridedBatchedEx: {e:?}"))?;
    }
    Ok(())
}

/// `F.conv2d(x, w, bias, stride, padding)` (symmetric padding `pad = [rows, columns]`) for
/// cubecl tensors `x (n, c, h, w)`, `w (k, c, r, s)`, `bias (k)` as products on cuBLAS: the
/// weight `(k, c·r·s)` times each image's im2col columns `(c·r·s, oh·ow)`, written by reel's
/// kernel (`nvrtc.rs`) in pieces of at most `reel_core::kernels::CHUNK_BYTES`, into the output
/// that starts as the bias (`beta = 1`). A 1×1 convolution without stride or padding multiplies
/// the images themselves.
pub fn conv2d(
    x: CubeTensor<CudaRuntime>,
    w: CubeTensor<CudaRuntime>,
    bias: Option<CubeTensor<CudaRuntime>>,
    stride: [usize; 2],
    pad: [usize; 2],
) -> Result<CubeTensor<CudaRuntime>, String> {
    let (x, w, [[n, c, h, wd], [k, _, r, s], [_, _, oh, ow]]) = super::cudnn::conv_operands(x, w, stride, pad)?;
    let ty = data_type(x.dtype)?;
    let out = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([n, k, oh, ow]), x.dtype);
    let (taps, len) = (c * r * s, oh * ow);
    if n * k * len == 0 {
        return Ok(out);
    }
    let beta = super::nvrtc::start_from_bias(bias.as_ref(), &out, len, k)?;
    let elem = x.dtype.size();
    let direct = r == 1 && s == 1 && stride == [1, 1] && pad == [0, 0];
    let group = if direct { n } else { (reel_core::kernels::CHUNK_BYTES / (taps * len * elem).max(1)).clamp(1, n) };
    let columns = (!direct).then(|| x.client.empty(group * taps * len * elem));
    let ((px, _, gx), (pw, _, gw), (py, stream, gy)) = (tensor_memory(&x)?, tensor_memory(&w)?, tensor_memory(&out)?);
    let cols_memory = columns.as_ref().map(|h| device_memory(&x.client, h)).transpose()?;
    let weight = Operand { batch: 1, rows: k, cols: taps, batch_stride: 0, row_stride: taps, col_stride: 1 };
    for first in (0..n).step_by(group) {
        let items = group.min(n - first);
        let cols = Operand { batch: items, rows: taps, cols: len, batch_stride: taps * len, row_stride: len, col_stride: 1 };
        let call = plan(weight, cols).map_err(|e| format!("convolution product: {e:?}"))?;
        let x_at = px + (first * c * h * wd * elem) as u64;
        let b_ptr = match &cols_memory {
            None => x_at,
            Some((cols_ptr, _, _)) => {
                super::nvrtc::im2col(stream, x.dtype, x_at, *cols_ptr, [items, c, h, wd], [r, s], stride, pad, [oh, ow])?;
                *cols_ptr
            }
        };
        let y_at = py + (first * k * len * elem) as u64;
        // SAFETY: live allocations (held by the resources until the loop has enqueued
        // everything), the weight, the columns (or images) and the output piece laid out as
        // the operands say; the columns buffer is rewritten only after the product that reads
        // it, in stream order.
        unsafe { enqueue(stream, &call, [pw, b_ptr, y_at], [ty, ty], 1.0, beta)? };
    }
    drop((gx, gw, gy, cols_memory, columns, bias));
    Ok(out)
}
