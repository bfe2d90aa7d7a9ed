//! PyTorch's CPU random number generator, bit for bit: `torch.Generator("cpu").manual_seed(S)`
//! followed by `torch.randn` / `torch.rand`, which is what diffusers' `randn_tensor(shape,
//! generator=g, dtype=torch.float32)` draws for latents and noise when the generator is on the CPU.
//!
//! What it mirrors (PyTorch 2.15 sources, `aten/src/ATen/`):
//! - `core/MT19937RNGEngine.h`: the mt19937 engine. `manual_seed(S)` seeds it with the LOW 32 BITS
//!   of `S` (Knuth/Matsumoto `init_genrand`), so `2**32 + 5` draws like `5`; an unseeded generator
//!   uses `default_rng_seed_val` = 67280421310721 ([`DEFAULT_SEED`]).
//! - `CPUGeneratorImpl.cpp`: `random()` is one 32-bit draw; `random64()` is two draws, the FIRST
//!   one in the high half: `(first << 32) | second`. `manual_seed` also clears the Box–Muller cache.
//! - `core/TransformationHelper.h` + `core/DistributionsHelper.h`: `uniform_real_distribution<float>`
//!   = `(random() & (2^24 - 1)) * 2^-24`, `<double>` = `(random64() & (2^53 - 1)) * 2^-53`;
//!   `normal_distribution<double>` = Box–Muller with `log1p(-u2)`, returning `r cos θ` and caching
//!   `r sin θ` in the generator for the next call (the cache is a `double` and is used for float
//!   tensors too; calls that take the vectorised path neither read nor clear it).
//! - `native/cpu/DistributionTemplates.h` (`normal_kernel`, `normal_fill`, `NormalFill16`) and
//!   `native/cpu/DistributionKernels.cpp`: a contiguous tensor with numel >= 16 is first filled
//!   with uniforms, then Box–Muller runs on each block of 16 (`u1 = 1 - d[j]`, `u2 = d[j + 8]`,
//!   `d[j] = r cos θ`, `d[j + 8] = r sin θ`, j < 8); when numel % 16 != 0 the LAST 16 values are
//!   overwritten with 16 fresh uniforms and transformed again. numel < 16 takes the scalar
//!   `normal_distribution<double>` path, one value per element, cast to the tensor's dtype.
//! - `native/cpu/avx_mathfun.h` (`log256_ps`, `sincos256_ps`, Cephes polynomials): the float32
//!   `NormalFill16` on x86 builds with `__AVX2__`. Torch registers no AVX512 normal kernel
//!   (`REGISTER_NO_AVX512_DISPATCH(normal_stub)`), so AVX512 machines run this AVX2 kernel too: it is
//!   what `torch.randn(..., dtype=float32)` gives on practically every x86-64 machine (checked:
//!   torch 2.15 reports capability AVX512 here, its draws equal a forced `ATEN_CPU_CAPABILITY=avx2`
//!   run's and this kernel's). GCC contracts the kernel's `_mm256_mul_ps` + `_mm256_add_ps` pairs
//!   into FMAs; this port makes the same contractions with `f32::mul_add` (listed on `log_avx2` and
//!   `sincos_avx2`). Inferred from the bits: with them every fixture value is exact, without them
//!   about 1% of values are 1–2 ulp off. (Rust never contracts `a * b + c` on its own, so the
//!   result does not depend on `target-cpu` flags.)
//! - float16 / bfloat16 (`normal_fill` with `opmath_t = float`): each block of 16 is drawn and
//!   transformed in float32 through a 16-value buffer, then rounded to nearest-even. No uniforms
//!   are drawn up front, so the tail block's 16 uniforms directly follow the last full block's:
//!   when numel % 16 != 0 the last 16 values are NOT the float32 draws rounded, and numel % 16
//!   fewer draws are consumed (numel = 17: 32 draws, not 33). See [`DrawDtype`].
//!
//! Exactness, checked against tensors torch 2.15 wrote (`tests/fixtures/torch_rng`, made by
//! `tools/reference/torch_rng.py`; tests in `crates/core/tests/torch_rng.rs`):
//! - mt19937, `random()`, `random64()`, `rand` f32/f64: bit-exact (pure integer / exact ops).
//! - `randn` f32 / f16 / bf16 with numel >= 16, [`NormalKernel::Avx2`] (the default): bit-exact on
//!   every value (only IEEE add/mul/fma/sqrt and integer ops, no libm), on any platform.
//! - `randn` with numel < 16 (any dtype), `randn` f64 with numel >= 16, and
//!   [`NormalKernel::Scalar`] (torch's non-AVX2 float kernel: `logf`/`cosf`/`sinf`): these call the
//!   C math library exactly as torch does (`log1p`/`log`/`sin`/`cos`), so they are bit-exact when
//!   both run on the same libm (measured bit-exact on glibc 2.36); another libm may differ by an ulp.
//! - A plain f32 libm Box–Muller ([`NormalKernel::Scalar`]) against torch's AVX2 results is NOT
//!   exact: on the fixtures 38% of the values (8727 of 22721) differ, by at most 1.76e-6 absolute
//!   (up to ~25000 ulp for values near zero, where the Cephes polynomials' absolute error
//!   dominates), so the AVX2 port is what reproduces diffusers' latents on x86.

