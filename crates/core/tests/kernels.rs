//! `reel_core::kernels` on their own: with kernels registered for a backend (here a host
//! stand-in for the vendor libraries on burn-flex, f32 and f16), `Linear`, the convolutions
//! (im2col, strided, asymmetric padding, grouped in small pieces), attention (plain and causal;
//! as products around the softmax, and fused on the token layout), GEGLU, group norm (plain and with SiLU, on a strided view) and layer norm give what burn's
//! own operations give on burn-ndarray in f32, in the input's dtype.
//! Tolerances: f32 1e-5 of the reference's largest magnitude; f16 2e-3 (inputs and outputs
//! rounded to f16; attention scores stay f32).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use burn::backend::{Flex, NdArray};
use burn::module::Param;
use burn::tensor::module::{attention, conv2d};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions};
use burn::tensor::{backend::Backend, DType, Distribution, Tensor, TensorData};
use reel_core::nn::{group_norm_ops, layer_norm_ops, Conv2d, GroupNorm, LayerNorm, Linear};
use reel_core::testing::{closeness, HostKernels};

type Ref = NdArray<f32>;

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// The same values on burn-flex in `dtype`.
fn on_flex<const D: usize>(t: &Tensor<Ref, D>, dtype: DType) -> Tensor<Flex, D> {
    let data = TensorData::new(host(t.clone()), t.dims());
    reel_core::nn::to_dtype(Tensor::<Flex, D>::from_data(data, &Default::default()), dtype)
}

fn random<const D: usize>(shape: [usize; D]) -> Tensor<Ref, D> {
    Tensor::random(shape, Distribution::Uniform(-1.0, 1.0), &Default::default())
}

#[track_caller]
fn check<const D: usize>(what: &str, got: Tensor<Flex, D>, want: Tensor<Ref, D>, dtype: DType) {
    assert_eq!(got.dtype(), dtype, "{what}: dtype");
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let c = closeness(&host(got), &host(want));
    let tol = if dtype == DType::F32 { 1e-5 } else { 2e-3 };
    eprintln!("{what} {dtype:?}: relative error {:.2e}", c.rel());
    assert!(c.rel() <= tol, "{what} {dtype:?}: relative error {:.3e} > {tol:e}", c.rel());
}

