//! Backend choice for the binary: burn-flex (f32/f16/bf16, the default) or burn-ndarray (f32) on
//! the CPU, burn-cuda on NVIDIA GPUs (feature `cuda`). Library crates stay generic over
//! `B: Backend`; only this file names concrete backends.

use anyhow::{bail, Result};
use burn::tensor::DType;
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

/// Device options shared by every command that runs a model.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Where to run: `cpu` (burn-flex or burn-ndarray, see --cpu-backend) or `cuda` (needs a build
    /// with `--features cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceKind,
    /// CPU only: which CPU backend runs the models. flex is 3–4× faster on the real checkpoints'
    /// sizes; ndarray is faster on tiny test models (docs/performance.md).
    #[arg(long, value_enum, default_value = "flex")]
    pub cpu_backend: CpuBackend,
    /// GPU index for `--device cuda`.
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
    /// Float type the weights are converted to at load time.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Precision,
    /// CUDA only: burn's operation fusion, which joins chains of element-wise operations (the
    /// group norms, GEGLU, residual adds, casts) into single kernels. `off` runs every operation
    /// as its own kernel: for measuring what fusion gives, or ruling it out when a result looks
    /// wrong.
    #[arg(long, value_enum, default_value = "on", value_name = "on|off")]
    pub cuda_fusion: Switch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CpuBackend {
    /// burn-ndarray, f32.
    Ndarray,
    /// burn-flex: gemm-based convolutions and attention, f32 or f16.
    Flex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// What the device's memory pool holds, read after a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Bytes in live tensors now.
    pub in_use: u64,
    /// Bytes the pool has reserved from the driver (it keeps what it grew to, so read after a
    /// run this is the run's peak pool size; the CUDA context itself is not included).
    pub reserved: u64,
}

impl Precision {
    pub fn to_dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        }
    }
}

impl DeviceArgs {
    /// `cpu` or `cuda:N`, as summaries print it.
    pub fn device_name(&self) -> String {
        match self.device {
            DeviceKind::Cpu => "cpu".to_string(),
            DeviceKind::Cuda => format!("cuda:{}", self.gpu),
        }
    }

    /// Whether the chosen backend computes in f32 only (burn-ndarray), so f16/bf16 settings of
    /// components are dropped.
    pub fn f32_only(&self) -> bool {
        self.device == DeviceKind::Cpu && self.cpu_backend == CpuBackend::Ndarray
    }

    /// `f32`, `f16` or `bf16`.
    pub fn dtype_name(&self) -> &'static str {
        match self.dtype {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl DeviceArgs {
    pub fn dtype(&self) -> Option<DType> {
        match self.dtype {
            Precision::F32 => None,
            Precision::F16 => Some(DType::F16),
            Precision::Bf16 => Some(DType::BF16),
        }
    }
}

/// Something to run on whichever backend the user chose.
pub trait OnBackend {
    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device, dtype: Option<DType>) -> Result<()>;
}

pub fn dispatch(args: &DeviceArgs, job: impl OnBackend) -> Result<()> {
    match args.device {
        DeviceKind::Cpu => match args.cpu_backend {
            CpuBackend::Ndarray => {
                if args.dtype != Precision::F32 {
                    bail!("the ndarray CPU backend computes in f32 only; drop --dtype, use --cpu-backend flex, or --device cuda");
                }
                job.run::<burn::backend::NdArray<f32>>(Default::default(), None)
            }
            CpuBackend::Flex => job.run::<burn::backend::Flex>(Default::default(), args.dtype()),
        },
        DeviceKind::Cuda => cuda(args, job),
    }
}

/// The GPU memory pool of `--device cuda` (None on the CPU or in a build without CUDA).
#[cfg(feature = "cuda")]
pub fn device_memory(args: &DeviceArgs) -> Option<DeviceMemory> {
    use burn_cubecl::cubecl::cuda::{CudaDevice, CudaRuntime};
    use burn_cubecl::cubecl::Runtime;
    if args.device != DeviceKind::Cuda {
        return None;
    }
    let usage = CudaRuntime::client(&CudaDevice::new(args.gpu)).memory_usage().ok()?;
    Some(DeviceMemory { in_use: usage.bytes_in_use, reserved: usage.bytes_reserved })
}

#[cfg(not(feature = "cuda"))]
pub fn device_memory(_args: &DeviceArgs) -> Option<DeviceMemory> {
    None
}

#[cfg(feature = "cuda")]
fn cuda(args: &DeviceArgs, job: impl OnBackend) -> Result<()> {
    use burn::backend::cuda::{Cuda, CudaDevice};
    /// burn-cuda without the fusion wrapper: every operation its own kernel.
    type CudaUnfused = burn_cubecl::CubeBackend<burn_cubecl::cubecl::cuda::CudaRuntime, f32, i32, u8>;
    let device = CudaDevice::new(args.gpu);
    // burn-cuda panics when libcuda cannot be loaded: probe once and turn that into an error.
    let probe = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = std::panic::catch_unwind(move || {
        let t = burn::tensor::Tensor::<Cuda<f32>, 1>::zeros([1], &probe);
        t.into_data();
    })
    .is_ok();
    std::panic::set_hook(hook);
    if !ok {
        bail!("--device cuda: no usable NVIDIA GPU {} (the CUDA driver library could not be loaded or the device does not exist); use --device cpu", args.gpu);
    }
    match args.cuda_fusion {
        Switch::On => job.run::<Cuda<f32>>(device, args.dtype()),
        Switch::Off => job.run::<CudaUnfused>(device, args.dtype()),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda(_args: &DeviceArgs, _job: impl OnBackend) -> Result<()> {
    bail!("this reel binary was built without GPU support; rebuild with `cargo build --release --features cuda`, or use --device cpu")
}
