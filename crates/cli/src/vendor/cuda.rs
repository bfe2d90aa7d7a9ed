//! reel's kernels (`reel_core::kernels`) for both burn-cuda backends: matrix products on cuBLAS
//! (`cublas.rs`; attention's q, k, v projections of one input as one operation); convolutions on cuDNN (`cudnn.rs`) with `--cuda-kernels cudnn` when they are
//! large, else as reel's im2col + cuBLAS; with `own`, group norm (+ SiLU), layer norm and the
//! attention softmax and GEGLU as one kernel each (`nvrtc.rs`), and with `flash` attention itself as one
//! kernel on the token layout (`flash_attention.cu`). On the unfused backend they run at once on
//! the tensors' memory; on the fused one (the default) each is a custom operation of
//! burn-fusion's stream (the way burn-vision adds operations): fusion runs what precedes it,
//! then this, in order. Also the GPU context and per-thread handles the libraries share.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::thread::LocalKey;

use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};
use burn_cubecl::cubecl::client::ComputeClient;
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::cubecl::server::Handle;
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{FusionRuntime, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};
use cudarc::driver::sys::CUstream;
use reel_core::kernels::{BiasAxis, Kernels};

/// burn-cuda without fusion (`--cuda-fusion off`).
pub type CudaCube = burn_cubecl::CubeBackend<CudaRuntime, f32, i32, u8>;
/// burn-cuda with fusion (the default).
pub type CudaFused = burn::backend::Cuda<f32>;

/// The vendor libraries as reel's kernels: cuBLAS products, convolutions on cuDNN when `cudnn`
/// and the im2col columns would be large (else as reel's im2col kernel + cuBLAS), reel's own
/// norm and softmax kernels (NVRTC) when `own`.
#[derive(Debug, Clone, Copy)]
pub struct Vendor {
    pub cudnn: bool,
    pub own: bool,
    /// reel's fused attention kernel (`flash_attention.cu`) for f16 / bf16 heads of 64 values
    /// on compute capability 8.0+, on the token layout; otherwise attention runs as cuBLAS
    /// products around the softmax.
    pub flash: bool,
}

/// im2col columns up to this many values: the convolution runs as reel's im2col + cuBLAS even
/// with cuDNN loaded (below it, one H100 measured im2col + cuBLAS as fast or faster than
/// `cudnnConvolutionForward`, and the UNet step 180 ms against 204 ms all on cuDNN: see
/// docs/performance.md, 2026-11-27 sixth session).
const IM2COL_MAX: usize = 24 << 20;

/// Outputs up to this many bytes start as the bias inside the library call (`beta = 1`, no burn
/// operation); larger ones get the bias from a burn add that fusion joins to what follows (on
/// the H100 the large VAE convolutions ran 20–40% slower with `beta = 1`).
const BIAS_IN_OUTPUT_MAX: usize = 32 << 20;

impl Vendor {
    /// Whether the convolution of `x` by `w` runs on cuDNN (else as im2col + cuBLAS; a 1×1
    /// convolution without stride or padding needs no columns at all).
    fn on_cudnn(self, x: [usize; 4], w: [usize; 4], stride: [usize; 2], pad: [usize; 2]) -> bool {
        let ([n, c, _, _], [_, _, kh, kw]) = (x, w);
        let [_, _, oh, ow] = super::cudnn::output_dims(x, w, stride, pad);
        let direct = kh == 1 && kw == 1 && stride == [1, 1] && pad == [0, 0];
        self.cudnn && !direct && n * c * kh * kw * oh * ow > IM2COL_MAX
    }

    /// Whether a bias goes into the library call for an output of `values` values of `dtype`.
    fn bias_inside(values: usize, dtype: DType, bias: DType) -> bool {
        bias == dtype && values * dtype.size() <= BIAS_IN_OUTPUT_MAX
    }

    /// For reports (`Kernels::name` on both backends).
    fn label(self) -> &'static str {
        match (self.cudnn, self.own, self.flash) {
            (true, true, true) => "cudnn+cublas+reel+flash",
            (true, true, false) => "cudnn+cublas+reel",
            (true, false, _) => "cudnn+cublas",
            (false, true, true) => "cublas+reel+flash",
            (false, true, false) => "cublas+reel",
            (false, false, _) => "cublas",
        }
    }
}

