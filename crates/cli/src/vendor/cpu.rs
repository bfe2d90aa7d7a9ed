//! reel's own CPU kernels for burn-flex (`reel_core::kernels::Kernels<Flex>`): the operations
//! where burn-flex runs several passes or a single thread while PyTorch's CPU kernels run one
//! vectorised, multi-threaded pass (docs/performance.md, "burn-flex as the CPU backend"):
//!
//! - attention on the projections' token layout `(b, s, heads·d)` (AttnProcessor2_0 +
//!   `F.scaled_dot_product_attention`): no head split or merge copies, every (batch, head,
//!   query block) a rayon task, scores and softmax in f32; blocks of [`QUERY_BLOCK`] or more queries
//!   on `gemm` (burn-flex's own product), short sequences (the temporal layers' frames) as direct
//!   dot products;
//! - group norm (with the SiLU after it, and optionally a value per image and channel added
//!   first: a resnet's time embedding) and layer norm in one pass each after the statistics
//!   (`torch.nn.GroupNorm` / `LayerNorm`: mean, then the mean square about it, in f64 here);
//! - GEGLU (`diffusers.models.activations.GEGLU`, exact erf GELU) and the text encoder's exact
//!   GELU in one pass;
//! - the softmax of the VAE's and CLIP's attention scores;
//! - f32 convolutions as per-task im2col columns times the weight on `gemm`, into the output
//!   (burn-flex converts the whole input to channels-last on one thread first); 3×3 stride-1
//!   ones as Winograd F(2×2, 3×3) (Lavin & Gray 2016: 16 products per 2×2 output tile instead of
//!   36) when their channels and pixels make it pay; optionally onto a residual (a resnet
//!   block's shortcut), which the output starts from;
//! - f32 matrix products on `gemm` straight into a new buffer (burn-flex's own product re-copies
//!   its output to realign it), starting from the bias or a linear layer's residual.
//!
//! Products, convolutions and attention in f16 / bf16 widen their operands to f32 on every thread
//! and round the result once (PyTorch's CPU products also accumulate half-precision operands in
//! f32); in bf16 on a CPU with AVX-512 BF16, linear layers (rounded as they are stored), `(kh, 1)`
//! convolutions, the few-pixel convolutions' product, Winograd's products (the filters
//! transformed from the bf16 weight; the bf16 input read by the input transform, the output
//! rounded as it is stored) and attention past a few keys multiply bf16 values directly
//! instead ([`bf16_gemm`]). Outputs and other buffers a kernel writes whole are not zeroed first
//! ([`written`], [`room`]; NaN-filled in debug builds, so a value left unwritten fails the
//! tests), and views that transpose are copied in tiles ([`transposed`]). The element-wise loops are
//! compiled for the baseline x86-64 target, with AVX2 + FMA and with AVX-512 (`simd_fn!`), the
//! widest chosen at run time; `exp` and `erf` are branch-free polynomials (Cephes `expf`; Abramowitz &
//! Stegun 7.1.26, as PyTorch's vectorised CPU `erf`) so they vectorise. NaN passes through (it is
//! detected downstream, not masked).

use std::sync::Arc;

use burn::backend::Flex;
use burn::tensor::{DType, Element, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;
use reel_core::kernels::{BiasAxis, Kernels};

use super::bf16_gemm;

/// Queries per attention task with direct dot products, and the fewest per task on `gemm`.
pub const QUERY_BLOCK: usize = 64;

/// f32 scores per attention task on `gemm` (1 MiB): `SCORE_VALUES / seq_kv` queries, at most
/// 512 (each task packs its head's k and v again; 64-query blocks ran the 1,024-token self-attention
/// of a 256² UNet about 3 % and the 256-token one about 15 % slower).
const SCORE_VALUES: usize = 1 << 18;

/// Up to this many score values per query block, attention runs as direct dot products (no
/// `gemm` call, whose fixed cost dominates for the temporal layers' few frames).
const DIRECT_SCORES: usize = 1024;

/// Values per parallel task of the element-wise kernels: fewer, and rayon's hand-offs cost more
/// than the work.
const TASK_VALUES: usize = 16_384;

/// Items of `each` values per parallel task: about [`TASK_VALUES`] values a task, at least one item.
fn per_task(each: usize) -> usize {
    (TASK_VALUES / each.max(1)).max(1)
}

/// From this many values a buffer of zeros is written on every thread ([`zeros`]).
const PARALLEL_ZEROS: usize = 1 << 18;

/// `len` zeros, written on every thread when there are many: a large output's memset on the
/// calling thread otherwise holds up every task that follows (the heap reuses freed blocks, so
/// `vec![0; n]` is a `memset`, seen at 3–4 % of a bf16 UNet step's samples).
pub(crate) fn zeros<T: bytemuck::Pod + Send + Sync>(len: usize) -> Vec<T> {
    if len < PARALLEL_ZEROS {
        return vec![T::zeroed(); len];
    }
    let mut v: Vec<T> = Vec::with_capacity(len);
    v.spare_capacity_mut().par_chunks_mut(PARALLEL_ZEROS).for_each(|c| {
        // SAFETY: `c` is this task's part of the spare capacity; all-zero bytes are a valid `T`
        // (`Pod`).
        unsafe { std::ptr::write_bytes(c.as_mut_ptr(), 0, c.len()) }
    });
    // SAFETY: the chunks cover all `len` values, each written above.
    unsafe { v.set_len(len) };
    v
}

/// `len` values written by `fill`, without zeroing them first (`torch.empty`, not `torch.zeros`):
/// for the buffers a kernel writes whole — outputs, converted operands, packed panels — whose
/// zeroing pass moved as many bytes as the kernel's own writes (about 30 GB in a bf16 UNet step at
/// 8 frames 256², 4–6 % of its samples). The `Vec` gets its length once `fill` returns, when every
/// value is initialised; `fill` writes through a slice of the not yet initialised capacity, as
/// burn-flex's own `to_contiguous` does. In debug builds (the tests) the values start with all bits
/// set — NaN for f32, f16 and bf16 — so a value a kernel leaves unwritten shows in the tests'
/// comparisons instead of passing as a zero.
///
/// # Safety
/// `fill` writes every one of the `len` values before it reads any of them.
pub(crate) unsafe fn written<T: bytemuck::Pod>(len: usize, fill: impl FnOnce(&mut [T])) -> Vec<T> {
    let mut v = room::<T>(len);
    // SAFETY: `len` values of capacity, aligned; the caller writes them all before reading any.
    fill(unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr(), len) });
    // SAFETY: every value was written by `fill` (the caller's contract).
    unsafe { v.set_len(len) };
    v
}

/// An empty `Vec` with room for `len` values, for kernels that write all of them through raw
/// pointers ([`Shared`], `gemm`'s destination) and then set its length ([`written`] for those
/// that write through a slice). In debug builds the room holds all-one bits (NaN), as
/// [`written`]'s.
pub(crate) fn room<T: bytemuck::Pod>(len: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    if cfg!(debug_assertions) {
        // SAFETY: the capacity holds `len` values; all-one bytes are a valid `T` (`Pod`).
        unsafe { std::ptr::write_bytes(v.as_mut_ptr(), 0xff, len) };
    }
    v
}

/// The CPU kernels registered for burn-flex (`--cpu-kernels on`, the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct FlexKernels;

/// Registers [`FlexKernels`] for burn-flex.
pub fn register() {
    reel_core::kernels::register::<Flex>(Arc::new(FlexKernels));
}

// ----- tensors in and out ---------------------------------------------------------------------

fn prim<const D: usize>(t: Tensor<Flex, D>) -> FlexTensor {
    t.into_primitive().tensor()
}

fn wrap<const D: usize>(t: FlexTensor) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// `t` with its values in one contiguous run (a copy only when it was a strided view): for f32,
/// f16 and bf16 a copy on every thread ([`strided_copy`]), else burn-flex's.
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.layout().contiguous_offsets().is_some() {
        return t;
    }
    match t.dtype() {
        DType::F32 => strided_copy::<f32>(&t),
        DType::F16 => strided_copy::<half::f16>(&t),
        DType::BF16 => strided_copy::<half::bf16>(&t),
        _ => t.to_contiguous(),
    }
}

/// The values of the strided view `t` in row-major order, rows of its last axis shared out
/// among the threads (burn-flex's `to_contiguous` walks every index on the calling thread:
/// the permutes between the UNet's spatial, temporal and token layouts).
fn strided_copy<E: Elem>(t: &FlexTensor) -> FlexTensor {
    let layout = t.layout();
    let shape: Vec<usize> = layout.shape().to_vec();
    let strides: Vec<isize> = layout.strides().to_vec();
    let (src, start) = (t.storage::<E>(), layout.start_offset() as isize);
    let total: usize = shape.iter().product();
    let rank = shape.len();
    let last = shape.last().copied().unwrap_or(1).max(1);
    let last_stride = strides.last().copied().unwrap_or(1);
    // a transpose (the last axis strided, another one contiguous in the source): in tiles
    if last_stride != 1 && rank >= 2 {
        if let Some(p) = (0..rank - 1).rev().find(|&a| strides[a] == 1 && shape[a] > 1) {
            return from_vec(transposed::<E>(src, start, &shape, &strides, p), shape);
        }
    }
    let mut out: Vec<E> = Vec::with_capacity(total);
    let rows_per = per_task(last);
    out.spare_capacity_mut().par_chunks_mut(last * rows_per).enumerate().for_each(|(task, chunk)| {
        for (j, row) in chunk.chunks_mut(last).enumerate() {
            // the source offset of row task·rows_per + j: its index over the leading axes
            let (mut r, mut at) = (task * rows_per + j, start);
            for axis in (0..rank.saturating_sub(1)).rev() {
                at += (r % shape[axis]) as isize * strides[axis];
                r /= shape[axis];
            }
            if last_stride == 1 {
                let (base, n) = (at as usize, row.len());
                for (o, &v) in row.iter_mut().zip(&src[base..base + n]) {
                    o.write(v);
                }
            } else {
                for (i, o) in row.iter_mut().enumerate() {
                    o.write(src[(at + i as isize * last_stride) as usize]);
                }
            }
        }
    });
    // SAFETY: the chunks cover all `total` values and every one was written above.
    unsafe { out.set_len(total) };
    from_vec(out, shape)
}

/// Values along the source's contiguous axis per tile of [`transposed`].
const TILE: usize = 16;

/// [`strided_copy`] of a view whose axis `p` (not the last) has stride 1 in the source and whose
/// last axis does not (the UNet's frames ↔ channels ↔ tokens permutes): each task copies a tile
/// of [`TILE`] values along `p` × the whole last axis, reading runs of the source's rows and
/// writing [`TILE`] output rows, where element-wise it gathered every value with the last
/// axis' stride.
fn transposed<E: Elem>(src: &[E], start: isize, shape: &[usize], strides: &[isize], p: usize) -> Vec<E> {
    let rank = shape.len();
    let (last, s_last) = (shape[rank - 1], strides[rank - 1]);
    // the output's row-major strides
    let mut ostr = vec![1usize; rank];
    for a in (0..rank - 1).rev() {
        ostr[a] = ostr[a + 1] * shape[a + 1];
    }
    let total: usize = shape.iter().product();
    let blocks = shape[p].div_ceil(TILE);
    let others: Vec<usize> = (0..rank - 1).filter(|&a| a != p).collect();
    let outer: usize = others.iter().map(|&a| shape[a]).product();
    let mut out = room::<E>(total);
    let dst = Shared(out.as_mut_ptr());
    (0..outer * blocks).into_par_iter().with_min_len(per_task(TILE * last)).for_each(|u| {
        // the unit's index along the other axes, and its tile of axis p
        let (mut r, blk) = (u / blocks, u % blocks);
        let (mut at, mut o) = (start, 0usize);
        for &a in others.iter().rev() {
            let i = r % shape[a];
            r /= shape[a];
            at += i as isize * strides[a];
            o += i * ostr[a];
        }
        let (p0, op) = (blk * TILE, ostr[p]);
        let tb = TILE.min(shape[p] - p0);
        at += p0 as isize;
        o += p0 * op;
        for j in 0..last {
            let s0 = (at + j as isize * s_last) as usize;
            for (pi, &v) in src[s0..s0 + tb].iter().enumerate() {
                // SAFETY: output element (…, p0 + pi, …, j) of this unit's tile: in bounds and
                // written by this task only.
                unsafe { dst.ptr().add(o + pi * op + j).write(v) };
            }
        }
    });
    // SAFETY: the units cover every index of the other axes × every tile of axis p, each writing
    // its tile's values for every j of the last axis.
    unsafe { out.set_len(total) };
    out
}

fn values<E: Elem>(t: &FlexTensor) -> &[E] {
    t.as_slice::<E>().expect("contiguous tensor of the dispatched dtype")
}

fn from_vec<E: Elem>(v: Vec<E>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

/// The float element types the kernels take; computation is in f32 throughout.
trait Elem: Element + bytemuck::Pod + Copy + Send + Sync {
    fn f32(self) -> f32;
    fn of(v: f32) -> Self;
    /// `dst[i] = src[i] as f32` (vectorised: `half`'s slice conversions, F16C for f16).
    fn widen(src: &[Self], dst: &mut [f32]);
    /// `dst[i] = src[i]` rounded to nearest even.
    fn narrow(src: &[f32], dst: &mut [Self]);
}

impl Elem for f32 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn of(v: f32) -> Self {
        v
    }
    fn widen(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn narrow(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}

/// `Elem` for a `half` type; `$narrow` rounds `src: &[f32]` into `dst: &mut [Self]`.
macro_rules! half_elem {
    ($t:ty, |$src:ident, $dst:ident| $narrow:expr) => {
        impl Elem for $t {
            #[inline(always)]
            fn f32(self) -> f32 {
                self.to_f32()
            }
            #[inline(always)]
            fn of(v: f32) -> Self {
                <$t>::from_f32(v)
            }
            fn widen(src: &[Self], dst: &mut [f32]) {
                use half::slice::HalfFloatSliceExt;
                src.convert_to_f32_slice(dst);
            }
            fn narrow($src: &[f32], $dst: &mut [Self]) {
                use half::slice::HalfFloatSliceExt;
                $narrow
            }
        }
    };
}

half_elem!(half::f16, |src, dst| dst.convert_from_f32_slice(src));
// bf16: `vcvtneps2bf16` where the CPU has AVX-512 BF16 (`half`'s conversion is scalar)
half_elem!(half::bf16, |src, dst| if bf16_gemm::available() { bf16_gemm::round(src, dst) } else { dst.convert_from_f32_slice(src) });

/// f16 / bf16 operands of products and convolutions as f32 tensors with the same layout: the
/// storage converted on every thread (a view of under half its storage is copied out first).
/// The f32 kernels then run on them, as PyTorch's CPU products accumulate half-precision
/// operands in f32, and [`narrowed`] rounds the result once.
fn widened(t: FlexTensor) -> FlexTensor {
    fn go<E: Elem>(t: FlexTensor) -> FlexTensor {
        let numel: usize = t.layout().shape().iter().product();
        let t = if t.storage::<E>().len() > 2 * numel { strided_copy::<E>(&t) } else { t };
        let src = t.storage::<E>();
        // SAFETY: `widen` writes every value of each chunk.
        let out = unsafe { written::<f32>(src.len(), |out| out.par_chunks_mut(TASK_VALUES).zip(src.par_chunks(TASK_VALUES)).for_each(|(o, s)| E::widen(s, o))) };
        let layout = t.layout().clone();
        from_vec(out, vec![src.len()]).with_layout(layout)
    }
    match t.dtype() {
        DType::F16 => go::<half::f16>(t),
        DType::BF16 => go::<half::bf16>(t),
        _ => t,
    }
}

/// The f32 result `t` (contiguous) in `dtype` (f32, f16 or bf16), rounded on every thread; `t`
/// itself when it is in `dtype` already (a product rounded as it was stored).
fn narrowed(t: FlexTensor, dtype: DType) -> FlexTensor {
    if t.dtype() == dtype {
        return t;
    }
    fn go<E: Elem>(t: FlexTensor) -> FlexTensor {
        let t = contiguous(t);
        let src = values::<f32>(&t);
        // SAFETY: `narrow` writes every value of each chunk.
        let out = unsafe { written::<E>(src.len(), |out| out.par_chunks_mut(TASK_VALUES).zip(src.par_chunks(TASK_VALUES)).for_each(|(o, s)| E::narrow(s, o))) };
        from_vec(out, t.layout().shape().to_vec())
    }
    match dtype {
        DType::F16 => go::<half::f16>(t),
        DType::BF16 => go::<half::bf16>(t),
        _ => t,
    }
}

/// f32, f16 or bf16: the dtypes the products and convolutions take (half ones through
/// [`widened`]).
fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// Defines `fn $name` whose body is compiled three times, for the baseline x86-64 target, with
/// AVX2 and FMA, and with AVX-512 (F, VL, BW, DQ), the widest the CPU has called (checked at each
/// call: cached atomic loads). Everything the body calls must be `#[inline(always)]` to be
/// compiled with the features too.
macro_rules! simd_fn {
    ($(#[$m:meta])* fn $name:ident $(<$g:ident>)? ($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        fn $name $(<$g: Elem>)? ($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body $(<$g: Elem>)? ($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512 $(<$g: Elem>)? ($($a: $t),*) $(-> $r)? {
                    body $(::<$g>)? ($($a),*)
                }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512dq")
                    && std::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the features were detected on this CPU just above.
                    return unsafe { avx512 $(::<$g>)? ($($a),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2 $(<$g: Elem>)? ($($a: $t),*) $(-> $r)? {
                    body $(::<$g>)? ($($a),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the features were detected on this CPU just above.
                    return unsafe { avx2 $(::<$g>)? ($($a),*) };
                }
            }
            body $(::<$g>)? ($($a),*)
        }
    };
}

// ----- branch-free math -----------------------------------------------------------------------

/// `exp(x)` within 2 ulp for `x` in [-87.3, 88] (clamped outside; NaN stays NaN): Cephes'
/// `expf` reduction `x = k·ln2 + r` and its degree-7 polynomial, `2^k` built in the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    // round(x·log2 e) with the 1.5·2^23 trick: the integer lands in the low mantissa bits
    let t = x * std::f32::consts::LOG2_E + 12_582_912.0;
    let k = t.to_bits() as i32 - 0x4B40_0000;
    let kf = t - 12_582_912.0;
    let r = x - kf * 0.693_359_4 + kf * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((k + 127) << 23) as u32)
}

/// `erf(x)` within 5e-7 in f32 (Abramowitz & Stegun 7.1.26, 1.5e-7 in exact arithmetic; the
/// formula of PyTorch's vectorised CPU `erf`), odd-extended.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-z * z);
    if x < 0.0 {
        -y
    } else {
        y
    }
}