use std::f64::consts::PI;

use burn::tensor::{backend::Backend, Tensor, TensorData};

/// The seed of a `torch.Generator()` that is never seeded (`c10::detail::default_rng_seed_val`).
pub const DEFAULT_SEED: u64 = 67_280_421_310_721;

const MT_N: usize = 624;
const MT_M: usize = 397;

/// The mt19937 engine as `at::mt19937` (32-bit Mersenne Twister, `init_genrand` seeding).
#[derive(Clone)]
struct Mt19937 {
    state: [u32; MT_N],
    next: usize,
}

impl Mt19937 {
    fn new(seed: u64) -> Self {
        let mut state = [0u32; MT_N];
        state[0] = (seed & 0xffff_ffff) as u32;
        for j in 1..MT_N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Mt19937 { state, next: MT_N }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..MT_N {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % MT_N] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + MT_M) % MT_N] ^ (y >> 1) ^ mag;
        }
        self.next = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.next >= MT_N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// Which of torch's two float32 Box–Muller kernels (numel >= 16) to reproduce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NormalKernel {
    /// `NormalFill16<float>` with AVX2 (`avx_mathfun.h` log/sincos, FMA-contracted): what torch
    /// runs on x86-64 CPUs with AVX2+FMA, AVX512 ones included. The default: reel's draws are then
    /// the same on every machine reel runs on, and equal diffusers' on any such x86 machine.
    #[default]
    Avx2,
    /// The portable `NormalFill16` (`logf`, `cosf`, `sinf` from the C library): what torch runs with
    /// CPU capability DEFAULT (x86 without AVX2, `ATEN_CPU_CAPABILITY=default`) and on non-x86
    /// builds (with those platforms' own libm).
    Scalar,
}

impl NormalKernel {
    /// The kernel torch itself would pick on this machine (AVX2 and FMA present on x86 → `Avx2`).
    /// Prefer the fixed default unless you must match a torch run on this very machine.
    pub fn for_this_cpu() -> Self {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return NormalKernel::Avx2;
            }
        }
        NormalKernel::Scalar
    }
}

/// `torch.Generator("cpu")`: an mt19937 engine plus the cached second Box–Muller value.
#[derive(Clone, Debug)]
pub struct TorchGenerator {
    engine: Mt19937,
    seed: u64,
    next_double_normal: Option<f64>,
    kernel: NormalKernel,
}

impl Default for TorchGenerator {
    /// `torch.Generator()` without `manual_seed`.
    fn default() -> Self {
        Self::new(DEFAULT_SEED)
    }
}

impl TorchGenerator {
    /// `torch.Generator("cpu").manual_seed(seed)`. (A negative Python seed `s` is `s + 2**64`.)
    pub fn new(seed: u64) -> Self {
        TorchGenerator {
            engine: Mt19937::new(seed),
            seed,
            next_double_normal: None,
            kernel: NormalKernel::default(),
        }
    }

    /// Selects the float32 normal kernel (see [`NormalKernel`]); the default is `Avx2`.
    pub fn with_normal_kernel(mut self, kernel: NormalKernel) -> Self {
        self.kernel = kernel;
        self
    }

    pub fn normal_kernel(&self) -> NormalKernel {
        self.kernel
    }

    /// `g.manual_seed(seed)`: reseeds the engine and clears the Box–Muller cache.
    pub fn manual_seed(&mut self, seed: u64) -> &mut Self {
        self.engine = Mt19937::new(seed);
        self.seed = seed;
        self.next_double_normal = None;
        self
    }

    /// `g.initial_seed()`: the seed as given (all 64 bits, though only the low 32 seed the engine).
    pub fn initial_seed(&self) -> u64 {
        self.seed
    }

    /// `CPUGeneratorImpl::random()`: one 32-bit mt19937 draw.
    pub fn random_u32(&mut self) -> u32 {
        self.engine.next_u32()
    }

