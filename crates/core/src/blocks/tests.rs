//! Unit tests of the blocks against diffusers 0.42.1 on paths the VAE fixtures do not reach:
//! `ResnetBlock2D` with a time embedding ("default" and "scale_shift"), cross-attention with
//! several heads, spatial attention with group norm / residual / rescale, `Downsample2D` with
//! padding 1 and average pooling, `Upsample2D` to an explicit size.
//!
//! Parameters and inputs are deterministic functions of their name and index (below), so the
//! reference numbers fit in this file. They were printed by this script (torch CPU, f32):
//!
//! ```python
//! import math
//! import numpy as np, torch
//! from diffusers.models.resnet import ResnetBlock2D
//! from diffusers.models.attention_processor import Attention
//! from diffusers.models.downsampling import Downsample2D
//! from diffusers.models.upsampling import Upsample2D
//!
//! def fill(m):  # param `k`, flat index i: 0.5 sin(0.7 i + 0.01 sum(bytes(k))), norm weights + 1
//!     with torch.no_grad():
//!         for k, p in m.named_parameters():
//!             s = sum(k.encode()) * 0.01
//!             v = np.array([0.5 * math.sin(0.7 * i + s) for i in range(p.numel())])
//!             if "norm" in k and k.endswith("weight"):
//!                 v = v + 1.0
//!             p.copy_(torch.tensor(v, dtype=torch.float32).reshape(p.shape))
//!     return m.eval()
//!
//! def inp(shape, seed):  # flat index i: 1.5 cos(0.37 i + seed)
//!     n = int(np.prod(shape))
//!     return torch.tensor([1.5 * math.cos(0.37 * i + seed) for i in range(n)]).reshape(shape)
//!
//! with torch.no_grad():
//!     m = fill(ResnetBlock2D(in_channels=4, out_channels=6, temb_channels=5, groups=2, eps=1e-6,
//!                            non_linearity="silu", output_scale_factor=2.0))
//!     RESNET_DEFAULT = m(inp((2, 4, 3, 3), 0.0), inp((2, 5), 1.0))
//!     m = fill(ResnetBlock2D(in_channels=4, out_channels=4, temb_channels=5, groups=2, groups_out=4,
//!                            eps=1e-5, non_linearity="silu", time_embedding_norm="scale_shift",
//!                            skip_time_act=True, use_in_shortcut=True, conv_shortcut_bias=False))
//!     RESNET_SCALE_SHIFT = m(inp((2, 4, 3, 3), 0.0), inp((2, 5), 1.0))
//!     a = fill(Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=3, bias=False, out_bias=True))
//!     ATTN_CROSS = a(inp((2, 5, 8), 0.0), encoder_hidden_states=inp((2, 4, 6), 2.0))
//!     a = fill(Attention(query_dim=4, heads=2, dim_head=2, bias=True, norm_num_groups=2, eps=1e-6,
//!                        residual_connection=True, rescale_output_factor=2.0, _from_deprecated_attn_block=True))
//!     ATTN_SPATIAL = a(inp((2, 4, 3, 2), 0.0))
//!     DOWN_PAD1 = fill(Downsample2D(4, use_conv=True, out_channels=3, padding=1, name="op"))(inp((1, 4, 5, 4), 0.0))
//!     DOWN_POOL = Downsample2D(4, use_conv=False, padding=1, name="op")(inp((1, 4, 5, 4), 0.0))
//!     u = fill(Upsample2D(3, use_conv=True, out_channels=2))
//!     UP_SIZE = u(inp((1, 3, 3, 4), 0.0), output_size=(5, 7))
//!     UP_X2 = u(inp((1, 3, 2, 3), 0.0))
//! ```

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};

use super::*;
use crate::nn::Activation;
use crate::testing::assert_close;

type B = burn::backend::NdArray<f32>;

/// Fills every parameter as the script's `fill` does, by its path.
struct Fill {
    path: Vec<String>,
}

impl ModuleMapper<B> for Fill {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let key = self.path.join(".");
        let shape = param.lazy_shape().dims::<D>();
        let s = key.bytes().map(|b| b as u32).sum::<u32>() as f64 * 0.01;
        let is_norm_weight = key.contains("norm") && key.ends_with("weight");
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| {
                let x = 0.5 * (0.7 * i as f64 + s).sin();
                (if is_norm_weight { x + 1.0 } else { x }) as f32
            })
            .collect();
        Param::initialized(param.id, Tensor::from_data(TensorData::new(v, shape), &Default::default()))
    }
}