/// PyTorch's exact GELU, `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `Σ v` and `Σ (v - mean)²` of a run, in f64 with eight partial sums (vectorisable).
#[inline(always)]
fn moments<E: Elem>(xs: &[E]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let mut acc = [0f64; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i].f32() as f64;
        }
    }
    let mut sum: f64 = acc.iter().sum();
    sum += tail.iter().map(|v| v.f32() as f64).sum::<f64>();
    let mean = sum / n;
    let mut acc = [0f64; 8];
    let chunks = xs.chunks_exact(8);
    for c in chunks {
        for i in 0..8 {
            let d = c[i].f32() as f64 - mean;
            acc[i] += d * d;
        }
    }
    let mut sq: f64 = acc.iter().sum();
    sq += tail.iter().map(|v| (v.f32() as f64 - mean).powi(2)).sum::<f64>();
    (mean, sq / n)
}

/// [`moments`] of a group `xs (cg, rest)` with `plus[ch]` added to channel `ch`'s values, each sum
/// rounded to `E` as the separate add would leave it.
#[inline(always)]
fn moments_plus<E: Elem>(xs: &[E], rest: usize, plus: &[E]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let mean = plus_pass(xs, rest, plus, None) / n;
    (mean, plus_pass(xs, rest, plus, Some(mean)) / n)
}

/// One pass of [`moments_plus`]: `Σ v` without a center, else `Σ (v − center)²`, with eight
/// partial sums (no closures: they would not be compiled with the caller's SIMD features).
#[inline(always)]
fn plus_pass<E: Elem>(xs: &[E], rest: usize, plus: &[E], center: Option<f64>) -> f64 {
    let (mut acc, mut tail) = ([0f64; 8], 0f64);
    let m = center.unwrap_or(0.0);
    for (xr, p) in xs.chunks(rest.max(1)).zip(plus) {
        let p = p.f32();
        let chunks = xr.chunks_exact(8);
        let rem = chunks.remainder();
        if center.is_some() {
            for c in chunks {
                for i in 0..8 {
                    let d = E::of(c[i].f32() + p).f32() as f64 - m;
                    acc[i] += d * d;
                }
            }
            for &x in rem {
                let d = E::of(x.f32() + p).f32() as f64 - m;
                tail += d * d;
            }
        } else {
            for c in chunks {
                for i in 0..8 {
                    acc[i] += E::of(c[i].f32() + p).f32() as f64;
                }
            }
            for &x in rem {
                tail += E::of(x.f32() + p).f32() as f64;
            }
        }
    }
    acc.iter().sum::<f64>() + tail
}

// ----- norms, GEGLU, softmax --------------------------------------------------------------------

