//! reel's own CUDA kernels, compiled once per process with NVRTC (the library cubecl already
//! loads) for the GPU's architecture and launched on the stream cubecl launches on, for
//! `--cuda-kernels cudnn|cublas`: each replaces a chain of burn operations, and on the GPU each
//! burn operation costs far more than these layers' arithmetic (docs/performance.md,
//! 2026-11-27 sixth session).
//! - Group norm (optionally followed by SiLU), one kernel (`torch.nn.GroupNorm` with the affine
//!   weights, statistics in f32): each block normalises one `(item, group)`: the mean, then the
//!   mean square about it (as `reel_core::nn::group_norm_ops`), then the affine output, in the
//!   tensor's dtype. Layer norm the same way with one warp a row (`elementwise.cu`).
//! - The attention softmax: f32 scores in, probabilities in the model's dtype out, the causal
//!   mask applied by index (one block per row).
//! - A bias broadcast into a product's or convolution's output before the library accumulates
//!   onto it (`beta = 1`, as PyTorch's `addmm`), so the bias needs no burn operation.
//! - The im2col columns of a convolution for `--cuda-kernels cublas`.

use std::ffi::{c_void, CString};
use std::sync::OnceLock;

use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cudarc::driver::{result as driver, sys};

use super::cuda::{contiguous, tensor_memory};

const SOURCE: &str = r#"
typedef unsigned short u16;
struct F32 {
  typedef float T;
  static __device__ __forceinline__ float ld(const float* p, long long i) { return p[i]; }
  static __device__ __forceinline__ void st(float* p, long long i, float v) { p[i] = v; }
};
// c += a·b for one warp: mma.sync m16n8k16 with f32 accumulators (register fragments as the
// PTX ISA lays them out; flash_attention.cu uses it). Tensor-core products of this shape need
// compute capability 8.0; below it the kernel traps (nvrtc.rs never launches it there).
#if __CUDA_ARCH__ >= 800
#define MMA16816(TYPE)                                                                          \
  static __device__ __forceinline__ void mma(float* c, const unsigned* a, const unsigned* b) {  \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TYPE "." TYPE ".f32 "                 \
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"                         \
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                               \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));           \
  }
#else
#define MMA16816(TYPE)                                                                          \
  static __device__ __forceinline__ void mma(float*, const unsigned*, const unsigned*) { __trap(); }
#endif
struct F16 {
  typedef u16 T;
  static __device__ __forceinline__ float ld(const u16* p, long long i) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i])); return f;
  }
  static __device__ __forceinline__ u16 cvt(float v) {
    u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v)); return h;
  }
  static __device__ __forceinline__ void st(u16* p, long long i, float v) { p[i] = cvt(v); }
  MMA16816("f16")
};
struct BF16 {
  typedef u16 T;
  static __device__ __forceinline__ float ld(const u16* p, long long i) {
    return __uint_as_float(((unsigned int)p[i]) << 16);
  }
  static __device__ __forceinline__ u16 cvt(float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
  }
  static __device__ __forceinline__ void st(u16* p, long long i, float v) { p[i] = cvt(v); }
  MMA16816("bf16")
};

// The sum of every thread's v, returned to all threads (blockDim.x a multiple of 32, <= 1024).
__device__ float block_sum(float v) {
  __shared__ float part[32];
  __shared__ float total;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int warps = blockDim.x >> 5;
    float t = lane < warps ? part[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    if (lane == 0) total = t;
  }
  __syncthreads();
  float r = total;
  __syncthreads();
  return r;
}

// The largest of every thread's v, returned to all threads (as block_sum).
__device__ float block_max(float v) {
  __shared__ float part[32];
  __shared__ float total;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int warps = blockDim.x >> 5;
    float t = lane < warps ? part[lane] : __int_as_float(0xff800000);
    for (int o = 16; o > 0; o >>= 1) t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, o));
    if (lane == 0) total = t;
  }
  __syncthreads();
  float r = total;
  __syncthreads();
  return r;
}

// Block b: the softmax of row b of the f32 scores (rows, sk) into y (rows, sk); with causal,
// row b's query is b % sq and sees the keys j <= b % sq (the others get 0).
template <class L>
__device__ void softmax_rows(const float* x, typename L::T* y, int sq, int sk, int causal) {
  const long long base = (long long)blockIdx.x * sk;
  const int limit = causal ? min(sk, (int)(blockIdx.x % (unsigned int)sq) + 1) : sk;
  float m = __int_as_float(0xff800000);
  for (int j = threadIdx.x; j < limit; j += blockDim.x) m = fmaxf(m, x[base + j]);
  m = block_max(m);
  float s = 0.0f;
  for (int j = threadIdx.x; j < limit; j += blockDim.x) s += expf(x[base + j] - m);
  const float inv = 1.0f / block_sum(s);
  for (int j = threadIdx.x; j < sk; j += blockDim.x) L::st(y, base + j, j < limit ? expf(x[base + j] - m) * inv : 0.0f);
}

