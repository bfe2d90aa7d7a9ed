//! Vendor kernels: a binary can register faster implementations of the heavy operations for one
//! concrete backend (cuBLAS, cuDNN and reel's own CUDA kernels under burn-cuda,
//! `crates/cli/src/vendor/`). With them registered, the layers run on them instead of burn's own
//! kernels: `Linear` on the batched matrix product (with its bias), every convolution on the
//! library's convolution when it has one (symmetric padding) and otherwise as im2col · weight on
//! the product (PyTorch's `conv2d` arithmetic), attention as `softmax(α·q·kᵀ)·v` on the product
//! (the math of `F.scaled_dot_product_attention`'s reference path, softmax in f32, possibly one
//! kernel), and group / layer norm as single kernels when offered. Without a registration each
//! layer runs burn's op as before; every method's default is burn's ops.
//!
//! Library code stays generic over `B: Backend`: it asks [`registered`] by the backend's type
//! at run time (an atomic load when nothing is registered, the CPU case).

use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use burn::tensor::activation::softmax;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{backend::Backend, Bool, DType, Slice, Tensor, TensorPrimitive};

/// Faster heavy operations on one backend.
pub trait Kernels<B: Backend>: Send + Sync + 'static {
    /// `alpha · a · b` for `a (ba, m, k)` and `b (bb, k, n)` → `(max(ba, bb), m, n)` in dtype
    /// `out`, where `ba` and `bb` are equal or one of them is 1 (that operand is shared by every
    /// batch). Operands may be any strided views (transposed, sliced) and have the same float
    /// dtype; `out` is that dtype or f32 (attention scores); products accumulate in f32.
    fn matmul(&self, a: Tensor<B, 3>, b: Tensor<B, 3>, alpha: f32, out: DType) -> Tensor<B, 3>;

    /// `a · b + bias` in `a`'s dtype, the bias (that dtype too) added to every row of the
    /// result (`Columns`: one value per column, a linear layer's) or to every column (`Rows`:
    /// one value per row, a convolution's channels). The default adds it with a burn op after
    /// [`Kernels::matmul`]; a library can start from the bias instead (`beta = 1`).
    fn matmul_bias(&self, a: Tensor<B, 3>, b: Tensor<B, 3>, bias: Tensor<B, 1>, axis: BiasAxis) -> Tensor<B, 3> {
        let dtype = a.dtype();
        add_bias(self.matmul(a, b, 1.0, dtype), bias, axis)
    }

    /// Whether [`Kernels::linear_add`] adds the residual inside the product; without it a
    /// linear layer and the residual add after it are two operations.
    fn has_linear_add(&self) -> bool {
        false
    }

    /// `x (rows, in) · wᵀ + bias + residual (rows, out)` for a linear layer's weight `w (out,
    /// in)`, all of one dtype, rounded once: the transformer blocks' output projections with the
    /// residual stream they add to. Called only when [`Kernels::has_linear_add`]; the default is
    /// [`linear`] and a burn add.
    fn linear_add(&self, x: Tensor<B, 2>, weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>, residual: Tensor<B, 2>) -> Tensor<B, 2> {
        linear(self, x, weight, bias) + residual
    }

    /// Whether [`Kernels::linears`] runs several bias-free projections of one input as one
    /// operation; without it each is its own [`linear`].
    fn has_linears(&self) -> bool {
        false
    }

    /// `x (rows, in)` through the bias-free linear layers `weights[i] (out_i, in)` (PyTorch
    /// layout), their results side by side in one `(rows, Σ out_i)` tensor: attention's q, k, v
    /// projections of one input as one operation, each a strided view of the result. Called
    /// only when [`Kernels::has_linears`]; the default is one product each and a concatenation.
    fn linears(&self, x: Tensor<B, 2>, weights: Vec<Tensor<B, 2>>) -> Tensor<B, 2> {
        Tensor::cat(weights.into_iter().map(|w| linear(self, x.clone(), w, None)).collect(), 1)
    }

    /// Whether [`Kernels::conv2d`] is the library's own; without it convolutions run as im2col
    /// products on [`Kernels::matmul`].
    fn has_conv2d(&self) -> bool {
        false
    }

    /// `F.conv2d(x, weight, bias, stride=stride, padding=pad)`, `x (n, c, h, w)`,
    /// `weight (c_out, c, kh, kw)`, `bias (c_out)`, the same zero padding `pad = [rows, columns]`
    /// on both sides. Called only when [`Kernels::has_conv2d`]; the default is burn's
    /// ([`burn_conv2d`]).
    fn conv2d(&self, x: Tensor<B, 4>, weight: Tensor<B, 4>, bias: Option<Tensor<B, 1>>, stride: [usize; 2], pad: [usize; 2]) -> Tensor<B, 4> {
        burn_conv2d(x, weight, bias, stride, pad)
    }

    /// Whether [`Kernels::contiguous`] lays out strided views itself; without it they stay
    /// views until burn copies them (a reshape of a permuted tensor).
    fn has_contiguous(&self) -> bool {
        false
    }

    /// `x`'s values in row-major order of its shape (a copy only when `x` is a strided view):
    /// the permutes between the UNet's frame, channel and token layouts, before the reshape
    /// that would copy them. Called only when [`Kernels::has_contiguous`] (through
    /// [`contiguous`]); the default returns `x`.
    fn contiguous(&self, x: B::FloatTensorPrimitive) -> B::FloatTensorPrimitive {
        x
    }

    /// Whether [`Kernels::conv2d_add`] adds the residual inside the convolution; without it a
    /// convolution and the residual add after it are two operations.
    fn has_conv2d_add(&self) -> bool {
        false
    }

    /// `F.conv2d(x, weight, bias, stride=stride, padding=pad) + residual` (the residual of the
    /// result's shape and dtype), as [`Kernels::conv2d`]: a resnet block's second convolution
    /// onto its shortcut. Called only when [`Kernels::has_conv2d_add`]; the default is
    /// [`Kernels::conv2d`] and a burn add.
    fn conv2d_add(&self, x: Tensor<B, 4>, weight: Tensor<B, 4>, bias: Option<Tensor<B, 1>>, stride: [usize; 2], pad: [usize; 2], residual: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv2d(x, weight, bias, stride, pad) + residual
    }

    /// Whether [`Kernels::group_norm`] and [`Kernels::layer_norm`] are single kernels of their
    /// own; without it the norms run as burn's ops (about twenty each).
    fn has_norms(&self) -> bool {
        false
    }

    /// `torch.nn.GroupNorm(groups, c, eps)` on `x (n, c, rest)` (any strides) with the affine
    /// `weight` and `bias` `(c)`, all of one float dtype: statistics in f32, the mean and then the
    /// mean square about it; then SiLU when `silu`; the result in that dtype. Called only when
    /// [`Kernels::has_norms`]; the default is burn's ops ([`crate::nn::group_norm_ops`]).
    fn group_norm(&self, x: Tensor<B, 3>, weight: Tensor<B, 1>, bias: Tensor<B, 1>, groups: usize, eps: f64, silu: bool) -> Tensor<B, 3> {
        crate::nn::group_norm_ops(x, weight, bias, groups, eps, silu)
    }

    /// [`Kernels::group_norm`] of `x + plus` with `plus (n, c)` one value per image and channel
    /// (a resnet's time embedding, added before its `norm2`), the sum rounded to the dtype as the
    /// separate add would leave it. Called only when [`Kernels::has_norms`]; the default is that
    /// add and then [`Kernels::group_norm`].
    #[allow(clippy::too_many_arguments)]
    fn group_norm_plus(&self, x: Tensor<B, 3>, plus: Tensor<B, 2>, weight: Tensor<B, 1>, bias: Tensor<B, 1>, groups: usize, eps: f64, silu: bool) -> Tensor<B, 3> {
        let [n, c] = plus.dims();
        self.group_norm(x + plus.reshape([n, c, 1]), weight, bias, groups, eps, silu)
    }

    /// `torch.nn.LayerNorm(dim, eps)` on the rows of `x (rows, dim)` (any strides), as
    /// [`Kernels::group_norm`] with one group per row and no SiLU.
    fn layer_norm(&self, x: Tensor<B, 2>, weight: Tensor<B, 1>, bias: Tensor<B, 1>, eps: f64) -> Tensor<B, 2> {
        crate::nn::layer_norm_ops(x, weight, bias, eps)
    }

    /// `softmax` over the last axis of the f32 attention scores `(batch, sq, sk)`, with the
    /// causal mask (query `i` sees keys `j ≤ i % sq`) when `causal`, in dtype `out`. The
    /// default is burn's ops ([`softmax_ops`]).
    fn softmax(&self, scores: Tensor<B, 3>, causal: bool, out: DType) -> Tensor<B, 3> {
        softmax_ops(scores, causal, out)
    }

    /// Whether [`Kernels::gelu`] is one kernel of its own; without it the exact GELU (the text
    /// encoder's MLP activation) runs as burn's op.
    fn has_gelu(&self) -> bool {
        false
    }

    /// PyTorch's exact (erf) GELU of every value of `x (rows, cols)` (f16, bf16 or f32), computed
    /// in f32 and rounded once to the dtype. Called only when [`Kernels::has_gelu`]; the default is
    /// burn's op.
    fn gelu(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        burn::tensor::activation::gelu(x)
    }

    /// Whether [`Kernels::geglu`] is one kernel of its own; without it GEGLU runs as burn's ops
    /// (a chunk, the GELU, the product).
    fn has_geglu(&self) -> bool {
        false
    }

    /// diffusers' GEGLU after its projection: `x (rows, 2·dim)` (f16, bf16 or f32) split into
    /// `h, gate` → `h * gelu(gate)` `(rows, dim)` with the exact (erf) GELU, computed in f32 and
    /// rounded once to the dtype. Called only when [`Kernels::has_geglu`]; the default is burn's
    /// ops ([`geglu_ops`]).
    fn geglu(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        geglu_ops(x)
    }

    /// Whether [`Kernels::fused_attention`] is one kernel of its own for heads of `head_dim`
    /// values in `dtype`; without it attention runs as two products around the softmax
    /// ([`attention`]).
    fn has_fused_attention(&self, dtype: DType, head_dim: usize) -> bool {
        let _ = (dtype, head_dim);
        false
    }

    /// `F.scaled_dot_product_attention(q, k, v, is_causal=causal)` for every head, on the token
    /// layout the projections give: `q (b, sq, heads·d)`, `k`, `v (b, sk, heads·d)` →
    /// `(b, sq, heads·d)`, head `h` being values `h·d .. (h+1)·d` of each token (diffusers'
    /// `view(b, -1, heads, d).transpose(1, 2)` and back), so no head split or merge is copied.
    /// Called only when [`Kernels::has_fused_attention`]; the default splits the heads and runs
    /// burn's ops ([`crate::blocks::attention_by_heads`]).
    fn fused_attention(&self, q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>, heads: usize, causal: bool) -> Tensor<B, 3> {
        crate::blocks::attention_by_heads(q, k, v, heads, causal)
    }

    /// A short name for logs and benchmark reports (`cublas`).
    fn name(&self) -> &'static str;
}