simd_fn! {
    /// One group `xs (cg, rest)` of a group norm (group `g`) into `o`, SiLU after when `silu_after`;
    /// with `plus`, of `xs` with `plus[ch]` added to channel `ch` (rounded to `E`) instead.
    fn group_norm_group<E>(o: &mut [E], xs: &[E], plus: Option<&[E]>, w: &[E], b: &[E], g: usize, rest: usize, eps: f64, silu_after: bool) {
        let cg = xs.len() / rest.max(1);
        let (mean, var) = match plus {
            Some(p) => moments_plus(xs, rest, p),
            None => moments(xs),
        };
        let rstd = (1.0 / (var + eps).sqrt()) as f32;
        let mean = mean as f32;
        for ch in 0..cg {
            let cc = g * cg + ch;
            let scale = rstd * w[cc].f32();
            let shift = b[cc].f32();
            let (xr, or) = (&xs[ch * rest..(ch + 1) * rest], &mut o[ch * rest..(ch + 1) * rest]);
            if let Some(p) = plus {
                let p = p[ch].f32();
                for (o, x) in or.iter_mut().zip(xr) {
                    let y = (E::of(x.f32() + p).f32() - mean) * scale + shift;
                    *o = E::of(if silu_after { silu(y) } else { y });
                }
            } else if silu_after {
                for (o, x) in or.iter_mut().zip(xr) {
                    *o = E::of(silu((x.f32() - mean) * scale + shift));
                }
            } else {
                for (o, x) in or.iter_mut().zip(xr) {
                    *o = E::of((x.f32() - mean) * scale + shift);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn group_norm_t<E: Elem>(x: &[E], plus: Option<&[E]>, w: &[E], b: &[E], [n, c, rest]: [usize; 3], groups: usize, eps: f64, silu_after: bool) -> Vec<E> {
    let (cg, glen) = (c / groups, (c / groups) * rest);
    if glen == 0 {
        return zeros::<E>(n * c * rest);
    }
    // SAFETY: `group_norm_group` writes every value of its group.
    unsafe {
        written::<E>(n * c * rest, |out| {
            out.par_chunks_mut(glen).zip(x.par_chunks(glen)).enumerate().with_min_len(per_task(glen)).for_each(|(i, (o, xs))| {
                // image i / groups, its channels of group i % groups
                let p = plus.map(|p| &p[(i / groups) * c + (i % groups) * cg..][..cg]);
                group_norm_group(o, xs, p, w, b, i % groups, rest, eps, silu_after)
            })
        })
    }
}

simd_fn! {
    /// Layer norm of the rows of `x` (each `w.len()` long) into `o`.
    fn layer_norm_rows<E>(o: &mut [E], x: &[E], w: &[E], b: &[E], eps: f64) {
        let dim = w.len();
        for (o, xs) in o.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
            let (mean, var) = moments(xs);
            let rstd = (1.0 / (var + eps).sqrt()) as f32;
            let mean = mean as f32;
            for ((o, x), (w, b)) in o.iter_mut().zip(xs).zip(w.iter().zip(b)) {
                *o = E::of((x.f32() - mean) * rstd * w.f32() + b.f32());
            }
        }
    }
}


fn layer_norm_t<E: Elem>(x: &[E], w: &[E], b: &[E], dim: usize, eps: f64) -> Vec<E> {
    if dim == 0 {
        return Vec::new();
    }
    let block = per_task(dim) * dim;
    // SAFETY: `layer_norm_rows` writes every row of its block.
    unsafe { written::<E>(x.len(), |out| out.par_chunks_mut(block).zip(x.par_chunks(block)).for_each(|(o, xs)| layer_norm_rows(o, xs, w, b, eps))) }
}

simd_fn! {
    /// GEGLU of the rows of `x (rows, 2·dim)` into `o (rows, dim)`.
    fn geglu_rows<E>(o: &mut [E], x: &[E], dim: usize) {
        for (o, xs) in o.chunks_exact_mut(dim).zip(x.chunks_exact(2 * dim)) {
            let (h, gate) = xs.split_at(dim);
            for ((o, h), g) in o.iter_mut().zip(h).zip(gate) {
                *o = E::of(h.f32() * gelu(g.f32()));
            }
        }
    }
}

fn geglu_t<E: Elem>(x: &[E], rows: usize, dim: usize) -> Vec<E> {
    if dim == 0 {
        return Vec::new();
    }
    let r = per_task(dim);
    // SAFETY: `geglu_rows` writes every row of its block.
    unsafe { written::<E>(rows * dim, |out| out.par_chunks_mut(r * dim).zip(x.par_chunks(r * 2 * dim)).for_each(|(o, xs)| geglu_rows(o, xs, dim))) }
}

simd_fn! {
    /// Exact GELU of every value of `x` into `o`.
    fn gelu_values<E>(o: &mut [E], x: &[E]) {
        for (o, x) in o.iter_mut().zip(x) {
            *o = E::of(gelu(x.f32()));
        }
    }
}

fn gelu_t<E: Elem>(x: &[E]) -> Vec<E> {
    // SAFETY: `gelu_values` writes every value of its chunk.
    unsafe { written::<E>(x.len(), |out| out.par_chunks_mut(TASK_VALUES).zip(x.par_chunks(TASK_VALUES)).for_each(|(o, x)| gelu_values(o, x))) }
}

/// Softmax of one row of f32 scores in place; with `visible < row.len()` the keys from
/// `visible` on are masked (probability 0).
#[inline(always)]
fn softmax_row(row: &mut [f32], visible: usize) {
    let (seen, hidden) = row.split_at_mut(visible.min(row.len()));
    // The maximum and the sum in 8 lanes: a single running value is a loop-carried dependency
    // that keeps the loop (and every exp in it) scalar.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = seen.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            // NaN propagates through the sum below, so it is not lost by `max` skipping it
            lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(chunks.remainder()) {
        max = if v > max { v } else { max };
    }
    // the exponentials as a plain map (vectorised at the full width), then their sum in 8
    // lanes from cache
    for v in seen.iter_mut() {
        *v = exp(*v - max);
    }
    let mut acc = [0f32; 8];
    let mut chunks = seen.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for v in chunks.remainder() {
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in seen.iter_mut() {
        *v *= inv;
    }
    hidden.fill(0.0);
}

simd_fn! {
    /// Softmax of score rows `s` (each `row.len()` long; row `r0 + i` overall) into `o`, through
    /// the scratch `row`; causal rows see keys `j ≤ (r0 + i) % sq`.
    fn softmax_rows<E>(o: &mut [E], s: &[f32], row: &mut [f32], r0: usize, sq: usize, causal: bool) {
        let sk = row.len();
        for (i, (o, s)) in o.chunks_exact_mut(sk).zip(s.chunks_exact(sk)).enumerate() {
            row.copy_from_slice(s);
            softmax_row(row, if causal { (r0 + i) % sq + 1 } else { sk });
            for (o, v) in o.iter_mut().zip(row.iter()) {
                *o = E::of(*v);
            }
        }
    }
}

fn softmax_t<E: Elem>(scores: &[f32], [_, sq, sk]: [usize; 3], causal: bool) -> Vec<E> {
    if sk == 0 {
        return Vec::new();
    }
    let r = per_task(sk);
    // SAFETY: `softmax_rows` writes every row of its block (masked keys as zeros).
    unsafe {
        written::<E>(scores.len(), |out| {
            out.par_chunks_mut(r * sk).zip(scores.par_chunks(r * sk)).enumerate().for_each_init(
                || vec![0f32; sk],
                |row, (t, (o, s))| softmax_rows(o, s, row, t * r, sq, causal),
            )
        })
    }
}

// ----- attention --------------------------------------------------------------------------------

/// A raw pointer (f32 unless said) that tasks share; each task writes only its own disjoint
/// region (also [`bf16_gemm`]'s output blocks).
pub(crate) struct Shared<T = f32>(pub(crate) *mut T);
impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<T> {}
// SAFETY: the tasks that receive it write disjoint output regions (e.g. one per (batch, head,
// query block)), and the buffer outlives the parallel loop.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The pointer (a method, so closures capture the whole `Shared`, which is `Sync`).
    #[inline(always)]
    pub(crate) fn ptr(&self) -> *mut T {
        self.0
    }
}

/// A `(b, s, heads·d)` f32 operand: its values, first element and strides (in elements).
struct Operand<'a> {
    data: &'a [f32],
    offset: usize,
    strides: [usize; 2],
}

impl<'a> Operand<'a> {
    fn new(t: &'a FlexTensor) -> Self {
        let layout = t.layout();
        let st = layout.strides();
        Operand { data: t.storage::<f32>(), offset: layout.start_offset(), strides: [st[0] as usize, st[1] as usize] }
    }

    /// Where token `s` of batch `b`, value `e` of its row, lives.
    #[inline(always)]
    fn at(&self, b: usize, s: usize, e: usize) -> usize {
        self.offset + b * self.strides[0] + s * self.strides[1] + e
    }
}

/// An operand whose rows have unit stride and no negative strides (else a contiguous copy).
fn token_operand(t: FlexTensor) -> FlexTensor {
    let layout = t.layout();
    let st = layout.strides();
    if st.len() == 3 && st[2] == 1 && st[0] >= 0 && st[1] >= 0 {
        t
    } else {
        t.to_contiguous()
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ta.iter().zip(tb) {
        s += x * y;
    }
    s
}

/// One attention call's operands and sizes, shared by its tasks.
struct Attn<'a> {
    q: Operand<'a>,
    k: Operand<'a>,
    v: Operand<'a>,
    d: usize,
    dv: usize,
    sq: usize,
    sk: usize,
    inner_v: usize,
    scale: f32,
    causal: bool,
    out: Shared,
}

impl Attn<'_> {
    /// Where output row `i` of head `h` in batch `bi` starts.
    #[inline(always)]
    fn out_at(&self, bi: usize, h: usize, i: usize) -> usize {
        (bi * self.sq + i) * self.inner_v + h * self.dv
    }

    /// How many keys query `i` sees.
    #[inline(always)]
    fn visible(&self, i: usize) -> usize {
        if self.causal {
            (i + 1).min(self.sk)
        } else {
            self.sk
        }
    }
}

simd_fn! {
    /// Queries `i0..i0 + rows` of head `h` in batch `bi` as direct dot products (few keys).
    fn attention_direct(a: &Attn<'_>, scores: &mut [f32], acc: &mut [f32], bi: usize, h: usize, i0: usize, rows: usize) {
        let (d, dv) = (a.d, a.dv);
        for i in i0..i0 + rows {
            let visible = a.visible(i);
            let row = &mut scores[..a.sk];
            let qa = a.q.at(bi, i, h * d);
            let qrow = &a.q.data[qa..qa + d];
            for (j, s) in row[..visible].iter_mut().enumerate() {
                let ka = a.k.at(bi, j, h * d);
                *s = dot(qrow, &a.k.data[ka..ka + d]) * a.scale;
            }
            softmax_row(row, visible);
            acc.fill(0.0);
            for (j, &p) in row[..visible].iter().enumerate() {
                let va = a.v.at(bi, j, h * dv);
                for (x, y) in acc.iter_mut().zip(&a.v.data[va..va + dv]) {
                    *x += p * y;
                }
            }
            // SAFETY: row i of head h in batch bi belongs to this task only.
            let dst = unsafe { std::slice::from_raw_parts_mut(a.out.0.add(a.out_at(bi, h, i)), dv) };
            dst.copy_from_slice(acc);
        }
    }
}

simd_fn! {
    /// Softmax of the score rows of queries `i0..` (each `sk` long) in place.
    fn attention_softmax(a: &Attn<'_>, s: &mut [f32], i0: usize) {
        for (r, row) in s.chunks_exact_mut(a.sk).enumerate() {
            softmax_row(row, a.visible(i0 + r));
        }
    }
}

/// Queries `i0..i0 + rows` of head `h` in batch `bi` as two `gemm` products around the softmax.
fn attention_block(a: &Attn<'_>, scores: &mut [f32], bi: usize, h: usize, i0: usize, rows: usize) {
    let (d, dv, sk) = (a.d, a.dv, a.sk);
    let s = &mut scores[..rows * sk];
    // SAFETY: the pointers address in-bounds views of q, k (transposed) and the task's own
    // score block with the strides given; gemm reads and writes exactly m×k, k×n and m×n
    // elements through them.
    unsafe {
        gemm::gemm(
            rows, sk, d,
            s.as_mut_ptr(), 1, sk as isize, false,
            a.q.data.as_ptr().add(a.q.at(bi, i0, h * d)), 1, a.q.strides[1] as isize,
            a.k.data.as_ptr().add(a.k.at(bi, 0, h * d)), a.k.strides[1] as isize, 1,
            0.0, a.scale, false, false, false, gemm::Parallelism::None,
        );
    }
    attention_softmax(a, s, i0);
    // SAFETY: as above; the destination rows (i0..i0+rows, head h, batch bi) of the output
    // belong to this task only.
    unsafe {
        gemm::gemm(
            rows, dv, sk,
            a.out.0.add(a.out_at(bi, h, i0)), 1, a.inner_v as isize, false,
            s.as_ptr(), 1, sk as isize,
            a.v.data.as_ptr().add(a.v.at(bi, 0, h * dv)), 1, a.v.strides[1] as isize,
            0.0, 1.0, false, false, false, gemm::Parallelism::None,
        );
    }
}

/// `F.scaled_dot_product_attention` for every head of f32 tokens `q (b, sq, heads·d)`,
/// `k (b, sk, heads·d)`, `v (b, sk, heads·dv)` → contiguous `(b, sq, heads·dv)`.
fn attention_f32(q: FlexTensor, k: FlexTensor, v: FlexTensor, heads: usize, causal: bool) -> FlexTensor {
    let (q, k, v) = (token_operand(q), token_operand(k), token_operand(v));
    let [b, sq, inner] = dims3(&q);
    let sk = dims3(&k)[1];
    let inner_v = dims3(&v)[2];
    let (d, dv) = (inner / heads, inner_v / heads);
    let block = product_block(sq, sk);
    let (direct, qb) = (block.is_none(), block.unwrap_or(QUERY_BLOCK));
    let blocks = sq.div_ceil(qb).max(1);
    let mut out = room::<f32>(b * sq * inner_v);
    let a = Attn {
        q: Operand::new(&q),
        k: Operand::new(&k),
        v: Operand::new(&v),
        d,
        dv,
        sq,
        sk,
        inner_v,
        scale: 1.0 / (d as f32).sqrt(),
        causal,
        out: Shared(out.as_mut_ptr()),
    };
    // small heads are not one rayon job each
    (0..b * heads * blocks).into_par_iter().with_min_len(per_task(qb.min(sq) * sk)).for_each_init(
        || (vec![0f32; qb.min(sq) * sk], vec![0f32; dv]),
        |(scores, acc), task| {
            let (bi, rest) = (task / (heads * blocks), task % (heads * blocks));
            let (h, blk) = (rest / blocks, rest % blocks);
            let i0 = blk * qb;
            let rows = qb.min(sq - i0);
            if direct {
                attention_direct(&a, scores, acc, bi, h, i0, rows)
            } else {
                attention_block(&a, scores, bi, h, i0, rows)
            }
        },
    );
    // SAFETY: the tasks covered every (batch, head, query) row and wrote each whole, by
    // `attention_direct`'s copy or by the second product (`read_dst` false).
    unsafe { out.set_len(b * sq * inner_v) };
    from_vec(out, vec![b, sq, inner_v])
}

simd_fn! {
    /// Attention scores `s` (rows of `sk`; row `r` is query `i0 + r`) scaled and softmaxed in
    /// place, keys past a causal query's own masked.
    fn scaled_softmax(s: &mut [f32], sk: usize, scale: f32, i0: usize, causal: bool) {
        for (r, row) in s.chunks_exact_mut(sk).enumerate() {
            for v in row.iter_mut() {
                *v *= scale;
            }
            softmax_row(row, if causal { (i0 + r + 1).min(sk) } else { sk });
        }
    }
}

/// `F.scaled_dot_product_attention` of bf16 tokens (`q (b, sq, heads·d)`, `k`, `v`) on
/// [`bf16_gemm`]: per (batch, head, query block) the scores from bf16 products summed in f32,
/// the softmax in f32, the probabilities rounded to bf16 for their product with `v` (PyTorch's
/// CPU flash attention also multiplies them in the inputs' reduced precision), the output
/// rounded once as it is stored → bf16 `(b, sq, heads·dv)`. Where [`attention_bf16_applies`].
fn attention_bf16(q: FlexTensor, k: FlexTensor, v: FlexTensor, heads: usize, causal: bool) -> FlexTensor {
    let [b, sq, inner] = dims3(&q);
    let sk = dims3(&k)[1];
    let inner_v = dims3(&v)[2];
    let (d, dv) = (inner / heads, inner_v / heads);
    let (q, k, v) = (token_operand(q), token_operand(k), token_operand(v));
    // (values, first element, batch stride, token stride)
    fn parts(t: &FlexTensor) -> (&[half::bf16], usize, usize, usize) {
        let l = t.layout();
        (t.storage::<half::bf16>(), l.start_offset(), l.strides()[0] as usize, l.strides()[1] as usize)
    }
    let ((qs, qo, q0, q1), (ks, ko, k0, k1), (vs, vo, v0, v1)) = (parts(&q), parts(&k), parts(&v));
    let qb = product_block(sq, sk).expect("attention_bf16 runs past the direct path's few keys");
    let blocks = sq.div_ceil(qb);
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = room::<half::bf16>(b * sq * inner_v);
    let dst = Shared(out.as_mut_ptr());
    (0..b * heads * blocks).into_par_iter().for_each_init(
        || (vec![0f32; qb.min(sq) * sk], vec![half::bf16::ZERO; qb.min(sq) * sk]),
        |(s, p), task| {
            let (bi, rest) = (task / (heads * blocks), task % (heads * blocks));
            let (h, blk) = (rest / blocks, rest % blocks);
            let i0 = blk * qb;
            let rows = qb.min(sq - i0);
            let (s, p) = (&mut s[..rows * sk], &mut p[..rows * sk]);
            let a = bf16_gemm::Rows { data: qs, offset: qo + bi * q0 + i0 * q1 + h * d, stride: q1, rows };
            let w = bf16_gemm::Rows { data: ks, offset: ko + bi * k0 + h * d, stride: k1, rows: sk };
            bf16_gemm::product(a, w, d, s, true);
            scaled_softmax(s, sk, scale, i0, causal);
            bf16_gemm::round(s, p);
            let packed = bf16_gemm::pack_columns(vs, vo + bi * v0 + h * dv, v1, sk, dv);
            let a = bf16_gemm::Rows { data: p, offset: 0, stride: sk, rows };
            // SAFETY: rows i0..i0 + rows of head h in batch bi (dv values each, inner_v apart) lie
            // in `out` and belong to this task only.
            unsafe { bf16_gemm::product_packed_rounded(a, sk, &packed, dv, dst, (bi * sq + i0) * inner_v + h * dv, inner_v) };
        },
    );
    // SAFETY: the tasks covered every (batch, head, query) row and wrote its dv values.
    unsafe { out.set_len(b * sq * inner_v) };
    from_vec(out, vec![b, sq, inner_v])
}

/// Whether [`attention_bf16`] runs this attention: bf16 operands on a CPU with AVX-512 BF16, more
/// keys than the direct path's few, at most one pass of the rounded product, non-empty heads.
fn attention_bf16_applies(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, heads: usize) -> bool {
    let ([b, sq, inner], sk, inner_v) = (dims3(q), dims3(k)[1], dims3(v)[2]);
    let bf16 = [q, k, v].iter().all(|t| t.dtype() == DType::BF16) && bf16_gemm::available();
    bf16 && heads > 0 && product_block(sq, sk).is_some() && sk <= bf16_gemm::ROUNDED_K && inner / heads > 0 && inner_v / heads > 0 && b * sq > 0
}

/// How an attention over `sq` queries and `sk` keys is split into tasks: `None` for direct dot
/// products (so few keys that a product's fixed cost dominates; blocks of [`QUERY_BLOCK`]
/// queries), else the queries per block of products — about [`SCORE_VALUES`] scores, so each
/// head's k and v are packed fewer times.
fn product_block(sq: usize, sk: usize) -> Option<usize> {
    (QUERY_BLOCK.min(sq) * sk > DIRECT_SCORES).then(|| (SCORE_VALUES / sk.max(1)).clamp(QUERY_BLOCK, 512))
}

fn dims3(t: &FlexTensor) -> [usize; 3] {
    let s = t.layout().shape();
    [s[0], s[1], s[2]]
}

// ----- convolution ------------------------------------------------------------------------------

/// im2col columns per convolution task: about this many f32 values (1 MiB), so a task's columns
/// stay in cache while its product runs.
const COLUMN_VALUES: usize = 1 << 18;

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

simd_fn! {
/// Fills `col (ci·kh·kw, p1 − p0)` (rows `row_stride` apart) with the im2col columns of output
/// pixels `p0..p1` of image `img (ci, h, w)`: row `(c, ky, kx)` holds input
/// `(c, oy·sh + ky − ph, ox·sw + kx − pw)` for each output pixel `(oy, ox)`, zero outside the
/// image (PyTorch's weight order).
fn im2col(col: &mut [f32], row_stride: usize, img: &[f32], dims: [usize; 3], kernel: [usize; 2], stride: [usize; 2], pad: [usize; 2], ow: usize, pixels: (usize, usize)) {
    let ([ci, h, w], [kh, kw], [sh, sw], [ph, pw], (p0, p1)) = (dims, kernel, stride, pad, pixels);
    let len = p1 - p0;
    for c in 0..ci {
        let plane = &img[c * h * w..(c + 1) * h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let r = (c * kh + ky) * kw + kx;
                let row = &mut col[r * row_stride..r * row_stride + len];
                let mut p = p0;
                while p < p1 {
                    let (oy, ox0) = (p / ow, p % ow);
                    let end = p1.min((oy + 1) * ow);
                    let seg = &mut row[p - p0..end - p0];
                    let iy = (oy * sh + ky) as isize - ph as isize;
                    if iy < 0 || iy >= h as isize {
                        seg.fill(0.0);
                    } else {
                        let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                        if sw == 1 {
                            // ix = ox + kx − pw: a shifted run with zeros where it leaves the row
                            let shift = kx as isize - pw as isize;
                            for (i, o) in seg.iter_mut().enumerate() {
                                let ix = (ox0 + i) as isize + shift;
                                *o = if ix >= 0 && ix < w as isize { src[ix as usize] } else { 0.0 };
                            }
                        } else {
                            for (i, o) in seg.iter_mut().enumerate() {
                                let ix = ((ox0 + i) * sw + kx) as isize - pw as isize;
                                *o = if ix >= 0 && ix < w as isize { src[ix as usize] } else { 0.0 };
                            }
                        }
                    }
                    p = end;
                }
            }
        }
    }
}
}

/// `F.conv2d(x, weight, bias, stride, padding)` in f32: each (image, block of output pixels) a
/// task that builds its im2col columns (none for a 1×1 convolution without stride or padding)
/// and multiplies the weight `(c_out, ci·kh·kw)`, as PyTorch stores it, with them on `gemm`,
/// straight into the output, which starts from the bias. The weight may be bf16 where
/// [`bf16_gemm`] runs ([`conv2d_any`] gives it so): the Winograd and few-pixel paths then multiply
/// bf16 values, the others widen it. So may the input: the Winograd paths then read it as it is
/// and give a bf16 output (rounded once as it is stored); the others widen it and give f32.
fn conv2d_f32(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>, stride: [usize; 2], pad: [usize; 2], residual: Option<FlexTensor>) -> FlexTensor {
    let x = contiguous(x);
    let (bias, residual) = (bias.map(contiguous), residual.map(contiguous));
    let [n, ci, h, w] = dims4(&x);
    let [co, wci, kh, kw] = dims4(&weight);
    // the products below read the weight as (co, ci·kh·kw): its shape must say so
    assert_eq!(wci, ci, "conv2d: input has {ci} channels, the weight expects {wci}");
    let (oh, ow) = ((h + 2 * pad[0] - kh) / stride[0] + 1, (w + 2 * pad[1] - kw) / stride[1] + 1);
    let path = conv_path([n, ci, h, w], co, [kh, kw], stride, pad);
    // a bf16 weight stays bf16 where the products multiply bf16 values; elsewhere it is widened
    let bf16_products = matches!(path, ConvPath::Winograd | ConvPath::WinogradWide | ConvPath::FewPixels);
    let weight = contiguous(if weight.dtype() == DType::BF16 && !bf16_products { widened(weight) } else { weight });
    match path {
        ConvPath::Winograd => return winograd_f32(&x, &weight, bias.as_ref(), pad, [oh, ow], residual.as_ref()),
        ConvPath::WinogradWide => return winograd_wide_f32(&x, &weight, bias.as_ref(), pad, [oh, ow], residual.as_ref(), None),
        _ => {}
    }
    // the other paths read an f32 input (widened keeps x's contiguous layout)
    let x = widened(x);
    let xs = values::<f32>(&x);
    let bs = bias.as_ref().map(values::<f32>);
    let rs = residual.as_ref().map(values::<f32>);
    if path == ConvPath::FewPixels {
        let out = few_pixels_f32(xs, &weight, bs, rs, [n, ci, h, w], co, [kh, kw], stride, pad, [oh, ow]);
        return from_vec(out, vec![n, co, oh, ow]);
    }
    let ws = values::<f32>(&weight);
    if path == ConvPath::RowTaps {
        return from_vec(row_taps_f32(xs, ws, bs, rs, [n, ci, h, w], co, kh, pad[0]), vec![n, co, oh, ow]);
    }
    let sp = oh * ow;
    let rows = ci * kh * kw;
    if rows == 0 {
        return from_vec(conv_init(n, co, sp, bs, rs), vec![n, co, oh, ow]);
    }
    let direct = kh == 1 && kw == 1 && stride == [1, 1] && pad == [0, 0];
    let tile = if direct { sp.clamp(1, 4096) } else { (COLUMN_VALUES / rows.max(1)).clamp(64, 4096).min(sp.max(1)) };
    let tiles = sp.div_ceil(tile).max(1);
    let mut out = room::<f32>(n * co * sp);
    let shared = Shared(out.as_mut_ptr());
    let tasks = n * tiles;
    // Few tasks (one small image): the product itself runs on every thread instead.
    let inner = if tasks < rayon::current_num_threads() { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    (0..tasks).into_par_iter().for_each_init(
        || if direct { Vec::new() } else { vec![0f32; rows * tile] },
        |col, task| {
            let (b, t) = (task / tiles, task % tiles);
            let (p0, p1) = (t * tile, sp.min((t + 1) * tile));
            let len = p1 - p0;
            let img = &xs[b * ci * h * w..(b + 1) * ci * h * w];
            // SAFETY: the output columns p0..p1 of image b (every channel) belong to this task
            // only; the rows are `sp` apart inside `out`.
            let dst = unsafe { shared.ptr().add(b * co * sp + p0) };
            if bs.is_some() || rs.is_some() {
                for o in 0..co {
                    // SAFETY: as above, row o of this task's block.
                    let row = unsafe { std::slice::from_raw_parts_mut(dst.add(o * sp), len) };
                    match (rs, bs) {
                        (Some(rs), _) => {
                            row.copy_from_slice(&rs[(b * co + o) * sp + p0..(b * co + o) * sp + p1]);
                            if let Some(bs) = bs {
                                row.iter_mut().for_each(|v| *v += bs[o]);
                            }
                        }
                        (None, Some(bs)) => row.fill(bs[o]),
                        (None, None) => {}
                    }
                }
            }
            let (rhs, rhs_rs) = if direct {
                (img[p0..].as_ptr(), sp as isize)
            } else {
                im2col(&mut col[..rows * len], len, img, [ci, h, w], [kh, kw], stride, pad, ow, (p0, p1));
                (col.as_ptr(), len as isize)
            };
            // SAFETY: weight (co × rows, row-major), the columns (rows × len with row stride
            // rhs_rs) and this task's output block (co × len, row stride sp) are in bounds of
            // their buffers.
            unsafe {
                gemm::gemm(
                    co, len, rows,
                    dst, 1, sp as isize, bs.is_some() || rs.is_some(),
                    ws.as_ptr(), 1, rows as isize,
                    rhs, 1, rhs_rs,
                    1.0, 1.0, false, false, false, inner,
                );
            }
        },
    );
    // SAFETY: the tasks covered every (image, pixel block) and wrote all its channels: the
    // residual / bias copied in first, or the product with `read_dst` false.
    unsafe { out.set_len(n * co * sp) };
    from_vec(out, vec![n, co, oh, ow])
}

/// How [`conv2d_f32`] runs a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConvPath {
    /// Per (image, pixel block) im2col columns times the weight.
    Im2col,
    /// [`winograd_f32`].
    Winograd,
    /// [`winograd_wide_f32`].
    WinogradWide,
    /// [`row_taps_f32`]: a `(kh, 1)` kernel as `kh` shifted products, no columns built.
    RowTaps,
    /// [`few_pixels_f32`]: every image's columns side by side, one product.
    FewPixels,
}

/// Output pixels per image below which [`few_pixels_f32`] puts all images in one product: a
/// product per image would be this thin and read the whole weight once per image (the UNet's
/// 4×4 level at 256²: 1,280–2,560 channels, 16 pixels, at half the rate of its 8×8 level).
const FEW_PIXELS: usize = 64;

fn conv_path([n, ci, h, w]: [usize; 4], co: usize, kernel: [usize; 2], stride: [usize; 2], pad: [usize; 2]) -> ConvPath {
    let (oh, ow) = ((h + 2 * pad[0] - kernel[0]) / stride[0] + 1, (w + 2 * pad[1] - kernel[1]) / stride[1] + 1);
    if winograd_pays([n, ci, oh, ow], co, kernel, stride, pad) {
        ConvPath::Winograd
    } else if wide_winograd_pays([n, ci, oh, ow], co, kernel, stride, pad) {
        ConvPath::WinogradWide
    } else if kernel[0] > 1 && kernel[1] == 1 && stride == [1, 1] && pad[1] == 0 {
        ConvPath::RowTaps
    } else if n > 1 && oh * ow < FEW_PIXELS {
        ConvPath::FewPixels
    } else {
        ConvPath::Im2col
    }
}

/// A convolution's output `(n, co, sp)` before its products: the residual (when given) plus the
/// bias, or the bias, or zeros.
fn conv_init(n: usize, co: usize, sp: usize, bias: Option<&[f32]>, residual: Option<&[f32]>) -> Vec<f32> {
    let mut out = match (residual, bias) {
        (Some(rs), _) => rs[..n * co * sp].to_vec(),
        (None, Some(bs)) => return rows_init(n, co, sp, bs),
        (None, None) => return zeros::<f32>(n * co * sp),
    };
    if let Some(bs) = bias {
        let per = per_task(sp);
        out.par_chunks_mut(sp * per).enumerate().for_each(|(t, block)| {
            for (j, row) in block.chunks_exact_mut(sp).enumerate() {
                let b = bs[(t * per + j) % co];
                row.iter_mut().for_each(|v| *v += b);
            }
        });
    }
    out
}

/// `F.conv2d` with a `(kh, 1)` kernel, stride 1 and no padding across the width, as `kh`
/// shifted products: image `b` is a `(ci, h·w)` matrix, and tap `ky` adds
/// `W[:, :, ky, 0] · x[b, :, y + ky − ph, :]` to every output row `y` it reaches, one product
/// over those rows' pixels read in place — no columns built, and each product `K = ci` deep
/// over all the rows' pixels (im2col made `(3·ci, pixels)` blocks per task). The UNet's
/// temporal `(3, 1, 1)` convolution runs here, frames as rows.
#[allow(clippy::too_many_arguments)]
fn row_taps_f32(xs: &[f32], ws: &[f32], bias: Option<&[f32]>, residual: Option<&[f32]>, [n, ci, h, w]: [usize; 4], co: usize, kh: usize, ph: usize) -> Vec<f32> {
    let oh = h + 2 * ph - kh + 1;
    let sp = oh * w;
    let mut out = conv_init(n, co, sp, bias, residual);
    let image = |dst: *mut f32, b: usize, par: gemm::Parallelism| {
        for ky in 0..kh {
            // output rows y whose input row y + ky − ph lies inside the image
            let (y0, y1) = (ph.saturating_sub(ky), oh.min((h + ph).saturating_sub(ky)));
            if y0 >= y1 {
                continue;
            }
            let iy0 = y0 + ky - ph;
            // SAFETY: rows y0..y1 of every output channel of image b (row stride sp) lie in
            // `dst`'s image; tap ky of the weight (co × ci, strides ci·kh and kh) and input rows
            // iy0..iy0 + (y1 − y0) of image b (ci × that, row stride h·w) lie in their buffers.
            unsafe {
                gemm::gemm(
                    co, (y1 - y0) * w, ci,
                    dst.add(y0 * w), 1, sp as isize, true,
                    ws.as_ptr().add(ky), kh as isize, (ci * kh) as isize,
                    xs.as_ptr().add(b * ci * h * w + iy0 * w), 1, (h * w) as isize,
                    1.0, 1.0, false, false, false, par,
                );
            }
        }
    };
    if co * sp * ci >= PARALLEL_PRODUCT || n == 1 {
        for (b, dst) in out.chunks_exact_mut(co * sp).enumerate() {
            image(dst.as_mut_ptr(), b, gemm::Parallelism::Rayon(0));
        }
    } else {
        out.par_chunks_exact_mut(co * sp).enumerate().for_each(|(b, dst)| image(dst.as_mut_ptr(), b, gemm::Parallelism::None));
    }
    out
}

/// [`row_taps_f32`] for bf16 input and weight on [`bf16_gemm`] (AVX-512 BF16): per image and tap,
/// the weight's tap `(co × ci)` times the image's input rows it reaches, packed as channel
/// pairs, into the f32 output (`bias` / `residual` already f32) → f32 values.
#[allow(clippy::too_many_arguments)]
fn row_taps_bf16(x: &FlexTensor, weight: &FlexTensor, bias: Option<&[f32]>, residual: Option<&[f32]>, [n, ci, h, w]: [usize; 4], co: usize, kh: usize, ph: usize) -> Vec<f32> {
    let (xs, ws) = (values::<half::bf16>(x), values::<half::bf16>(weight));
    let oh = h + 2 * ph - kh + 1;
    let sp = oh * w;
    let mut out = conv_init(n, co, sp, bias, residual);
    // taps[ky] = weight[:, :, ky] as (co × ci) rows: each output channel's weights read once in
    // order, its kh rows written side by side
    let mut taps = room::<half::bf16>(kh * co * ci);
    let dst = Shared(taps.as_mut_ptr());
    (0..co).into_par_iter().with_min_len(per_task(ci * kh)).for_each(|o| {
        for (c, w) in ws[o * ci * kh..(o + 1) * ci * kh].chunks_exact(kh).enumerate() {
            for (ky, &v) in w.iter().enumerate() {
                // SAFETY: taps[ky][o][c]: in bounds, written by this task (o) only.
                unsafe { dst.ptr().add((ky * co + o) * ci + c).write(v) };
            }
        }
    });
    // SAFETY: every (ky, o, c) was written above.
    unsafe { taps.set_len(kh * co * ci) };
    for b in 0..n {
        for ky in 0..kh {
            let (y0, y1) = (ph.saturating_sub(ky), oh.min((h + ph).saturating_sub(ky)));
            if y0 >= y1 {
                continue;
            }
            let iy0 = y0 + ky - ph;
            let cols = (y1 - y0) * w;
            let packed = bf16_gemm::pack_columns(xs, b * ci * h * w + iy0 * w, h * w, ci, cols);
            let a = bf16_gemm::Rows { data: &taps, offset: ky * co * ci, stride: ci, rows: co };
            bf16_gemm::product_packed(a, ci, &packed, cols, &mut out, b * co * sp + y0 * w, sp, false);
        }
    }
    out
}

/// `F.conv2d` of images with few output pixels each ([`FEW_PIXELS`]): the im2col columns of
/// every image side by side `(ci·kh·kw, n·sp)`, built in parallel by channel blocks, one product
/// with the weight on every thread, then laid out as `(n, co, sp)` with the bias and residual. A
/// bf16 `weight` multiplies the columns (bf16 values widened: packed back exactly) on
/// [`bf16_gemm`].
#[allow(clippy::too_many_arguments)]
fn few_pixels_f32(xs: &[f32], weight: &FlexTensor, bias: Option<&[f32]>, residual: Option<&[f32]>, [n, ci, h, w]: [usize; 4], co: usize, kernel: [usize; 2], stride: [usize; 2], pad: [usize; 2], [oh, ow]: [usize; 2]) -> Vec<f32> {
    let (sp, taps) = (oh * ow, kernel[0] * kernel[1]);
    let (rows, cols) = (ci * taps, n * sp);
    if rows == 0 {
        return conv_init(n, co, sp, bias, residual);
    }
    let chans = (COLUMN_VALUES / (taps * cols).max(1)).clamp(1, ci.max(1));
    // SAFETY: each block is channels c0..c1 of every image's columns, and `im2col` writes all of
    // them (zeros outside the image).
    let col = unsafe {
        written::<f32>(rows * cols, |col| {
            col.par_chunks_mut(chans * taps * cols).enumerate().for_each(|(t, block)| {
                let (c0, c1) = (t * chans, ci.min((t + 1) * chans));
                for b in 0..n {
                    let img = &xs[(b * ci + c0) * h * w..(b * ci + c1) * h * w];
                    im2col(&mut block[b * sp..], cols, img, [c1 - c0, h, w], kernel, stride, pad, ow, (0, sp));
                }
            })
        })
    };
    let prod = if weight.dtype() == DType::BF16 {
        // bf16 values in f32 columns (a bf16 convolution's widened input): packed exactly
        let packed = bf16_gemm::pack_columns_f32(&col, 0, cols, rows, cols);
        let a = bf16_gemm::Rows { data: values::<half::bf16>(weight), offset: 0, stride: rows, rows: co };
        // SAFETY: the product overwrites all of `prod` (`rows` > 0).
        unsafe { written::<f32>(co * cols, |prod| bf16_gemm::product_packed(a, rows, &packed, cols, prod, 0, cols, true)) }
    } else {
        let ws = values::<f32>(weight);
        let mut prod = room::<f32>(co * cols);
        // SAFETY: the weight (co × rows), the columns (rows × cols) and `prod` (co × cols) are
        // row-major buffers of exactly those sizes.
        unsafe {
            gemm::gemm(
                co, cols, rows,
                prod.as_mut_ptr(), 1, cols as isize, false,
                ws.as_ptr(), 1, rows as isize,
                col.as_ptr(), 1, cols as isize,
                0.0, 1.0, false, false, false, gemm::Parallelism::Rayon(0),
            );
            // SAFETY: the product (`read_dst` false, `rows` > 0) wrote all of it.
            prod.set_len(co * cols);
        }
        prod
    };
    let per = per_task(sp);
    // SAFETY: every row is copied from the product first.
    unsafe {
        written::<f32>(n * co * sp, |out| {
            out.par_chunks_mut(sp * per).enumerate().for_each(|(t, block)| {
                for (j, row) in block.chunks_exact_mut(sp).enumerate() {
                    let i = t * per + j;
                    let (b, o) = (i / co, i % co);
                    row.copy_from_slice(&prod[o * cols + b * sp..o * cols + (b + 1) * sp]);
                    if let Some(rs) = residual {
                        row.iter_mut().zip(&rs[i * sp..(i + 1) * sp]).for_each(|(v, r)| *v += r);
                    }
                    if let Some(bs) = bias {
                        row.iter_mut().for_each(|v| *v += bs[o]);
                    }
                }
            })
        })
    }
}

// ----- Winograd convolution ---------------------------------------------------------------------

/// Winograd tiles per convolution task: about this many f32 values of transformed input
/// (16 · channels · tiles), as the im2col columns above.
const WINOGRAD_VALUES: usize = 1 << 18;

/// Output pixels (all images) from which a 3×3 convolution runs as Winograd F(2×2, 3×3): below,
/// transforming the weight (16 values per 9) costs about what the products save.
const WINOGRAD_PIXELS: usize = 4096;

/// At most this many input or output channels for [`winograd_f32`]: a task's block is then at
/// least 32 tiles. Wider layers run as [`winograd_wide_f32`]: with a task per (image, tile
/// block) every task re-packs all 16 transformed filters for a thin product (640 channels at
/// 16×16, 8 frames with CFG: 58 ms, against 46 ms wide; 1,280 channels ran 1.5–1.7× slower
/// than im2col). Up to 512 channels (the VAE) the per-task blocks were as fast or faster
/// (128 channels at 256²: 241 against 313 ms).
const WINOGRAD_CHANNELS: usize = 512;

/// Whether a convolution can run as Winograd F(2×2, 3×3) at all: a 3×3 kernel, stride 1,
/// padding at most 2, and enough channels for the products to dominate the transforms.
fn winograd_shape(ci: usize, co: usize, kernel: [usize; 2], stride: [usize; 2], pad: [usize; 2]) -> bool {
    kernel == [3, 3] && stride == [1, 1] && pad[0] <= 2 && pad[1] <= 2 && ci >= 32 && co >= 32
}

/// Whether a convolution runs as [`winograd_f32`]: [`winograd_shape`], few enough channels for
/// large blocks and enough output pixels to repay the weight's transform.
fn winograd_pays([n, ci, oh, ow]: [usize; 4], co: usize, kernel: [usize; 2], stride: [usize; 2], pad: [usize; 2]) -> bool {
    winograd_shape(ci, co, kernel, stride, pad) && ci.max(co) <= WINOGRAD_CHANNELS && n * oh * ow >= WINOGRAD_PIXELS
}

/// Output pixels (all images) from which a wide 3×3 convolution runs as [`winograd_wide_f32`]
/// (256 tiles; the UNet's 8×8 level at 256² with CFG and 8 frames: 1,280 channels 68 → 50 ms).
/// At its 4×4 level (64 tiles) one im2col product ([`few_pixels_f32`]) was faster (18 against
/// 20 ms).
const WIDE_PIXELS: usize = 1024;

/// Whether a convolution runs as [`winograd_wide_f32`]: [`winograd_shape`], for layers over
/// [`WINOGRAD_CHANNELS`] channels with at least [`WIDE_PIXELS`] output pixels.
fn wide_winograd_pays([n, ci, oh, ow]: [usize; 4], co: usize, kernel: [usize; 2], stride: [usize; 2], pad: [usize; 2]) -> bool {
    winograd_shape(ci, co, kernel, stride, pad) && ci.max(co) > WINOGRAD_CHANNELS && n * oh * ow >= WIDE_PIXELS
}

/// The 16 transformed 4×4 filters `U = G g Gᵀ` of a 3×3 convolution's weight `(co, ci, 3, 3)`
/// (f32 or bf16, widened a channel at a time), as 16 matrices `(co, ci)` of `T` (f32, or bf16
/// rounded once from the f32 transform) (element `e = 4·row + column` of the 4×4 tile first), with
/// `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`.
fn winograd_weight<E: Elem, T: Elem>(ws: &[E], co: usize, ci: usize) -> Vec<T> {
    let plane = co * ci;
    let mut u = room::<T>(16 * plane);
    let shared = Shared(u.as_mut_ptr());
    (0..co).into_par_iter().for_each_init(
        || (vec![0f32; 9 * ci], vec![0f32; 16 * ci], vec![T::of(0.0); 16 * ci]),
        |(g, rows, out), o| {
            E::widen(&ws[o * ci * 9..(o + 1) * ci * 9], g);
            winograd_filters(rows, g, ci);
            T::narrow(rows, out);
            for (e, row) in out.chunks_exact(ci).enumerate() {
                // SAFETY: row o of plane e (ci values): written by this task (o) only.
                unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), shared.ptr().add(e * plane + o * ci), ci) };
            }
        },
    );
    // SAFETY: every output channel's task wrote its row of all 16 planes.
    unsafe { u.set_len(16 * plane) };
    u
}

