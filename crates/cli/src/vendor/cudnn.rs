//! cuDNN convolutions under burn-cuda (`--cuda-kernels cudnn`, the default when libcudnn and
//! libcublas load): `cudnnConvolutionForward` in NCHW, cross-correlation as PyTorch's
//! `F.conv2d`, the algorithm picked by cuDNN's heuristics (`cudnnGetConvolutionForwardAlgorithm_v7`,
//! what PyTorch does with `cudnn.benchmark` off, its default) once per shape and run with the math
//! type it reports; f16 / bf16 may use the tensor cores (f32 accumulation), f32 never TF32. Enqueued on cubecl's stream like the
//! cuBLAS products (see `cublas.rs`); the workspace comes from cubecl's memory pool.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::Mutex;

use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cudarc::cudnn::{result as cudnn, sys};

use super::cuda::{contiguous, device_memory, tensor_memory};

/// Whether libcudnn can be loaded (library path, `LD_LIBRARY_PATH`).
pub fn available() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { sys::is_culib_present() }
}

thread_local! {
    static HANDLE: RefCell<Option<sys::cudnnHandle_t>> = const { RefCell::new(None) };
}

/// This thread's cuDNN handle, in the GPU's context.
fn handle() -> Result<sys::cudnnHandle_t, String> {
    super::cuda::thread_handle(&HANDLE, || cudnn::create_handle().map_err(|e| format!("cudnnCreate: {e:?}")))
}

/// The `(n, c_out, oh, ow)` of `conv2d(x, w)` with `stride` and symmetric padding `pad` (stride 0
/// counts as 1 and a filter larger than the padded input as one position: both are refused
/// before any call).
pub fn output_dims(x: [usize; 4], w: [usize; 4], stride: [usize; 2], pad: [usize; 2]) -> [usize; 4] {
    let out = |i: usize| (x[i + 2] + 2 * pad[i]).saturating_sub(w[i + 2]) / stride[i].max(1) + 1;
    [x[0], w[0], out(0), out(1)]
}

fn data_type(dtype: DType) -> Result<sys::cudnnDataType_t, String> {
    Ok(match dtype {
        DType::F16 => sys::cudnnDataType_t::CUDNN_DATA_HALF,
        DType::BF16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
        DType::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        other => return Err(format!("cuDNN convolutions take f16, bf16 or f32, not {other:?}")),
    })
}

/// The descriptors of one convolution, destroyed on drop.
struct Descriptors {
    x: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
}

impl Drop for Descriptors {
    fn drop(&mut self) {
        // SAFETY: each was created once below and is destroyed once here.
        unsafe {
            let _ = cudnn::destroy_tensor_descriptor(self.x);
            let _ = cudnn::destroy_filter_descriptor(self.w);
            let _ = cudnn::destroy_convolution_descriptor(self.conv);
            let _ = cudnn::destroy_tensor_descriptor(self.y);
        }
    }
}

/// NCHW sizes of input, filter and output, the convolution's stride and padding, the dtype.
type Key = ([usize; 4], [usize; 4], [usize; 2], [usize; 2], DType);

/// What cuDNN's heuristics chose for one shape: the algorithm, the math type it runs with (set on
/// the descriptor before running, as PyTorch does) and its workspace bytes.
#[derive(Clone, Copy)]
struct Choice {
    algo: sys::cudnnConvolutionFwdAlgo_t,
    math: sys::cudnnMathType_t,
    workspace: usize,
}

/// The choice per shape.
static ALGOS: Mutex<Option<HashMap<Key, Choice>>> = Mutex::new(None);