fn fill<M: Module<B>>(m: M) -> M {
    m.map(&mut Fill { path: Vec::new() })
}

fn inp<const D: usize>(shape: [usize; D], seed: f64) -> Tensor<B, D> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| (1.5 * (0.37 * i as f64 + seed).cos()) as f32).collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

#[track_caller]
fn check<const D: usize>(what: &str, got: Tensor<B, D>, shape: [usize; D], want: &[f32]) {
    let got_shape = got.dims();
    let got = got.into_data().into_vec::<f32>().unwrap();
    assert_close(what, &got_shape, &got, &shape, want, 1e-5);
}

fn device() -> burn::backend::ndarray::NdArrayDevice {
    Default::default()
}

#[test]
fn resnet_block_with_time_embedding() {
    let m = fill(
        ResnetBlock2DConfig {
            out_channels: Some(6),
            temb_channels: Some(5),
            groups: 2,
            output_scale_factor: 2.0,
            ..ResnetBlock2DConfig::new(4)
        }
        .init::<B>(&device()),
    );
    assert!(m.conv_shortcut.is_some());
    check("ResnetBlock2D default", m.forward(inp([2, 4, 3, 3], 0.0), Some(inp([2, 5], 1.0))), [2, 6, 3, 3], &RESNET_DEFAULT);
}

#[test]
fn resnet_block_scale_shift() {
    let m = fill(
        ResnetBlock2DConfig {
            temb_channels: Some(5),
            groups: 2,
            groups_out: Some(4),
            eps: 1e-5,
            non_linearity: Activation::from_name("silu").unwrap(),
            time_embedding_norm: TimeEmbeddingNorm::from_name("scale_shift").unwrap(),
            skip_time_act: true,
            use_in_shortcut: Some(true),
            conv_shortcut_bias: false,
            ..ResnetBlock2DConfig::new(4)
        }
        .init::<B>(&device()),
    );
    assert!(m.conv_shortcut.as_ref().is_some_and(|c| c.bias.is_none()));
    assert_eq!(m.time_emb_proj.as_ref().unwrap().weight.lazy_shape().dims::<2>(), [8, 5]);
    check("ResnetBlock2D scale_shift", m.forward(inp([2, 4, 3, 3], 0.0), Some(inp([2, 5], 1.0))), [2, 4, 3, 3], &RESNET_SCALE_SHIFT);
}

#[test]
fn cross_attention() {
    let a = fill(
        AttentionConfig { cross_attention_dim: Some(6), heads: 2, dim_head: 3, ..AttentionConfig::new(8) }.init::<B>(&device()),
    );
    assert!(a.to_q.bias.is_none() && a.to_out[0].bias.is_some());
    check("Attention cross", a.forward(inp([2, 5, 8], 0.0), Some(inp([2, 4, 6], 2.0))), [2, 5, 8], &ATTN_CROSS);
}

#[test]
fn spatial_attention_with_group_norm() {
    let a = fill(
        AttentionConfig {
            heads: 2,
            dim_head: 2,
            bias: true,
            norm_num_groups: Some(2),
            eps: 1e-6,
            residual_connection: true,
            rescale_output_factor: 2.0,
            ..AttentionConfig::new(4)
        }
        .init::<B>(&device()),
    );
    check("Attention spatial", a.forward_spatial(inp([2, 4, 3, 2], 0.0), None), [2, 4, 3, 2], &ATTN_SPATIAL);
}

#[test]
fn downsample() {
    let d = fill(Downsample2D::<B>::new(4, true, Some(3), 1, &device()));
    assert_eq!((d.output_size(5), d.output_size(4)), (Some(3), Some(2)));
    check("Downsample2D padding 1", d.forward(inp([1, 4, 5, 4], 0.0)), [1, 3, 3, 2], &DOWN_PAD1);
    let d = Downsample2D::<B>::new(4, false, None, 1, &device());
    assert_eq!((d.output_size(5), d.output_size(4)), (Some(2), Some(2)));
    check("Downsample2D avg pool", d.forward(inp([1, 4, 5, 4], 0.0)), [1, 4, 2, 2], &DOWN_POOL);
    // the VAE's padding 0: pad (0, 1, 0, 1), then a valid convolution
    let d = Downsample2D::<B>::new(4, true, None, 0, &device());
    assert_eq!((d.output_size(1), d.output_size(2), d.output_size(7)), (None, Some(1), Some(3)));
}