/// A Winograd convolution's transformed filters ([`winograd_weight`]) and its 16 products
/// `M_e = U_e · V_e`: on `gemm` in f32, or with the filters and the transformed inputs rounded to
/// bf16 on [`bf16_gemm`] (a bf16 convolution where the CPU has AVX-512 BF16: PyTorch's bf16
/// convolutions also multiply bf16 values, accumulating in f32; the f32 filters are then not
/// kept).
enum WinogradFilters {
    F32 { u: Vec<f32>, co: usize, ci: usize },
    Bf16 { u: Vec<half::bf16>, co: usize, ci: usize },
}

impl WinogradFilters {
    /// The filters of a weight `(co, ci, 3, 3)`: f32 ones of an f32 weight, bf16 ones of a bf16
    /// weight (given only where [`bf16_gemm`] runs).
    fn new(weight: &FlexTensor, co: usize, ci: usize) -> Self {
        match weight.dtype() {
            DType::BF16 => WinogradFilters::Bf16 { u: winograd_weight::<half::bf16, half::bf16>(values(weight), co, ci), co, ci },
            _ => WinogradFilters::F32 { u: winograd_weight::<f32, f32>(values(weight), co, ci), co, ci },
        }
    }

    /// `M_e (co × len, rows `ldm` apart) = U_e · V_e (ci × len, rows `ldv` apart)`, overwriting.
    ///
    /// # Safety
    /// `v` and `m` point at matrices of those shapes and strides; no one else touches `m`'s.
    unsafe fn product(&self, e: usize, v: *const f32, ldv: usize, len: usize, m: *mut f32, ldm: usize) {
        match *self {
            WinogradFilters::Bf16 { ref u, co, ci } => {
                let vs = std::slice::from_raw_parts(v, (ci - 1) * ldv + len);
                let ms = std::slice::from_raw_parts_mut(m, (co - 1) * ldm + len);
                let packed = bf16_gemm::pack_columns_f32(vs, 0, ldv, ci, len);
                let a = bf16_gemm::Rows { data: u, offset: e * co * ci, stride: ci, rows: co };
                bf16_gemm::product_packed(a, ci, &packed, len, ms, 0, ldm, true);
            }
            WinogradFilters::F32 { ref u, co, ci } => gemm::gemm(
                co, len, ci,
                m, 1, ldm as isize, false,
                u.as_ptr().add(e * co * ci), 1, ci as isize,
                v, 1, ldv as isize,
                0.0, 1.0, false, false, false, gemm::Parallelism::None,
            ),
        }
    }
}

