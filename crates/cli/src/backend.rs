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
    /// CPU only, with `--cpu-backend flex`: reel's own kernels for attention (on the token
    /// layout, multi-threaded), group / layer norm, GEGLU and softmax, each one vectorised pass
    /// (src/vendor/cpu.rs). `off` runs burn-flex's own operations for every layer: for measuring
    /// what the kernels give, or ruling them out when a result looks wrong.
    #[arg(long, value_enum, default_value = "on", value_name = "on|off")]
    pub cpu_kernels: Switch,
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
    /// CUDA only: where compiled GPU kernels (cubecl's PTX cache, the driver's JIT cache) and
    /// autotune results are kept between runs. The first use on a machine compiles and tunes for
    /// minutes; later runs load them. Default: $REEL_KERNEL_CACHE, else
    /// $XDG_CACHE_HOME/reel/kernels, else ~/.cache/reel/kernels. A cubecl.toml that names its
    /// own caches wins.
    #[arg(long, value_name = "DIR")]
    pub kernel_cache: Option<std::path::PathBuf>,
    /// CUDA only: what computes the heavy operations. `cudnn`: large convolutions on NVIDIA's
    /// cuDNN, small and 1×1 ones as im2col products on cuBLAS (faster there, measured on an
    /// H100), matrix products (linear layers, attention) on cuBLAS; `cublas`: everything on
    /// cuBLAS, convolutions as im2col products; `cubecl`: burn's generated kernels, compiled and tuned on
    /// first use. The libraries compile nothing. Default: cudnn when libcudnn and libcublas can be
    /// loaded (library path or LD_LIBRARY_PATH), else cublas when libcublas can, else cubecl.
    #[arg(long, value_enum, value_name = "cudnn|cublas|cubecl")]
    pub cuda_kernels: Option<CudaKernels>,
    /// CUDA only, with `--cuda-kernels cudnn|cublas`: reel's own kernels (compiled once per run
    /// with NVRTC, under a second) for group norm (with the SiLU after it), layer norm and the
    /// attention softmax, one kernel each instead of burn's chains of operations. `off`: burn's
    /// operations.
    #[arg(long, value_enum, default_value = "on", value_name = "on|off")]
    pub cuda_own_kernels: Switch,
    /// CUDA only, with reel's own kernels on: attention as reel's one fused kernel (flash-style:
    /// tensor-core products, f32 online softmax, no score tensor, the heads read and written in
    /// place) for f16 / bf16 heads of 64 values on compute capability 8.0 or newer. `off`: two
    /// cuBLAS products around reel's softmax kernel.
    #[arg(long, value_enum, default_value = "on", value_name = "on|off")]
    pub cuda_flash_attention: Switch,
    /// CUDA only: how the GPU memory pool reserves memory from the driver. `sliced`: cubecl's
    /// default, every size sliced from shared pages up to a quarter of the card (a few hundred MB
    /// tensor reserves a 5 GB page on an 80 GB card); `split`: as PyTorch's caching allocator,
    /// small tensors sliced from 2 and 20 MiB pages, larger ones on pages of their own at most a
    /// quarter over their size, freed when unused; `exclusive`: cubecl's preset of one page per
    /// tensor in size classes about 1.8× apart.
    #[arg(long, value_enum, default_value = "sliced", value_name = "sliced|split|exclusive")]
    pub cuda_memory: CudaMemory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CudaMemory {
    Sliced,
    Split,
    Exclusive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CudaKernels {
    Cudnn,
    Cublas,
    Cubecl,
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

#[cfg_attr(not(feature = "cuda-base"), allow(dead_code))]
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
            CpuBackend::Flex => {
                if args.cpu_kernels == Switch::On {
                    crate::vendor::cpu::register();
                }
                job.run::<burn::backend::Flex>(Default::default(), args.dtype())
            }
        },
        DeviceKind::Cuda => cuda(args, job),
    }
}

/// The GPU memory pool of `--device cuda` (None on the CPU or in a build without CUDA).
#[cfg(feature = "cuda-base")]
pub fn device_memory(args: &DeviceArgs) -> Option<DeviceMemory> {
    use burn_cubecl::cubecl::cuda::{CudaDevice, CudaRuntime};
    use burn_cubecl::cubecl::Runtime;
    if args.device != DeviceKind::Cuda {
        return None;
    }
    let usage = CudaRuntime::client(&CudaDevice::new(args.gpu)).memory_usage().ok()?;
    Some(DeviceMemory { in_use: usage.bytes_in_use, reserved: usage.bytes_reserved })
}