/// The primary context of the GPU cubecl runs on (index set once, before the first call).
static GPU: OnceLock<usize> = OnceLock::new();

/// Makes `gpu` the device whose primary context the library calls run in.
pub fn set_gpu(gpu: usize) {
    let _ = GPU.set(gpu);
}

/// The GPU index given to [`set_gpu`] (0 by default).
pub fn gpu() -> usize {
    *GPU.get().unwrap_or(&0)
}

/// Sets how the GPU's memory pool reserves memory (`--cuda-memory`, see
/// [`super::memory_pools`]); must run before the device's first use, which builds the pool.
pub fn set_memory_pools(kind: crate::backend::CudaMemory) {
    use crate::backend::CudaMemory;
    use burn_cubecl::cubecl::cuda::set_memory_configuration;
    use burn_cubecl::cubecl::MemoryConfiguration;
    match kind {
        CudaMemory::Sliced => {}
        CudaMemory::Exclusive => {
            set_memory_configuration(|_| MemoryConfiguration::ExclusivePages);
        }
        CudaMemory::Split => {
            set_memory_configuration(split_pools);
        }
    }
}

/// [`super::memory_pools::split`] in cubecl's terms.
fn split_pools(properties: &burn_cubecl::cubecl::ir::MemoryDeviceProperties) -> burn_cubecl::cubecl::MemoryConfiguration {
    use super::memory_pools::{split, Pool};
    use burn_cubecl::cubecl::cuda::{MemoryPoolOptions, PoolType};
    let pool_options = split(properties.max_page_size, properties.alignment)
        .into_iter()
        .map(|pool| match pool {
            Pool::Sliced { page, max_slice } => MemoryPoolOptions {
                pool_type: PoolType::SlicedPages { page_size: page, max_slice_size: max_slice },
                dealloc_period: None,
            },
            Pool::Exclusive { max_alloc, dealloc_period } => {
                MemoryPoolOptions { pool_type: PoolType::ExclusivePages { max_alloc_size: max_alloc }, dealloc_period }
            }
        })
        .collect();
    burn_cubecl::cubecl::MemoryConfiguration::Custom { pool_options }
}

/// Makes the GPU's primary context current on this thread (cubecl may run on another thread;
/// the primary context is the one it uses).
pub fn make_context_current() -> Result<(), String> {
    use cudarc::driver::result as driver;
    let gpu = gpu();
    // SAFETY: plain driver calls; the retained primary context stays alive for the process
    // (cubecl retains it too).
    unsafe {
        if driver::ctx::get_current().map_err(|e| format!("{e:?}"))?.is_none() {
            let device = driver::device::get(gpu as i32).map_err(|e| format!("CUDA device {gpu}: {e:?}"))?;
            let ctx = driver::primary_ctx::retain(device).map_err(|e| format!("CUDA context: {e:?}"))?;
            driver::ctx::set_current(ctx).map_err(|e| format!("CUDA context: {e:?}"))?;
        }
    }
    Ok(())
}

/// `t` in a contiguous layout (copied only when it is not).
pub fn contiguous(t: CubeTensor<CudaRuntime>) -> CubeTensor<CudaRuntime> {
    if t.is_contiguous() {
        t
    } else {
        into_contiguous(t)
    }
}

/// The device address of `handle`'s memory on `client`, the CUDA stream cubecl launches on
/// (the stream comes with the memory: third_party/cubecl-cuda), and a guard that keeps the
/// memory bound until it is dropped, after the call using it has been enqueued.
pub fn device_memory(client: &ComputeClient<CudaRuntime>, handle: &Handle) -> Result<(u64, CUstream, impl Sized), String> {
    let memory = client.get_resource(handle.clone()).map_err(|e| format!("{e:?}"))?;
    let (ptr, stream) = (memory.resource().ptr, memory.resource().stream);
    if stream.is_null() {
        return Err("cubecl gave no stream with the memory (is third_party/cubecl-cuda patched in?)".into());
    }
    Ok((ptr, stream, memory))
}

/// [`device_memory`] of a tensor.
pub fn tensor_memory(t: &CubeTensor<CudaRuntime>) -> Result<(u64, CUstream, impl Sized), String> {
    device_memory(&t.client, &t.handle)
}