simd_fn! {
/// One output channel's 16 transformed filters: `rows (16, ci)` from its weight `g (ci, 3, 3)`
/// (see [`winograd_weight`]), worked across the input channels.
fn winograd_filters(rows: &mut [f32], g: &[f32], ci: usize) {
    let (u, _) = rows.split_at_mut(16 * ci);
    let mut it = u.chunks_exact_mut(ci);
    let mut next = || it.next().unwrap();
    let r: [&mut [f32]; 16] = std::array::from_fn(|_| next());
    let [u0, u1, u2, u3, u4, u5, u6, u7, u8, u9, u10, u11, u12, u13, u14, u15] = r;
    for i in 0..ci {
        let g = &g[i * 9..i * 9 + 9];
        // G g: 4 rows of 3
        let mut gg = [[0f32; 3]; 4];
        for c in 0..3 {
            let (g0, g1, g2) = (g[c], g[3 + c], g[6 + c]);
            gg[0][c] = g0;
            gg[1][c] = 0.5 * (g0 + g1 + g2);
            gg[2][c] = 0.5 * (g0 - g1 + g2);
            gg[3][c] = g2;
        }
        // (G g) Gᵀ: row r of the 4×4 filter
        let t = |r: usize| {
            let (g0, g1, g2) = (gg[r][0], gg[r][1], gg[r][2]);
            [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2]
        };
        let (t0, t1, t2, t3) = (t(0), t(1), t(2), t(3));
        (u0[i], u1[i], u2[i], u3[i]) = (t0[0], t0[1], t0[2], t0[3]);
        (u4[i], u5[i], u6[i], u7[i]) = (t1[0], t1[1], t1[2], t1[3]);
        (u8[i], u9[i], u10[i], u11[i]) = (t2[0], t2[1], t2[2], t2[3]);
        (u12[i], u13[i], u14[i], u15[i]) = (t3[0], t3[1], t3[2], t3[3]);
    }
}
}

/// The tile rows of tiles `t0..t0 + len` (row-major over a `tw`-wide grid): `(ty, first tx,
/// end tx, index of the first in the block)`.
fn tile_rows(tw: usize, t0: usize, len: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let (first, last) = (t0 / tw, (t0 + len - 1) / tw);
    (first..=last).map(move |ty| {
        let (a, b) = ((ty * tw).max(t0) - ty * tw, ((ty + 1) * tw).min(t0 + len) - ty * tw);
        (ty, a, b, ty * tw + a - t0)
    })
}

simd_fn! {
/// The transformed input tiles `V = Bᵀ d B` of tiles `t0..t0 + len` (row-major over the
/// `tw`-wide tile grid) of image `img (ci, h, w)`, through `v` as 16 matrices `(ci, len)`
/// (`layout = [plane, row]`: the matrices `plane` values apart, their rows `row` apart; nothing
/// else there is touched), with
/// `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`; tile `(ty, tx)` reads the
/// input rows `2·ty − pad[0] ..` and columns `2·tx − pad[1] ..`, zero outside the image. Worked
/// a tile row at a time, across its tiles (each input row split into its even and odd columns),
/// so the loops vectorise; `scratch` holds 24 rows of `tw + 1` values.
fn winograd_input<E>(v: Shared, layout: [usize; 2], scratch: &mut [f32], img: &[E], dims: [usize; 3], pad: [usize; 2], tw: usize, t0: usize, len: usize) {
    let ([ci, h, w], [v_plane, v_row]) = (dims, layout);
    let stride = tw + 1;
    let (eo, cols) = scratch.split_at_mut(8 * stride);
    for c in 0..ci {
        let plane = &img[c * h * w..(c + 1) * h * w];
        for (ty, a, b, at) in tile_rows(tw, t0, len) {
            let n = b - a;
            // even / odd columns of the tile row's 4 input rows: tile a + j starts at column
            // 2(a + j) − pad[1]
            for r in 0..4 {
                let y = (2 * ty + r) as isize - pad[0] as isize;
                let (even, odd) = eo[2 * r * stride..(2 * r + 2) * stride].split_at_mut(stride);
                if y < 0 || y >= h as isize {
                    even[..=n].fill(0.0);
                    odd[..=n].fill(0.0);
                    continue;
                }
                let row = &plane[y as usize * w..(y as usize + 1) * w];
                // columns x0 + 2j and x0 + 2j + 1 both inside the row for j in lo..hi: split
                // there as pairs (vectorised); the few tiles over an edge one by one
                let x0 = (2 * a) as isize - pad[1] as isize;
                let lo = ((-x0).max(0) as usize).div_ceil(2).min(n + 1);
                let hi = if w as isize - 2 - x0 >= 0 { (((w as isize - 2 - x0) / 2 + 1) as usize).min(n + 1) } else { 0 }.max(lo);
                if hi > lo {
                    let pairs = &row[(x0 + 2 * lo as isize) as usize..][..2 * (hi - lo)];
                    for ((e, o), p) in even[lo..hi].iter_mut().zip(&mut odd[lo..hi]).zip(pairs.chunks_exact(2)) {
                        (*e, *o) = (p[0].f32(), p[1].f32());
                    }
                }
                for j in (0..lo).chain(hi..=n) {
                    let x = x0 + 2 * j as isize;
                    even[j] = if x >= 0 && x < w as isize { row[x as usize].f32() } else { 0.0 };
                    odd[j] = if x + 1 >= 0 && x + 1 < w as isize { row[(x + 1) as usize].f32() } else { 0.0 };
                }
            }
            // d B along each row: cols[4r + s][j]
            for r in 0..4 {
                let (even, odd) = (&eo[2 * r * stride..2 * r * stride + n + 1], &eo[(2 * r + 1) * stride..(2 * r + 1) * stride + n + 1]);
                let dst = &mut cols[4 * r * stride..(4 * r + 4) * stride];
                let (c0, rest) = dst.split_at_mut(stride);
                let (c1, rest) = rest.split_at_mut(stride);
                let (c2, c3) = rest.split_at_mut(stride);
                let here = even[..n].iter().zip(&odd[..n]);
                let next = even[1..=n].iter().zip(&odd[1..=n]);
                let out = c0[..n].iter_mut().zip(&mut c1[..n]).zip(c2[..n].iter_mut().zip(&mut c3[..n]));
                for (((c0, c1), (c2, c3)), ((e0, o0), (e1, o1))) in out.zip(here.zip(next)) {
                    (*c0, *c1, *c2, *c3) = (e0 - e1, o0 + e1, e1 - o0, o0 - o1);
                }
            }
            // Bᵀ (d B) down the rows, into V_e (c, at + j)
            for s4 in 0..4 {
                let row = |r: usize| &cols[(4 * r + s4) * stride..(4 * r + s4) * stride + n];
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                // SAFETY: row c of V_e, columns at..at + n: inside the caller's matrices and
                // written by this call only.
                let out = |e: usize| unsafe { std::slice::from_raw_parts_mut(v.ptr().add(e * v_plane + c * v_row + at), n) };
                let o = out(s4);
                for j in 0..n {
                    o[j] = r0[j] - r2[j];
                }
                let o = out(4 + s4);
                for j in 0..n {
                    o[j] = r1[j] + r2[j];
                }
                let o = out(8 + s4);
                for j in 0..n {
                    o[j] = r2[j] - r1[j];
                }
                let o = out(12 + s4);
                for j in 0..n {
                    o[j] = r1[j] - r3[j];
                }
            }
        }
    }
}
}

simd_fn! {
/// The output tiles `Y = Aᵀ M A` (`Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`) of the 16 products
/// `m (co, len)` (`layout = [plane, row]`, as [`winograd_input`]) for tiles `t0..t0 + len`, plus the
/// bias (and the residual), into `out` (image `(co, oh, ow)` of `E`, through `dst`: each row
/// summed in f32 and rounded once as it is stored); pixels past the output's edge (odd sizes)
/// are dropped. Worked across the tiles of a tile row; `scratch` holds 10 rows of `tw` values.
fn winograd_output<E>(dst: Shared<E>, m: &[f32], layout: [usize; 2], scratch: &mut [f32], bias: Option<&[f32]>, residual: Option<&[f32]>, dims: [usize; 3], tw: usize, t0: usize, len: usize) {
    let ([co, oh, ow], [plane, rs]) = (dims, layout);
    let (scratch, line) = scratch.split_at_mut(8 * tw);
    for o in 0..co {
        let bv = bias.map_or(0.0, |b| b[o]);
        for (ty, a, b, at) in tile_rows(tw, t0, len) {
            let n = b - a;
            let me = |e: usize| &m[e * plane + o * rs + at..e * plane + o * rs + at + n];
            // Aᵀ M: s[r][c] for r in 0..2, c in 0..4
            for c in 0..4 {
                let (m0, m1, m2, m3) = (me(c), me(4 + c), me(8 + c), me(12 + c));
                let (s0, s1) = scratch[2 * c * tw..(2 * c + 2) * tw].split_at_mut(tw);
                for ((s0, s1), (((a, b), c), d)) in s0[..n].iter_mut().zip(&mut s1[..n]).zip(m0.iter().zip(m1).zip(m2).zip(m3)) {
                    (*s0, *s1) = (a + b + c, b - c - d);
                }
            }
            for r in 0..2 {
                let y = 2 * ty + r;
                if y >= oh {
                    continue;
                }
                let s = |c: usize| &scratch[(2 * c + r) * tw..(2 * c + r) * tw + n];
                let (s0, s1, s2, s3) = (s(0), s(1), s(2), s(3));
                let (x0, x1) = (2 * a, (2 * b).min(ow));
                let row = &mut line[..x1 - x0];
                // whole tiles as pairs of pixels (vectorised), then the last tile's left pixel
                // where the output's width is odd
                let whole = (x1 - x0) / 2;
                let (pairs, tail) = row.split_at_mut(2 * whole);
                for (((p, a), b), (c, d)) in pairs.chunks_exact_mut(2).zip(s0).zip(s1).zip(s2.iter().zip(s3)) {
                    (p[0], p[1]) = (a + b + c + bv, b - c - d + bv);
                }
                if let Some(t) = tail.first_mut() {
                    *t = s0[whole] + s1[whole] + s2[whole] + bv;
                }
                if let Some(res) = residual {
                    let src = &res[(o * oh + y) * ow + x0..(o * oh + y) * ow + x1];
                    row.iter_mut().zip(src).for_each(|(v, r)| *v += r);
                }
                // SAFETY: row y of channel o, columns 2a .. min(2b, ow): this task's tiles only.
                E::narrow(row, unsafe { std::slice::from_raw_parts_mut(dst.ptr().add((o * oh + y) * ow + x0), x1 - x0) });
            }
        }
    }
}
}

/// `F.conv2d(x, weight, bias, padding=pad)` for a 3×3 kernel with stride 1 in f32 as Winograd
/// F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each
/// 2×2 block of output pixels from a 4×4 input tile with 16 products per channel pair instead of
/// 36, as 16 matrix products `U_e (co, ci) · V_e (ci, tiles)` on `gemm`. Every (image, block of
/// tiles) is a task that transforms its input tiles, multiplies and transforms back into the
/// output. Rounding differs from the direct sum by a few f32 ulps of the inputs' scale. A bf16
/// input is read as it is (widened by the input transform, where a widened copy of the whole
/// input would be written and read again) and gives a bf16 output (each value rounded once from
/// its f32 sum); any other input is f32 and gives f32.
fn winograd_f32(x: &FlexTensor, weight: &FlexTensor, bias: Option<&FlexTensor>, pad: [usize; 2], out: [usize; 2], residual: Option<&FlexTensor>) -> FlexTensor {
    match x.dtype() {
        DType::BF16 => winograd_into::<half::bf16>(x, weight, bias, pad, out, residual),
        _ => winograd_into::<f32>(x, weight, bias, pad, out, residual),
    }
}

/// [`winograd_f32`] of an input, and into an output, of `E`.
fn winograd_into<E: Elem>(x: &FlexTensor, weight: &FlexTensor, bias: Option<&FlexTensor>, pad: [usize; 2], [oh, ow]: [usize; 2], residual: Option<&FlexTensor>) -> FlexTensor {
    let [n, ci, h, w] = dims4(x);
    let co = dims4(weight)[0];
    let u = WinogradFilters::new(weight, co, ci);
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let tiles = th * tw;
    let block = (WINOGRAD_VALUES / (16 * ci.max(co))).clamp(16, 1024).min(tiles);
    let blocks = tiles.div_ceil(block);
    let mut out = room::<E>(n * co * oh * ow);
    let (xs, bs, rs) = (values::<E>(x), bias.map(values::<f32>), residual.map(values::<f32>));
    let shared = Shared(out.as_mut_ptr());
    (0..n * blocks).into_par_iter().for_each_init(
        || (vec![0f32; 16 * ci * block], vec![0f32; 16 * co * block], vec![0f32; 24 * (tw + 1)]),
        |(v, m, scratch), task| {
            let (b, t0) = (task / blocks, (task % blocks) * block);
            let len = block.min(tiles - t0);
            let img = &xs[b * ci * h * w..(b + 1) * ci * h * w];
            winograd_input(Shared(v.as_mut_ptr()), [ci * len, len], scratch, img, [ci, h, w], pad, tw, t0, len);
            for e in 0..16 {
                // SAFETY: V_e (ci × len) and M_e (co × len), row-major, lie inside v and m.
                unsafe { u.product(e, v.as_ptr().add(e * ci * len), len, len, m.as_mut_ptr().add(e * co * len), len) };
            }
            // SAFETY: image b's output starts there; the task writes only its own tiles' pixels.
            let dst = Shared(unsafe { shared.ptr().add(b * co * oh * ow) });
            let res = rs.map(|r| &r[b * co * oh * ow..(b + 1) * co * oh * ow]);
            winograd_output(dst, &m[..16 * co * len], [co * len, len], scratch, bs, res, [co, oh, ow], tw, t0, len);
        },
    );
    // SAFETY: the tasks covered every image's tiles, and `winograd_output` wrote every output
    // pixel of a tile, in every channel.
    unsafe { out.set_len(n * co * oh * ow) };
    from_vec(out, vec![n, co, oh, ow])
}

/// Transformed values per [`winograd_wide_f32`] chunk of tiles (16 · channels · tiles, about
/// 32 MiB): products about `2²³ / (16 · channels)` tiles wide (409 at 1,280 channels).
const WIDE_VALUES: usize = 1 << 23;

/// Winograd F(2×2, 3×3) as [`winograd_f32`], for wide layers (over [`WINOGRAD_CHANNELS`]
/// channels) on few pixels: the tiles of every image are transformed side by side (tasks by
/// image and channel block), then each of the 16 products `U_e (co, ci) · V_e (ci, tiles)` is
/// one task over all those tiles — each transformed filter packed once, where a task per
/// (image, tile block) re-packed all 16 for a thin product — then transformed back by image and
/// channel block. Chunks of [`WIDE_VALUES`] (or of `chunk` tiles) bound the transformed values
/// held; a chunk's tiles may span several images. A bf16 input gives a bf16 output, as
/// [`winograd_f32`].
#[allow(clippy::too_many_arguments)]
fn winograd_wide_f32(x: &FlexTensor, weight: &FlexTensor, bias: Option<&FlexTensor>, pad: [usize; 2], out: [usize; 2], residual: Option<&FlexTensor>, chunk: Option<usize>) -> FlexTensor {
    match x.dtype() {
        DType::BF16 => winograd_wide_into::<half::bf16>(x, weight, bias, pad, out, residual, chunk),
        _ => winograd_wide_into::<f32>(x, weight, bias, pad, out, residual, chunk),
    }
}