#[cfg(not(feature = "cuda-base"))]
pub fn device_memory(_args: &DeviceArgs) -> Option<DeviceMemory> {
    None
}

/// Where `--device cuda` keeps compiled kernels and autotune results (see `--kernel-cache`).
#[cfg(feature = "cuda-base")]
fn kernel_cache_dir(args: &DeviceArgs) -> Option<std::path::PathBuf> {
    kernel_cache_dir_from(args.kernel_cache.as_deref(), |k| std::env::var_os(k))
}

/// `--kernel-cache`, else $REEL_KERNEL_CACHE, else $XDG_CACHE_HOME/reel/kernels, else
/// $HOME/.cache/reel/kernels (empty variables count as unset).
#[cfg_attr(not(feature = "cuda-base"), allow(dead_code))]
fn kernel_cache_dir_from(
    flag: Option<&std::path::Path>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    flag.map(PathBuf::from)
        .or_else(|| var("REEL_KERNEL_CACHE"))
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("reel/kernels")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/reel/kernels")))
}

/// Points cubecl's PTX cache and autotune cache, and the CUDA driver's JIT cache, at
/// `kernel_cache_dir` (cubecl keeps compiled kernels only in memory by default, so every run
/// paid minutes of NVRTC compilation and autotuning again: docs/performance.md). Must run before
/// the first CUDA use: cubecl reads its configuration once. Returns the folder when it is empty
/// (a first use that will take minutes, worth telling once the GPU is known to work).
#[cfg(feature = "cuda-base")]
fn configure_kernel_cache(args: &DeviceArgs) -> Option<std::path::PathBuf> {
    use burn_cubecl::cubecl::config::{cache::CacheConfig, CubeClRuntimeConfig, RuntimeConfig};
    let dir = kernel_cache_dir(args)?;
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("warning: kernel cache {}: {e}; GPU kernels will be compiled again on every run", dir.display());
        return None;
    }
    if CubeClRuntimeConfig::storage().lock().is_some() {
        return None; // already configured (or read) in this process
    }
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    if config.compilation.cache.is_none() {
        config.compilation.cache = Some(CacheConfig::File(dir.clone()));
    }
    if matches!(config.autotune.cache, CacheConfig::Target) {
        config.autotune.cache = CacheConfig::File(dir.clone());
    }
    CubeClRuntimeConfig::set(config);
    // The driver's PTX→SASS cache: read by libcuda at initialisation, which has not happened yet.
    if std::env::var_os("CUDA_CACHE_PATH").is_none() {
        std::env::set_var("CUDA_CACHE_PATH", dir.join("nv"));
    }
    if std::env::var_os("CUDA_CACHE_MAXSIZE").is_none() {
        std::env::set_var("CUDA_CACHE_MAXSIZE", "4294967296");
    }
    let empty = std::fs::read_dir(&dir).map(|mut d| d.next().is_none()).unwrap_or(true);
    empty.then_some(dir)
}

#[cfg(feature = "cuda-base")]
fn cuda(args: &DeviceArgs, job: impl OnBackend) -> Result<()> {
    use burn::backend::cuda::{Cuda, CudaDevice};
    let fresh_cache = configure_kernel_cache(args);
    // Before the probe below, which initialises the device and its memory pools.
    crate::vendor::cuda::set_memory_pools(args.cuda_memory);
    /// burn-cuda without the fusion wrapper: every operation its own kernel.
    type CudaUnfused = burn_cubecl::CubeBackend<burn_cubecl::cubecl::cuda::CudaRuntime, f32, i32, u8>;
    let device = CudaDevice::new(args.gpu);
    // burn-cuda panics when libcuda cannot be loaded: probe once and turn that into an error.
    let probe = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    // cubecl also logs the failed probe as a warning: the error below says it better.
    let log_level = log::max_level();
    log::set_max_level(log::LevelFilter::Error);
    let ok = std::panic::catch_unwind(move || {
        let t = burn::tensor::Tensor::<Cuda<f32>, 1>::zeros([1], &probe);
        t.into_data();
    })
    .is_ok();
    std::panic::set_hook(hook);
    log::set_max_level(log_level);
    if !ok {
        bail!("--device cuda: no usable NVIDIA GPU {} (the CUDA driver library could not be loaded or the device does not exist); use --device cpu", args.gpu);
    }
    if let Some(dir) = fresh_cache {
        eprintln!(
            "note: first GPU run with this kernel cache: compiling and tuning kernels takes minutes once; kept in {}",
            dir.display()
        );
    }
    if let Some(vendor) = vendor_kernels(args)? {
        use crate::vendor::cuda::{CudaCube, CudaFused};
        use reel_core::kernels::register;
        crate::vendor::cuda::set_gpu(args.gpu);
        register::<CudaFused>(std::sync::Arc::new(vendor));
        register::<CudaCube>(std::sync::Arc::new(vendor));
    }
    match args.cuda_fusion {
        Switch::On => job.run::<Cuda<f32>>(device, args.dtype()),
        Switch::Off => job.run::<CudaUnfused>(device, args.dtype()),
    }
}