#define SOFTMAX(NAME, L)                                                                        \
  extern "C" __global__ void NAME(const float* x, L::T* y, int sq, int sk, int causal) {       \
    softmax_rows<L>(x, y, sq, sk, causal);                                                      \
  }
SOFTMAX(reel_softmax_f32, F32)
SOFTMAX(reel_softmax_f16, F16)
SOFTMAX(reel_softmax_bf16, BF16)

// Block b normalises the len = per_group * rest contiguous values of (item, group) = divmod(b,
// groups); value i of it belongs to channel group * per_group + i / rest.
template <class L>
__device__ void norm(const typename L::T* x, const typename L::T* w, const typename L::T* b,
                     typename L::T* y, int groups, int per_group, int rest, float eps, int silu) {
  const unsigned int len = (unsigned int)per_group * (unsigned int)rest;
  const long long base = (long long)blockIdx.x * len;
  const int channel0 = (int)(blockIdx.x % groups) * per_group;
  float s = 0.0f;
  for (unsigned int i = threadIdx.x; i < len; i += blockDim.x) s += L::ld(x, base + i);
  const float mean = block_sum(s) / (float)len;
  float q = 0.0f;
  for (unsigned int i = threadIdx.x; i < len; i += blockDim.x) {
    float d = L::ld(x, base + i) - mean;
    q += d * d;
  }
  const float rstd = 1.0f / sqrtf(block_sum(q) / (float)len + eps);
  for (unsigned int i = threadIdx.x; i < len; i += blockDim.x) {
    int c = channel0 + (int)(i / (unsigned int)rest);
    float o = (L::ld(x, base + i) - mean) * rstd * L::ld(w, c) + L::ld(b, c);
    if (silu) o = o / (1.0f + expf(-o));
    L::st(y, base + i, o);
  }
}

// y[i] = b[(i / inner) % channels] for i < total.
template <class L>
__device__ void fill_bias(const typename L::T* b, typename L::T* y, long long total, long long inner, int channels) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x)
    L::st(y, i, L::ld(b, (i / inner) % channels));
}

#define FILL(NAME, L)                                                                              \
  extern "C" __global__ void NAME(const L::T* b, L::T* y, long long total, long long inner, int channels) { \
    fill_bias<L>(b, y, total, inner, channels);                                                     \
  }
FILL(reel_fill_bias_f32, F32)
FILL(reel_fill_bias_f16, F16)
FILL(reel_fill_bias_bf16, BF16)

// The im2col columns (items, c·kh·kw, oh·ow) of contiguous images x (items, c, h, w), in
// PyTorch's weight order (channel, kernel row, kernel column), zero outside the padding.
template <class T>
__device__ void im2col(const T* x, T* cols, int c, int h, int w, int kh, int kw, int sy, int sx,
                       int py, int px, int oh, int ow, long long total) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    long long t = i;
    const int ox = (int)(t % ow); t /= ow;
    const int oy = (int)(t % oh); t /= oh;
    const int kx = (int)(t % kw); t /= kw;
    const int ky = (int)(t % kh); t /= kh;
    const int ci = (int)(t % c);
    const long long item = t / c;
    const int y = oy * sy + ky - py, xx = ox * sx + kx - px;
    T v = (T)0;
    if (y >= 0 && y < h && xx >= 0 && xx < w) v = x[((item * c + ci) * h + y) * (long long)w + xx];
    cols[i] = v;
  }
}

#define IM2COL(NAME, T)                                                                            \
  extern "C" __global__ void NAME(const T* x, T* cols, int c, int h, int w, int kh, int kw, int sy, \
                                  int sx, int py, int px, int oh, int ow, long long total) {        \
    im2col<T>(x, cols, c, h, w, kh, kw, sy, sx, py, px, oh, ow, total);                             \
  }
IM2COL(reel_im2col_32, float)
IM2COL(reel_im2col_16, u16)

#define NORM(NAME, L)                                                                        \
  extern "C" __global__ void NAME(const L::T* x, const L::T* w, const L::T* b, L::T* y,      \
                                  int groups, int per_group, int rest, float eps, int silu) { \
    norm<L>(x, w, b, y, groups, per_group, rest, eps, silu);                                 \
  }
