//! PyTorch-layout building blocks with diffusers' parameter names.
//!
//! Each layer stores its parameters exactly as `torch.nn` does (`Linear.weight` is
//! `[out, in]`, norms have `weight`/`bias`), so a module tree built from these has the same
//! parameter paths and shapes as the diffusers / transformers model, and
//! [`crate::weights::Weights::load_module`] needs no remapping. Parameters are created lazily
//! (no allocation until loaded). Normalisation statistics are computed in f32 even when the
//! model runs in f16/bf16 (large groups overflow f16 otherwise).

use burn::module::{Module, Param, ParamId};
use burn::tensor::activation;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{backend::Backend, DType, Int, Tensor};

use crate::profile::Op;

/// A parameter of the given shape, allocated only if used before loading.
pub fn lazy_param<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Param<Tensor<B, D>> {
    Param::uninitialized(
        ParamId::new(),
        move |device, _| Tensor::zeros(shape, device),
        device.clone(),
        false,
        shape.into(),
    )
}

/// `torch.nn.Linear`: `weight [out, in]`, optional `bias [out]`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Linear<B> {
    pub fn new(d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Self {
        Linear {
            weight: lazy_param([d_out, d_in], device),
            bias: bias.then(|| lazy_param([d_out], device)),
        }
    }

    /// Records this layer applied to `rows` rows for `reel bench --ops`.
    fn record(&self, rows: usize) {
        crate::profile::record(|| {
            let [d_out, d_in] = self.weight.dims();
            Op::Linear { rows, d_in, d_out, bias: self.bias.is_some() }
        });
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.record(x.dims()[..D - 1].iter().product());
        let bias = self.bias.as_ref().map(|b| b.val());
        match crate::kernels::registered::<B>() {
            Some(k) => crate::kernels::linear(&*k, x, self.weight.val(), bias),
            None => burn::tensor::module::linear(x, self.weight.val().transpose(), bias),
        }
    }

    /// `forward(x) + residual` (same shape): one operation when the registered kernels add the
    /// residual inside the product ([`crate::kernels::Kernels::linear_add`]).
    pub fn forward_add<const D: usize>(&self, x: Tensor<B, D>, residual: Tensor<B, D>) -> Tensor<B, D> {
        let kernel = match crate::kernels::registered::<B>().filter(|k| k.has_linear_add()) {
            Some(k) if residual.dtype() == x.dtype() => k,
            _ => return self.forward(x) + residual,
        };
        let [d_out, d_in] = self.weight.dims();
        let rows = x.dims()[..D - 1].iter().product();
        self.record(rows);
        let out_dims = residual.dims();
        let y = kernel.linear_add(x.reshape([rows, d_in]), self.weight.val(), self.bias.as_ref().map(|b| b.val()), residual.reshape([rows, d_out]));
        y.reshape(out_dims)
    }
}

/// Several bias-free linear layers applied to the same input `(b, s, d_in)` as one operation of
/// the registered kernels ([`crate::kernels::Kernels::linears`]): each result `(b, s, out_i)` a
/// view of one `(b, s, Σ out_i)` tensor. `None` (the caller applies each layer) without such
/// kernels or when a layer has a bias.
pub fn linears<B: Backend>(x: &Tensor<B, 3>, layers: &[&Linear<B>]) -> Option<Vec<Tensor<B, 3>>> {
    let kernel = crate::kernels::registered::<B>().filter(|k| k.has_linears())?;
    if layers.iter().any(|l| l.bias.is_some()) {
        return None;
    }
    let [b, s, d_in] = x.dims();
    let outs: Vec<usize> = layers.iter().map(|l| l.weight.dims()[0]).collect();
    layers.iter().for_each(|l| l.record(b * s));
    let total = outs.iter().sum();
    let y = kernel.linears(x.clone().reshape([b * s, d_in]), layers.iter().map(|l| l.weight.val()).collect()).reshape([b, s, total]);
    let mut at = 0;
    Some(
        outs.into_iter()
            .map(|d_out| {
                at += d_out;
                y.clone().narrow(2, at - d_out, d_out)
            })
            .collect(),
    )
}

/// `torch.nn.Conv2d` (square kernel, symmetric padding, no dilation).
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    pub weight: Param<Tensor<B, 4>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub stride: usize,
    pub padding: usize,
}