/// [`winograd_wide_f32`] of an input, and into an output, of `E`.
#[allow(clippy::too_many_arguments)]
fn winograd_wide_into<E: Elem>(x: &FlexTensor, weight: &FlexTensor, bias: Option<&FlexTensor>, pad: [usize; 2], [oh, ow]: [usize; 2], residual: Option<&FlexTensor>, chunk: Option<usize>) -> FlexTensor {
    /// Channels per transform task.
    const CHANNELS: usize = 32;
    let [n, ci, h, w] = dims4(x);
    let co = dims4(weight)[0];
    let u = WinogradFilters::new(weight, co, ci);
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let tiles = th * tw;
    let total = n * tiles;
    let chunk = chunk.unwrap_or((WIDE_VALUES / (16 * ci.max(co))).max(64)).clamp(1, total);
    let mut out = room::<E>(n * co * oh * ow);
    let (xs, bs, rs) = (values::<E>(x), bias.map(values::<f32>), residual.map(values::<f32>));
    let shared = Shared(out.as_mut_ptr());
    // a chunk's transformed inputs and products, written through pointers before they are read
    let (mut v, mut m) = (room::<f32>(16 * ci * chunk), room::<f32>(16 * co * chunk));
    let (blocks_in, blocks_out) = (ci.div_ceil(CHANNELS), co.div_ceil(CHANNELS));
    for g0 in (0..total).step_by(chunk) {
        let tc = chunk.min(total - g0);
        // the chunk's images: (image, its first tile, tiles, first column in the chunk)
        let segments: Vec<[usize; 4]> = (g0 / tiles..=(g0 + tc - 1) / tiles)
            .map(|b| {
                let (s, e) = ((b * tiles).max(g0), ((b + 1) * tiles).min(g0 + tc));
                [b, s - b * tiles, e - s, s - g0]
            })
            .collect();
        let vs = Shared(v.as_mut_ptr());
        (0..segments.len() * blocks_in).into_par_iter().for_each_init(
            || vec![0f32; 24 * (tw + 1)],
            |scratch, task| {
                let [b, t0, len, col] = segments[task / blocks_in];
                let (c0, c1) = ((task % blocks_in) * CHANNELS, ci.min((task % blocks_in + 1) * CHANNELS));
                let img = &xs[(b * ci + c0) * h * w..(b * ci + c1) * h * w];
                // SAFETY: rows c0..c1, columns col..col + len of each V_e: this task's only.
                let dst = Shared(unsafe { vs.ptr().add(c0 * tc + col) });
                winograd_input(dst, [ci * tc, tc], scratch, img, [c1 - c0, h, w], pad, tw, t0, len);
            },
        );
        let ms = Shared(m.as_mut_ptr());
        (0..16).into_par_iter().for_each(|e| {
            // SAFETY: V_e (ci × tc) and M_e (co × tc), row-major, lie inside v and m; M_e is
            // written by this task only.
            unsafe { u.product(e, v.as_ptr().add(e * ci * tc), tc, tc, ms.ptr().add(e * co * tc), tc) };
        });
        // SAFETY: the 16 products wrote M_e (co × tc) each: the first 16·co·tc values of `m`.
        let m = unsafe { std::slice::from_raw_parts(m.as_ptr(), 16 * co * tc) };
        (0..segments.len() * blocks_out).into_par_iter().for_each_init(
            || vec![0f32; 10 * tw],
            |scratch, task| {
                let [b, t0, len, col] = segments[task / blocks_out];
                let (o0, o1) = ((task % blocks_out) * CHANNELS, co.min((task % blocks_out + 1) * CHANNELS));
                // SAFETY: channels o0..o1 of image b, this chunk's tiles: this task's only.
                let dst = Shared(unsafe { shared.ptr().add((b * co + o0) * oh * ow) });
                let res = rs.map(|r| &r[(b * co + o0) * oh * ow..(b * co + o1) * oh * ow]);
                let bias = bs.map(|bs| &bs[o0..o1]);
                winograd_output(dst, &m[o0 * tc + col..], [co * tc, tc], scratch, bias, res, [o1 - o0, oh, ow], tw, t0, len);
            },
        );
    }
    // SAFETY: the chunks covered every image's tiles and the output tasks every channel block;
    // `winograd_output` wrote every output pixel of a tile.
    unsafe { out.set_len(n * co * oh * ow) };
    from_vec(out, vec![n, co, oh, ow])
}

// ----- matrix products ------------------------------------------------------------------------

/// Below this many multiply-adds a product runs on one thread (burn-flex's threshold): the
/// hand-off costs more than it saves.
const PARALLEL_PRODUCT: usize = 192 * 192 * 192;

/// A `(batch, rows, cols)` f32 operand of a product read in place: its values, first element
/// and strides in elements (the batch stride 0 when one matrix serves every batch).
struct Matrix<'a> {
    data: &'a [f32],
    offset: isize,
    strides: [isize; 3],
}

impl<'a> Matrix<'a> {
    fn new(t: &'a FlexTensor) -> Self {
        let layout = t.layout();
        let (shape, st) = (layout.shape(), layout.strides());
        let batch = if shape[0] == 1 { 0 } else { st[0] };
        Matrix { data: t.storage::<f32>(), offset: layout.start_offset() as isize, strides: [batch, st[1], st[2]] }
    }

    /// Matrix `b`'s first element.
    fn at(&self, b: usize) -> *const f32 {
        // SAFETY: the offset of an in-bounds batch of the tensor's own layout.
        unsafe { self.data.as_ptr().offset(self.offset + b as isize * self.strides[0]) }
    }
}

/// `scale · a · b` for f32 `a (ba, m, k)` and `b (bb, k, n)` (any strides; `ba` or `bb` may be
/// one) on `gemm` → `(max(ba, bb), m, n)`. With `init`, the result is added to those values
/// (`(batch, m, n)` row-major: a bias or a residual already laid out), so bias and residual cost
/// no pass of their own. Large products use every thread inside `gemm`, many small ones run a
/// batch each in parallel, tiny ones on the calling thread.
fn product_f32(a: &FlexTensor, b: &FlexTensor, scale: f32, init: Option<Vec<f32>>) -> FlexTensor {
    let ([ba, m, k], [bb, _, n]) = (dims3(a), dims3(b));
    let batch = ba.max(bb);
    let len = batch * m * n;
    if init.is_none() && k == 0 {
        return from_vec(zeros::<f32>(len), vec![batch, m, n]);
    }
    let read_dst = init.is_some();
    // without starting values the products write the output whole (`read_dst` false)
    let mut out = init.unwrap_or_else(|| room::<f32>(len));
    debug_assert!(out.len() == len || (!read_dst && out.capacity() >= len));
    let (ma, mb) = (Matrix::new(a), Matrix::new(b));
    let per = m * n * k;
    let one = |dst: *mut f32, i: usize, par: gemm::Parallelism| {
        // SAFETY: batch i of each operand is in bounds of its storage with the strides given,
        // and `dst` is the start of this batch's own m × n block of the output.
        unsafe {
            gemm::gemm(
                m, n, k,
                dst, 1, n as isize, read_dst,
                ma.at(i), ma.strides[2], ma.strides[1],
                mb.at(i), mb.strides[2], mb.strides[1],
                1.0, scale, false, false, false, par,
            );
        }
    };
    let dst = Shared(out.as_mut_ptr());
    // SAFETY (each call): batch i's m × n block of the output, written by its call only.
    let block = |i: usize| unsafe { dst.ptr().add(i * m * n) };
    if m * n == 0 {
        // nothing to write; k = 0 leaves the initial values (gemm handles it)
    } else if per >= PARALLEL_PRODUCT && !(batch >= 4 && batch * per >= 4 * PARALLEL_PRODUCT) {
        (0..batch).for_each(|i| one(block(i), i, gemm::Parallelism::Rayon(0)));
    } else if batch > 1 && batch * per >= 128 * 128 * 128 {
        (0..batch).into_par_iter().for_each(|i| one(block(i), i, gemm::Parallelism::None));
    } else {
        (0..batch).for_each(|i| one(block(i), i, gemm::Parallelism::None));
    }
    // SAFETY: with starting values the length is already `len`; without, every batch's block
    // was written by its product (`read_dst` false, `k` > 0).
    unsafe { out.set_len(len) };
    from_vec(out, vec![batch, m, n])
}

/// `a (1, m, k) · b (1, k, n) + init` for bf16 operands on [`bf16_gemm`] when this CPU has
/// AVX-512 BF16 and both are read along `k` in place (`a`'s rows and `b`'s columns contiguous: a
/// linear layer's input and transposed weight) → the result in f32, or in bf16 when `out` is
/// bf16 and `k` fits one pass (rounded as it is stored: no f32 result written and read again);
/// otherwise `Err(init)` back.
fn product_bf16(a: &FlexTensor, b: &FlexTensor, init: Option<Vec<f32>>, out: DType) -> Result<FlexTensor, Option<Vec<f32>>> {
    if a.dtype() != DType::BF16 || b.dtype() != DType::BF16 || !bf16_gemm::available() {
        return Err(init);
    }
    let ([ba, m, k], [bb, _, n]) = (dims3(a), dims3(b));
    let (la, lb) = (a.layout(), b.layout());
    let (sa, sb) = (la.strides(), lb.strides());
    if !(ba == 1 && bb == 1 && (sa[2] == 1 || k == 1) && (sb[1] == 1 || k == 1) && sa[1] >= 0 && sb[2] >= 0) {
        return Err(init);
    }
    fn rows(t: &FlexTensor, stride: isize, rows: usize) -> bf16_gemm::Rows<'_> {
        bf16_gemm::Rows { data: t.storage::<half::bf16>(), offset: t.layout().start_offset(), stride: stride as usize, rows }
    }
    if out == DType::BF16 && (1..=bf16_gemm::ROUNDED_K).contains(&k) {
        // SAFETY: the rounded product writes every value (`k` > 0).
        let d = unsafe { written::<half::bf16>(m * n, |d| bf16_gemm::product_rounded(rows(a, sa[1], m), rows(b, sb[2], n), k, init.as_deref(), d)) };
        return Ok(from_vec(d, vec![1, m, n]));
    }
    let out = match init {
        Some(mut c) => {
            bf16_gemm::product(rows(a, sa[1], m), rows(b, sb[2], n), k, &mut c, false);
            c
        }
        None if k == 0 => zeros::<f32>(m * n),
        // SAFETY: the product overwrites the whole `m × n` output (`k` > 0).
        None => unsafe { written::<f32>(m * n, |c| bf16_gemm::product(rows(a, sa[1], m), rows(b, sb[2], n), k, c, true)) },
    };
    Ok(from_vec(out, vec![1, m, n]))
}

/// `(rows, n)` values, each row `bias` (one value per column) plus, when given, the residual's
/// row (f32, f16 or bf16, any strides; widened here, so a half-precision residual is read once):
/// the starting values of a linear layer's product.
fn columns_init(rows: usize, n: usize, bias: Option<&[f32]>, residual: Option<&FlexTensor>) -> Vec<f32> {
    fn go<E: Elem>(rows: usize, n: usize, bias: Option<&[f32]>, residual: Option<&FlexTensor>) -> Vec<f32> {
        let res = residual.map(|r| {
            let l = r.layout();
            (r.storage::<E>(), l.start_offset() as isize, l.strides()[0], l.strides()[1])
        });
        let per = per_task(n);
        // SAFETY: every row is written whole (the residual's row or the bias) before the bias is
        // added to it.
        unsafe {
            written::<f32>(rows * n, |out| {
                out.par_chunks_mut(n * per).enumerate().for_each(|(t, block)| {
                    for (j, row) in block.chunks_exact_mut(n).enumerate() {
                        let r = (t * per + j) as isize;
                        match (res, bias) {
                            (Some((data, off, rs, 1)), _) => {
                                let at = (off + r * rs) as usize;
                                E::widen(&data[at..at + n], row);
                            }
                            (Some((data, off, rs, cs)), _) => {
                                for (c, o) in row.iter_mut().enumerate() {
                                    *o = data[(off + r * rs + c as isize * cs) as usize].f32();
                                }
                            }
                            (None, Some(b)) => row.copy_from_slice(b),
                            (None, None) => unreachable!("columns_init without bias or residual"),
                        }
                        if let (Some(_), Some(b)) = (res, bias) {
                            for (o, &bv) in row.iter_mut().zip(b) {
                                *o += bv;
                            }
                        }
                    }
                })
            })
        }
    }
    if rows * n == 0 || (bias.is_none() && residual.is_none()) {
        return zeros::<f32>(rows * n);
    }
    match residual.map(|r| r.dtype()) {
        Some(DType::F16) => go::<half::f16>(rows, n, bias, residual),
        Some(DType::BF16) => go::<half::bf16>(rows, n, bias, residual),
        _ => go::<f32>(rows, n, bias, residual),
    }
}

/// `(batch, m, n)` values, row `i` of every batch filled with `bias[i]` (a convolution's
/// channels as rows).
fn rows_init(batch: usize, m: usize, n: usize, bias: &[f32]) -> Vec<f32> {
    if batch * m * n == 0 {
        return Vec::new();
    }
    let per = per_task(n);
    // SAFETY: every row is filled.
    unsafe {
        written::<f32>(batch * m * n, |out| {
            out.par_chunks_mut(n * per).enumerate().for_each(|(t, block)| {
                for (j, row) in block.chunks_exact_mut(n).enumerate() {
                    row.fill(bias[(t * per + j) % m]);
                }
            })
        })
    }
}

/// Whether every operand is f32, f16 or bf16 of one dtype (the products and convolutions
/// reel runs; mixed operands are left to burn-flex).
fn same_float<const D: usize>(first: &Tensor<Flex, D>, others: &[DType]) -> bool {
    let dtype = first.dtype();
    is_float(dtype) && others.iter().all(|&d| d == dtype)
}

/// The output dims of a convolution [`conv2d_f32`] runs (f32, f16 or bf16 operands of one
/// dtype, a kernel that fits the padded input, non-zero strides); `None` leaves it to burn-flex.
fn own_conv_dims(x: &Tensor<Flex, 4>, weight: &Tensor<Flex, 4>, bias: Option<&Tensor<Flex, 1>>, stride: [usize; 2], pad: [usize; 2]) -> Option<[usize; 4]> {
    let dtypes: Vec<DType> = std::iter::once(weight.dtype()).chain(bias.map(|b| b.dtype())).collect();
    let ([n, _, h, w], [co, _, kh, kw]) = (x.dims(), weight.dims());
    let fits = h + 2 * pad[0] >= kh && w + 2 * pad[1] >= kw && stride[0] > 0 && stride[1] > 0;
    (same_float(x, &dtypes) && fits).then(|| [n, co, (h + 2 * pad[0] - kh) / stride[0] + 1, (w + 2 * pad[1] - kw) / stride[1] + 1])
}

/// [`conv2d_f32`] for f32, f16 or bf16 operands (checked by [`own_conv_dims`]): half ones
/// widened, the result rounded once to their dtype.
fn conv2d_any(x: Tensor<Flex, 4>, weight: Tensor<Flex, 4>, bias: Option<Tensor<Flex, 1>>, stride: [usize; 2], pad: [usize; 2], residual: Option<Tensor<Flex, 4>>) -> Tensor<Flex, 4> {
    let dtype = x.dtype();
    let ([n, ci, h, w], [co, _, kh, kw]) = (x.dims(), weight.dims());
    let bf16 = dtype == DType::BF16 && bf16_gemm::available();
    if bf16 && conv_path([n, ci, h, w], co, [kh, kw], stride, pad) == ConvPath::RowTaps {
        let (x, weight) = (contiguous(prim(x)), contiguous(prim(weight)));
        let (bias, residual) = (bias.map(|b| contiguous(widened(prim(b)))), residual.map(|r| contiguous(widened(prim(r)))));
        let oh = h + 2 * pad[0] - kh + 1;
        let y = row_taps_bf16(&x, &weight, bias.as_ref().map(values), residual.as_ref().map(values), [n, ci, h, w], co, kh, pad[0]);
        return wrap(narrowed(from_vec(y, vec![n, co, oh, w]), dtype));
    }
    // a bf16 weight goes as it is where bf16 products run ([`conv2d_f32`] widens it where not)
    let weight = if bf16 { prim(weight) } else { widened(prim(weight)) };
    // so does a bf16 input (Winograd's input transform widens it as it reads; the others widen it)
    let x = if bf16 { prim(x) } else { widened(prim(x)) };
    let y = conv2d_f32(x, weight, bias.map(|b| widened(prim(b))), stride, pad, residual.map(|r| widened(prim(r))));
    wrap(narrowed(y, dtype))
}

// ----- the trait --------------------------------------------------------------------------------

/// Dispatches `$f::<E>` by `$dtype` (f32, f16, bf16).
macro_rules! by_dtype {
    ($dtype:expr, $f:ident, $($arg:expr),*) => {
        match $dtype {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F16 => $f::<half::f16>($($arg),*),
            DType::BF16 => $f::<half::bf16>($($arg),*),
            other => panic!("reel's CPU kernels take f32, f16 or bf16, not {other:?}"),
        }
    };
}

