//! reel's kernels (`reel_core::kernels`) for both burn-cuda backends: matrix products on cuBLAS
//! (`cublas.rs`) and, with `--cuda-kernels cudnn`, convolutions on cuDNN (`cudnn.rs`). On the
//! unfused backend they run at once on the tensors' memory; on the fused one (the default) each is
//! a custom operation of burn-fusion's stream (the way burn-vision adds operations): fusion runs
//! what precedes it, then this, in order. Also the GPU context and per-thread handles both
//! libraries share.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::thread::LocalKey;

use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::fusion::FusionCubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::FusionRuntime;
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};
use reel_core::kernels::Kernels;

/// burn-cuda without fusion (`--cuda-fusion off`).
pub type CudaCube = burn_cubecl::CubeBackend<CudaRuntime, f32, i32, u8>;
/// burn-cuda with fusion (the default).
pub type CudaFused = burn::backend::Cuda<f32>;

/// The vendor libraries as reel's kernels: cuBLAS products, and cuDNN convolutions when `cudnn`.
#[derive(Debug, Clone, Copy)]
pub struct Vendor {
    pub cudnn: bool,
}

impl Vendor {
    /// For reports (`Kernels::name` on both backends).
    fn label(self) -> &'static str {
        if self.cudnn {
            "cudnn+cublas"
        } else {
            "cublas"
        }
    }
}

/// The primary context of the GPU cubecl runs on (index set once, before the first call).
static GPU: OnceLock<usize> = OnceLock::new();

/// Makes `gpu` the device whose primary context the library calls run in.
pub fn set_gpu(gpu: usize) {
    let _ = GPU.set(gpu);
}

/// Makes the GPU's primary context current on this thread (cubecl may run on another thread;
/// the primary context is the one it uses).
fn make_context_current() -> Result<(), String> {
    use cudarc::driver::result as driver;
    let gpu = *GPU.get().unwrap_or(&0);
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

/// One vendor operation on two cubecl tensors.
#[derive(Debug, Clone, Copy)]
enum Job {
    /// `alpha · a · b`, the result in `out`.
    MatMul { alpha: f32, out: DType },
    /// `conv2d(x, w)` with stride and symmetric padding.
    Conv2d { stride: [usize; 2], pad: [usize; 2] },
}

impl Job {
    fn run(self, a: CubeTensor<CudaRuntime>, b: CubeTensor<CudaRuntime>) -> CubeTensor<CudaRuntime> {
        let (result, library) = match self {
            Job::MatMul { alpha, out } => (super::cublas::matmul(a, b, alpha, out), "cuBLAS matrix product"),
            Job::Conv2d { stride, pad } => (super::cudnn::conv2d(a, b, stride, pad), "cuDNN convolution"),
        };
        result.unwrap_or_else(|e| panic!("{library} failed: {e}; rerun with --cuda-kernels cubecl"))
    }

    fn name(self) -> &'static str {
        match self {
            Job::MatMul { .. } => "reel_cublas_matmul",
            Job::Conv2d { .. } => "reel_cudnn_conv2d",
        }
    }
}

impl Kernels<CudaCube> for Vendor {
    fn matmul(&self, a: Tensor<CudaCube, 3>, b: Tensor<CudaCube, 3>, alpha: f32, out: DType) -> Tensor<CudaCube, 3> {
        let out = Job::MatMul { alpha, out }.run(a.into_primitive().tensor(), b.into_primitive().tensor());
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn has_conv2d(&self) -> bool {
        self.cudnn
    }

    fn conv2d(&self, x: Tensor<CudaCube, 4>, w: Tensor<CudaCube, 4>, stride: [usize; 2], pad: [usize; 2]) -> Tensor<CudaCube, 4> {
        let out = Job::Conv2d { stride, pad }.run(x.into_primitive().tensor(), w.into_primitive().tensor());
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn name(&self) -> &'static str {
        self.label()
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
        let ([a, b], [out]) = self.desc.as_fixed();
        let a = handles.get_float_tensor::<CudaCube>(a);
        let b = handles.get_float_tensor::<CudaCube>(b);
        handles.register_float_tensor::<CudaCube>(&out.id, self.job.run(a, b));
    }
}

/// Queues `job` on `a`, `b` in burn-fusion's stream; its output has `shape` and `dtype`.
fn fused<const D: usize>(job: Job, a: Tensor<CudaFused, D>, b: Tensor<CudaFused, D>, shape: [usize; D], dtype: DType) -> Tensor<CudaFused, D> {
    let (a, b) = (a.into_primitive().tensor(), b.into_primitive().tensor());
    let client = a.client.clone();
    let out = TensorIr::uninit(client.create_empty_handle(), Shape::new(shape), dtype);
    let streams = OperationStreams::with_inputs([&a, &b]);
    let desc = CustomOpIr::new(job.name(), &[a.into_ir(), b.into_ir()], &[out]);
    let out = client.register(streams, OperationIr::Custom(desc.clone()), Fused { desc, job }).output();
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

impl Kernels<CudaFused> for Vendor {
    fn matmul(&self, a: Tensor<CudaFused, 3>, b: Tensor<CudaFused, 3>, alpha: f32, out: DType) -> Tensor<CudaFused, 3> {
        let ([ba, m, _], [bb, _, n]) = (a.dims(), b.dims());
        fused(Job::MatMul { alpha, out }, a, b, [ba.max(bb), m, n], out)
    }

    fn has_conv2d(&self) -> bool {
        self.cudnn
    }

    fn conv2d(&self, x: Tensor<CudaFused, 4>, w: Tensor<CudaFused, 4>, stride: [usize; 2], pad: [usize; 2]) -> Tensor<CudaFused, 4> {
        let (shape, dtype) = (super::cudnn::output_dims(x.dims(), w.dims(), stride, pad), x.dtype());
        fused(Job::Conv2d { stride, pad }, x, w, shape, dtype)
    }

    fn name(&self) -> &'static str {
        self.label()
    }
}