impl<B: Backend> Conv2d<B> {
    pub fn new(c_in: usize, c_out: usize, kernel: usize, stride: usize, padding: usize, device: &B::Device) -> Self {
        Conv2d {
            weight: lazy_param([c_out, c_in, kernel, kernel], device),
            bias: Some(lazy_param([c_out], device)),
            stride,
            padding,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_padded(x, [self.padding; 4])
    }

    /// Records this convolution applied to `x` with padding `pad` for `reel bench --ops`.
    fn record(&self, x: &Tensor<B, 4>, pad: [usize; 4]) {
        crate::profile::record(|| {
            let [n, c_in, h, w] = x.dims();
            let [c_out, _, kh, kw] = self.weight.dims();
            Op::Conv2d { n, c_in, h, w, c_out, kh, kw, stride: self.stride, pad }
        });
    }

    /// With explicit padding `[top, bottom, left, right]` (diffusers' `Downsample2D` pads
    /// `(0, 1, 0, 1)` before a padding-0 convolution).
    pub fn forward_padded(&self, x: Tensor<B, 4>, pad: [usize; 4]) -> Tensor<B, 4> {
        self.record(&x, pad);
        conv2d(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()), [self.stride; 2], pad)
    }

    /// `forward(x) + residual` (the result's shape): one operation when the registered kernels
    /// add the residual inside the convolution ([`crate::kernels::Kernels::conv2d_add`]).
    pub fn forward_add(&self, x: Tensor<B, 4>, residual: Tensor<B, 4>) -> Tensor<B, 4> {
        let p = self.padding;
        self.record(&x, [p; 4]);
        conv2d_add(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()), [self.stride; 2], [p, p], residual)
    }
}

/// `conv2d(x, weight, bias, stride, [pad[0], pad[0], pad[1], pad[1]]) + residual`: one
/// operation when the registered kernels add the residual inside the convolution
/// ([`crate::kernels::Kernels::conv2d_add`]), else the convolution and an add.
pub fn conv2d_add<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: [usize; 2],
    pad: [usize; 2],
    residual: Tensor<B, 4>,
) -> Tensor<B, 4> {
    match crate::kernels::offering::<B>(x.dtype(), |k| k.has_conv2d_add()) {
        Some(k) if residual.dtype() == x.dtype() && weight.dtype() == x.dtype() => k.conv2d_add(x, weight, bias, stride, pad, residual),
        _ => conv2d(x, weight, bias, stride, [pad[0], pad[0], pad[1], pad[1]]) + residual,
    }
}

/// `F.conv2d(x, weight, bias, stride, padding)` with zero padding `[top, bottom, left, right]`
/// (asymmetric allowed): on the registered [`crate::kernels`] when there are any (the library's
/// convolution, or im2col on its matrix product), else burn's convolution.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: [usize; 2],
    pad: [usize; 4],
) -> Tensor<B, 4> {
    if let Some(k) = crate::kernels::registered::<B>() {
        return crate::kernels::conv2d(&*k, x, weight, bias, stride, pad);
    }
    let [top, bottom, left, right] = pad;
    if top == bottom && left == right {
        return burn::tensor::module::conv2d(x, weight, bias, ConvOptions::new(stride, [top, left], [1, 1], 1));
    }
    // Asymmetric: zero-pad here. burn 0.21's own asymmetric path pads with a tensor in the
    // default float dtype, which breaks f16/bf16 inputs (a dtype mismatch).
    burn::tensor::module::conv2d(zero_pad(x, pad), weight, bias, ConvOptions::new(stride, [0, 0], [1, 1], 1))
}

/// `(n, c, h, w)` zero-padded by `[top, bottom, left, right]` in its own dtype (`F.pad`).
pub fn zero_pad<B: Backend>(x: Tensor<B, 4>, pad: [usize; 4]) -> Tensor<B, 4> {
    if pad == [0; 4] {
        return x;
    }
    let [top, bottom, left, right] = pad;
    let [n, c, h, w] = x.dims();
    Tensor::<B, 4>::zeros([n, c, h + top + bottom, w + left + right], (&x.device(), x.dtype()))
        .slice_assign([0..n, 0..c, top..top + h, left..left + w], x)
}