fn group_norm_any<E: Elem>(x: FlexTensor, plus: Option<FlexTensor>, w: FlexTensor, b: FlexTensor, groups: usize, eps: f64, silu: bool) -> FlexTensor {
    let (x, w, b) = (contiguous(x), contiguous(w), contiguous(b));
    let plus = plus.map(contiguous);
    let dims = dims3(&x);
    let y = group_norm_t::<E>(values(&x), plus.as_ref().map(values), values(&w), values(&b), dims, groups, eps, silu);
    from_vec(y, dims.to_vec())
}

fn layer_norm_any<E: Elem>(x: FlexTensor, w: FlexTensor, b: FlexTensor, eps: f64) -> FlexTensor {
    let (x, w, b) = (contiguous(x), contiguous(w), contiguous(b));
    let shape = x.layout().shape();
    let (rows, dim) = (shape[0], shape[1]);
    let y = layer_norm_t::<E>(values(&x), values(&w), values(&b), dim, eps);
    from_vec(y, vec![rows, dim])
}

fn geglu_any<E: Elem>(x: FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let shape = x.layout().shape();
    let (rows, width) = (shape[0], shape[1]);
    let y = geglu_t::<E>(values(&x), rows, width / 2);
    from_vec(y, vec![rows, width / 2])
}

fn gelu_any<E: Elem>(x: FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let shape = x.layout().shape().to_vec();
    let y = gelu_t::<E>(values(&x));
    from_vec(y, shape)
}

fn softmax_any<E: Elem>(scores: FlexTensor, causal: bool) -> FlexTensor {
    let scores = contiguous(scores);
    let dims = dims3(&scores);
    let y = softmax_t::<E>(values(&scores), dims, causal);
    from_vec(y, dims.to_vec())
}

impl Kernels<Flex> for FlexKernels {
    fn matmul(&self, a: Tensor<Flex, 3>, b: Tensor<Flex, 3>, alpha: f32, out: DType) -> Tensor<Flex, 3> {
        if is_float(out) && same_float(&a, &[b.dtype()]) {
            let (a, b) = (prim(a), prim(b));
            let y = if alpha == 1.0 { product_bf16(&a, &b, None, out) } else { Err(None) };
            let y = y.unwrap_or_else(|_| product_f32(&widened(a), &widened(b), alpha, None));
            return wrap(narrowed(y, out));
        }
        let (a, b) = if a.dtype() == out { (a, b) } else { (a.cast(out), b.cast(out)) };
        let y = a.matmul(b);
        if alpha == 1.0 {
            y
        } else {
            y * alpha
        }
    }

    fn matmul_bias(&self, a: Tensor<Flex, 3>, b: Tensor<Flex, 3>, bias: Tensor<Flex, 1>, axis: BiasAxis) -> Tensor<Flex, 3> {
        let dtype = a.dtype();
        if !same_float(&a, &[b.dtype(), bias.dtype()]) {
            return reel_core::kernels::add_bias(self.matmul(a, b, 1.0, dtype), bias, axis);
        }
        let (a, b, bias) = (prim(a), prim(b), contiguous(widened(prim(bias))));
        let ([ba, m, _], [bb, _, n]) = (dims3(&a), dims3(&b));
        let batch = ba.max(bb);
        let init = match axis {
            BiasAxis::Columns => columns_init(batch * m, n, Some(values(&bias)), None),
            BiasAxis::Rows => rows_init(batch, m, n, values(&bias)),
        };
        let y = product_bf16(&a, &b, Some(init), dtype).unwrap_or_else(|init| product_f32(&widened(a), &widened(b), 1.0, init));
        wrap(narrowed(y, dtype))
    }

    fn has_linear_add(&self) -> bool {
        true
    }

    fn linear_add(&self, x: Tensor<Flex, 2>, weight: Tensor<Flex, 2>, bias: Option<Tensor<Flex, 1>>, residual: Tensor<Flex, 2>) -> Tensor<Flex, 2> {
        let dtypes: Vec<DType> = [weight.dtype(), residual.dtype()].into_iter().chain(bias.as_ref().map(|b| b.dtype())).collect();
        if !same_float(&x, &dtypes) {
            return reel_core::kernels::linear(self, x, weight, bias) + residual;
        }
        let dtype = x.dtype();
        let [rows, n] = residual.dims();
        let bias = bias.map(|b| contiguous(widened(prim(b))));
        let init = columns_init(rows, n, bias.as_ref().map(values), Some(&prim(residual)));
        let (x, w) = (prim(x.unsqueeze::<3>()), prim(weight.unsqueeze::<3>().swap_dims(1, 2)));
        let y = product_bf16(&x, &w, Some(init), dtype).unwrap_or_else(|init| product_f32(&widened(x), &widened(w), 1.0, init));
        wrap::<3>(narrowed(y, dtype)).reshape([rows, n])
    }

    fn has_conv2d(&self) -> bool {
        true
    }

    fn conv2d(&self, x: Tensor<Flex, 4>, weight: Tensor<Flex, 4>, bias: Option<Tensor<Flex, 1>>, stride: [usize; 2], pad: [usize; 2]) -> Tensor<Flex, 4> {
        if own_conv_dims(&x, &weight, bias.as_ref(), stride, pad).is_none() {
            return reel_core::kernels::burn_conv2d(x, weight, bias, stride, pad);
        }
        conv2d_any(x, weight, bias, stride, pad, None)
    }

    fn has_contiguous(&self) -> bool {
        true
    }

    fn contiguous(&self, x: FlexTensor) -> FlexTensor {
        contiguous(x)
    }

    fn has_conv2d_add(&self) -> bool {
        true
    }

    fn conv2d_add(&self, x: Tensor<Flex, 4>, weight: Tensor<Flex, 4>, bias: Option<Tensor<Flex, 1>>, stride: [usize; 2], pad: [usize; 2], residual: Tensor<Flex, 4>) -> Tensor<Flex, 4> {
        let own = own_conv_dims(&x, &weight, bias.as_ref(), stride, pad);
        if residual.dtype() != x.dtype() || own != Some(residual.dims()) {
            return self.conv2d(x, weight, bias, stride, pad) + residual;
        }
        conv2d_any(x, weight, bias, stride, pad, Some(residual))
    }

    fn has_norms(&self) -> bool {
        true
    }

    fn group_norm(&self, x: Tensor<Flex, 3>, weight: Tensor<Flex, 1>, bias: Tensor<Flex, 1>, groups: usize, eps: f64, silu: bool) -> Tensor<Flex, 3> {
        let dtype = x.dtype();
        wrap(by_dtype!(dtype, group_norm_any, prim(x), None, prim(weight), prim(bias), groups, eps, silu))
    }

    fn group_norm_plus(&self, x: Tensor<Flex, 3>, plus: Tensor<Flex, 2>, weight: Tensor<Flex, 1>, bias: Tensor<Flex, 1>, groups: usize, eps: f64, silu: bool) -> Tensor<Flex, 3> {
        let dtype = x.dtype();
        wrap(by_dtype!(dtype, group_norm_any, prim(x), Some(prim(plus)), prim(weight), prim(bias), groups, eps, silu))
    }

    fn layer_norm(&self, x: Tensor<Flex, 2>, weight: Tensor<Flex, 1>, bias: Tensor<Flex, 1>, eps: f64) -> Tensor<Flex, 2> {
        let dtype = x.dtype();
        wrap(by_dtype!(dtype, layer_norm_any, prim(x), prim(weight), prim(bias), eps))
    }

    fn softmax(&self, scores: Tensor<Flex, 3>, causal: bool, out: DType) -> Tensor<Flex, 3> {
        let scores = if scores.dtype() == DType::F32 { scores } else { scores.cast(DType::F32) };
        wrap(by_dtype!(out, softmax_any, prim(scores), causal))
    }

    fn has_gelu(&self) -> bool {
        true
    }

    fn gelu(&self, x: Tensor<Flex, 2>) -> Tensor<Flex, 2> {
        let dtype = x.dtype();
        wrap(by_dtype!(dtype, gelu_any, prim(x)))
    }

    fn has_geglu(&self) -> bool {
        true
    }

    fn geglu(&self, x: Tensor<Flex, 2>) -> Tensor<Flex, 2> {
        let dtype = x.dtype();
        wrap(by_dtype!(dtype, geglu_any, prim(x)))
    }

    fn has_fused_attention(&self, dtype: DType, head_dim: usize) -> bool {
        head_dim > 0 && matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
    }

    fn fused_attention(&self, q: Tensor<Flex, 3>, k: Tensor<Flex, 3>, v: Tensor<Flex, 3>, heads: usize, causal: bool) -> Tensor<Flex, 3> {
        let dtype = q.dtype();
        let (q, k, v) = (prim(q), prim(k), prim(v));
        if attention_bf16_applies(&q, &k, &v, heads) {
            return wrap(attention_bf16(q, k, v, heads, causal));
        }
        wrap(narrowed(attention_f32(widened(q), widened(k), widened(v), heads, causal), dtype))
    }

    fn name(&self) -> &'static str {
        "reel-cpu"
    }
}

#[cfg(test)]
mod tests {
    //! Each kernel against the same operation in burn's ops on burn-flex (nothing registered in
    //! this process: the references are the paths every layer takes without the kernels).
    use super::*;
    use burn::tensor::activation::softmax;
    use burn::tensor::Bool;

    type T<const D: usize> = Tensor<Flex, D>;

