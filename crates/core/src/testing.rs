//! Helpers for parity tests against the reference fixtures that the pinned diffusers wrote
//! (`tests/fixtures/`, made by `tools/reference/generate.py`).

use std::path::PathBuf;

/// The repository's `tests/fixtures` folder.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Outcome of comparing a result with a reference array.
#[derive(Debug, Clone, Copy)]
pub struct Closeness {
    /// Largest absolute difference.
    pub max_abs_err: f32,
    /// Largest magnitude in the reference.
    pub ref_max_abs: f32,
}

impl Closeness {
    /// Error relative to the reference's largest magnitude.
    pub fn rel(&self) -> f32 {
        self.max_abs_err / self.ref_max_abs.max(f32::MIN_POSITIVE)
    }
}

/// Compares `got` with `want` elementwise; shape equality is the caller's to check.
pub fn closeness(got: &[f32], want: &[f32]) -> Closeness {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let mut max_abs_err = 0f32;
    let mut ref_max_abs = 0f32;
    for (g, w) in got.iter().zip(want) {
        let d = (g - w).abs();
        max_abs_err = if d.is_nan() { f32::INFINITY } else { max_abs_err.max(d) };
        ref_max_abs = ref_max_abs.max(w.abs());
    }
    Closeness { max_abs_err, ref_max_abs }
}

/// Asserts `got` matches `want` within `rel_tol` of the reference's largest magnitude.
#[track_caller]
pub fn assert_close(what: &str, got_shape: &[usize], got: &[f32], want_shape: &[usize], want: &[f32], rel_tol: f32) {
    assert_eq!(got_shape, want_shape, "{what}: shape");
    let c = closeness(got, want);
    eprintln!(
        "{what}: max abs err {:.3e}, reference max |x| {:.3e}, relative {:.3e} (tolerance {rel_tol:.1e})",
        c.max_abs_err, c.ref_max_abs, c.rel()
    );
    assert!(c.rel() <= rel_tol, "{what}: relative error {:.3e} exceeds {rel_tol:.1e}", c.rel());
}

/// [`crate::kernels::Kernels`] for CPU tests, standing in for the vendor libraries (cuBLAS,
/// cuDNN) so the layers' paths through them (linear layers on strided views, explicit attention,
/// im2col convolutions, or with `conv` a library convolution plus the bias) are checked against
/// diffusers without a GPU: products computed on the host in f64 from the operands' values,
/// convolutions by burn's. Counts its calls.
#[derive(Debug, Default)]
pub struct HostKernels {
    /// Offer a convolution of its own (`has_conv2d`).
    pub conv: bool,
    /// Offer norms (`has_norms`), the attention softmax, GEGLU and multi-projections
    /// (`has_linears`, the trait's default: one product each) of its own, computed on the host in
    /// f32 the way reel's CUDA kernels do (`crates/cli/src/vendor/nvrtc.rs`: per-thread partial
    /// sums, two passes, per-channel affine, then SiLU; the causal mask by row within `sq`).
    pub own: bool,
    /// Offer a fused attention on the token layout (`has_fused_attention`, any head size),
    /// computed on the host as `attention_calls` says.
    pub attention: bool,
    pub calls: std::sync::atomic::AtomicUsize,
    pub conv_calls: std::sync::atomic::AtomicUsize,
    pub norm_calls: std::sync::atomic::AtomicUsize,
    pub softmax_calls: std::sync::atomic::AtomicUsize,
    /// Fused attentions run (with `attention`: [`crate::kernels::Kernels::fused_attention`] on the
    /// token layout, as reel's flash kernel `crates/cli/src/vendor/flash_attention.cu` computes
    /// it — online softmax in base 2 over tiles of 64 keys — in f32 for any head size).
    pub attention_calls: std::sync::atomic::AtomicUsize,
    /// Convolutions run onto their residual (with `conv` and `own`: the library convolution,
    /// then the add).
    pub conv_add_calls: std::sync::atomic::AtomicUsize,
    /// Linear layers run onto their residual (with `own`).
    pub linear_add_calls: std::sync::atomic::AtomicUsize,
    /// Multi-projections run (with `own`: attention's q, k, v of one input as one operation).
    pub linears_calls: std::sync::atomic::AtomicUsize,
    /// GEGLUs run by the stand-in of reel's kernel (with `own`: host f32, one rounding).
    pub geglu_calls: std::sync::atomic::AtomicUsize,
}