/// Returns `x` in f32 (a no-op for f32 tensors) and the dtype to go back to.
fn to_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> (Tensor<B, D>, DType) {
    let dtype = x.dtype();
    if dtype == DType::F32 || dtype == DType::F64 {
        (x, dtype)
    } else {
        (x.cast(DType::F32), dtype)
    }
}

/// `x` in `dtype`: a cast only where it differs (burn-ndarray cannot cast to f16 at all, so a
/// no-op cast must not reach it).
pub fn to_dtype<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype {
        x
    } else {
        x.cast(dtype)
    }
}

/// `torch.nn.GroupNorm` over `(n, c, *)`, affine, statistics in f32.
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub num_groups: usize,
    pub eps: f64,
}

impl<B: Backend> GroupNorm<B> {
    pub fn new(num_groups: usize, channels: usize, eps: f64, device: &B::Device) -> Self {
        GroupNorm {
            weight: lazy_param([channels], device),
            bias: lazy_param([channels], device),
            num_groups,
            eps,
        }
    }

    /// Normalises a `(n, c, *rest)` tensor: each group spans its channels and all of `rest`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.apply(x, false)
    }

    /// `silu(self.forward(x))`, as one kernel where the registered kernels have norms.
    pub fn forward_silu<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.apply(x, true)
    }

    /// `act(self.forward(x))`, SiLU through [`GroupNorm::forward_silu`].
    pub fn forward_act<const D: usize>(&self, x: Tensor<B, D>, act: Activation) -> Tensor<B, D> {
        match act {
            Activation::Silu => self.forward_silu(x),
            act => act.forward(self.forward(x)),
        }
    }

    /// `act(self.forward(x + plus))` with `plus (n, c)` one value per image and channel,
    /// broadcast over the rest (a resnet's time embedding before its `norm2`): the add inside the
    /// norm's kernel where the registered kernels have norms ([`Kernels::group_norm_plus`]), so
    /// the sum is never written out.
    ///
    /// [`Kernels::group_norm_plus`]: crate::kernels::Kernels::group_norm_plus
    pub fn forward_act_plus<const D: usize>(&self, x: Tensor<B, D>, plus: Tensor<B, 2>, act: Activation) -> Tensor<B, D> {
        let silu = act == Activation::Silu;
        let y = self.apply_plus(x, Some(plus), silu);
        if silu {
            y
        } else {
            act.forward(y)
        }
    }

    fn apply<const D: usize>(&self, x: Tensor<B, D>, silu: bool) -> Tensor<B, D> {
        self.apply_plus(x, None, silu)
    }

    fn apply_plus<const D: usize>(&self, x: Tensor<B, D>, plus: Option<Tensor<B, 2>>, silu: bool) -> Tensor<B, D> {
        let dims = x.dims();
        let (n, c) = (dims[0], dims[1]);
        let rest: usize = dims[2..].iter().product();
        crate::profile::record(|| Op::GroupNorm { n, c, rest, groups: self.num_groups });
        let x = x.reshape([n, c, rest]);
        let (w, b) = (self.weight.val(), self.bias.val());
        let dtypes: Vec<DType> = [x.dtype(), w.dtype(), b.dtype()].into_iter().chain(plus.as_ref().map(|p| p.dtype())).collect();
        let y = match (crate::kernels::with_norms::<B>(&dtypes), plus) {
            (Some(k), Some(p)) => k.group_norm_plus(x, p, w, b, self.num_groups, self.eps, silu),
            (Some(k), None) => k.group_norm(x, w, b, self.num_groups, self.eps, silu),
            (None, Some(p)) => group_norm_ops(x + p.reshape([n, c, 1]), w, b, self.num_groups, self.eps, silu),
            (None, None) => group_norm_ops(x, w, b, self.num_groups, self.eps, silu),
        };
        y.reshape(dims)
    }
}