/// This thread's library handle kept in `slot`, created by `create` on first use, in the GPU's
/// context (cuBLAS and cuDNN handles are per thread).
pub fn thread_handle<H: Copy + 'static>(
    slot: &'static LocalKey<RefCell<Option<H>>>,
    create: impl FnOnce() -> Result<H, String>,
) -> Result<H, String> {
    make_context_current()?;
    slot.with(|h| {
        let mut h = h.borrow_mut();
        if let Some(handle) = *h {
            return Ok(handle);
        }
        let handle = create()?;
        *h = Some(handle);
        Ok(handle)
    })
}

/// One vendor operation on cubecl tensors.
#[derive(Debug, Clone, Copy)]
enum Job {
    /// `alpha · a · b`, the result in `out`, plus a third input as the bias along `bias`.
    MatMul { alpha: f32, out: DType, bias: Option<BiasAxis> },
    /// `conv2d(x, w)` with stride and symmetric padding, plus a third input as the bias; on
    /// cuDNN, or as im2col products on cuBLAS.
    Conv2d { stride: [usize; 2], pad: [usize; 2], bias: bool, cudnn: bool },
    /// `group_norm(x, weight, bias)`, then SiLU when `silu`.
    GroupNorm { groups: usize, eps: f64, silu: bool },
    /// `layer_norm(x, weight, bias)`.
    LayerNorm { eps: f64 },
    /// The attention softmax of f32 scores into `out`.
    Softmax { causal: bool, out: DType },
    /// Fused attention of `heads` heads on the token layout (q, k, v).
    Attention { heads: usize, causal: bool },
    /// GEGLU after its projection.
    Geglu,
    /// Bias-free projections of one input (the first input) by the other inputs' weights, side
    /// by side.
    Linears,
    /// A linear layer onto a residual: inputs x, w, (bias), residual.
    LinearAdd { bias: bool },
}

impl Job {
    /// Runs the job on cubecl's device thread (`ComputeClient::exclusive`: one round trip; the
    /// memory lookups and allocations inside it then need none of their own, and on the fused
    /// backend, whose operations already run there, it runs in place); a failure panics here on
    /// the caller's thread, saying which setting avoids the failing path.
    fn run(self, inputs: Vec<CubeTensor<CudaRuntime>>) -> CubeTensor<CudaRuntime> {
        let client = inputs[0].client.clone();
        let timing = job_times::enabled();
        let t0 = timing.then(std::time::Instant::now);
        let outcome = client
            .exclusive(move || {
                let t1 = timing.then(std::time::Instant::now);
                let r = self.execute(inputs);
                (r, t1.map(|t| t.elapsed()))
            })
            .map_err(|e| format!("{e:?}"))
            .and_then(|(r, inside)| {
                if let (Some(t0), Some(inside)) = (t0, inside) {
                    job_times::add(self.name(), t0.elapsed(), inside);
                }
                r
            });
        outcome.unwrap_or_else(|e| panic!("{} failed: {e}; rerun with {}", self.what(), self.advice()))
    }

    fn execute(self, inputs: Vec<CubeTensor<CudaRuntime>>) -> Result<CubeTensor<CudaRuntime>, String> {
        let mut it = inputs.into_iter();
        let mut next = || it.next().ok_or_else(|| "vendor operation input missing".to_string());
        match self {
            Job::Softmax { causal, out } => super::nvrtc::softmax(next()?, causal, out),
            Job::Geglu => super::nvrtc::geglu(next()?),
            Job::Attention { heads, causal } => {
                let (q, k, v) = (next()?, next()?, next()?);
                super::nvrtc::flash_attention(q, k, v, heads, causal)
            }
            Job::Linears => {
                let x = next()?;
                super::cublas::linears(x, it.collect())
            }
            Job::LinearAdd { bias } => {
                let (x, w) = (next()?, next()?);
                let bias = if bias { Some(next()?) } else { None };
                super::cublas::linear_add(x, w, bias, next()?)
            }
            Job::MatMul { alpha, out, bias } => {
                let (a, b) = (next()?, next()?);
                let bias = match bias {
                    Some(axis) => Some((contiguous(next()?), axis)),
                    None => None,
                };
                super::cublas::matmul(a, b, alpha, out, bias)
            }
            Job::Conv2d { stride, pad, bias, cudnn } => {
                let (x, w) = (next()?, next()?);
                let bias = if bias { Some(contiguous(next()?)) } else { None };
                if cudnn {
                    super::cudnn::conv2d(x, w, bias, stride, pad)
                } else {
                    super::cublas::conv2d(x, w, bias, stride, pad)
                }
            }
            Job::GroupNorm { groups, eps, silu } => {
                let (x, w, b) = (next()?, next()?, next()?);
                super::nvrtc::group_norm(x, w, b, groups, eps, silu)
            }
            Job::LayerNorm { eps } => {
                let (x, w, b) = (next()?, next()?, next()?);
                super::nvrtc::layer_norm(x, w, b, eps)
            }
        }
    }