/// The vendor kernels `--cuda-kernels` (or its default) asks for; `None` for cubecl's.
#[cfg(feature = "cuda-base")]
fn vendor_kernels(args: &DeviceArgs) -> Result<Option<crate::vendor::cuda::Vendor>> {
    use crate::vendor::cuda::Vendor;
    let (blas, dnn) = (crate::vendor::cublas::available(), crate::vendor::cudnn::available());
    let own = args.cuda_own_kernels == Switch::On && crate::vendor::nvrtc::available();
    if args.cuda_own_kernels == Switch::On && !own {
        eprintln!("note: libnvrtc not found (library path, LD_LIBRARY_PATH): norms and softmax run as burn's operations");
    }
    let flash = own && args.cuda_flash_attention == Switch::On;
    let missing = |lib: &str| {
        anyhow::anyhow!(
            "--cuda-kernels: {lib} could not be loaded; install it (CUDA's cuBLAS / cuDNN) or put the folder holding it on LD_LIBRARY_PATH, or use --cuda-kernels cubecl"
        )
    };
    match args.cuda_kernels {
        Some(CudaKernels::Cubecl) => Ok(None),
        Some(CudaKernels::Cublas | CudaKernels::Cudnn) if !blas => Err(missing("libcublas")),
        Some(CudaKernels::Cudnn) if !dnn => Err(missing("libcudnn")),
        Some(kind) => Ok(Some(Vendor { cudnn: kind == CudaKernels::Cudnn, own, flash })),
        None if blas => {
            if !dnn {
                eprintln!("note: libcudnn not found (library path, LD_LIBRARY_PATH): convolutions run as im2col products on cuBLAS");
            }
            Ok(Some(Vendor { cudnn: dnn, own, flash }))
        }
        None => {
            eprintln!("note: libcublas not found (library path, LD_LIBRARY_PATH): matrix products and convolutions run on cubecl's kernels, which compile on first use");
            Ok(None)
        }
    }
}

/// What computes the heavy operations on this backend, for reports: the registered libraries,
/// else burn's own kernels.
pub fn kernels_name<B: burn::tensor::backend::Backend>() -> &'static str {
    reel_core::kernels::registered::<B>().map(|k| k.name()).unwrap_or("burn")
}

#[cfg(not(feature = "cuda-base"))]
fn cuda(_args: &DeviceArgs, _job: impl OnBackend) -> Result<()> {
    bail!("this reel binary was built without GPU support; rebuild with `cargo build --release --features cuda`, or use --device cpu")
}

#[cfg(test)]
mod tests {
    use super::kernel_cache_dir_from;
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn kernel_cache_flag_then_variables_then_home() {
        let all = env(&[("REEL_KERNEL_CACHE", "/k"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(kernel_cache_dir_from(Some(Path::new("/f")), &all), Some(PathBuf::from("/f")));
        assert_eq!(kernel_cache_dir_from(None, &all), Some(PathBuf::from("/k")));
        let xdg = env(&[("REEL_KERNEL_CACHE", ""), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(kernel_cache_dir_from(None, xdg), Some(PathBuf::from("/x/reel/kernels")));
        assert_eq!(kernel_cache_dir_from(None, env(&[("HOME", "/h")])), Some(PathBuf::from("/h/.cache/reel/kernels")));
        assert_eq!(kernel_cache_dir_from(None, env(&[])), None);
    }
}