/// [`Kernels::softmax`] in burn's ops: the masked scores set to -inf, softmax in f32, cast.
pub fn softmax_ops<B: Backend>(scores: Tensor<B, 3>, causal: bool, out: DType) -> Tensor<B, 3> {
    let [_, sq, sk] = scores.dims();
    let scores = if causal {
        let mask = Tensor::<B, 2, Bool>::tril_mask([sq, sk], 0, &scores.device()).unsqueeze::<3>();
        scores.mask_fill(mask, f32::NEG_INFINITY)
    } else {
        scores
    };
    let p = softmax(scores, 2);
    if out == DType::F32 {
        p
    } else {
        p.cast(out)
    }
}

/// GEGLU after its projection in burn's ops: `h * gelu(gate)` of the two halves of the last axis.
pub fn geglu_ops<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let mut halves = x.chunk(2, D - 1).into_iter();
    let (h, gate) = (halves.next().unwrap(), halves.next().unwrap());
    h * burn::tensor::activation::gelu(gate)
}

/// Where [`Kernels::matmul_bias`] adds its bias in a `(batch, m, n)` result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasAxis {
    /// One value per column `n` (a linear layer's outputs).
    Columns,
    /// One value per row `m` (a convolution's output channels).
    Rows,
}

/// `y + bias` along `axis` of a `(batch, m, n)` product, as a burn op.
pub fn add_bias<B: Backend>(y: Tensor<B, 3>, bias: Tensor<B, 1>, axis: BiasAxis) -> Tensor<B, 3> {
    match axis {
        BiasAxis::Columns => y + bias.unsqueeze::<3>(),
        BiasAxis::Rows => {
            let m = bias.dims()[0];
            y + bias.reshape([1, m, 1])
        }
    }
}

