//! Backend choice for the binary: burn-ndarray on the CPU (f32), burn-cuda on NVIDIA GPUs
//! (feature `cuda`). Library crates stay generic over `B: Backend`; only this file names
//! concrete backends.

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
    /// Where to run: `cpu` (burn-ndarray, f32) or `cuda` (needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceKind,
    /// GPU index for `--device cuda`.
    #[arg(long, default_value_t = 0)]
    pub gpu: usize,
    /// Float type the weights are converted to at load time.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Precision,
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
        DeviceKind::Cpu => {
            if args.dtype != Precision::F32 {
                bail!("the CPU backend (burn-ndarray) computes in f32 only; drop --dtype or use --device cuda");
            }
            job.run::<burn::backend::NdArray<f32>>(Default::default(), None)
        }
        DeviceKind::Cuda => cuda(args, job),
    }
}

#[cfg(feature = "cuda")]
fn cuda(args: &DeviceArgs, job: impl OnBackend) -> Result<()> {
    use burn::backend::cuda::{Cuda, CudaDevice};
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
    job.run::<Cuda<f32>>(device, args.dtype())
}

#[cfg(not(feature = "cuda"))]
fn cuda(_args: &DeviceArgs, _job: impl OnBackend) -> Result<()> {
    bail!("this reel binary was built without GPU support; rebuild with `cargo build --release --features cuda`, or use --device cpu")
}