NORM(reel_norm_f32, F32)
NORM(reel_norm_f16, F16)
NORM(reel_norm_bf16, BF16)
"#;

/// The compiled kernels, in [`ENTRIES`]' order (`CUfunction`s as addresses: the primary context
/// they live in stays for the process).
static KERNELS: OnceLock<Result<[usize; N], String>> = OnceLock::new();

const N: usize = 22;

/// The source's entry points.
const ENTRIES: [&str; N] = [
    "reel_norm_f32",
    "reel_norm_f16",
    "reel_norm_bf16",
    "reel_fill_bias_f32",
    "reel_fill_bias_f16",
    "reel_fill_bias_bf16",
    "reel_im2col_32",
    "reel_im2col_16",
    "reel_softmax_f32",
    "reel_softmax_f16",
    "reel_softmax_bf16",
    "reel_flash_f16",
    "reel_flash_bf16",
    "reel_geglu_f32",
    "reel_geglu_f16",
    "reel_geglu_bf16",
    "reel_residual_start_f32",
    "reel_residual_start_f16",
    "reel_residual_start_bf16",
    "reel_layer_norm_rows_f32",
    "reel_layer_norm_rows_f16",
    "reel_layer_norm_rows_bf16",
];

/// The fused attention kernel, appended to [`SOURCE`] (its own file: the kernel emulation test
/// compiles it on the host too).
const FLASH: &str = include_str!("flash_attention.cu");

/// The element-wise kernels (GEGLU, the residual start of a linear layer), appended the same way.
const ELEMENTWISE: &str = include_str!("elementwise.cu");

/// The GPU's compute capability major version, once the kernels are loaded (0 before).
static MAJOR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The entry point `reel_{family}_{f32|f16|bf16}` for `dtype`.
fn typed(family: &str, dtype: DType) -> Result<sys::CUfunction, String> {
    let suffix = match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => return Err(format!("reel's kernels take f16, bf16 or f32, not {other:?}")),
    };
    function(&format!("reel_{family}_{suffix}"))
}

/// The compiled entry point `name` (compiling and loading the module on first use).
fn function(name: &str) -> Result<sys::CUfunction, String> {
    let at = ENTRIES.iter().position(|e| *e == name).ok_or_else(|| format!("no kernel {name}"))?;
    Ok(kernels()?[at] as sys::CUfunction)
}

fn kernels() -> Result<[usize; N], String> {
    KERNELS
        .get_or_init(|| {
            super::cuda::make_context_current()?;
            let gpu = super::cuda::gpu();
            // SAFETY: plain driver queries and module loading in the current (primary) context.
            unsafe {
                let device = driver::device::get(gpu as i32).map_err(|e| format!("CUDA device {gpu}: {e:?}"))?;
                let attr = |a| driver::device::get_attribute(device, a).map_err(|e| format!("device attribute: {e:?}"));
                let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
                let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
                MAJOR.store(major, std::sync::atomic::Ordering::Relaxed);
                let src = CString::new(ptx(major, minor)?).map_err(|e| format!("PTX: {e}"))?;
                let module = driver::module::load_data(src.as_ptr() as *const c_void).map_err(|e| format!("cuModuleLoadData: {e:?}"))?;
                let mut out = [0usize; N];
                for (slot, name) in out.iter_mut().zip(ENTRIES) {
                    *slot = driver::module::get_function(module, CString::new(name).unwrap())
                        .map(|f| f as usize)
                        .map_err(|e| format!("{name}: {e:?}"))?;
                }
                Ok(out)
            }
        })
        .clone()
}

