//! diffusers' `Attention` run the way `AttnProcessor2_0` runs it, mirroring
//! `diffusers/models/attention_processor.py` (`class Attention`, `class AttnProcessor2_0`).
//!
//! `(b, c, h, w)` inputs are flattened to `(b, h·w, c)` tokens and back; `group_norm` (when
//! built with `norm_num_groups`) normalises the channels; `to_q`, `to_k`, `to_v` project, heads
//! split as `(b, heads, seq, head_dim)`; [`scaled_dot_product_attention`] (softmax scale
//! `1/sqrt(head_dim)`, as `F.scaled_dot_product_attention` with no `scale`); `to_out.0`
//! projects back (`to_out.1` is dropout, the identity here); then the optional residual and
//! `/ rescale_output_factor`.
//!
//! Not carried over (unused by the VAE and the text-to-video UNets' attention): attention masks,
//! `cross_attention_norm`, `spatial_norm`, `qk_norm`, added K/V projections, `kv_heads`,
//! `only_cross_attention`, `scale_qk=False`. `upcast_attention` / `upcast_softmax` do not change
//! `AttnProcessor2_0` either (SDPA ignores them).

use burn::module::Module;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{backend::Backend, DType, Tensor, TensorData};

use crate::nn::{linears, GroupNorm, Linear};

/// The constructor arguments of diffusers' `Attention` that reel uses, defaults from [`Self::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionConfig {
    pub query_dim: usize,
    /// `None`: self-attention (`query_dim`).
    pub cross_attention_dim: Option<usize>,
    pub heads: usize,
    pub dim_head: usize,
    /// Bias on `to_q`, `to_k`, `to_v`.
    pub bias: bool,
    /// Bias on `to_out.0`.
    pub out_bias: bool,
    /// `Some(groups)`: a `group_norm` over the channels before the projections.
    pub norm_num_groups: Option<usize>,
    /// The `group_norm` epsilon.
    pub eps: f64,
    pub rescale_output_factor: f64,
    pub residual_connection: bool,
    /// `None`: `query_dim`. With it, `heads = out_dim / dim_head` (as diffusers).
    pub out_dim: Option<usize>,
}

impl AttentionConfig {
    /// diffusers' defaults: `heads=8, dim_head=64, bias=False, out_bias=True, eps=1e-5`,
    /// no group norm, no residual, `rescale_output_factor=1.0`.
    pub fn new(query_dim: usize) -> Self {
        AttentionConfig {
            query_dim,
            cross_attention_dim: None,
            heads: 8,
            dim_head: 64,
            bias: false,
            out_bias: true,
            norm_num_groups: None,
            eps: 1e-5,
            rescale_output_factor: 1.0,
            residual_connection: false,
            out_dim: None,
        }
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        let inner_dim = self.out_dim.unwrap_or(self.dim_head * self.heads);
        let heads = match self.out_dim {
            Some(out_dim) => out_dim / self.dim_head,
            None => self.heads,
        };
        let out_dim = self.out_dim.unwrap_or(self.query_dim);
        let kv_dim = self.cross_attention_dim.unwrap_or(self.query_dim);
        Attention {
            group_norm: self.norm_num_groups.map(|g| GroupNorm::new(g, self.query_dim, self.eps, device)),
            to_q: Linear::new(self.query_dim, inner_dim, self.bias, device),
            to_k: Linear::new(kv_dim, inner_dim, self.bias, device),
            to_v: Linear::new(kv_dim, inner_dim, self.bias, device),
            to_out: vec![Linear::new(inner_dim, out_dim, self.out_bias, device)],
            heads,
            rescale_output_factor: self.rescale_output_factor,
            residual_connection: self.residual_connection,
        }
    }
}

/// diffusers' `Attention` (parameters `group_norm`, `to_q`, `to_k`, `to_v`, `to_out.0`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub group_norm: Option<GroupNorm<B>>,
    pub to_q: Linear<B>,
    pub to_k: Linear<B>,
    pub to_v: Linear<B>,
    pub to_out: Vec<Linear<B>>,
    pub heads: usize,
    pub rescale_output_factor: f64,
    pub residual_connection: bool,
}