/// burn's `conv2d` with the signature of [`Kernels::conv2d`] (symmetric padding).
pub fn burn_conv2d<B: Backend>(x: Tensor<B, 4>, weight: Tensor<B, 4>, bias: Option<Tensor<B, 1>>, stride: [usize; 2], pad: [usize; 2]) -> Tensor<B, 4> {
    burn::tensor::module::conv2d(x, weight, bias, ConvOptions::new(stride, pad, [1, 1], 1))
}

type Entry = (TypeId, Box<dyn Any + Send + Sync>);

static ANY: AtomicBool = AtomicBool::new(false);
static REGISTRY: RwLock<Vec<Entry>> = RwLock::new(Vec::new());

/// Makes `kernel` the kernels of every layer running on backend `B` (replacing an earlier
/// registration for `B`).
pub fn register<B: Backend>(kernel: Arc<dyn Kernels<B>>) {
    let mut registry = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    registry.retain(|(id, _)| *id != TypeId::of::<B>());
    registry.push((TypeId::of::<B>(), Box::new(kernel)));
    ANY.store(true, Ordering::Release);
}

/// The kernels registered for `B`, if any.
pub fn registered<B: Backend>() -> Option<Arc<dyn Kernels<B>>> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    let registry = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    registry
        .iter()
        .find(|(id, _)| *id == TypeId::of::<B>())
        .and_then(|(_, k)| k.downcast_ref::<Arc<dyn Kernels<B>>>())
        .cloned()
}