/// The kernels' PTX for compute capability `major.minor` (NVRTC; no GPU needed).
fn ptx(major: i32, minor: i32) -> Result<String, String> {
    let opts = cudarc::nvrtc::CompileOptions {
        options: vec![format!("--gpu-architecture=compute_{major}{minor}")],
        name: Some("reel_kernels.cu".into()),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(format!("{SOURCE}\n{FLASH}\n{ELEMENTWISE}"), opts).map_err(|e| format!("NVRTC: {e:?}"))?;
    Ok(ptx.to_src())
}

/// Whether NVRTC can be loaded (the kernels are compiled on first use).
pub fn available() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// A kernel argument: the address of its value, as `cuLaunchKernel` takes it.
fn arg<T>(value: &mut T) -> *mut c_void {
    value as *mut T as *mut c_void
}

/// Launches `kernel` on `blocks × threads` on `stream`, in the GPU's context.
///
/// # Safety
/// `params` must be the kernel's parameters, in order and of its types; the memory it touches
/// must stay live until it has run on `stream`.
unsafe fn launch(kernel: sys::CUfunction, blocks: u32, threads: u32, stream: sys::CUstream, params: &mut [*mut c_void], what: &str) -> Result<(), String> {
    // SAFETY: as the caller promises.
    unsafe { launch_grid(kernel, (blocks, 1, 1), threads, stream, params, what) }
}

/// [`launch`] on a grid of `grid` blocks.
///
/// # Safety
/// As [`launch`].
unsafe fn launch_grid(kernel: sys::CUfunction, grid: (u32, u32, u32), threads: u32, stream: sys::CUstream, params: &mut [*mut c_void], what: &str) -> Result<(), String> {
    super::cuda::make_context_current()?;
    // SAFETY: as the caller promises.
    unsafe { driver::launch_kernel(kernel, grid, (threads, 1, 1), 0, stream, params) }
        .map_err(|e| format!("{what} kernel launch: {e:?}"))
}

/// Threads per block: enough for the larger groups, whole warps, at most 1024.
fn block_threads(len: usize) -> u32 {
    (len.div_ceil(8).next_power_of_two()).clamp(32, 1024) as u32
}

/// `x` (contiguous: `n` items of `groups · per_group` channels of `rest` values) normalised per
/// `(item, group)` with the affine `w`, `b` (one value per channel, all one dtype), then SiLU
/// when `silu`.
fn norm(
    x: CubeTensor<CudaRuntime>,
    w: CubeTensor<CudaRuntime>,
    b: CubeTensor<CudaRuntime>,
    [n, groups, per_group, rest]: [usize; 4],
    eps: f64,
    silu: bool,
) -> Result<CubeTensor<CudaRuntime>, String> {
    if x.dtype != w.dtype || x.dtype != b.dtype {
        return Err(format!("norm of {:?} with weights {:?} / {:?}", x.dtype, w.dtype, b.dtype));
    }
    let kernel = typed("norm", x.dtype)?;
    let (x, w, b) = (contiguous(x), contiguous(w), contiguous(b));
    let shape = Shape::from(x.meta.shape().to_vec());
    let out = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), shape, x.dtype);
    let len = per_group * rest;
    if n * groups * len == 0 {
        return Ok(out);
    }
    let int = |v: usize| i32::try_from(v).map_err(|_| format!("norm size {v} exceeds 32 bits"));
    let blocks = u32::try_from(n * groups).map_err(|_| "too many norm groups".to_string())?;
    u32::try_from(len).map_err(|_| format!("norm group of {len} values exceeds 32 bits"))?;
    let ((mut px, _, gx), (mut pw, _, gw), (mut pb, _, gb)) = (tensor_memory(&x)?, tensor_memory(&w)?, tensor_memory(&b)?);
    let (mut py, stream, gy) = tensor_memory(&out)?;
    let (mut g, mut pg, mut r) = (int(groups)?, int(per_group)?, int(rest)?);
    let (mut e, mut s) = (eps as f32, silu as i32);
    let mut params = [arg(&mut px), arg(&mut pw), arg(&mut pb), arg(&mut py), arg(&mut g), arg(&mut pg), arg(&mut r), arg(&mut e), arg(&mut s)];
    // SAFETY: the kernel's parameters are exactly these (three input pointers, one output, three
    // ints, a float, an int), every index stays inside the contiguous tensors (blocks · len
    // values, channels < c), the memory is held by the guards until enqueued and reused by
    // cubecl only in stream order.
    unsafe { launch(kernel, blocks, block_threads(len), stream, &mut params, "norm")? };
    drop((gx, gw, gb, gy));
    Ok(out)
}