impl<B: Backend> Attention<B> {
    /// Tokens `(b, seq, query_dim)`, optional context `(b, seq_kv, cross_attention_dim)` (self-
    /// attention when `None`) → `(b, seq, out_dim)`.
    pub fn forward(&self, hidden_states: Tensor<B, 3>, encoder_hidden_states: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let residual = hidden_states.clone();
        let out = self.attend(hidden_states, encoder_hidden_states);
        self.finish(out, residual)
    }

    /// `forward(hidden_states, encoder_hidden_states) + residual` with the residual added in
    /// `to_out.0`'s product ([`Linear::forward_add`]): the transformer blocks' attentions (no
    /// residual connection or rescaling of their own).
    pub fn forward_add(&self, hidden_states: Tensor<B, 3>, encoder_hidden_states: Option<Tensor<B, 3>>, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        if self.residual_connection || self.rescale_output_factor != 1.0 {
            return self.forward(hidden_states, encoder_hidden_states) + residual;
        }
        let out = self.attention_heads(hidden_states, encoder_hidden_states);
        self.to_out[0].forward_add(out, residual)
    }

    /// A feature map `(b, c, h, w)` attended over its `h·w` positions (AttnProcessor2_0's
    /// `input_ndim == 4` path) → `(b, out_dim, h, w)`.
    pub fn forward_spatial(&self, hidden_states: Tensor<B, 4>, encoder_hidden_states: Option<Tensor<B, 3>>) -> Tensor<B, 4> {
        let [b, c, h, w] = hidden_states.dims();
        let residual = hidden_states.clone();
        let tokens = hidden_states.reshape([b, c, h * w]).swap_dims(1, 2);
        let out = self.attend(tokens, encoder_hidden_states);
        let c_out = out.dims()[2];
        let out = out.swap_dims(1, 2).reshape([b, c_out, h, w]);
        self.finish(out, residual)
    }

    /// group_norm → projections → attention → `to_out.0`, on tokens `(b, seq, c)`.
    fn attend(&self, hidden_states: Tensor<B, 3>, encoder_hidden_states: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        self.to_out[0].forward(self.attention_heads(hidden_states, encoder_hidden_states))
    }

    /// group_norm → projections → attention, on tokens `(b, seq, c)` (before `to_out.0`).
    fn attention_heads(&self, hidden_states: Tensor<B, 3>, encoder_hidden_states: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let hidden_states = match &self.group_norm {
            Some(norm) => norm.forward(hidden_states.swap_dims(1, 2)).swap_dims(1, 2),
            None => hidden_states,
        };
        // With the registered kernels' multi-projection, the projections of one input are one
        // product (q, k, v for self-attention; k, v for cross-attention), each a view of it.
        let (query, key, value) = match &encoder_hidden_states {
            None => match linears(&hidden_states, &[&self.to_q, &self.to_k, &self.to_v]).map(<[_; 3]>::try_from) {
                Some(Ok([q, k, v])) => (q, k, v),
                _ => (self.to_q.forward(hidden_states.clone()), self.to_k.forward(hidden_states.clone()), self.to_v.forward(hidden_states)),
            },
            Some(context) => {
                let query = self.to_q.forward(hidden_states);
                match linears(context, &[&self.to_k, &self.to_v]).map(<[_; 2]>::try_from) {
                    Some(Ok([k, v])) => (query, k, v),
                    _ => (query, self.to_k.forward(context.clone()), self.to_v.forward(context.clone())),
                }
            }
        };

        multi_head_attention(query, key, value, self.heads, false)
    }

    fn finish<const D: usize>(&self, out: Tensor<B, D>, residual: Tensor<B, D>) -> Tensor<B, D> {
        let out = if self.residual_connection { out + residual } else { out };
        if self.rescale_output_factor == 1.0 {
            out
        } else {
            out / self.rescale_output_factor
        }
    }
}