/// [`GroupNorm`] in burn's tensor ops: `x (n, c, rest)`, affine `weight`, `bias` `(c)`,
/// statistics in f32 (two passes: the mean, then the mean square about it), then SiLU when
/// `silu`; the result in `x`'s dtype.
pub fn group_norm_ops<B: Backend>(x: Tensor<B, 3>, weight: Tensor<B, 1>, bias: Tensor<B, 1>, groups: usize, eps: f64, silu: bool) -> Tensor<B, 3> {
    let [n, c, rest] = x.dims();
    let (x, dtype) = to_f32(x);
    let x = standardize_last(x.reshape([n, groups, (c / groups) * rest]), eps).reshape([n, c, rest]);
    // Weight and bias as (n, c, 1): broadcast along the last axis only. burn-flex runs a
    // (1, c, 1) operand (broadcast on two axes) ~30× slower; for every backend the repeat
    // costs n·c values.
    let w = to_f32(weight).0.reshape([1, c, 1]).repeat_dim(0, n);
    let b = to_f32(bias).0.reshape([1, c, 1]).repeat_dim(0, n);
    let y = to_dtype(x * w + b, dtype);
    if silu {
        activation::silu(y)
    } else {
        y
    }
}

/// `torch.nn.LayerNorm` over the last dimension, statistics in f32.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    pub fn new(dim: usize, eps: f64, device: &B::Device) -> Self {
        LayerNorm { weight: lazy_param([dim], device), bias: lazy_param([dim], device), eps }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        crate::profile::record(|| {
            let dims = x.dims();
            Op::LayerNorm { rows: dims[..D - 1].iter().product(), dim: dims[D - 1] }
        });
        let dims = x.dims();
        let (w, b) = (self.weight.val(), self.bias.val());
        match crate::kernels::with_norms::<B>(&[x.dtype(), w.dtype(), b.dtype()]) {
            Some(k) => {
                let x = x.reshape([dims[..D - 1].iter().product::<usize>(), dims[D - 1]]);
                k.layer_norm(x, w, b, self.eps).reshape(dims)
            }
            None => layer_norm_ops(x, w, b, self.eps),
        }
    }
}

/// [`LayerNorm`] in burn's tensor ops over the last axis of `x`, statistics in f32; the result
/// in `x`'s dtype.
pub fn layer_norm_ops<B: Backend, const D: usize>(x: Tensor<B, D>, weight: Tensor<B, 1>, bias: Tensor<B, 1>, eps: f64) -> Tensor<B, D> {
    let (x, dtype) = to_f32(x);
    let x = standardize_last(x, eps);
    let w = to_f32(weight).0.unsqueeze::<D>();
    let b = to_f32(bias).0.unsqueeze::<D>();
    to_dtype(x * w + b, dtype)
}

/// `(x - mean) / sqrt(var + eps)` over the last axis (two passes: the mean, then the mean
/// square about it), the statistics of both norms.
fn standardize_last<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    let mean = x.clone().mean_dim(D - 1);
    let centered = x - mean;
    let var = centered.clone().square().mean_dim(D - 1);
    centered / (var + eps).sqrt()
}

/// `torch.nn.Embedding`: `weight [num, dim]`.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embedding<B> {
    pub fn new(num: usize, dim: usize, device: &B::Device) -> Self {
        Embedding { weight: lazy_param([num, dim], device) }
    }

    /// `(b, s)` ids → `(b, s, dim)`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        burn::tensor::module::embedding(self.weight.val(), ids)
    }
}

/// Activation functions by the names configs use (`hidden_act`, `act_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU, `torch.nn.functional.gelu`.
    Gelu,
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Silu,
    Relu,
}

impl Activation {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Activation::Gelu,
            "quick_gelu" => Activation::QuickGelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "silu" | "swish" => Activation::Silu,
            "relu" => Activation::Relu,
            _ => return None,
        })
    }

    pub fn forward<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Gelu => match crate::kernels::offering::<B>(x.dtype(), |k| k.has_gelu()) {
                Some(k) => {
                    let dims = x.dims();
                    let rows = dims[..D - 1].iter().product();
                    k.gelu(x.reshape([rows, dims[D - 1]])).reshape(dims)
                }
                None => activation::gelu(x),
            },
            Activation::QuickGelu => x.clone() * activation::sigmoid(x * 1.702),
            Activation::GeluTanh => activation::gelu_approximate(x),
            Activation::Silu => activation::silu(x),
            Activation::Relu => activation::relu(x),
        }
    }
}