/// `torch.nn.GroupNorm(groups, c, eps)` on `x (n, c, rest)`, then SiLU when `silu`.
pub fn group_norm(
    x: CubeTensor<CudaRuntime>,
    w: CubeTensor<CudaRuntime>,
    b: CubeTensor<CudaRuntime>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<CubeTensor<CudaRuntime>, String> {
    let dims = x.meta.shape().to_vec();
    let [n, c, rest] = <[usize; 3]>::try_from(dims).map_err(|d| format!("group norm of shape {d:?}"))?;
    if groups == 0 || c % groups != 0 || w.meta.shape().num_elements() != c || b.meta.shape().num_elements() != c {
        return Err(format!("group norm of {c} channels in {groups} groups"));
    }
    norm(x, w, b, [n, groups, c / groups, rest], eps, silu)
}

/// `torch.nn.LayerNorm(dim, eps)` on the rows of `x (rows, dim)`.
pub fn layer_norm(x: CubeTensor<CudaRuntime>, w: CubeTensor<CudaRuntime>, b: CubeTensor<CudaRuntime>, eps: f64) -> Result<CubeTensor<CudaRuntime>, String> {
    let dims = x.meta.shape().to_vec();
    let [rows, dim] = <[usize; 2]>::try_from(dims).map_err(|d| format!("layer norm of shape {d:?}"))?;
    if w.meta.shape().num_elements() != dim || b.meta.shape().num_elements() != dim {
        return Err(format!("layer norm of {dim} values with weights of {:?}", w.meta.shape()));
    }
    if x.dtype != w.dtype || x.dtype != b.dtype {
        return Err(format!("layer norm of {:?} with weights {:?} / {:?}", x.dtype, w.dtype, b.dtype));
    }
    // One warp a row (`elementwise.cu`): call 2 measured the block-per-row norm at 0.44 ms for
    // 32,768 rows of 320 (diffusers 0.07), its block reductions waiting on barriers.
    let kernel = typed("layer_norm_rows", x.dtype)?;
    let (x, w, b) = (contiguous(x), contiguous(w), contiguous(b));
    let out = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([rows, dim]), x.dtype);
    if rows * dim == 0 {
        return Ok(out);
    }
    const WARPS: usize = 8;
    let blocks = u32::try_from(rows.div_ceil(WARPS)).map_err(|_| format!("{rows} layer norm rows"))?;
    let ((mut px, _, gx), (mut pw, _, gw), (mut pb, _, gb)) = (tensor_memory(&x)?, tensor_memory(&w)?, tensor_memory(&b)?);
    let (mut py, stream, gy) = tensor_memory(&out)?;
    let mut r = rows as i64;
    let mut d = i32::try_from(dim).map_err(|_| format!("layer norm of {dim} values a row"))?;
    let mut e = eps as f32;
    let mut params = [arg(&mut px), arg(&mut pw), arg(&mut pb), arg(&mut py), arg(&mut r), arg(&mut d), arg(&mut e)];
    // SAFETY: the kernel's parameters are exactly these (four pointers, a long long, an int, a
    // float); warp w of block k reads and writes row k·8 + w < rows (dim values) of the
    // contiguous tensors and the dim weights, all held by the guards until enqueued.
    unsafe { launch(kernel, blocks, (32 * WARPS) as u32, stream, &mut params, "layer norm")? };
    drop((gx, gw, gb, gy));
    Ok(out)
}

/// The `beta` a product or convolution into `out` runs with: 1 after writing
/// `bias[(i / inner) % channels]` to every value `i` of `out` (contiguous, `bias`'s dtype) on
/// its stream, 0 without a bias. The caller holds `out` and `bias` until its own call is
/// enqueued after this.
pub fn start_from_bias(bias: Option<&CubeTensor<CudaRuntime>>, out: &CubeTensor<CudaRuntime>, inner: usize, channels: usize) -> Result<f32, String> {
    let Some(bias) = bias else { return Ok(0.0) };
    if bias.dtype != out.dtype || bias.meta.shape().num_elements() != channels || !bias.is_contiguous() {
        return Err(format!("bias of {:?} {:?} for {channels} channels of {:?}", bias.meta.shape(), bias.dtype, out.dtype));
    }
    let total = out.meta.shape().num_elements();
    if total == 0 {
        return Ok(1.0);
    }
    let kernel = typed("fill_bias", out.dtype)?;
    let ((mut pb, _, gb), (mut py, stream, gy)) = (tensor_memory(bias)?, tensor_memory(out)?);
    let (mut t, mut i) = (total as i64, inner.max(1) as i64);
    let mut c = i32::try_from(channels).map_err(|_| format!("{channels} bias channels"))?;
    let mut params = [arg(&mut pb), arg(&mut py), arg(&mut t), arg(&mut i), arg(&mut c)];
    let blocks = total.div_ceil(256).min(65_535) as u32;
    // SAFETY: the kernel's parameters are exactly these (two pointers, two long longs, an int);
    // it writes `total` values of `out` and reads `bias` below `channels`; both allocations are
    // live until the caller's call is enqueued after this on the same stream.
    unsafe { launch(kernel, blocks, 256, stream, &mut params, "bias")? };
    drop((gb, gy));
    Ok(1.0)
}