    /// What failed, for the panic message.
    fn what(self) -> &'static str {
        match self {
            Job::MatMul { .. } => "cuBLAS matrix product",
            Job::Linears => "cuBLAS projections",
            Job::LinearAdd { .. } => "cuBLAS linear onto the residual",
            Job::Conv2d { cudnn: true, .. } => "cuDNN convolution",
            Job::Conv2d { cudnn: false, .. } => "im2col convolution on cuBLAS",
            Job::GroupNorm { .. } => "group norm kernel",
            Job::LayerNorm { .. } => "layer norm kernel",
            Job::Softmax { .. } => "softmax kernel",
            Job::Geglu => "GEGLU kernel",
            Job::Attention { .. } => "fused attention kernel",
        }
    }

    /// The setting that avoids the failing path.
    fn advice(self) -> &'static str {
        match self {
            Job::Attention { .. } => "--cuda-flash-attention off",
            Job::GroupNorm { .. } | Job::LayerNorm { .. } | Job::Softmax { .. } | Job::Geglu | Job::LinearAdd { .. } => "--cuda-own-kernels off",
            Job::MatMul { .. } | Job::Linears | Job::Conv2d { .. } => "--cuda-kernels cubecl",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Job::MatMul { .. } => "reel_cublas_matmul",
            Job::Conv2d { cudnn: true, .. } => "reel_cudnn_conv2d",
            Job::Conv2d { cudnn: false, .. } => "reel_im2col_conv2d",
            Job::GroupNorm { .. } => "reel_group_norm",
            Job::LayerNorm { .. } => "reel_layer_norm",
            Job::Softmax { .. } => "reel_softmax",
            Job::Attention { .. } => "reel_flash_attention",
            Job::Geglu => "reel_geglu",
            Job::Linears => "reel_cublas_linears",
            Job::LinearAdd { .. } => "reel_cublas_linear_add",
        }
    }
}

impl Vendor {
    /// Whether attention of heads of `head_dim` values in `dtype` runs as the fused kernel.
    fn flash_for(self, dtype: DType, head_dim: usize) -> bool {
        self.flash && super::nvrtc::flash_supported(dtype, head_dim)
    }

    /// The convolution's job, output shape, and its bias split into (given to the library,
    /// added by burn afterwards).
    #[allow(clippy::type_complexity)]
    fn conv_job<B: burn::tensor::backend::Backend>(
        self,
        x: [usize; 4],
        w: [usize; 4],
        dtype: DType,
        bias: Option<Tensor<B, 1>>,
        stride: [usize; 2],
        pad: [usize; 2],
    ) -> (Job, [usize; 4], (Option<Tensor<B, 1>>, Option<Tensor<B, 1>>)) {
        let shape = super::cudnn::output_dims(x, w, stride, pad);
        let split = match bias {
            Some(b) if Vendor::bias_inside(shape.iter().product(), dtype, b.dtype()) => (Some(b), None),
            other => (None, other),
        };
        let job = Job::Conv2d { stride, pad, bias: split.0.is_some(), cudnn: self.on_cudnn(x, w, stride, pad) };
        (job, shape, split)
    }
}

/// `y + bias` per output channel when the bias was not given to the library.
fn bias_after<B: burn::tensor::backend::Backend>(y: Tensor<B, 4>, bias: Option<Tensor<B, 1>>, [_, c, _, _]: [usize; 4]) -> Tensor<B, 4> {
    match bias {
        Some(b) => y + b.reshape([1, c, 1, 1]),
        None => y,
    }
}