/// The kernels registered for `B` when they offer an operation (`offers`, e.g.
/// [`Kernels::has_geglu`]) and `dtype` is one their own kernels take (f16, bf16, f32).
pub fn offering<B: Backend>(dtype: DType, offers: impl Fn(&dyn Kernels<B>) -> bool) -> Option<Arc<dyn Kernels<B>>> {
    if !matches!(dtype, DType::F16 | DType::BF16 | DType::F32) {
        return None;
    }
    registered::<B>().filter(|k| offers(&**k))
}

/// `x` laid out row-major by the registered kernels when they do that ([`Kernels::contiguous`]),
/// else `x` unchanged (burn copies a strided view when an operation needs it).
pub fn contiguous<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let Some(k) = offering::<B>(x.dtype(), |k| k.has_contiguous()) else {
        return x;
    };
    match x.into_primitive() {
        TensorPrimitive::Float(t) => Tensor::from_primitive(TensorPrimitive::Float(k.contiguous(t))),
        q => Tensor::from_primitive(q),
    }
}

/// The kernels registered for `B` when they have norms ([`Kernels::has_norms`]) and the
/// operands share one of the dtypes they take (f16, bf16, f32).
pub fn with_norms<B: Backend>(dtypes: &[DType]) -> Option<Arc<dyn Kernels<B>>> {
    let first = *dtypes.first()?;
    if !dtypes.iter().all(|d| *d == first) {
        return None;
    }
    offering(first, |k| k.has_norms())
}

/// Intermediate tensors (im2col columns, attention scores) are computed in pieces of at most
/// this many bytes by default, so the memory a layer needs stays bounded whatever the batch.
pub const CHUNK_BYTES: usize = 256 << 20;

static CHUNK: AtomicUsize = AtomicUsize::new(CHUNK_BYTES);

/// Sets the piece size of the intermediate tensors (default [`CHUNK_BYTES`]); smaller pieces
/// mean less memory and more, smaller products.
pub fn set_chunk_bytes(bytes: usize) {
    CHUNK.store(bytes.max(1), Ordering::Relaxed);
}

/// How many of `n` items fit in one piece when each needs `bytes_each` (at least 1).
fn chunk_len(n: usize, bytes_each: usize) -> usize {
    (CHUNK.load(Ordering::Relaxed) / bytes_each.max(1)).clamp(1, n.max(1))
}

/// `x · weightᵀ + bias` over the last axis, `weight [out, in]` (PyTorch layout): the product on
/// `kernel` (the transposed weight is a strided view, no copy).
pub fn linear<B: Backend, K: Kernels<B> + ?Sized, const D: usize>(
    kernel: &K,
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let mut dims = x.dims();
    let [d_out, d_in] = weight.dims();
    let rows = dims[..D - 1].iter().product();
    let dtype = x.dtype();
    // The batch axis first, then the transpose: both views. (A transposed tensor's unsqueeze is a
    // reshape of a non-contiguous tensor, which burn-flex makes with a copy: the whole weight,
    // every call.)
    let (x, weight) = (x.reshape([1, rows, d_in]), weight.unsqueeze::<3>().swap_dims(1, 2));
    let y = match bias {
        Some(b) => kernel.matmul_bias(x, weight, b, BiasAxis::Columns),
        None => kernel.matmul(x, weight, 1.0, dtype),
    };
    dims[D - 1] = d_out;
    y.reshape(dims)
}