/// Writes the im2col columns `(items, c·kh·kw, oh·ow)` of the contiguous images
/// `(items, c, h, w)` at device address `x` to `cols` on `stream` (zero padding `pad =
/// [rows, columns]` on both sides, stride `stride`): PyTorch's weight order, so the weight
/// `(k, c·kh·kw)` times the columns is the convolution.
#[allow(clippy::too_many_arguments)]
pub fn im2col(
    stream: sys::CUstream,
    dtype: DType,
    x: u64,
    cols: u64,
    [items, c, h, w]: [usize; 4],
    [kh, kw]: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    [oh, ow]: [usize; 2],
) -> Result<(), String> {
    let kernel = match dtype {
        DType::F32 => function("reel_im2col_32")?,
        DType::F16 | DType::BF16 => function("reel_im2col_16")?,
        other => return Err(format!("im2col of {other:?}")),
    };
    let total = items * c * kh * kw * oh * ow;
    if total == 0 {
        return Ok(());
    }
    let int = |v: usize| i32::try_from(v).map_err(|_| format!("convolution size {v} exceeds 32 bits"));
    let (mut px, mut pc) = (x, cols);
    let mut ints = [int(c)?, int(h)?, int(w)?, int(kh)?, int(kw)?, int(stride[0])?, int(stride[1])?, int(pad[0])?, int(pad[1])?, int(oh)?, int(ow)?];
    let mut t = total as i64;
    let mut params: Vec<*mut c_void> = vec![arg(&mut px), arg(&mut pc)];
    params.extend(ints.iter_mut().map(arg));
    params.push(arg(&mut t));
    let blocks = total.div_ceil(256).min(65_535 * 8) as u32;
    // SAFETY: the kernel's parameters are exactly these (two pointers, eleven ints, a long long);
    // it reads the `items` images inside their bounds and writes `total` values of `cols`, both
    // live (held by the caller) until the product reading `cols` is enqueued after it.
    unsafe { launch(kernel, blocks, 256, stream, &mut params, "im2col") }
}

/// `softmax` over the rows of the f32 scores `(batch, sq, sk)` into dtype `out` (causal: query
/// `i` sees keys `j ≤ i`), one block per row.
pub fn softmax(scores: CubeTensor<CudaRuntime>, causal: bool, out: DType) -> Result<CubeTensor<CudaRuntime>, String> {
    if scores.dtype != DType::F32 {
        return Err(format!("softmax of {:?} scores (f32 expected)", scores.dtype));
    }
    let kernel = typed("softmax", out)?;
    let scores = contiguous(scores);
    let [batch, sq, sk] = <[usize; 3]>::try_from(scores.meta.shape().to_vec()).map_err(|d| format!("softmax of shape {d:?}"))?;
    let y = empty_device_contiguous_dtype(scores.client.clone(), scores.device.clone(), Shape::new([batch, sq, sk]), out);
    if batch * sq * sk == 0 {
        return Ok(y);
    }
    let rows = u32::try_from(batch * sq).map_err(|_| "too many softmax rows".to_string())?;
    let int = |v: usize| i32::try_from(v).map_err(|_| format!("softmax size {v} exceeds 32 bits"));
    let ((mut px, _, gx), (mut py, stream, gy)) = (tensor_memory(&scores)?, tensor_memory(&y)?);
    let (mut q, mut k, mut c) = (int(sq)?, int(sk)?, causal as i32);
    let mut params = [arg(&mut px), arg(&mut py), arg(&mut q), arg(&mut k), arg(&mut c)];
    let threads = (sk.div_ceil(4).next_power_of_two()).clamp(32, 256) as u32;
    // SAFETY: the kernel's parameters are exactly these (two pointers, three ints); block b
    // reads and writes row b (`sk` values) of the contiguous tensors, live until enqueued.
    unsafe { launch(kernel, rows, threads, stream, &mut params, "softmax")? };
    drop((gx, gy));
    Ok(y)
}

/// diffusers' GEGLU after its projection: `x (rows, 2·dim)` → `h * gelu(gate)` `(rows, dim)`
/// (`elementwise.cu`, one pass; any float dtype of reel's kernels).
pub fn geglu(x: CubeTensor<CudaRuntime>) -> Result<CubeTensor<CudaRuntime>, String> {
    let [rows, width] = <[usize; 2]>::try_from(x.meta.shape().to_vec()).map_err(|d| format!("GEGLU of shape {d:?}"))?;
    if width % 2 != 0 {
        return Err(format!("GEGLU of {width} values a row (two halves expected)"));
    }
    let kernel = typed("geglu", x.dtype)?;
    let x = contiguous(x);
    let dim = width / 2;
    let y = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([rows, dim]), x.dtype);
    let total = rows * dim;
    if total == 0 {
        return Ok(y);
    }
    let ((mut px, _, gx), (mut py, stream, gy)) = (tensor_memory(&x)?, tensor_memory(&y)?);
    let mut r = rows as i64;
    let mut d = i32::try_from(dim).map_err(|_| format!("GEGLU width {dim} exceeds 32 bits"))?;
    let mut params = [arg(&mut px), arg(&mut py), arg(&mut r), arg(&mut d)];
    let blocks = total.div_ceil(256).min(65_535 * 8) as u32;
    // SAFETY: the kernel's parameters are exactly these (two pointers, a long long, an int); it
    // reads rows · 2·dim values of `x` and writes rows · dim of `y`, both contiguous and held by
    // the guards until the launch is enqueued.
    unsafe { launch(kernel, blocks, 256, stream, &mut params, "GEGLU")? };
    drop((gx, gy));
    Ok(y)
}