/// The cubecl tensor of a burn-cuda (unfused) tensor of any rank.
fn cube<const D: usize>(t: Tensor<CudaCube, D>) -> CubeTensor<CudaRuntime> {
    t.into_primitive().tensor()
}

impl Kernels<CudaCube> for Vendor {
    fn matmul(&self, a: Tensor<CudaCube, 3>, b: Tensor<CudaCube, 3>, alpha: f32, out: DType) -> Tensor<CudaCube, 3> {
        let out = Job::MatMul { alpha, out, bias: None }.run(vec![cube(a), cube(b)]);
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn matmul_bias(&self, a: Tensor<CudaCube, 3>, b: Tensor<CudaCube, 3>, bias: Tensor<CudaCube, 1>, axis: BiasAxis) -> Tensor<CudaCube, 3> {
        let ([ba, m, _], [bb, _, n], out) = (a.dims(), b.dims(), a.dtype());
        if !Vendor::bias_inside(ba.max(bb) * m * n, out, bias.dtype()) {
            return reel_core::kernels::add_bias(self.matmul(a, b, 1.0, out), bias, axis);
        }
        let out = Job::MatMul { alpha: 1.0, out, bias: Some(axis) }.run(vec![cube(a), cube(b), cube(bias)]);
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn has_conv2d(&self) -> bool {
        true
    }

    fn conv2d(&self, x: Tensor<CudaCube, 4>, w: Tensor<CudaCube, 4>, bias: Option<Tensor<CudaCube, 1>>, stride: [usize; 2], pad: [usize; 2]) -> Tensor<CudaCube, 4> {
        let (job, shape, (inside, after)) = self.conv_job(x.dims(), w.dims(), x.dtype(), bias, stride, pad);
        let out = job.run([cube(x), cube(w)].into_iter().chain(inside.map(cube)).collect());
        bias_after(Tensor::from_primitive(TensorPrimitive::Float(out)), after, shape)
    }

    fn has_norms(&self) -> bool {
        self.own
    }

    fn group_norm(&self, x: Tensor<CudaCube, 3>, w: Tensor<CudaCube, 1>, b: Tensor<CudaCube, 1>, groups: usize, eps: f64, silu: bool) -> Tensor<CudaCube, 3> {
        let out = Job::GroupNorm { groups, eps, silu }.run(vec![cube(x), cube(w), cube(b)]);
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn layer_norm(&self, x: Tensor<CudaCube, 2>, w: Tensor<CudaCube, 1>, b: Tensor<CudaCube, 1>, eps: f64) -> Tensor<CudaCube, 2> {
        let out = Job::LayerNorm { eps }.run(vec![cube(x), cube(w), cube(b)]);
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn softmax(&self, scores: Tensor<CudaCube, 3>, causal: bool, out: DType) -> Tensor<CudaCube, 3> {
        if !self.own {
            return reel_core::kernels::softmax_ops(scores, causal, out);
        }
        let out = Job::Softmax { causal, out }.run(vec![cube(scores)]);
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn has_linears(&self) -> bool {
        true
    }

    fn linears(&self, x: Tensor<CudaCube, 2>, weights: Vec<Tensor<CudaCube, 2>>) -> Tensor<CudaCube, 2> {
        let inputs = std::iter::once(cube(x)).chain(weights.into_iter().map(cube)).collect();
        Tensor::from_primitive(TensorPrimitive::Float(Job::Linears.run(inputs)))
    }

    fn has_linear_add(&self) -> bool {
        self.own
    }

    fn linear_add(&self, x: Tensor<CudaCube, 2>, w: Tensor<CudaCube, 2>, bias: Option<Tensor<CudaCube, 1>>, residual: Tensor<CudaCube, 2>) -> Tensor<CudaCube, 2> {
        let job = Job::LinearAdd { bias: bias.is_some() };
        let inputs = [cube(x), cube(w)].into_iter().chain(bias.map(cube)).chain([cube(residual)]).collect();
        Tensor::from_primitive(TensorPrimitive::Float(job.run(inputs)))
    }

    fn has_geglu(&self) -> bool {
        self.own
    }

    fn geglu(&self, x: Tensor<CudaCube, 2>) -> Tensor<CudaCube, 2> {
        Tensor::from_primitive(TensorPrimitive::Float(Job::Geglu.run(vec![cube(x)])))
    }

    fn has_fused_attention(&self, dtype: DType, head_dim: usize) -> bool {
        self.flash_for(dtype, head_dim)
    }

    fn fused_attention(&self, q: Tensor<CudaCube, 3>, k: Tensor<CudaCube, 3>, v: Tensor<CudaCube, 3>, heads: usize, causal: bool) -> Tensor<CudaCube, 3> {
        let out = Job::Attention { heads, causal }.run(vec![cube(q), cube(k), cube(v)]);
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn name(&self) -> &'static str {
        self.label()
    }
}

/// With `REEL_JOB_TIMES=1`: the host time of every vendor operation, by kind — the whole call
/// (including the wait for cubecl's device thread) and the part inside it (allocations, memory
/// lookups, library calls and launches: enqueueing only, the GPU runs them later) —, printed by
/// `reel bench` at the end. Tells host-side cost from device time on a card.
pub mod job_times {
    use std::collections::BTreeMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    static TIMES: Mutex<BTreeMap<&'static str, (u64, Duration, Duration)>> = Mutex::new(BTreeMap::new());

    /// Whether `REEL_JOB_TIMES` is set (read once).
    pub fn enabled() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| std::env::var_os("REEL_JOB_TIMES").is_some_and(|v| v != "0"))
    }

    pub(super) fn add(name: &'static str, call: Duration, inside: Duration) {
        let mut t = TIMES.lock().unwrap_or_else(|e| e.into_inner());
        let e = t.entry(name).or_insert((0, Duration::ZERO, Duration::ZERO));
        e.0 += 1;
        e.1 += call;
        e.2 += inside;
    }

    /// The table so far (kind, count, µs a call, µs of it inside), and a reset.
    pub fn take() -> Vec<(&'static str, u64, f64, f64)> {
        let mut t = TIMES.lock().unwrap_or_else(|e| e.into_inner());
        let rows = t.iter().map(|(k, (n, call, inside))| (*k, *n, call.as_secs_f64() * 1e6 / *n as f64, inside.as_secs_f64() * 1e6 / *n as f64)).collect();
        t.clear();
        rows
    }
}

/// A [`Job`] as an operation of burn-fusion's stream.
#[derive(Debug)]
struct Fused {
    desc: CustomOpIr,
    job: Job,
}

impl Operation<FusionCubeRuntime<CudaRuntime>> for Fused {
    fn execute(&self, handles: &mut HandleContainer<<FusionCubeRuntime<CudaRuntime> as FusionRuntime>::FusionHandle>) {
        let inputs = self.desc.inputs.iter().map(|t| handles.get_float_tensor::<CudaCube>(t)).collect();
        handles.register_float_tensor::<CudaCube>(&self.desc.outputs[0].id, self.job.run(inputs));
    }
}

/// Queues `job` on `a`, `b` in burn-fusion's stream; its output has `shape` and `dtype`.
fn fused<const D: usize>(job: Job, inputs: Vec<FusionTensor<FusionCubeRuntime<CudaRuntime>>>, shape: [usize; D], dtype: DType) -> Tensor<CudaFused, D> {
    let client = inputs[0].client.clone();
    let out = TensorIr::uninit(client.create_empty_handle(), Shape::new(shape), dtype);
    let streams = OperationStreams::with_inputs(&inputs);
    let inputs: Vec<TensorIr> = inputs.into_iter().map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new(job.name(), &inputs, &[out]);
    let out = client.register(streams, OperationIr::Custom(desc.clone()), Fused { desc, job }).output();
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The fusion tensor of a fused burn-cuda tensor of any rank.
fn fusion<const D: usize>(t: Tensor<CudaFused, D>) -> FusionTensor<FusionCubeRuntime<CudaRuntime>> {
    t.into_primitive().tensor()
}

impl Kernels<CudaFused> for Vendor {
    fn matmul(&self, a: Tensor<CudaFused, 3>, b: Tensor<CudaFused, 3>, alpha: f32, out: DType) -> Tensor<CudaFused, 3> {
        let ([ba, m, _], [bb, _, n]) = (a.dims(), b.dims());
        fused(Job::MatMul { alpha, out, bias: None }, vec![fusion(a), fusion(b)], [ba.max(bb), m, n], out)
    }

    fn matmul_bias(&self, a: Tensor<CudaFused, 3>, b: Tensor<CudaFused, 3>, bias: Tensor<CudaFused, 1>, axis: BiasAxis) -> Tensor<CudaFused, 3> {
        let ([ba, m, _], [bb, _, n], out) = (a.dims(), b.dims(), a.dtype());
        if !Vendor::bias_inside(ba.max(bb) * m * n, out, bias.dtype()) {
            return reel_core::kernels::add_bias(self.matmul(a, b, 1.0, out), bias, axis);
        }
        fused(Job::MatMul { alpha: 1.0, out, bias: Some(axis) }, vec![fusion(a), fusion(b), fusion(bias)], [ba.max(bb), m, n], out)
    }

    fn has_conv2d(&self) -> bool {
        true
    }

    fn conv2d(&self, x: Tensor<CudaFused, 4>, w: Tensor<CudaFused, 4>, bias: Option<Tensor<CudaFused, 1>>, stride: [usize; 2], pad: [usize; 2]) -> Tensor<CudaFused, 4> {
        let dtype = x.dtype();
        let (job, shape, (inside, after)) = self.conv_job(x.dims(), w.dims(), dtype, bias, stride, pad);
        let y = fused(job, [fusion(x), fusion(w)].into_iter().chain(inside.map(fusion)).collect(), shape, dtype);
        bias_after(y, after, shape)
    }

    fn has_norms(&self) -> bool {
        self.own
    }

    fn group_norm(&self, x: Tensor<CudaFused, 3>, w: Tensor<CudaFused, 1>, b: Tensor<CudaFused, 1>, groups: usize, eps: f64, silu: bool) -> Tensor<CudaFused, 3> {
        let (shape, dtype) = (x.dims(), x.dtype());
        fused(Job::GroupNorm { groups, eps, silu }, vec![fusion(x), fusion(w), fusion(b)], shape, dtype)
    }

    fn layer_norm(&self, x: Tensor<CudaFused, 2>, w: Tensor<CudaFused, 1>, b: Tensor<CudaFused, 1>, eps: f64) -> Tensor<CudaFused, 2> {
        let (shape, dtype) = (x.dims(), x.dtype());
        fused(Job::LayerNorm { eps }, vec![fusion(x), fusion(w), fusion(b)], shape, dtype)
    }

    fn softmax(&self, scores: Tensor<CudaFused, 3>, causal: bool, out: DType) -> Tensor<CudaFused, 3> {
        if !self.own {
            return reel_core::kernels::softmax_ops(scores, causal, out);
        }
        let shape = scores.dims();
        fused(Job::Softmax { causal, out }, vec![fusion(scores)], shape, out)
    }

    fn has_linears(&self) -> bool {
        true
    }

    fn linears(&self, x: Tensor<CudaFused, 2>, weights: Vec<Tensor<CudaFused, 2>>) -> Tensor<CudaFused, 2> {
        let ([rows, _], dtype) = (x.dims(), x.dtype());
        let total = weights.iter().map(|w| w.dims()[0]).sum();
        let inputs = std::iter::once(fusion(x)).chain(weights.into_iter().map(fusion)).collect();
        fused(Job::Linears, inputs, [rows, total], dtype)
    }

    fn has_linear_add(&self) -> bool {
        self.own
    }

    fn linear_add(&self, x: Tensor<CudaFused, 2>, w: Tensor<CudaFused, 2>, bias: Option<Tensor<CudaFused, 1>>, residual: Tensor<CudaFused, 2>) -> Tensor<CudaFused, 2> {
        let (shape, dtype) = (residual.dims(), residual.dtype());
        let job = Job::LinearAdd { bias: bias.is_some() };
        let inputs = [fusion(x), fusion(w)].into_iter().chain(bias.map(fusion)).chain([fusion(residual)]).collect();
        fused(job, inputs, shape, dtype)
    }

    fn has_geglu(&self) -> bool {
        self.own
    }

    fn geglu(&self, x: Tensor<CudaFused, 2>) -> Tensor<CudaFused, 2> {
        let ([rows, width], dtype) = (x.dims(), x.dtype());
        fused(Job::Geglu, vec![fusion(x)], [rows, width / 2], dtype)
    }

    fn has_fused_attention(&self, dtype: DType, head_dim: usize) -> bool {
        self.flash_for(dtype, head_dim)
    }

    fn fused_attention(&self, q: Tensor<CudaFused, 3>, k: Tensor<CudaFused, 3>, v: Tensor<CudaFused, 3>, heads: usize, causal: bool) -> Tensor<CudaFused, 3> {
        let ([b, sq, inner], dtype) = (q.dims(), q.dtype());
        fused(Job::Attention { heads, causal }, vec![fusion(q), fusion(k), fusion(v)], [b, sq, inner], dtype)
    }

    fn name(&self) -> &'static str {
        self.label()
    }
}

#[cfg(test)]
mod tests {
    use super::super::memory_pools::Pool;
    use super::*;

    /// The measured routing (docs/performance.md, sixth session): 1×1 and small convolutions on
    /// cuBLAS, the UNet's and VAE's large ones on cuDNN; nothing on cuDNN without it.
    #[test]
    fn convolutions_go_where_they_measured_faster() {
        let (dnn, blas) = (Vendor { cudnn: true, own: true, flash: true }, Vendor { cudnn: false, own: true, flash: true });
        let one = [1, 1];
        // (x, w, stride, pad, on cuDNN)
        let cases = [
            ([32, 2560, 4, 4], [1280, 2560, 1, 1], one, [0, 0], false), // 1×1 shortcut
            ([32, 960, 32, 32], [320, 960, 1, 1], one, [0, 0], false),   // large 1×1: no columns
            ([2, 1280, 16, 16], [1280, 1280, 3, 1], one, [1, 0], false), // temporal, 16 pixels
            ([2, 640, 16, 256], [640, 640, 3, 1], one, [1, 0], false),   // temporal, 256 pixels
            ([32, 1280, 4, 4], [1280, 1280, 3, 3], one, [1, 1], false),  // 3×3 at 4×4
            ([32, 320, 32, 32], [320, 320, 3, 3], one, [1, 1], true),    // 3×3 at 32×32
            ([16, 128, 256, 256], [128, 128, 3, 3], one, [1, 1], true),  // VAE at 256²
            ([16, 4, 32, 32], [512, 4, 3, 3], one, [1, 1], false),       // VAE conv_in
        ];
        for (x, w, stride, pad, want) in cases {
            assert_eq!(dnn.on_cudnn(x, w, stride, pad), want, "{x:?} * {w:?}");
            assert!(!blas.on_cudnn(x, w, stride, pad), "{x:?} * {w:?} without cuDNN");
        }
    }

    /// `--cuda-memory split` reaches cubecl as its plan, pool for pool, in order.
    #[test]
    fn split_memory_pools_reach_cubecl_in_order() {
        use burn_cubecl::cubecl::cuda::PoolType;
        use burn_cubecl::cubecl::ir::MemoryDeviceProperties;
        let properties = MemoryDeviceProperties { max_page_size: 20 << 30, alignment: 512 };
        let plan = super::super::memory_pools::split(20 << 30, 512);
        let burn_cubecl::cubecl::MemoryConfiguration::Custom { pool_options } = split_pools(&properties) else {
            panic!("split is a custom configuration");
        };
        assert_eq!(pool_options.len(), plan.len());
        for (options, pool) in pool_options.iter().zip(&plan) {
            match (options.pool_type.clone(), *pool) {
                (PoolType::SlicedPages { page_size, max_slice_size }, Pool::Sliced { page, max_slice }) => {
                    assert_eq!((page_size, max_slice_size, options.dealloc_period), (page, max_slice, None))
                }
                (PoolType::ExclusivePages { max_alloc_size }, Pool::Exclusive { max_alloc, dealloc_period }) => {
                    assert_eq!((max_alloc_size, options.dealloc_period), (max_alloc, dealloc_period))
                }
                (got, want) => panic!("{got:?} for {want:?}"),
            }
        }
    }

    #[test]
    fn biases_start_small_outputs_only() {
        // UNet 320 channels at 32² for 32 images in f16: 21 MB; VAE 128 channels at 256²: 268 MB.
        assert!(Vendor::bias_inside(32 * 320 * 32 * 32, DType::F16, DType::F16));
        assert!(!Vendor::bias_inside(16 * 128 * 256 * 256, DType::F16, DType::F16));
        assert!(!Vendor::bias_inside(1024, DType::F16, DType::F32), "a bias of another dtype");
    }
}