#[test]
fn layers_on_registered_kernels_match_burns_operations() {
    let kernels = Arc::new(HostKernels { own: true, attention: true, ..Default::default() });
    reel_core::kernels::register::<Flex>(kernels.clone());
    reel_core::kernels::set_chunk_bytes(16 << 10);
    for dtype in [DType::F32, DType::F16] {
        // Linear over a 3-D input, with bias.
        let (x, w, b) = (random([2, 5, 24]), random([7, 24]), random([7]));
        let layer = Linear { weight: Param::from_tensor(on_flex(&w, dtype)), bias: Some(Param::from_tensor(on_flex(&b, dtype))) };
        let want = x.clone().matmul(w.clone().transpose().unsqueeze::<3>()) + b.clone().unsqueeze::<3>();
        check("linear", layer.forward(on_flex(&x, dtype)), want, dtype);

        // Convolutions: 3×3 same padding, 3×3 stride 2 with diffusers' (0, 1, 0, 1) padding, 1×1.
        let x = random([5, 6, 9, 11]);
        for (k, stride, pad) in [(3, 1, [1, 1, 1, 1]), (3, 2, [0, 1, 0, 1]), (1, 1, [0, 0, 0, 0])] {
            let (w, b) = (random([4, 6, k, k]), random([4]));
            let conv = Conv2d { weight: Param::from_tensor(on_flex(&w, dtype)), bias: Some(Param::from_tensor(on_flex(&b, dtype))), stride, padding: pad[0] };
            let padded = Tensor::<Ref, 4>::zeros([5, 6, 9 + pad[0] + pad[1], 11 + pad[2] + pad[3]], &Default::default())
                .slice_assign([0..5, 0..6, pad[0]..pad[0] + 9, pad[2]..pad[2] + 11], x.clone());
            let want = conv2d(padded, w, Some(b), ConvOptions::new([stride; 2], [0, 0], [1, 1], 1));
            check(&format!("conv {k}×{k} stride {stride} pad {pad:?}"), conv.forward_padded(on_flex(&x, dtype), pad), want, dtype);
        }

        // Attention, plain (the UNet's) and causal (CLIP's).
        let (q, k, v) = (random([2, 3, 40, 16]), random([2, 3, 33, 16]), random([2, 3, 33, 16]));
        let want = attention(q.clone(), k.clone(), v.clone(), None, None, AttentionModuleOptions::default());
        let got = reel_core::blocks::scaled_dot_product_attention(on_flex(&q, dtype), on_flex(&k, dtype), on_flex(&v, dtype));
        check("attention", got, want, dtype);
        let k = random([2, 3, 40, 16]);
        let v = random([2, 3, 40, 16]);
        let causal = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
        let want = attention(q.clone(), k.clone(), v.clone(), None, None, causal);
        let kernels_ref = reel_core::kernels::registered::<Flex>().unwrap();
        let got = reel_core::kernels::attention(&*kernels_ref, on_flex(&q, dtype), on_flex(&k, dtype), on_flex(&v, dtype), true);
        check("causal attention", got, want, dtype);

        // Attention on the token layout (the fused path: no head split or merge), q, k, v
        // slices of packed projections (strided views), over more than one tile of 64 keys.
        let heads = 3;
        for causal in [false, true] {
            let sk = if causal { 40 } else { 70 };
            let (packed_q, packed_kv) = (random([2, 40, 3 * heads * 16]), random([2, sk, 2 * heads * 16]));
            let part = |t: &Tensor<Ref, 3>, i: usize| t.clone().narrow(2, i * heads * 16, heads * 16);
            let split = |t: Tensor<Ref, 3>| {
                let [b, s, _] = t.dims();
                t.reshape([b, s, heads, 16]).swap_dims(1, 2)
            };
            let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: causal };
            let want = attention(split(part(&packed_q, 1)), split(part(&packed_kv, 0)), split(part(&packed_kv, 1)), None, None, options)
                .swap_dims(1, 2)
                .reshape([2, 40, heads * 16]);
            let (fq, fkv) = (on_flex(&packed_q, dtype), on_flex(&packed_kv, dtype));
            let fpart = |t: &Tensor<Flex, 3>, i: usize| t.clone().narrow(2, i * heads * 16, heads * 16);
            let got = reel_core::blocks::multi_head_attention(fpart(&fq, 1), fpart(&fkv, 0), fpart(&fkv, 1), heads, causal);
            check(&format!("fused attention on tokens, causal {causal}"), got, want, dtype);
        }

        // Group norm (4 groups of 3 channels) over a (b, c, f, h·w) view of a (b, f, c, h·w)
        // tensor, as the temporal convolutions give it, plain and with SiLU; layer norm over the
        // last axis of a 3-D input.
        let (w, b) = (random([12]), random([12]));
        let x = random([2, 5, 12, 7]);
        let norm = GroupNorm { weight: Param::from_tensor(on_flex(&w, dtype)), bias: Param::from_tensor(on_flex(&b, dtype)), num_groups: 4, eps: 1e-5 };
        let view = |t: Tensor<Ref, 4>| t.swap_dims(1, 2);
        for silu in [false, true] {
            let want = group_norm_ops(view(x.clone()).reshape([2, 12, 35]), w.clone(), b.clone(), 4, 1e-5, silu).reshape([2, 12, 5, 7]);
            let input = on_flex(&x, dtype).swap_dims(1, 2);
            let got = if silu { norm.forward_silu(input) } else { norm.forward(input) };
            check(&format!("group norm, silu {silu}"), got, want, dtype);
        }
        // GEGLU after its projection: h * gelu(gate) of the two halves of each row.
        let x = random([7, 2 * 9]);
        let got = reel_core::kernels::registered::<Flex>().unwrap().geglu(on_flex(&x, dtype));
        check("geglu", got, reel_core::kernels::geglu_ops(x), dtype);

        let x = random([3, 4, 12]);
        let norm = LayerNorm { weight: Param::from_tensor(on_flex(&w, dtype)), bias: Param::from_tensor(on_flex(&b, dtype)), eps: 1e-6 };
        check("layer norm", norm.forward(on_flex(&x, dtype)), layer_norm_ops(x, w, b, 1e-6), dtype);
    }
    assert!(kernels.calls.load(Relaxed) > 20, "the layers did not use the registered kernels");
    assert_eq!(kernels.norm_calls.load(Relaxed), 6, "the norms did not use the registered kernels");
    // Four attentions, each in several pieces of 16 KiB scores.
    assert!(kernels.softmax_calls.load(Relaxed) >= 4, "attention did not use the registered softmax");
    assert_eq!(kernels.attention_calls.load(Relaxed), 4, "attention on tokens did not use the fused kernel");
    assert_eq!(kernels.geglu_calls.load(Relaxed), 2, "GEGLU did not use the registered kernel");
    assert!(reel_core::kernels::registered::<Ref>().is_none(), "registered for another backend");
}