    /// Deterministic values in about [-scale, scale] (xorshift).
    fn rand<const D: usize>(shape: [usize; D], seed: u64, scale: f32) -> T<D> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        T::from_data(TensorData::new(v, shape), &Default::default())
    }

    fn close<const D: usize>(ours: T<D>, reference: T<D>, rel: f32, what: &str) {
        assert_eq!(ours.dims(), reference.dims(), "{what}: shape");
        let host = |t: T<D>| t.cast(DType::F32).into_data().into_vec::<f32>().unwrap();
        let c = reel_core::testing::closeness(&host(ours), &host(reference));
        let (d, scale) = (c.max_abs_err, c.ref_max_abs);
        assert!(d <= rel * scale.max(1.0), "{what}: max abs diff {d:.3e} against largest |value| {scale:.3e}");
    }

    /// SDPA in burn's ops on `(b, s, heads·d)` tokens: split, scores, mask, softmax, product, merge.
    fn reference_attention(q: T<3>, k: T<3>, v: T<3>, heads: usize, causal: bool) -> T<3> {
        let [b, sq, inner] = q.dims();
        let sk = k.dims()[1];
        let dv = v.dims()[2] / heads;
        let d = inner / heads;
        let split = |t: T<3>, w: usize| {
            let s = t.dims()[1];
            t.reshape([b, s, heads, w]).swap_dims(1, 2)
        };
        let scores = split(q, d).matmul(split(k, d).swap_dims(2, 3)) * (1.0 / (d as f32).sqrt());
        let scores = if causal {
            let mask = Tensor::<Flex, 2, Bool>::tril_mask([sq, sk], 0, &Default::default()).unsqueeze::<4>();
            scores.mask_fill(mask, f32::NEG_INFINITY)
        } else {
            scores
        };
        softmax(scores, 3).matmul(split(v, dv)).swap_dims(1, 2).reshape([b, sq, heads * dv])
    }

    #[test]
    fn exp_erf_gelu_match_std() {
        let mut worst = (0.0f64, 0.0f64);
        for i in 0..=20_000 {
            let x = -87.0 + 175.0 * i as f32 / 20_000.0;
            let e = (x as f64).exp();
            worst.0 = worst.0.max(((exp(x) as f64 - e) / e).abs());
            let z = -6.0 + 12.0 * i as f32 / 20_000.0;
            worst.1 = worst.1.max((erf(z) as f64 - libm::erf(z as f64)).abs());
        }
        assert!(worst.0 < 3e-7, "exp relative error {:.2e}", worst.0);
        // A&S 7.1.26 is within 1.5e-7; evaluated in f32 it lands within 5e-7 (PyTorch's vectorised
        // CPU `erf`, behind its exact GELU, is the same formula)
        assert!(worst.1 < 6e-7, "erf absolute error {:.2e}", worst.1);
        assert!(exp(f32::NAN).is_nan() && erf(f32::NAN).is_nan() && gelu(f32::NAN).is_nan());
        assert_eq!(exp(f32::NEG_INFINITY), exp(-87.3));
        assert!(exp(-87.3) > 0.0 && exp(200.0).is_finite());
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6 && gelu(-10.0).abs() < 1e-6);
    }

    #[test]
    fn attention_matches_burn_ops() {
        // (b, sq, sk, heads, d): the temporal layers' few frames (direct path), spatial and
        // cross attention (gemm path, partial last query block; several blocks for the last),
        // CLIP's causal self-attention.
        for (i, &(b, sq, sk, heads, d)) in [(6, 4, 4, 2, 8), (3, 16, 16, 3, 64), (2, 200, 77, 2, 40), (2, 130, 130, 4, 16), (1, 77, 77, 2, 32), (1, 1100, 600, 2, 8)].iter().enumerate() {
            for causal in [false, true] {
                if causal && sq != sk {
                    continue;
                }
                let seed = 10 * i as u64 + causal as u64;
                // q, k, v as strided views of one projection output, as the multi-projection gives
                let qkv = rand([b, sq.max(sk), 3 * heads * d], seed, 2.0);
                let view = |j: usize, s: usize| qkv.clone().narrow(2, j * heads * d, heads * d).narrow(1, 0, s);
                let (q, k, v) = (view(0, sq), view(1, sk), view(2, sk));
                let ours = FlexKernels.fused_attention(q.clone(), k.clone(), v.clone(), heads, causal);
                let theirs = reference_attention(q, k, v, heads, causal);
                close(ours, theirs, 2e-6, &format!("attention {:?} causal {causal}", (b, sq, sk, heads, d)));
            }
        }
    }

    #[test]
    fn attention_in_f16_and_bf16_within_their_rounding() {
        // self-attention, causal, and queries against more keys (bf16: the products on
        // bf16_gemm where the CPU has AVX-512 BF16, past the direct path's few keys)
        for (i, &(sq, sk, causal)) in [(40, 40, false), (40, 40, true), (70, 77, false)].iter().enumerate() {
            let s = 10 * i as u64;
            let (q, k, v) = (rand([2, sq, 64], 1 + s, 2.0), rand([2, sk, 64], 2 + s, 2.0), rand([2, sk, 64], 3 + s, 2.0));
            let theirs = reference_attention(q.clone(), k.clone(), v.clone(), 2, causal);
            for (dtype, tol) in [(DType::F16, 2e-3), (DType::BF16, 2e-2)] {
                let ours = FlexKernels.fused_attention(q.clone().cast(dtype), k.clone().cast(dtype), v.clone().cast(dtype), 2, causal);
                assert_eq!(ours.dtype(), dtype);
                close(ours, theirs.clone(), tol, &format!("attention {dtype:?} {:?}", (sq, sk, causal)));
            }
        }
    }

    #[test]
    fn norms_geglu_softmax_match_burn_ops() {
        use reel_core::kernels::{geglu_ops, softmax_ops};
        use reel_core::nn::{group_norm_ops, layer_norm_ops};
        for (i, &(n, c, rest, groups)) in [(2, 32, 300, 32), (3, 64, 17, 8), (1, 4, 1, 2)].iter().enumerate() {
            // an offset mean, as activations have: the statistics must not lose it
            let x = rand([n, c, rest], i as u64, 3.0) + 5.0;
            let (w, b) = (rand([c], 50 + i as u64, 1.0), rand([c], 60 + i as u64, 1.0));
            for silu in [false, true] {
                let ours = FlexKernels.group_norm(x.clone(), w.clone(), b.clone(), groups, 1e-6, silu);
                let theirs = group_norm_ops(x.clone(), w.clone(), b.clone(), groups, 1e-6, silu);
                close(ours, theirs, 2e-6, &format!("group norm {:?} silu {silu}", (n, c, rest, groups)));
                // with a value per (image, channel) added first (a resnet's time embedding)
                let plus = rand([n, c], 70 + i as u64, 4.0);
                let ours = FlexKernels.group_norm_plus(x.clone(), plus.clone(), w.clone(), b.clone(), groups, 1e-6, silu);
                let theirs = group_norm_ops(x.clone() + plus.reshape([n, c, 1]), w.clone(), b.clone(), groups, 1e-6, silu);
                close(ours, theirs, 2e-6, &format!("group norm plus {:?} silu {silu}", (n, c, rest, groups)));
            }
        }
        // a strided input (the temporal layers' (b, f, c, ·) → (b, c, f, ·) view)
        let x = rand([2, 3, 32, 10], 7, 2.0).swap_dims(1, 2).reshape([2, 32, 30]);
        let (w, b) = (rand([32], 8, 1.0), rand([32], 9, 1.0));
        close(FlexKernels.group_norm(x.clone(), w.clone(), b.clone(), 8, 1e-5, true), group_norm_ops(x, w, b, 8, 1e-5, true), 2e-6, "group norm, strided");

        let x = rand([50, 96], 11, 4.0) - 2.0;
        let (w, b) = (rand([96], 12, 1.0), rand([96], 13, 1.0));
        close(FlexKernels.layer_norm(x.clone(), w.clone(), b.clone(), 1e-5), layer_norm_ops(x, w, b, 1e-5), 2e-6, "layer norm");

        let x = rand([33, 2 * 40], 14, 5.0);
        close(FlexKernels.geglu(x.clone()), geglu_ops(x.clone()), 2e-6, "geglu");
        close(FlexKernels.gelu(x.clone()), burn::tensor::activation::gelu(x), 2e-6, "gelu");

        let s = rand([3, 7, 7], 15, 8.0);
        for causal in [false, true] {
            close(FlexKernels.softmax(s.clone(), causal, DType::F32), softmax_ops(s.clone(), causal, DType::F32), 2e-6, "softmax");
        }
        for dtype in [DType::F16, DType::BF16] {
            let x = rand([2, 16, 20], 16, 3.0);
            let (w, b) = (rand([16], 17, 1.0), rand([16], 18, 1.0));
            let theirs = group_norm_ops(x.clone(), w.clone(), b.clone(), 4, 1e-5, true);
            let ours = FlexKernels.group_norm(x.clone().cast(dtype), w.clone().cast(dtype), b.clone().cast(dtype), 4, 1e-5, true);
            assert_eq!(ours.dtype(), dtype);
            close(ours, theirs, if dtype == DType::F16 { 2e-3 } else { 1e-2 }, "group norm, half precision");
            // the added values: as the separate add in that dtype, then the norm
            let plus = rand([2, 16], 19, 3.0).cast(dtype);
            let (xh, wh, bh) = (x.cast(dtype), w.cast(dtype), b.cast(dtype));
            let ours = FlexKernels.group_norm_plus(xh.clone(), plus.clone(), wh.clone(), bh.clone(), 4, 1e-5, true);
            let theirs = FlexKernels.group_norm(xh + plus.reshape([2, 16, 1]), wh, bh, 4, 1e-5, true);
            assert_eq!(ours.dtype(), dtype);
            // (the statistics sum in another order: a value may round the other way)
            close(ours, theirs, if dtype == DType::F16 { 1e-3 } else { 8e-3 }, "group norm plus, half precision");
        }
    }

    /// (n, ci, h, w, co, kernel, stride, pad, bias, path) of the convolution tests.
    type ConvCase = (usize, usize, usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], bool, ConvPath);

    fn conv_cases() -> Vec<ConvCase> {
        use ConvPath::*;
        // (n, ci, h, w, co, k, stride, pad, bias, path): 3×3 (several pixel blocks per image, a
        // partial last block), 1×1 direct, a strided down-sampling, a wide input channel count
        // (one block per image row range)
        vec![
            (2, 5, 37, 41, 7, [3, 3], [1, 1], [1, 1], true, Im2col),
            (3, 6, 9, 10, 4, [1, 1], [1, 1], [0, 0], true, Im2col),
            (2, 4, 17, 16, 3, [3, 3], [2, 2], [1, 1], false, Im2col),
            (1, 300, 12, 12, 5, [3, 3], [1, 1], [1, 1], true, Im2col),
            // Winograd F(2×2, 3×3): odd output sizes (partial tiles), several tile blocks per
            // image, padding 0 and 2, no bias
            (2, 40, 45, 47, 36, [3, 3], [1, 1], [1, 1], true, Winograd),
            (1, 64, 70, 66, 48, [3, 3], [1, 1], [0, 0], false, Winograd),
            (3, 32, 40, 44, 40, [3, 3], [1, 1], [2, 2], true, Winograd),
            // (kh, 1) kernels as shifted products: the temporal (3, 1) kernel as the UNet runs
            // it (one image; several images a task each; one large product per image), no
            // padding, a 5-row kernel, padding past the kernel's reach, no bias
            (1, 8, 5, 33, 8, [3, 1], [1, 1], [1, 0], true, RowTaps),
            (3, 6, 8, 20, 5, [3, 1], [1, 1], [1, 0], true, RowTaps),
            (2, 64, 8, 96, 72, [3, 1], [1, 1], [1, 0], true, RowTaps),
            (2, 7, 6, 9, 4, [3, 1], [1, 1], [0, 0], false, RowTaps),
            (2, 5, 7, 6, 3, [5, 1], [1, 1], [2, 0], true, RowTaps),
            (2, 5, 3, 6, 3, [3, 1], [1, 1], [3, 0], true, RowTaps),
            // wide layers (over WINOGRAD_CHANNELS), all images' tiles in one product
            (2, 520, 24, 22, 40, [3, 3], [1, 1], [1, 1], true, WinogradWide),
            (2, 36, 33, 31, 530, [3, 3], [1, 1], [0, 0], false, WinogradWide),
            // few pixels per image: every image in one product (3×3, 1×1, strided)
            (4, 20, 4, 4, 12, [3, 3], [1, 1], [1, 1], true, FewPixels),
            (3, 16, 3, 5, 8, [1, 1], [1, 1], [0, 0], false, FewPixels),
            (2, 8, 7, 7, 6, [3, 3], [2, 2], [1, 1], true, FewPixels),
        ]
    }

    /// f16 / bf16 products and convolutions (widened to f32, the result rounded once) against
    /// burn's f32 ops on the same rounded inputs: within one rounding of the result.
    #[test]
    fn half_products_and_convolutions_round_the_f32_result() {
        use reel_core::kernels::{add_bias, burn_conv2d};
        let f32_ = |t: T<3>| t.cast(DType::F32);
        for (dtype, tol) in [(DType::F16, 1e-3), (DType::BF16, 8e-3)] {
            let half = |t: T<3>| t.cast(dtype);
            let bias: T<1> = rand([30], 202, 1.0).cast(dtype);
            // batch 1 (bf16: on bf16_gemm where the CPU has it) and 2 (widened to f32)
            for batch in [1, 2] {
                let a = half(rand([batch, 70, 48], 200, 1.0));
                let b = half(rand([batch, 30, 48], 201, 1.0)).swap_dims(1, 2);
                let theirs = f32_(a.clone()).matmul(f32_(b.clone()));
                let ours = FlexKernels.matmul(a.clone(), b.clone(), 1.0, dtype);
                assert_eq!(ours.dtype(), dtype);
                close(ours, theirs.clone(), tol, &format!("{dtype:?} product, batch {batch}"));
                // scores kept in f32
                let ours = FlexKernels.matmul(a.clone(), b.clone(), 0.5, DType::F32);
                assert_eq!(ours.dtype(), DType::F32);
                close(ours, theirs.clone() * 0.5, 1e-6, &format!("{dtype:?} product into f32, batch {batch}"));
                let ours = FlexKernels.matmul(a.clone(), b.clone(), 1.0, DType::F32);
                close(ours, theirs.clone(), 1e-6, &format!("{dtype:?} unscaled product into f32, batch {batch}"));
                let ours = FlexKernels.matmul_bias(a.clone(), b, bias.clone(), BiasAxis::Columns);
                close(ours, add_bias(theirs, bias.clone().cast(DType::F32), BiasAxis::Columns), tol, &format!("{dtype:?} product + bias, batch {batch}"));
            }
            let a = half(rand([1, 70, 48], 200, 1.0));
            // a linear layer onto its residual (a transposed view)
            let (x, w) = (a.slice([0..1, 0..70, 0..48]).reshape([70, 48]), rand([30, 48], 203, 1.0).cast(dtype));
            let residual = rand([30, 70], 204, 1.0).cast(dtype).transpose();
            let theirs = x.clone().cast(DType::F32).matmul(w.clone().cast(DType::F32).transpose()) + bias.clone().cast(DType::F32).unsqueeze() + residual.clone().cast(DType::F32);
            let ours = FlexKernels.linear_add(x, w, Some(bias), residual);
            assert_eq!(ours.dtype(), dtype);
            close(ours, theirs, tol, &format!("{dtype:?} linear onto a residual"));
            // every convolution path, onto a residual too
            for (i, &(n, ci, h, w, co, k, stride, pad, bias, _)) in conv_cases().iter().enumerate() {
                let x = rand([n, ci, h, w], 70 + i as u64, 2.0).cast(dtype);
                let wt = rand([co, ci, k[0], k[1]], 80 + i as u64, 0.5).cast(dtype);
                let b = bias.then(|| rand([co], 90 + i as u64, 1.0).cast(dtype));
                let up4 = |t: T<4>| t.cast(DType::F32);
                let theirs = burn_conv2d(up4(x.clone()), up4(wt.clone()), b.clone().map(|b| b.cast(DType::F32)), stride, pad);
                let ours = FlexKernels.conv2d(x.clone(), wt.clone(), b.clone(), stride, pad);
                assert_eq!(ours.dtype(), dtype);
                close(ours, theirs.clone(), tol, &format!("{dtype:?} conv2d case {i}"));
                let residual = rand(theirs.dims(), 95 + i as u64, 3.0).cast(dtype);
                let ours = FlexKernels.conv2d_add(x, wt, b, stride, pad, residual.clone());
                close(ours, theirs + up4(residual), tol, &format!("{dtype:?} conv2d onto a residual, case {i}"));
            }
        }
    }

    #[test]
    fn conv2d_matches_burn() {
        use reel_core::kernels::burn_conv2d;
        let cases = conv_cases();
        for (i, &(n, ci, h, w, co, k, stride, pad, bias, path)) in cases.iter().enumerate() {
            let x = rand([n, ci, h, w], 70 + i as u64, 2.0);
            let wt = rand([co, ci, k[0], k[1]], 80 + i as u64, 0.5);
            let b = bias.then(|| rand([co], 90 + i as u64, 1.0));
            assert_eq!(conv_path([n, ci, h, w], co, k, stride, pad), path, "case {i} takes the intended path");
            let ours = FlexKernels.conv2d(x.clone(), wt.clone(), b.clone(), stride, pad);
            let theirs = burn_conv2d(x.clone(), wt.clone(), b.clone(), stride, pad);
            close(ours, theirs.clone(), 2e-6, &format!("conv2d case {i}"));
            // onto a residual (im2col, 1×1 and Winograd outputs alike)
            let residual = rand(theirs.dims(), 95 + i as u64, 3.0);
            let ours = FlexKernels.conv2d_add(x, wt, b, stride, pad, residual.clone());
            close(ours, theirs + residual, 2e-6, &format!("conv2d onto a residual, case {i}"));
        }
    }

    #[test]
    fn wide_winograd_chunks_span_images() {
        use reel_core::kernels::burn_conv2d;
        // chunks of 7 tiles (images of 5×6 tiles: chunks start and end inside images), several
        // transform channel blocks, odd output sizes, padding 1 and 2, bias and residual
        for (i, &(n, ci, h, w, co, pad)) in [(3, 70, 9, 11, 33, 1), (2, 40, 7, 8, 65, 2)].iter().enumerate() {
            let x = rand([n, ci, h, w], 160 + i as u64, 2.0);
            let wt = rand([co, ci, 3, 3], 170 + i as u64, 0.5);
            let b = rand([co], 180 + i as u64, 1.0);
            let theirs = burn_conv2d(x.clone(), wt.clone(), Some(b.clone()), [1, 1], [pad, pad]);
            let [oh, ow] = [theirs.dims()[2], theirs.dims()[3]];
            let residual = rand(theirs.dims(), 190 + i as u64, 3.0);
            for chunk in [7, 1, 1000] {
                let ours = winograd_wide_f32(&prim(x.clone()), &prim(wt.clone()), Some(&prim(b.clone())), [pad, pad], [oh, ow], Some(&prim(residual.clone())), Some(chunk));
                close(wrap(ours), theirs.clone() + residual.clone(), 2e-6, &format!("wide Winograd case {i}, chunks of {chunk}"));
            }
        }
    }

    #[test]
    fn products_match_burn() {
        use reel_core::kernels::{add_bias, linear};
        // (ba, bb, m, k, n): one large product (threads inside gemm), a broadcast weight, many
        // small batches (a batch a task), a tiny one (the calling thread)
        let cases = [(1, 1, 300, 200, 190), (3, 1, 40, 33, 17), (16, 16, 64, 40, 64), (2, 2, 3, 5, 4)];
        for (i, &(ba, bb, m, k, n)) in cases.iter().enumerate() {
            let a = rand([ba, m, k], 100 + i as u64, 1.0);
            // b as a transposed view (k along the contiguous axis), as linear layers pass weights
            let b = rand([bb, n, k], 110 + i as u64, 1.0).swap_dims(1, 2);
            let theirs = a.clone().matmul(b.clone());
            close(FlexKernels.matmul(a.clone(), b.clone(), 1.0, DType::F32), theirs.clone(), 1e-6, &format!("product {i}"));
            close(FlexKernels.matmul(a.clone(), b.clone(), 0.25, DType::F32), theirs.clone() * 0.25, 1e-6, &format!("scaled product {i}"));
            let bias_n = rand([n], 120 + i as u64, 1.0);
            let got = FlexKernels.matmul_bias(a.clone(), b.clone(), bias_n.clone(), BiasAxis::Columns);
            close(got, add_bias(theirs.clone(), bias_n, BiasAxis::Columns), 1e-6, &format!("product + column bias {i}"));
            let bias_m = rand([m], 130 + i as u64, 1.0);
            let got = FlexKernels.matmul_bias(a.clone(), b, bias_m.clone(), BiasAxis::Rows);
            close(got, add_bias(theirs, bias_m, BiasAxis::Rows), 1e-6, &format!("product + row bias {i}"));
        }
        // a linear layer onto its residual, the input and the residual strided views
        let x = rand([40, 24], 140, 1.0).slice([0..40, 4..20]);
        let w = rand([12, 16], 141, 1.0);
        let bias = rand([12], 142, 1.0);
        let residual = rand([12, 40], 143, 1.0).transpose();
        let theirs = linear(&FlexKernels, x.clone(), w.clone(), Some(bias.clone())) + residual.clone();
        close(FlexKernels.linear_add(x.clone(), w.clone(), Some(bias), residual.clone()), theirs, 1e-6, "linear onto a residual");
        let theirs = x.clone().matmul(w.clone().transpose()) + residual.clone();
        close(FlexKernels.linear_add(x, w, None, residual), theirs, 1e-6, "bias-free linear onto a residual");
    }

    #[test]
    fn contiguous_copies_match_burn() {
        // the UNet's permutes (frames ↔ channels ↔ tokens), a sliced view with an offset, a
        // transposed last axis; f32 and f16
        let x = rand([2, 3, 5, 7], 150, 1.0);
        // tiles of the transposing path: a contiguous axis longer than one tile, not a multiple
        let y = rand([2, 37, 3, 19], 151, 1.0);
        let views = [
            x.clone().permute([0, 3, 2, 1]),
            x.clone().swap_dims(1, 2),
            x.clone().slice([0..2, 1..3, 0..5, 2..7]),
            x.clone().swap_dims(2, 3),
            y.clone().permute([0, 3, 2, 1]),
            y.clone().swap_dims(2, 3),
            y.clone().slice([0..2, 1..36, 0..3, 0..19]).permute([2, 3, 0, 1]),
        ];
        for (i, v) in views.into_iter().enumerate() {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let v = v.clone().cast(dtype);
                let theirs = v.clone().into_data();
                let ours = wrap::<4>(FlexKernels.contiguous(prim(v)));
                assert!(ours.clone().into_primitive().tensor().layout().contiguous_offsets().is_some(), "view {i} laid out");
                assert_eq!(ours.into_data(), theirs, "view {i} in {dtype:?}");
            }
        }
    }

    #[test]
    fn nan_is_not_masked() {
        let mut x = rand([1, 4, 8], 20, 1.0).into_data().into_vec::<f32>().unwrap();
        x[3] = f32::NAN;
        let x = T::<3>::from_data(TensorData::new(x, [1, 4, 8]), &Default::default());
        let (w, b) = (rand([4], 21, 1.0), rand([4], 22, 1.0));
        let y = FlexKernels.group_norm(x.clone(), w, b, 2, 1e-5, true).into_data().into_vec::<f32>().unwrap();
        assert!(y[..16].iter().all(|v| v.is_nan()), "the group holding the NaN is NaN");
        let a = FlexKernels.fused_attention(x.clone(), x.clone(), x, 2, false).into_data().into_vec::<f32>().unwrap();
        assert!(a.iter().any(|v| v.is_nan()));
    }
}