/// A tensor's values on the host as f32, whatever its dtype.
fn host_f32<B: burn::tensor::backend::Backend, const D: usize>(t: burn::tensor::Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

impl HostKernels {
    /// `x` as `n` items of `groups · per_group` channels of `rest` values, normalised per
    /// `(item, group)`, like the norm kernels of `crates/cli/src/vendor/` (a layer norm's rows
    /// are `[rows, 1, dim, 1]`), each sum taken as `threads` partial sums (a block's threads,
    /// or a warp's 32 lanes for a layer norm's row).
    #[allow(clippy::too_many_arguments)]
    fn norm<B: burn::tensor::backend::Backend>(
        &self,
        x: burn::tensor::Tensor<B, 3>,
        weight: burn::tensor::Tensor<B, 1>,
        bias: burn::tensor::Tensor<B, 1>,
        [n, groups, per_group, rest]: [usize; 4],
        eps: f64,
        silu: bool,
        threads: usize,
    ) -> burn::tensor::Tensor<B, 3> {
        use burn::tensor::{Tensor, TensorData};
        self.norm_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (dims, dtype, device) = (x.dims(), x.dtype(), x.device());
        assert!(weight.dtype() == dtype && bias.dtype() == dtype, "norm operand dtypes");
        let (x, w, b) = (host_f32(x), host_f32(weight), host_f32(bias));
        let len = per_group * rest;
        assert_eq!(x.len(), n * groups * len, "norm shape");
        // f32 throughout, summed as the kernel's block does: one partial sum per thread over
        // every `threads`-th value, then the partial sums.
        let sum = |f: &dyn Fn(usize) -> f32| {
            let partial: Vec<f32> = (0..threads).map(|t| (t..len).step_by(threads).map(f).sum::<f32>()).collect();
            partial.iter().sum::<f32>()
        };
        let mut y = vec![0f32; x.len()];
        for (g, (xs, ys)) in x.chunks(len).zip(y.chunks_mut(len)).enumerate() {
            let mean = sum(&|i| xs[i]) / len as f32;
            let var = sum(&|i| (xs[i] - mean) * (xs[i] - mean)) / len as f32;
            let rstd = 1.0 / (var + eps as f32).sqrt();
            for (i, (&v, o)) in xs.iter().zip(ys.iter_mut()).enumerate() {
                let ch = (g % groups) * per_group + i / rest;
                let t = (v - mean) * rstd * w[ch] + b[ch];
                *o = if silu { t / (1.0 + (-t).exp()) } else { t };
            }
        }
        crate::nn::to_dtype(Tensor::<B, 3>::from_data(TensorData::new(y, dims), &device), dtype)
    }
}

impl<B: burn::tensor::backend::Backend> crate::kernels::Kernels<B> for HostKernels {
    fn matmul(&self, a: burn::tensor::Tensor<B, 3>, b: burn::tensor::Tensor<B, 3>, alpha: f32, out: burn::tensor::DType) -> burn::tensor::Tensor<B, 3> {
        use burn::tensor::{Tensor, TensorData};
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ([ba, m, k], [bb, k2, n]) = (a.dims(), b.dims());
        assert!(k == k2 && (ba == bb || ba == 1 || bb == 1), "matmul operands {:?} · {:?}", a.dims(), b.dims());
        assert_eq!(a.dtype(), b.dtype(), "matmul operand dtypes");
        let device = a.device();
        let (a, b) = (host_f32(a), host_f32(b));
        let batch = ba.max(bb);
        let mut c = vec![0f32; batch * m * n];
        for i in 0..batch {
            let a = &a[if ba == 1 { 0 } else { i * m * k }..][..m * k];
            let b = &b[if bb == 1 { 0 } else { i * k * n }..][..k * n];
            for r in 0..m {
                for col in 0..n {
                    let dot: f64 = (0..k).map(|j| a[r * k + j] as f64 * b[j * n + col] as f64).sum();
                    c[(i * m + r) * n + col] = (dot * alpha as f64) as f32;
                }
            }
        }
        crate::nn::to_dtype(Tensor::<B, 3>::from_data(TensorData::new(c, [batch, m, n]), &device), out)
    }

    fn has_conv2d(&self) -> bool {
        self.conv
    }

    fn conv2d(
        &self,
        x: burn::tensor::Tensor<B, 4>,
        weight: burn::tensor::Tensor<B, 4>,
        bias: Option<burn::tensor::Tensor<B, 1>>,
        stride: [usize; 2],
        pad: [usize; 2],
    ) -> burn::tensor::Tensor<B, 4> {
        self.conv_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::kernels::burn_conv2d(x, weight, bias, stride, pad)
    }

    fn has_conv2d_add(&self) -> bool {
        self.conv && self.own
    }

    fn conv2d_add(
        &self,
        x: burn::tensor::Tensor<B, 4>,
        weight: burn::tensor::Tensor<B, 4>,
        bias: Option<burn::tensor::Tensor<B, 1>>,
        stride: [usize; 2],
        pad: [usize; 2],
        residual: burn::tensor::Tensor<B, 4>,
    ) -> burn::tensor::Tensor<B, 4> {
        self.conv_add_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::kernels::Kernels::<B>::conv2d(self, x, weight, bias, stride, pad) + residual
    }

    fn has_norms(&self) -> bool {
        self.own
    }

    fn group_norm(
        &self,
        x: burn::tensor::Tensor<B, 3>,
        weight: burn::tensor::Tensor<B, 1>,
        bias: burn::tensor::Tensor<B, 1>,
        groups: usize,
        eps: f64,
        silu: bool,
    ) -> burn::tensor::Tensor<B, 3> {
        let [n, c, rest] = x.dims();
        let threads = (c / groups * rest).div_ceil(8).next_power_of_two().clamp(32, 1024);
        self.norm(x, weight, bias, [n, groups, c / groups, rest], eps, silu, threads)
    }

    fn layer_norm(&self, x: burn::tensor::Tensor<B, 2>, weight: burn::tensor::Tensor<B, 1>, bias: burn::tensor::Tensor<B, 1>, eps: f64) -> burn::tensor::Tensor<B, 2> {
        let [rows, dim] = x.dims();
        self.norm(x.reshape([1, rows, dim]), weight, bias, [rows, 1, dim, 1], eps, false, 32).reshape([rows, dim])
    }

    fn softmax(&self, scores: burn::tensor::Tensor<B, 3>, causal: bool, out: burn::tensor::DType) -> burn::tensor::Tensor<B, 3> {
        use burn::tensor::{Tensor, TensorData};
        if !self.own {
            return crate::kernels::softmax_ops(scores, causal, out);
        }
        self.softmax_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (dims, device) = (scores.dims(), scores.device());
        let [_, sq, sk] = dims;
        let x = host_f32(scores);
        let mut y = vec![0f32; x.len()];
        for (row, (xs, ys)) in x.chunks(sk).zip(y.chunks_mut(sk)).enumerate() {
            let limit = if causal { sk.min(row % sq + 1) } else { sk };
            let m = xs[..limit].iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let inv = 1.0 / xs[..limit].iter().map(|&v| (v - m).exp()).sum::<f32>();
            for (j, o) in ys[..limit].iter_mut().enumerate() {
                *o = (xs[j] - m).exp() * inv;
            }
        }
        crate::nn::to_dtype(Tensor::<B, 3>::from_data(TensorData::new(y, dims), &device), out)
    }

    fn has_linears(&self) -> bool {
        self.own
    }

    fn has_linear_add(&self) -> bool {
        self.own
    }

    fn linear_add(
        &self,
        x: burn::tensor::Tensor<B, 2>,
        weight: burn::tensor::Tensor<B, 2>,
        bias: Option<burn::tensor::Tensor<B, 1>>,
        residual: burn::tensor::Tensor<B, 2>,
    ) -> burn::tensor::Tensor<B, 2> {
        // As cuBLAS onto the started output: residual + bias rounded to the dtype first, the
        // product accumulated onto it in f32, one rounding at the end.
        use burn::tensor::DType::F32;
        self.linear_add_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ([rows, d_in], dtype) = (x.dims(), x.dtype());
        let start = match bias {
            Some(b) => residual + b.unsqueeze::<2>(),
            None => residual,
        };
        let y = crate::kernels::Kernels::<B>::matmul(self, x.reshape([1, rows, d_in]), weight.transpose().unsqueeze::<3>(), 1.0, F32).squeeze_dim::<2>(0);
        crate::nn::to_dtype(y + crate::nn::to_dtype(start, F32), dtype)
    }

    fn linears(&self, x: burn::tensor::Tensor<B, 2>, weights: Vec<burn::tensor::Tensor<B, 2>>) -> burn::tensor::Tensor<B, 2> {
        // One product per weight into its column block, as cuBLAS runs them.
        self.linears_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        burn::tensor::Tensor::cat(weights.into_iter().map(|w| crate::kernels::linear(self, x.clone(), w, None)).collect(), 1)
    }

    fn has_geglu(&self) -> bool {
        self.own
    }

    fn geglu(&self, x: burn::tensor::Tensor<B, 2>) -> burn::tensor::Tensor<B, 2> {
        // As the kernel: f32 arithmetic (burn's erf GELU), one rounding to the dtype.
        self.geglu_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dtype = x.dtype();
        crate::nn::to_dtype(crate::kernels::geglu_ops(crate::nn::to_dtype(x, burn::tensor::DType::F32)), dtype)
    }

    fn has_fused_attention(&self, _dtype: burn::tensor::DType, _head_dim: usize) -> bool {
        self.attention
    }

    fn fused_attention(
        &self,
        q: burn::tensor::Tensor<B, 3>,
        k: burn::tensor::Tensor<B, 3>,
        v: burn::tensor::Tensor<B, 3>,
        heads: usize,
        causal: bool,
    ) -> burn::tensor::Tensor<B, 3> {
        use burn::tensor::{Tensor, TensorData};
        self.attention_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ([b, sq, inner], [_, sk, _], dtype, device) = (q.dims(), k.dims(), q.dtype(), q.device());
        let d = inner / heads;
        let (q, k, v) = (host_f32(q), host_f32(k), host_f32(v));
        let scale_log2 = std::f32::consts::LOG2_E / (d as f32).sqrt();
        let mut o = vec![0f32; b * sq * inner];
        let mut s = vec![0f32; 64];
        for bi in 0..b {
            for h in 0..heads {
                for r in 0..sq {
                    let qr = &q[(bi * sq + r) * inner + h * d..][..d];
                    let (mut m, mut l, mut acc) = (f32::NEG_INFINITY, 0f32, vec![0f32; d]);
                    for k0 in (0..sk).step_by(64) {
                        let keys = (sk - k0).min(64);
                        let mut mx = f32::NEG_INFINITY;
                        for (j, sj) in s[..keys].iter_mut().enumerate() {
                            let kj = &k[(bi * sk + k0 + j) * inner + h * d..][..d];
                            let dot: f32 = qr.iter().zip(kj).map(|(a, b)| a * b).sum();
                            *sj = if causal && k0 + j > r { f32::NEG_INFINITY } else { dot * scale_log2 };
                            mx = mx.max(*sj);
                        }
                        let mn = m.max(mx);
                        let base = if mn == f32::NEG_INFINITY { 0.0 } else { mn };
                        let corr = (m - base).exp2();
                        m = mn;
                        acc.iter_mut().for_each(|a| *a *= corr);
                        let mut rs = 0f32;
                        for (j, &sj) in s[..keys].iter().enumerate() {
                            let p = (sj - base).exp2();
                            rs += p;
                            let vj = &v[(bi * sk + k0 + j) * inner + h * d..][..d];
                            acc.iter_mut().zip(vj).for_each(|(a, x)| *a += p * x);
                        }
                        l = l * corr + rs;
                    }
                    let out = &mut o[(bi * sq + r) * inner + h * d..][..d];
                    out.iter_mut().zip(&acc).for_each(|(o, a)| *o = a / l);
                }
            }
        }
        crate::nn::to_dtype(Tensor::<B, 3>::from_data(TensorData::new(o, [b, sq, inner]), &device), dtype)
    }

    fn name(&self) -> &'static str {
        "host"
    }
}