    /// `CPUGeneratorImpl::random64()`: two draws, the first in the high 32 bits.
    pub fn random_u64(&mut self) -> u64 {
        let hi = self.engine.next_u32() as u64;
        let lo = self.engine.next_u32() as u64;
        (hi << 32) | lo
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 low bits of `random()`, in [0, 1).
    fn uniform_f32(&mut self) -> f32 {
        (self.random_u32() & ((1 << 24) - 1)) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 low bits of `random64()`, in [0, 1).
    fn uniform_f64(&mut self) -> f64 {
        (self.random_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `torch.rand(n, generator=g, dtype=torch.float32)`.
    pub fn rand_f32(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform_f32()).collect()
    }

    /// `torch.rand(n, generator=g, dtype=torch.float64)`.
    pub fn rand_f64(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform_f64()).collect()
    }

    /// `normal_distribution<double>(0, 1)` with the generator's cached second value.
    fn normal_scalar(&mut self) -> f64 {
        if let Some(v) = self.next_double_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(shape, generator=g, dtype=torch.float32)`, in C order.
    pub fn randn_f32(&mut self, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        if n < 16 {
            return (0..n).map(|_| self.normal_scalar() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        let fill = self.fill_16_f32();
        for block in data.chunks_exact_mut(16) {
            fill(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            fill(tail);
        }
        data
    }

    fn fill_16_f32(&self) -> fn(&mut [f32]) {
        match self.kernel {
            NormalKernel::Avx2 => normal_fill_16_avx2,
            NormalKernel::Scalar => normal_fill_16_f32,
        }
    }

    /// `torch.randn(shape, generator=g, dtype=torch.float16)`, in C order: what diffusers'
    /// `randn_tensor` draws for a float16 pipeline whose generator is on the CPU.
    ///
    /// Not simply the float32 draws rounded: torch computes half-precision draws in float32 one
    /// block of 16 uniforms at a time, so when numel % 16 != 0 the tail block's uniforms start
    /// right after the last full block (numel = 17 takes 32 draws, not 33) and the tail differs.
    pub fn randn_f16(&mut self, shape: &[usize]) -> Vec<half::f16> {
        self.randn_reduced(shape, half::f16::from_f32)
    }

    /// `torch.randn(shape, generator=g, dtype=torch.bfloat16)`, in C order (see [`Self::randn_f16`]).
    pub fn randn_bf16(&mut self, shape: &[usize]) -> Vec<half::bf16> {
        self.randn_reduced(shape, half::bf16::from_f32)
    }

    /// `normal_fill` for reduced-precision dtypes (opmath float, a 16-value buffer per block, each
    /// value rounded to nearest-even), or the scalar path (double → float → half, as the C++ casts).
    fn randn_reduced<T: Copy>(&mut self, shape: &[usize], cast: fn(f32) -> T) -> Vec<T> {
        let n: usize = shape.iter().product();
        if n < 16 {
            return (0..n).map(|_| cast(self.normal_scalar() as f32)).collect();
        }
        let fill = self.fill_16_f32();
        let mut buf = [0f32; 16];
        let mut out = Vec::with_capacity(n);
        for _ in 0..n / 16 {
            for v in buf.iter_mut() {
                *v = self.uniform_f32();
            }
            fill(&mut buf);
            out.extend(buf.iter().map(|&v| cast(v)));
        }
        if !n.is_multiple_of(16) {
            for v in buf.iter_mut() {
                *v = self.uniform_f32();
            }
            fill(&mut buf);
            out.resize(n, cast(0.0));
            for (o, &v) in out[n - 16..].iter_mut().zip(&buf) {
                *o = cast(v);
            }
        }
        out
    }

    /// `torch.randn(shape, generator=g, dtype=torch.float64)`, in C order.
    pub fn randn_f64(&mut self, shape: &[usize]) -> Vec<f64> {
        let n: usize = shape.iter().product();
        if n < 16 {
            return (0..n).map(|_| self.normal_scalar()).collect();
        }
        let mut data: Vec<f64> = (0..n).map(|_| self.uniform_f64()).collect();
        for block in data.chunks_exact_mut(16) {
            normal_fill_16_f64(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f64();
            }
            normal_fill_16_f64(tail);
        }
        data
    }
}

/// The portable `NormalFill16<float>` (mean 0, std 1: torch's `fma(x, std, mean)` is then `x`).
fn normal_fill_16_f32(d: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0f32 - d[j];
        let u2 = d[j + 8];
        let radius = (-2.0f32 * u1.ln()).sqrt();
        // `2.0f * c10::pi<double> * u2`: computed in double, stored as float.
        let theta = (2.0f64 * PI * u2 as f64) as f32;
        d[j] = radius * theta.cos();
        d[j + 8] = radius * theta.sin();
    }
}

/// `NormalFill16<double>`.
fn normal_fill_16_f64(d: &mut [f64]) {
    for j in 0..8 {
        let u1 = 1.0 - d[j];
        let u2 = d[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * PI * u2;
        d[j] = radius * theta.cos();
        d[j + 8] = radius * theta.sin();
    }
}

/// The AVX2 `NormalFill16<float>`, one lane at a time (every lane does the same operations).
fn normal_fill_16_avx2(d: &mut [f32]) {
    let two_pi = (2.0f64 * PI) as f32;
    for j in 0..8 {
        let u1 = 1.0f32 - d[j];
        let u2 = d[j + 8];
        let radius = (-2.0f32 * log_avx2(u1)).sqrt();
        let theta = two_pi * u2;
        let (s, c) = sincos_avx2(theta);
        // `_mm256_fmadd_ps(n, std, mean)` with std 1 and mean 0 is `n` exactly.
        d[j] = radius * c;
        d[j + 8] = radius * s;
    }
}

/// `log256_ps` from `avx_mathfun.h` (Cephes logf), with GCC's FMA contractions:
/// the Horner steps `y * x + p`, then `y * z + e * q1`, `y - z * 0.5`, `e * q2 + (x + y)`.
#[allow(clippy::excessive_precision)]
fn log_avx2(x: f32) -> f32 {
    // The C source writes double literals into float arrays: round through f64 the same way.
    const P: [f32; 9] = [
        7.0376836292E-2_f64 as f32,
        -1.1514610310E-1_f64 as f32,
        1.1676998740E-1_f64 as f32,
        -1.2420140846E-1_f64 as f32,
        1.4249322787E-1_f64 as f32,
        -1.6668057665E-1_f64 as f32,
        2.0000714765E-1_f64 as f32,
        -2.4999993993E-1_f64 as f32,
        3.3333331174E-1_f64 as f32,
    ];
    const Q1: f32 = -2.12194440e-4_f64 as f32;
    const Q2: f32 = 0.693359375_f64 as f32;
    const SQRTHF: f32 = std::f64::consts::FRAC_1_SQRT_2 as f32; // 0.707106781186547524
    let invalid = x <= 0.0;
    let x = x.max(f32::MIN_POSITIVE);
    let bits = x.to_bits();
    let imm0 = (bits >> 23) as i32 - 0x7f;
    let mut x = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    let mut e = imm0 as f32 + 1.0;
    let mask = x < SQRTHF;
    let tmp = if mask { x } else { 0.0 };
    x -= 1.0;
    e -= if mask { 1.0 } else { 0.0 };
    x += tmp;
    let z = x * x;
    let mut y = P[0];
    for &p in &P[1..] {
        y = y.mul_add(x, p);
    }
    y *= x;
    y = y.mul_add(z, e * Q1);
    y = (-z).mul_add(0.5, y);
    let x = e.mul_add(Q2, x + y);
    if invalid {
        f32::NAN
    } else {
        x
    }
}

/// `sincos256_ps` from `avx_mathfun.h` (Cephes sinf/cosf), with GCC's FMA contractions: the
/// three-part range reduction `x + y * DPi`, the Horner steps, `y * z - z * 0.5` and `y2 * x + x`.
/// Returns (sin, cos).
#[allow(clippy::excessive_precision)]
fn sincos_avx2(x: f32) -> (f32, f32) {
    const DP1: f32 = -0.78515625_f64 as f32;
    const DP2: f32 = -2.4187564849853515625e-4_f64 as f32;
    const DP3: f32 = -3.77489497744594108e-8_f64 as f32;
    const SINCOF: [f32; 3] = [
        -1.9515295891E-4_f64 as f32,
        8.3321608736E-3_f64 as f32,
        -1.6666654611E-1_f64 as f32,
    ];
    const COSCOF: [f32; 3] = [
        2.443315711809948E-005_f64 as f32,
        -1.388731625493765E-003_f64 as f32,
        4.166664568298827E-002_f64 as f32,
    ];
    const FOPI: f32 = 1.27323954473516_f64 as f32; // 4 / pi
    let xb = x.to_bits();
    let mut sign_bit_sin = xb & 0x8000_0000;
    let mut x = f32::from_bits(xb & 0x7fff_ffff);
    // Truncating conversion, like `_mm256_cvttps_epi32` for in-range values.
    let mut imm2 = (x * FOPI) as i32;
    imm2 = imm2.wrapping_add(1) & !1;
    let y = imm2 as f32;
    let imm4 = imm2;
    let swap_sign_bit_sin = ((imm2 & 4) as u32) << 29;
    let poly_mask = (imm2 & 2) == 0;
    x = y.mul_add(DP1, x);
    x = y.mul_add(DP2, x);
    x = y.mul_add(DP3, x);
    let sign_bit_cos = ((!imm4.wrapping_sub(2) & 4) as u32) << 29;
    sign_bit_sin ^= swap_sign_bit_sin;

    let z = x * x;
    let mut y = COSCOF[0].mul_add(z, COSCOF[1]);
    y = y.mul_add(z, COSCOF[2]);
    y *= z;
    y = y.mul_add(z, -(z * 0.5));
    y += 1.0;

    let mut y2 = SINCOF[0].mul_add(z, SINCOF[1]);
    y2 = y2.mul_add(z, SINCOF[2]);
    y2 *= z;
    y2 = y2.mul_add(x, x);

    // Select with and/andnot, then the same subtractions and additions as the vector code
    // (they matter for the sign of zeros).
    let ysin2 = if poly_mask { y2 } else { 0.0 };
    let ysin1 = if poly_mask { 0.0 } else { y };
    let y2 = y2 - ysin2;
    let y = y - ysin1;
    let s = ysin1 + ysin2;
    let c = y + y2;
    (
        f32::from_bits(s.to_bits() ^ sign_bit_sin),
        f32::from_bits(c.to_bits() ^ sign_bit_cos),
    )
}

/// diffusers' `randn_tensor(shape, generator=g, device=cpu, dtype=torch.float32)` moved to
/// `device`: the values of `torch.randn(shape, generator=g)` (C order), then a host-to-device copy.
pub fn randn_tensor<B: Backend, const D: usize>(
    gen: &mut TorchGenerator,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    let values = gen.randn_f32(&shape);
    Tensor::from_data(TensorData::new(values, shape.to_vec()), device)
}

/// The dtype torch draws in: diffusers' `randn_tensor(..., dtype=...)` draws on the CPU in the
/// pipeline's dtype, and float16 / bfloat16 draws are not the float32 draws rounded (see
/// [`TorchGenerator::randn_f16`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DrawDtype {
    #[default]
    F32,
    F16,
    BF16,
}

impl TorchGenerator {
    /// `torch.randn(shape, generator=g, dtype=dtype)`, widened to f32 (exactly) in C order.
    pub fn randn_as_f32(&mut self, shape: &[usize], dtype: DrawDtype) -> Vec<f32> {
        match dtype {
            DrawDtype::F32 => self.randn_f32(shape),
            DrawDtype::F16 => self.randn_f16(shape).into_iter().map(f32::from).collect(),
            DrawDtype::BF16 => self.randn_bf16(shape).into_iter().map(f32::from).collect(),
        }
    }
}

/// [`randn_tensor`] for a pipeline whose latents dtype is `dtype` (`F16` for `torch_dtype=float16`).
pub fn randn_tensor_as<B: Backend, const D: usize>(
    gen: &mut TorchGenerator,
    shape: [usize; D],
    dtype: DrawDtype,
    device: &B::Device,
) -> Tensor<B, D> {
    let values = gen.randn_as_f32(&shape, dtype);
    Tensor::from_data(TensorData::new(values, shape.to_vec()), device)
}

/// diffusers' `randn_tensor` with a list of generators (one per batch entry): entry `i` is
/// `torch.randn((1, *shape[1..]), generator=gens[i], dtype=dtype)`, concatenated along dim 0.
///
/// # Panics
/// If `D == 0` or `gens.len() != shape[0]` (diffusers raises in that case too).
pub fn randn_tensor_per_sample<B: Backend, const D: usize>(
    gens: &mut [TorchGenerator],
    shape: [usize; D],
    dtype: DrawDtype,
    device: &B::Device,
) -> Tensor<B, D> {
    assert!(D > 0, "randn_tensor_per_sample needs a batch dimension");
    assert_eq!(
        gens.len(),
        shape[0],
        "one generator per batch entry: got {} generators for batch size {}",
        gens.len(),
        shape[0]
    );
    let mut one = shape;
    one[0] = 1;
    let mut values = Vec::with_capacity(shape.iter().product());
    for g in gens.iter_mut() {
        values.extend(g.randn_as_f32(&one, dtype));
    }
    Tensor::from_data(TensorData::new(values, shape.to_vec()), device)
}