#[test]
fn upsample() {
    let u = fill(Upsample2D::<B>::new(3, true, Some(2), &device()));
    check("Upsample2D to 5x7", u.forward(inp([1, 3, 3, 4], 0.0), Some([5, 7])), [1, 2, 5, 7], &UP_SIZE);
    check("Upsample2D x2", u.forward(inp([1, 3, 2, 3], 0.0), None), [1, 2, 4, 6], &UP_X2);
}

#[rustfmt::skip]
const RESNET_DEFAULT: [f32; 108] = [1.4636543, 1.8120309, 0.9760484, -1.6877918, -3.7066512, -2.7064486, 0.17062235, 1.5158559, 2.3350055, 0.71344835, 1.2649572, 0.65696704, -1.6548191, -3.48784, -2.4532638, 0.5487794, 1.934124, 2.9447107, 1.3304138, 1.8480219, 1.0887134, -1.3348964, -3.4867537, -2.9167414, -0.20766842, 0.9697255, 2.1126056, 0.673001, 1.3461092, 0.7822852, -1.2908967, -3.2628083, -2.7115076, 0.042314023, 1.229236, 2.5553668, 1.0131676, 1.6995195, 1.0834289, -0.9554939, -3.102779, -2.9384873, -0.4688404, 0.51712114, 1.9439532, 0.69954336, 1.4526687, 0.92917466, -0.8568231, -2.927173, -2.9197397, -0.55759037, 0.36183855, 1.9424261, 0.09465556, -1.5834873, -1.6530268, -3.8783329, -2.9002264, -0.28384945, 1.3541217, 3.642118, 2.0389392, -0.1952133, -1.5792913, -1.5198501, -3.5203674, -2.6978807, 0.09831509, 1.7692695, 4.196651, 2.6176906, 0.25789306, -1.3079845, -1.6434536, -3.8846478, -3.6087265, -0.8887201, 0.7564634, 3.4482462, 2.2304637, -0.0040219277, -1.2956139, -1.5454624, -3.5550382, -3.4674404, -0.6275578, 1.0312495, 3.840987, 2.7186131, 0.33844167, -1.0052476, -1.5427527, -3.6615267, -4.060936, -1.3240893, 0.26746714, 3.241268, 2.4289799, 0.23946668, -0.9430121, -1.5316185, -3.5067837, -4.1890116, -1.441121, 0.1314864, 3.2174432, 2.6186182];
#[rustfmt::skip]
const RESNET_SCALE_SHIFT: [f32; 72] = [1.7460351, 2.171608, 1.2696353, -2.9262242, -5.5973544, -3.8321877, 0.9281849, 3.148325, 3.9707432, -0.025384605, 0.69214916, 0.21557164, -3.3726592, -5.618947, -3.5596669, 1.5769869, 3.9923437, 5.043513, 1.1081612, 1.6508875, 0.829749, -3.1108239, -5.9702697, -4.6044474, 0.10930711, 2.240331, 3.4176204, -0.05875039, 0.696612, 0.21377659, -3.184836, -5.6893196, -4.118517, 0.8826251, 3.1792526, 4.6026835, -0.43032587, -2.0904691, -1.5251951, -4.773478, -3.285812, -0.16259027, 3.3286424, 6.3704724, 3.0760403, -1.5336412, -2.7149606, -1.6860793, -4.345661, -2.7608697, 0.6772784, 4.241921, 7.391749, 3.9149466, -0.99389195, -2.6723526, -2.2326176, -5.2645087, -4.356036, -1.0743158, 2.4639745, 6.007396, 3.0066867, -1.6465955, -2.933004, -2.128773, -4.6189466, -3.667754, -0.10919216, 3.4991593, 7.1816616, 4.113495];
#[rustfmt::skip]
const ATTN_CROSS: [f32; 80] = [0.68925107, -1.3856254, 1.0922369, 1.3993684, -1.2279441, 0.61126006, 0.626034, -2.035613, -0.8020815, 1.4766045, -0.22290882, -0.17333272, 1.6292691, -0.61759824, -1.0262569, 0.81335247, 0.6883426, -1.3644142, 1.0723474, 1.3976594, -1.2063789, 0.5918239, 0.6235264, -2.0137181, -0.9045767, 1.4015156, -0.046787262, -0.27093473, 1.5488486, -0.4411421, -1.1188555, 0.72769105, 0.61899, -1.2080383, 0.98837006, 1.323625, -1.0498092, 0.5123384, 0.5448941, -1.8571318, -1.0597019, 1.3913748, 0.118281096, -0.42264715, 1.5325375, -0.27343634, -1.2669835, 0.705228, 0.42351323, -0.52156967, 0.51074946, 1.1054738, -0.35828656, 0.052436676, 0.3043149, -1.1613371, -0.8838142, 0.9344334, 0.3904345, -0.23255792, 1.0739975, -0.013917198, -1.0629077, 0.245608, 0.3674302, 0.073517375, -0.016663194, 1.0275263, 0.24555539, -0.46169585, 0.2045911, -0.54942316, -0.47213638, -0.08997427, 0.98321044, 0.21062014, 0.0466758, 0.5502159, -0.5887307, -0.78346574];
#[rustfmt::skip]
const ATTN_SPATIAL: [f32; 48] = [0.8269684, 0.7748818, 0.62671703, 0.40241933, 0.13227203, -0.14715117, -0.44961393, -0.6337088, -0.7303223, -0.7262966, -0.6221168, -0.43188557, 0.001655981, 0.27548212, 0.53891873, 0.75626504, 0.8980662, 0.945124, 1.0478799, 0.90159315, 0.6807226, 0.41516685, 0.14087959, -0.10500178, -0.6222301, -0.71929735, -0.7159102, -0.6125224, -0.42310408, -0.17326315, 0.12741283, 0.39159036, 0.6090404, 0.7503283, 0.79631746, 0.7407667, 0.72248435, 0.5003131, 0.2344259, -0.039188206, -0.28349358, -0.4654218, -0.38189274, -0.37773025, -0.27410316, -0.08503789, 0.16388445, 0.4389847];
#[rustfmt::skip]
const DOWN_PAD1: [f32; 18] = [1.2758048, -1.1760424, -0.86976063, 2.365738, 0.075421035, -2.483914, 1.047306, -1.3558503, -1.4496695, 1.7393761, -0.11878544, -2.6591156, 0.8751197, -1.4684796, -1.9619746, 1.166196, -0.25140706, -2.7612448];
#[rustfmt::skip]
const DOWN_POOL: [f32; 16] = [0.65527827, -0.10241744, -0.80153924, -0.09502819, -0.4940915, -1.0190908, 0.31074592, 0.9331062, -1.0886432, -0.7914216, 1.0740929, 0.9134506, -0.46075177, 0.3249391, 0.63133526, -0.13192356];
#[rustfmt::skip]
const UP_SIZE: [f32; 70] = [0.22402191, 0.12312341, 0.18671542, 0.28159615, 0.34009966, 0.43046, 0.50561893, -0.40908134, -0.2575567, -0.214382, -0.107303396, -0.039884433, 0.085977525, 0.17851068, 0.3176725, 0.7116186, 0.6504004, 0.56752914, 0.4882273, 0.37513143, 0.32200426, 0.4172405, 0.4946996, 0.5734284, 0.65482247, 0.71513844, 0.7548223, 0.35257998, 0.34014276, 0.079235256, -0.0474813, -0.25019407, -0.357175, -0.51725656, -0.47531748, -0.10862601, -0.21296835, -0.15496409, -0.06837314, -0.015333474, 0.067738116, 0.15111662, -0.7741437, -0.64138377, -0.5934758, -0.47865042, -0.40476888, -0.26887238, -0.17071939, -0.06316486, 0.32771465, 0.27087718, 0.19675463, 0.12378276, 0.02142629, -0.024845928, 0.088020205, 0.17572266, 0.26052648, 0.35036594, 0.41482693, 0.4598502, 0.051727116, 0.021481633, -0.22499543, -0.35046536, -0.5533361, -0.6609712, -0.8245237, -0.8038135];
#[rustfmt::skip]
const UP_X2: [f32; 48] = [0.27025223, 0.35205942, 0.36652184, 0.39044708, 0.3947302, 0.43542913, 0.099558234, 0.14513278, 0.17369258, 0.21841168, 0.24958217, 0.19167992, 0.19131815, 0.24826789, 0.21707201, 0.17228699, 0.14377677, 0.0980863, 0.43518344, 0.39420527, 0.3897401, 0.3656056, 0.35099584, 0.27001423, -0.08003317, -0.0010672361, 0.011554636, 0.033566773, 0.036772758, 0.084382266, -0.24408692, -0.2006253, -0.16946214, -0.12090415, -0.08720875, -0.14406598, -0.15612394, -0.09825379, -0.12684238, -0.16767675, -0.19351375, -0.24125315, 0.10231233, 0.06833285, 0.06278634, 0.036777616, 0.020352006, -0.06326276];