fn describe(key: &Key, ty: sys::cudnnDataType_t) -> Result<Descriptors, String> {
    let (x, w, stride, pad, dtype) = *key;
    let [n, c, h, wd] = x;
    let [k, _, r, s] = w;
    let [_, _, oh, ow] = output_dims(x, w, stride, pad);
    let int = |v: usize| c_int::try_from(v).map_err(|_| format!("convolution size {v} exceeds cuDNN's 32-bit sizes"));
    fn e(what: &'static str) -> impl Fn(cudnn::CudnnError) -> String {
        move |err| format!("{what}: {err:?}")
    }
    let d = Descriptors {
        x: cudnn::create_tensor_descriptor().map_err(e("tensor descriptor"))?,
        w: cudnn::create_filter_descriptor().map_err(e("filter descriptor"))?,
        conv: cudnn::create_convolution_descriptor().map_err(e("convolution descriptor"))?,
        y: cudnn::create_tensor_descriptor().map_err(e("tensor descriptor"))?,
    };
    let nchw = |n: usize, c: usize, h: usize, w: usize| -> Result<([c_int; 4], [c_int; 4]), String> {
        Ok(([int(n)?, int(c)?, int(h)?, int(w)?], [int(c * h * w)?, int(h * w)?, int(w)?, 1]))
    };
    let (xs, xst) = nchw(n, c, h, wd)?;
    let (ys, yst) = nchw(n, k, oh, ow)?;
    // SAFETY: the descriptors were just created; the arrays outlive the calls.
    unsafe {
        cudnn::set_tensor4d_descriptor_ex(d.x, ty, xs, xst).map_err(e("input descriptor"))?;
        cudnn::set_filter4d_descriptor(d.w, ty, sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW, [int(k)?, int(c)?, int(r)?, int(s)?])
            .map_err(e("filter descriptor"))?;
        cudnn::set_convolution2d_descriptor(
            d.conv,
            int(pad[0])?,
            int(pad[1])?,
            int(stride[0])?,
            int(stride[1])?,
            1,
            1,
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        )
        .map_err(e("convolution descriptor"))?;
        let math = if dtype == DType::F32 {
            sys::cudnnMathType_t::CUDNN_FMA_MATH
        } else {
            sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH
        };
        cudnn::set_convolution_math_type(d.conv, math).map_err(e("math type"))?;
        cudnn::set_tensor4d_descriptor_ex(d.y, ty, ys, yst).map_err(e("output descriptor"))?;
    }
    Ok(d)
}