/// Writes `residual[i] + bias[i % cols]` (or the residual alone) to every value `i` of `out`
/// (contiguous, the residual's dtype) on its stream, so a product accumulating onto it
/// (`beta = 1`) gives `x·wᵀ + bias + residual`. The caller holds the tensors until its own call
/// is enqueued after this.
pub fn start_from_residual(residual: &CubeTensor<CudaRuntime>, bias: Option<&CubeTensor<CudaRuntime>>, out: &CubeTensor<CudaRuntime>, cols: usize) -> Result<(), String> {
    let total = out.meta.shape().num_elements();
    if residual.dtype != out.dtype || !residual.is_contiguous() || residual.meta.shape().num_elements() != total {
        return Err(format!("residual {:?} {:?} for an output {:?} {:?}", residual.meta.shape(), residual.dtype, out.meta.shape(), out.dtype));
    }
    if let Some(b) = bias {
        if b.dtype != out.dtype || !b.is_contiguous() || b.meta.shape().num_elements() != cols {
            return Err(format!("bias {:?} {:?} for {cols} columns of {:?}", b.meta.shape(), b.dtype, out.dtype));
        }
    }
    if total == 0 {
        return Ok(());
    }
    let kernel = typed("residual_start", out.dtype)?;
    let (mut pr, _, gr) = tensor_memory(residual)?;
    let bias_memory = bias.map(tensor_memory).transpose()?;
    let mut pb = bias_memory.as_ref().map_or(0u64, |(p, _, _)| *p);
    let (mut py, stream, gy) = tensor_memory(out)?;
    let mut t = total as i64;
    let mut c = i32::try_from(cols.max(1)).map_err(|_| format!("{cols} columns"))?;
    let mut params = [arg(&mut pr), arg(&mut pb), arg(&mut py), arg(&mut t), arg(&mut c)];
    let blocks = total.div_ceil(256).min(65_535) as u32;
    // SAFETY: the kernel's parameters are exactly these (three pointers, the bias possibly null,
    // a long long, an int); it reads `total` values of the residual and `cols` of the bias and
    // writes `total` of `out`, all live until the caller's call is enqueued after this.
    unsafe { launch(kernel, blocks, 256, stream, &mut params, "residual")? };
    drop((gr, bias_memory, gy));
    Ok(())
}

/// The head size the fused attention kernel takes.
pub const FLASH_HEAD_DIM: usize = 64;

/// Whether [`flash_attention`] runs for `dtype` and heads of `head_dim` values on this GPU
/// (f16 or bf16, 64 values, tensor-core products of compute capability 8.0 or newer; the
/// kernels compile on first use, so before it this answers from the device's attributes).
pub fn flash_supported(dtype: DType, head_dim: usize) -> bool {
    if !matches!(dtype, DType::F16 | DType::BF16) || head_dim != FLASH_HEAD_DIM {
        return false;
    }
    if kernels().is_err() {
        return false;
    }
    MAJOR.load(std::sync::atomic::Ordering::Relaxed) >= 8
}

