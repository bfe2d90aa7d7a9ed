// reel's element-wise kernels, appended to the kernel source of nvrtc.rs (its prelude defines the
// dtype structs); crates/cli/tests/kernel_emulation.rs runs them on the host too.
// - GEGLU: diffusers' `GEGLU` after its projection (`diffusers/models/activations.py`),
//   `h, gate = x.chunk(2, -1); h * gelu(gate)` with the exact (erf) GELU, in one pass: x (rows,
//   2·dim) contiguous in, y (rows, dim) contiguous out, f32 arithmetic, rounded once.
// - The start of a linear layer with a residual: y = residual + bias (per column), which cuBLAS
//   then accumulates the product onto (beta = 1).
// - Layer norm with one warp a row (`torch.nn.LayerNorm` with its affine weights): the mean, then
//   the mean square about it, in f32, reduced by warp shuffles alone (no shared memory, no block
//   barrier), so the transformer blocks' many short rows do not wait on block reductions.

template <class L>
__device__ void geglu(const typename L::T* x, typename L::T* y, long long rows, int dim) {
  const long long total = rows * dim;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / dim;
    const int c = (int)(i - r * dim);
    const float h = L::ld(x, r * 2 * dim + c);
    const float g = L::ld(x, r * 2 * dim + dim + c);
    L::st(y, i, h * (0.5f * g * (1.0f + erff(g * 0.70710678118654752f))));
  }
}

#define GEGLU(NAME, L)                                                                       \
  extern "C" __global__ void NAME(const L::T* x, L::T* y, long long rows, int dim) {        \
    geglu<L>(x, y, rows, dim);                                                               \
  }
GEGLU(reel_geglu_f32, F32)
GEGLU(reel_geglu_f16, F16)
GEGLU(reel_geglu_bf16, BF16)

// y[i] = r[i] + b[i % cols] (b may be null: y = r), for i < total.
template <class L>
__device__ void residual_start(const typename L::T* r, const typename L::T* b, typename L::T* y, long long total, int cols) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (long long)gridDim.x * blockDim.x)
    L::st(y, i, L::ld(r, i) + (b ? L::ld(b, i % cols) : 0.0f));
}

#define RESIDUAL_START(NAME, L)                                                                          \
  extern "C" __global__ void NAME(const L::T* r, const L::T* b, L::T* y, long long total, int cols) { \
    residual_start<L>(r, b, y, total, cols);                                                           \
  }
RESIDUAL_START(reel_residual_start_f32, F32)
RESIDUAL_START(reel_residual_start_f16, F16)
RESIDUAL_START(reel_residual_start_bf16, BF16)

// Warp w of block b normalises row b·(blockDim.x / 32) + w of x (rows, dim), contiguous.
template <class L>
__device__ void layer_norm_rows(const typename L::T* x, const typename L::T* w, const typename L::T* b,
                                typename L::T* y, long long rows, int dim, float eps) {
  const int lane = threadIdx.x & 31;
  const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;  // a whole warp: no shuffle is left waiting
  const long long base = row * dim;
  float s = 0.0f;
  for (int i = lane; i < dim; i += 32) s += L::ld(x, base + i);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  const float mean = s / (float)dim;
  float q = 0.0f;
  for (int i = lane; i < dim; i += 32) {
    const float d = L::ld(x, base + i) - mean;
    q += d * d;
  }
  for (int o = 16; o > 0; o >>= 1) q += __shfl_xor_sync(0xffffffffu, q, o);
  const float rstd = 1.0f / sqrtf(q / (float)dim + eps);
  for (int i = lane; i < dim; i += 32) L::st(y, base + i, (L::ld(x, base + i) - mean) * rstd * L::ld(w, i) + L::ld(b, i));
}

#define LAYER_NORM_ROWS(NAME, L)                                                                    \
  extern "C" __global__ void NAME(const L::T* x, const L::T* w, const L::T* b, L::T* y, long long rows, \
                                  int dim, float eps) {                                             \
    layer_norm_rows<L>(x, w, b, y, rows, dim, eps);                                                 \
  }
LAYER_NORM_ROWS(reel_layer_norm_rows_f32, F32)
LAYER_NORM_ROWS(reel_layer_norm_rows_f16, F16)
LAYER_NORM_ROWS(reel_layer_norm_rows_bf16, BF16)