/// Attention of `heads` heads on the token layout the projections give: `q (b, sq, heads·d)`,
/// `k`, `v (b, sk, heads·d)` → `(b, sq, heads·d)`, as AttnProcessor2_0's
/// `view(b, -1, heads, d).transpose(1, 2)`, `F.scaled_dot_product_attention(..., is_causal=causal)`
/// and the transpose back. A registered kernel with a fused attention for this dtype and head
/// size ([`crate::kernels::Kernels::has_fused_attention`]) takes the tokens as they are (no
/// copies of the split and merged heads, no score tensor); otherwise [`attention_by_heads`].
pub fn multi_head_attention<B: Backend>(q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>, heads: usize, causal: bool) -> Tensor<B, 3> {
    let [b, sq, inner] = q.dims();
    let sk = k.dims()[1];
    let head_dim = inner / heads;
    crate::profile::record(|| crate::profile::Op::Attention { batch: b, heads, seq_q: sq, seq_kv: sk, head_dim });
    if let Some(kernel) = crate::kernels::registered::<B>().filter(|k| k.has_fused_attention(q.dtype(), head_dim)) {
        return kernel.fused_attention(q, k, v, heads, causal);
    }
    attention_by_heads(q, k, v, heads, causal)
}

/// [`multi_head_attention`] with the heads split into `(b, heads, seq, d)` views and merged
/// back: [`scaled_dot_product_attention`]'s paths (with `causal`, the registered products or
/// burn's attention with `is_causal`).
pub fn attention_by_heads<B: Backend>(q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>, heads: usize, causal: bool) -> Tensor<B, 3> {
    let [b, _, inner] = q.dims();
    let head_dim = inner / heads;
    let split = |t: Tensor<B, 3>| {
        let seq = t.dims()[1];
        t.reshape([b, seq, heads, head_dim]).swap_dims(1, 2)
    };
    let out = sdpa(split(q), split(k), split(v), causal);
    let [_, _, seq, dv] = out.dims();
    out.swap_dims(1, 2).reshape([b, seq, heads * dv])
}

/// `softmax(q kᵀ / sqrt(head_dim)) v` over `(b, heads, seq, head_dim)` tensors, as
/// `F.scaled_dot_product_attention(q, k, v)` with no mask, dropout or explicit scale.
///
/// With a [`crate::kernels`] matrix product registered for `B` (cuBLAS on CUDA), runs as its two
/// products around an f32 softmax ([`crate::kernels::attention`]). Otherwise runs
/// `burn::tensor::module::attention` with `scale: None`, so backends with a fused
/// (flash-style) kernel use it; passing a scale, softcap or bias would force the unfused path.
/// The one exception is burn's NdArray (CPU) backend, which has no fused kernel: its fallback
/// materialises the whole `(b, heads, seq_q, seq_k)` score tensor and makes five passes over it,
/// so for large f32 problems (`seq_q · seq_k ≥ 4096`) a fused host kernel ([`host_attention`])
/// runs instead (2–3× faster on the UNet's spatial self-attention; same math, scores and softmax
/// in f32).
pub fn scaled_dot_product_attention<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, sq, d] = q.dims();
    let sk = k.dims()[2];
    crate::profile::record(|| crate::profile::Op::Attention { batch: b, heads: h, seq_q: sq, seq_kv: sk, head_dim: d });
    sdpa(q, k, v, false)
}

/// [`scaled_dot_product_attention`] without the profile record, with the causal mask when
/// `causal` (CLIP's text encoder).
fn sdpa<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, causal: bool) -> Tensor<B, 4> {
    let [b, h, sq, d] = q.dims();
    let [_, _, sk, dv] = v.dims();
    if let Some(kernel) = crate::kernels::registered::<B>() {
        return crate::kernels::attention(&*kernel, q, k, v, causal);
    }
    if causal {
        let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
        return attention(q, k, v, None, None, options);
    }
    let device = q.device();
    if sq * sk >= 4096 && q.dtype() == DType::F32 && B::name(&device) == "ndarray" {
        let host = |t: Tensor<B, 4>| t.into_data().into_vec::<f32>();
        if let (Ok(qh), Ok(kh), Ok(vh)) = (host(q.clone()), host(k.clone()), host(v.clone())) {
            let out = host_attention(&qh, &kh, &vh, [b * h, sq, sk, d, dv]);
            return Tensor::from_data(TensorData::new(out, [b, h, sq, dv]), &device);
        }
    }
    attention(q, k, v, None, None, AttentionModuleOptions::default())
}