/// `conv2d(x (n, c, h, w), weight (c_out, c, kh, kw))` with stride `stride` and zero padding
/// `[top, bottom, left, right]`: on the library's convolution when `kernel` has one and the
/// padding is symmetric, else as a product of the weight `(c_out, c·kh·kw)` with the im2col
/// columns `(c·kh·kw, oh·ow)` of each image. The columns are the `kh·kw` strided slices of the
/// padded input stacked in PyTorch's weight order (channel, then row, then column of the
/// kernel); a 1×1 convolution without stride or padding needs none. Images are taken in groups
/// whose columns fit one piece ([`set_chunk_bytes`]).
pub fn conv2d<B: Backend>(
    kernel: &dyn Kernels<B>,
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: [usize; 2],
    pad: [usize; 4],
) -> Tensor<B, 4> {
    let [top, bottom, left, right] = pad;
    if kernel.has_conv2d() && top == bottom && left == right {
        return kernel.conv2d(x, weight, bias, stride, [top, left]);
    }
    let [n, c, h, w] = x.dims();
    let [c_out, _, kh, kw] = weight.dims();
    let (hp, wp) = (h + top + bottom, w + left + right);
    let (oh, ow) = ((hp - kh) / stride[0] + 1, (wp - kw) / stride[1] + 1);
    let taps = kh * kw;
    let weight = weight.reshape([1, c_out, c * taps]);
    let direct = taps == 1 && stride == [1, 1] && pad == [0; 4];
    let elem_dtype = x.dtype();
    let elem = elem_dtype.size();
    let group = if direct { n } else { chunk_len(n, c * taps * oh * ow * elem) };
    let columns = |x: Tensor<B, 4>| -> Tensor<B, 3> {
        let b = x.dims()[0];
        if direct {
            return x.reshape([b, c, h * w]);
        }
        let x = crate::nn::zero_pad(x, pad);
        let mut cols = Vec::with_capacity(taps);
        for dy in 0..kh {
            for dx in 0..kw {
                let rows = Slice::new(dy as isize, Some((dy + (oh - 1) * stride[0] + 1) as isize), stride[0] as isize);
                let cols_ = Slice::new(dx as isize, Some((dx + (ow - 1) * stride[1] + 1) as isize), stride[1] as isize);
                cols.push(x.clone().slice([Slice::from(0..b), Slice::from(0..c), rows, cols_]));
            }
        }
        Tensor::stack::<5>(cols, 2).reshape([b, c * taps, oh * ow])
    };
    let outs: Vec<Tensor<B, 3>> = (0..n)
        .step_by(group)
        .map(|i| {
            let part = if group == n { x.clone() } else { x.clone().narrow(0, i, group.min(n - i)) };
            match &bias {
                Some(b) => kernel.matmul_bias(weight.clone(), columns(part), b.clone(), BiasAxis::Rows),
                None => kernel.matmul(weight.clone(), columns(part), 1.0, elem_dtype),
            }
        })
        .collect();
    let y = if outs.len() == 1 { outs.into_iter().next().unwrap() } else { Tensor::cat(outs, 0) };
    y.reshape([n, c_out, oh, ow])
}

/// `softmax(q·kᵀ/√d [+ causal mask])·v` over `(b, heads, seq, d)` tensors, as
/// `F.scaled_dot_product_attention(q, k, v, is_causal=causal)`: both products on `kernel` (the
/// scale applied inside the first, whose f32 output is the scores), the softmax in f32. Batch·heads are taken in groups whose
/// f32 scores fit one piece ([`set_chunk_bytes`]).
pub fn attention<B: Backend>(
    kernel: &dyn Kernels<B>,
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    causal: bool,
) -> Tensor<B, 4> {
    let [b, h, sq, d] = q.dims();
    let [_, _, sk, dv] = v.dims();
    let dtype = q.dtype();
    let bh = b * h;
    let (q, k, v) = (q.reshape([bh, sq, d]), k.reshape([bh, sk, d]), v.reshape([bh, sk, dv]));
    let alpha = 1.0 / (d as f32).sqrt();
    let group = chunk_len(bh, sq * sk * 4);
    let outs: Vec<Tensor<B, 3>> = (0..bh)
        .step_by(group)
        .map(|i| {
            let len = group.min(bh - i);
            let (q, k, v) = if group >= bh {
                (q.clone(), k.clone(), v.clone())
            } else {
                (q.clone().narrow(0, i, len), k.clone().narrow(0, i, len), v.clone().narrow(0, i, len))
            };
            // Scores straight out of the product in f32 (as SDPA keeps them): no rounding to the
            // model's dtype and no cast pass over the largest tensor of the layer.
            let scores = kernel.matmul(q, k.swap_dims(1, 2), alpha, DType::F32);
            kernel.matmul(kernel.softmax(scores, causal, dtype), v, 1.0, dtype)
        })
        .collect();
    let y = if outs.len() == 1 { outs.into_iter().next().unwrap() } else { Tensor::cat(outs, 0) };
    y.reshape([b, h, sq, dv])
}