fn algorithm(handle: sys::cudnnHandle_t, key: &Key, d: &Descriptors) -> Result<Choice, String> {
    let mut guard = ALGOS.lock().unwrap_or_else(|e| e.into_inner());
    let algos = guard.get_or_insert_with(HashMap::new);
    if let Some(found) = algos.get(key) {
        // SAFETY: a live descriptor.
        unsafe { cudnn::set_convolution_math_type(d.conv, found.math) }.map_err(|e| format!("math type: {e:?}"))?;
        return Ok(*found);
    }
    const WANT: usize = 8;
    // SAFETY: zeroed plain-data structs the call fills; `count` says how many.
    let mut perf: [sys::cudnnConvolutionFwdAlgoPerf_t; WANT] = unsafe { std::mem::zeroed() };
    let mut count: c_int = 0;
    // SAFETY: live handle and descriptors; the output arrays hold WANT entries.
    unsafe {
        cudnn::get_convolution_forward_algorithm(handle, d.x, d.w, d.conv, d.y, WANT as c_int, &mut count, perf.as_mut_ptr())
            .map_err(|e| format!("cudnnGetConvolutionForwardAlgorithm_v7: {e:?}"))?;
    }
    let best = perf[..(count.max(0) as usize).min(WANT)]
        .iter()
        .find(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
        .ok_or_else(|| format!("cuDNN has no algorithm for the convolution {key:?}"))?;
    // f32 stays on FMA math (cuDNN's default math may use TF32 for f32 data).
    let math = if key.4 == DType::F32 { sys::cudnnMathType_t::CUDNN_FMA_MATH } else { best.mathType };
    // SAFETY: as above.
    let workspace = unsafe {
        cudnn::set_convolution_math_type(d.conv, math).map_err(|e| format!("math type: {e:?}"))?;
        cudnn::get_convolution_forward_workspace_size(handle, d.x, d.w, d.conv, d.y, best.algo)
    }
    .map_err(|e| format!("cudnnGetConvolutionForwardWorkspaceSize: {e:?}"))?;
    let chosen = Choice { algo: best.algo, math, workspace };
    algos.insert(*key, chosen);
    Ok(chosen)
}

/// A convolution's operands checked and made contiguous: `x (n, c, h, w)` and `w (k, c, r, s)`
/// of one dtype, with their dims and the output's ([`output_dims`]): both convolution paths
/// (this one and `cublas::conv2d`) start here.
#[allow(clippy::type_complexity)]
pub fn conv_operands(
    x: CubeTensor<CudaRuntime>,
    w: CubeTensor<CudaRuntime>,
    stride: [usize; 2],
    pad: [usize; 2],
) -> Result<(CubeTensor<CudaRuntime>, CubeTensor<CudaRuntime>, [[usize; 4]; 3]), String> {
    if x.dtype != w.dtype {
        return Err(format!("convolution of {:?} with {:?}", x.dtype, w.dtype));
    }
    let (x, w) = (contiguous(x), contiguous(w));
    let dims = |t: &CubeTensor<CudaRuntime>| -> Result<[usize; 4], String> {
        <[usize; 4]>::try_from(t.meta.shape().to_vec()).map_err(|d| format!("convolution operand of shape {d:?}"))
    };
    let (xd, wd) = (dims(&x)?, dims(&w)?);
    let ([_, c, h, wdth], [_, c2, r, s]) = (xd, wd);
    if c != c2 || h + 2 * pad[0] < r || wdth + 2 * pad[1] < s || stride.contains(&0) {
        return Err(format!("convolution of {xd:?} with a {wd:?} filter"));
    }
    Ok((x, w, [xd, wd, output_dims(xd, wd, stride, pad)]))
}

/// `F.conv2d(x, w, bias, stride=stride, padding=pad)` for cubecl tensors `x (n, c, h, w)`,
/// `w (k, c, r, s)` and `bias (k)` (the output starts as the broadcast bias and cuDNN
/// accumulates onto it, `beta = 1`).
pub fn conv2d(
    x: CubeTensor<CudaRuntime>,
    w: CubeTensor<CudaRuntime>,
    bias: Option<CubeTensor<CudaRuntime>>,
    stride: [usize; 2],
    pad: [usize; 2],
) -> Result<CubeTensor<CudaRuntime>, String> {
    let (x, w, [xd, wd, dims]) = conv_operands(x, w, stride, pad)?;
    let ty = data_type(x.dtype)?;
    let key: Key = (xd, wd, stride, pad, x.dtype);
    let out = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new(dims), x.dtype);
    if dims.contains(&0) {
        return Ok(out);
    }
    let beta = super::nvrtc::start_from_bias(bias.as_ref(), &out, dims[2] * dims[3], dims[1])?;
    let handle = handle()?;
    let d = describe(&key, ty)?;
    let Choice { algo, workspace, .. } = algorithm(handle, &key, &d)?;
    let scratch = (workspace > 0).then(|| x.client.empty(workspace));
    let ((px, _, gx), (pw, _, gw), (py, stream, gy)) = (tensor_memory(&x)?, tensor_memory(&w)?, tensor_memory(&out)?);
    let scratch_memory = scratch.as_ref().map(|h| device_memory(&x.client, h)).transpose()?;
    let alpha = 1f32;
    // SAFETY: live cubecl allocations (kept by the resources and tensors until enqueued, reused by
    // cubecl only in stream order), descriptors matching their contiguous NCHW layouts, host f32
    // scaling factors as cuDNN expects for every data type here.
    unsafe {
        cudnn::set_stream(handle, stream as sys::cudaStream_t).map_err(|e| format!("cudnnSetStream: {e:?}"))?;
        cudnn::convolution_forward(
            handle,
            (&alpha) as *const f32 as *const c_void,
            d.x,
            px as *const c_void,
            d.w,
            pw as *const c_void,
            d.conv,
            algo,
            scratch_memory.as_ref().map_or(std::ptr::null_mut(), |(p, _, _)| *p as *mut c_void),
            workspace,
            (&beta) as *const f32 as *const c_void,
            d.y,
            py as *mut c_void,
        )
        .map_err(|e| format!("cudnnConvolutionForward: {e:?}"))?;
    }
    drop((gx, gw, gy, scratch_memory, scratch, bias));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The descriptors reel builds are accepted by cuDNN and describe the output size reel
    /// allocates (`cudnnGetConvolution2dForwardOutputDim`, a host-side call: no GPU needed, but
    /// libcudnn must load — with `--features cuda` and LD_LIBRARY_PATH pointing at it).
    #[test]
    fn descriptors_give_the_output_size_reel_allocates() {
        if !available() {
            eprintln!("skipped: libcudnn cannot be loaded here");
            return;
        }
        let cases: [Key; 5] = [
            ([32, 320, 32, 32], [320, 320, 3, 3], [1, 1], [1, 1], DType::F16),
            ([16, 128, 256, 256], [3, 128, 3, 3], [1, 1], [1, 1], DType::F32),
            ([2, 320, 16, 1024], [320, 320, 3, 1], [1, 1], [1, 0], DType::BF16),
            ([32, 640, 16, 16], [1280, 640, 1, 1], [1, 1], [0, 0], DType::F16),
            ([32, 320, 33, 33], [320, 320, 3, 3], [2, 2], [0, 0], DType::F16),
        ];
        for key in cases {
            let d = describe(&key, data_type(key.4).unwrap()).unwrap();
            let mut dims = [0 as c_int; 4];
            let [a, b, c, e] = &mut dims;
            // SAFETY: live descriptors, four output ints.
            let status = unsafe { sys::cudnnGetConvolution2dForwardOutputDim(d.conv, d.x, d.w, a, b, c, e) };
            assert_eq!(status, sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS, "{key:?}");
            assert_eq!(dims.map(|v| v as usize), output_dims(key.0, key.1, key.2, key.3), "{key:?}");
        }
    }
}