/// `softmax(q kᵀ / sqrt(d)) v` on host f32 data: `q (n, sq, d)`, `k (n, sk, d)`, `v (n, sk, dv)`
/// → `(n, sq, dv)` with `dims = [n, sq, sk, d, dv]`. One query row at a time: its `sk` scores
/// stay in L1 (keys and values are transposed once so the inner loops run along the keys), the
/// softmax is the usual max-shifted one; rows are split over the available cores.
pub fn host_attention(q: &[f32], k: &[f32], v: &[f32], dims: [usize; 5]) -> Vec<f32> {
    let [n, sq, sk, d, dv] = dims;
    let scale = 1.0 / (d as f32).sqrt();
    let mut kt = vec![0f32; n * d * sk];
    let mut vt = vec![0f32; n * dv * sk];
    for b in 0..n {
        for j in 0..sk {
            for t in 0..d {
                kt[(b * d + t) * sk + j] = k[(b * sk + j) * d + t];
            }
            for t in 0..dv {
                vt[(b * dv + t) * sk + j] = v[(b * sk + j) * dv + t];
            }
        }
    }
    let mut out = vec![0f32; n * sq * dv];
    let rows = n * sq;
    if rows == 0 || dv == 0 {
        return out;
    }
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(rows);
    let per = rows.div_ceil(threads);
    std::thread::scope(|scope| {
        for (ci, chunk) in out.chunks_mut(per * dv).enumerate() {
            let (kt, vt) = (&kt, &vt);
            scope.spawn(move || {
                let mut s = vec![0f32; sk];
                for (ri, o) in chunk.chunks_mut(dv).enumerate() {
                    let row = ci * per + ri;
                    let b = row / sq;
                    let qi = &q[row * d..(row + 1) * d];
                    s.fill(0.0);
                    for (t, &a) in qi.iter().enumerate() {
                        let kr = &kt[(b * d + t) * sk..(b * d + t + 1) * sk];
                        for (x, &kv) in s.iter_mut().zip(kr) {
                            *x += a * kv;
                        }
                    }
                    let m = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                    for x in s.iter_mut() {
                        *x = ((*x - m) * scale).exp();
                    }
                    let inv = 1.0 / sum8(&s);
                    for (t, o) in o.iter_mut().enumerate() {
                        let vr = &vt[(b * dv + t) * sk..(b * dv + t + 1) * sk];
                        *o = dot8(&s, vr) * inv;
                    }
                }
            });
        }
    });
    out
}

/// Sum with eight independent accumulators (so that it vectorises).
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Dot product with eight independent accumulators.
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod host_attention_tests {
    use burn::backend::NdArray;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    use burn::tensor::{Distribution, Tensor};

    type B = NdArray<f32>;

    /// The host kernel (used on NdArray for large problems) equals burn's unfused attention.
    #[test]
    fn host_kernel_matches_burn_fallback() {
        let device = Default::default();
        for [b, h, sq, sk, d, dv] in [[2, 3, 70, 77, 5, 7], [1, 2, 128, 64, 8, 8], [3, 1, 9, 500, 16, 3]] {
            let q = Tensor::<B, 4>::random([b, h, sq, d], Distribution::Normal(0.0, 2.0), &device);
            let k = Tensor::<B, 4>::random([b, h, sk, d], Distribution::Normal(0.0, 2.0), &device);
            let v = Tensor::<B, 4>::random([b, h, sk, dv], Distribution::Normal(0.0, 1.0), &device);
            let want = attention(q.clone(), k.clone(), v.clone(), None, None, AttentionModuleOptions::default());
            let want_again = want.clone();
            let got = super::scaled_dot_product_attention(q.clone(), k.clone(), v.clone());
            assert_eq!(got.dims(), [b, h, sq, dv]);
            let err = (got - want).abs().max().into_scalar();
            assert!(err < 1e-5, "{b}x{h}x{sq}x{sk}x{d}x{dv}: max err {err}");
            // the host kernel directly, also where the dispatch would pick burn's path
            let host = |t: Tensor<B, 4>| t.into_data().into_vec::<f32>().unwrap();
            let direct = super::host_attention(&host(q), &host(k), &host(v), [b * h, sq, sk, d, dv]);
            let err = crate::testing::closeness(&direct, &host(want_again)).max_abs_err;
            assert!(err < 1e-5, "direct {b}x{h}x{sq}x{sk}x{d}x{dv}: max err {err}");
            assert_eq!(direct.len(), b * h * sq * dv);
        }
    }
}