/// `softmax(q·kᵀ/√64 [+ causal mask])·v` for `q (b, sq, heads·64)`, `k`, `v (b, sk, heads·64)`
/// (f16 or bf16, any batch and sequence strides; each token's values contiguous) into a new
/// contiguous `(b, sq, heads·64)`: `flash_attention.cu`, one launch, no score tensor.
pub fn flash_attention(
    q: CubeTensor<CudaRuntime>,
    k: CubeTensor<CudaRuntime>,
    v: CubeTensor<CudaRuntime>,
    heads: usize,
    causal: bool,
) -> Result<CubeTensor<CudaRuntime>, String> {
    let dims = |t: &CubeTensor<CudaRuntime>| <[usize; 3]>::try_from(t.meta.shape().to_vec()).map_err(|d| format!("attention operand of shape {d:?}"));
    let ([b, sq, inner], [bk, sk, inner_k], [bv, sv, inner_v]) = (dims(&q)?, dims(&k)?, dims(&v)?);
    if q.dtype != k.dtype || q.dtype != v.dtype {
        return Err(format!("attention of {:?} / {:?} / {:?}", q.dtype, k.dtype, v.dtype));
    }
    if heads == 0 || inner != heads * FLASH_HEAD_DIM || inner_k != inner || inner_v != inner || bk != b || bv != b || sv != sk {
        return Err(format!("fused attention of {heads} heads of 64 over q {:?}, k {:?}, v {:?}", [b, sq, inner], [bk, sk, inner_k], [bv, sv, inner_v]));
    }
    let kernel = typed("flash", q.dtype)?;
    // Rows of contiguous values (a view whose last stride is not 1 is copied first).
    let rows = |t: CubeTensor<CudaRuntime>| if t.meta.strides()[2] == 1 { t } else { contiguous(t) };
    let (q, k, v) = (rows(q), rows(k), rows(v));
    let out = empty_device_contiguous_dtype(q.client.clone(), q.device.clone(), Shape::new([b, sq, inner]), q.dtype);
    if b * sq * inner == 0 {
        return Ok(out);
    }
    if sk == 0 {
        return Err("attention over no keys".into());
    }
    let warps = if sq > 16 { 4 } else { 1 };
    let row_blocks = u32::try_from(sq.div_ceil(16 * warps)).ok().filter(|&r| r <= 65_535).ok_or("too many query rows")?;
    let grid = u32::try_from(b * heads).map_err(|_| "too many attention heads".to_string())?;
    let int = |v: usize| i32::try_from(v).map_err(|_| format!("attention size {v} exceeds 32 bits"));
    let stride = |t: &CubeTensor<CudaRuntime>, axis: usize| t.meta.strides()[axis] as i64;
    let ((mut pq, _, gq), (mut pk, _, gk), (mut pv, _, gv)) = (tensor_memory(&q)?, tensor_memory(&k)?, tensor_memory(&v)?);
    let (mut po, stream, go) = tensor_memory(&out)?;
    let (mut h, mut nq, mut nk) = (int(heads)?, int(sq)?, int(sk)?);
    let mut strides = [stride(&q, 0), stride(&q, 1), stride(&k, 0), stride(&k, 1), stride(&v, 0), stride(&v, 1)];
    let mut scale = std::f32::consts::LOG2_E / (FLASH_HEAD_DIM as f32).sqrt();
    let mut c = causal as i32;
    let mut params: Vec<*mut c_void> = vec![arg(&mut pq), arg(&mut pk), arg(&mut pv), arg(&mut po), arg(&mut h), arg(&mut nq), arg(&mut nk)];
    params.extend(strides.iter_mut().map(arg));
    params.extend([arg(&mut scale), arg(&mut c)]);
    // SAFETY: the kernel's parameters are exactly these (four pointers, three ints, six long
    // longs, a float, an int); block (bh, r) reads rows < sq of q and < sk of k, v at their
    // strides inside the tensors and writes rows < sq of `out`; all four are held by the guards
    // until the launch is enqueued on their stream.
    unsafe { launch_grid(kernel, (grid, row_blocks, 1), 32 * warps as u32, stream, &mut params, "attention")? };
    drop((gq, gk, gv, go));
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// The kernel source compiles with NVRTC for the H100's architecture and has every entry
    /// point `function` looks up (a host-side call: no GPU needed, but libnvrtc must load —
    /// with `--features cuda` and LD_LIBRARY_PATH pointing at it).
    #[test]
    fn kernel_source_compiles_for_sm90() {
        if !super::available() {
            eprintln!("skipped: libnvrtc cannot be loaded here");
            return;
        }
        let ptx = super::ptx(9, 0).unwrap_or_else(|e| panic!("{e}"));
        // For `ptxas -v` (registers, spills) on a machine without a GPU.
        if let Some(path) = std::env::var_os("REEL_PTX_OUT") {
            std::fs::write(path, &ptx).unwrap();
        }
        for name in super::ENTRIES {
            assert!(ptx.contains(&format!(".entry {name}(")), "{name} missing from the PTX");
        }
        for dtype in ["f16", "bf16"] {
            let mma = format!("mma.sync.aligned.m16n8k16.row.col.f32.{dtype}.{dtype}.f32");
            assert!(ptx.contains(&mma), "the fused attention has no {mma}");
        }
        // Before compute capability 8.0 the source still compiles (the fused attention traps
        // there and is never launched: `flash_supported`).
        let old = super::ptx(7, 5).unwrap_or_else(|e| panic!("{e}"));
        assert!(old.contains(".entry reel_flash_f16(") && !old.contains("mma.sync"));
    }
}
