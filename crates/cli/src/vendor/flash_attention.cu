// reel's fused attention kernel: softmax(q·kᵀ/√64 [+ causal mask])·v for heads of 64 values,
// f16 or bf16 in, f32 accumulation, straight from and to the token layout the projections use
// (FlashAttention-2, Dao 2023: online softmax over key tiles, scores never written to memory).
//
// Appended to the kernel source of nvrtc.rs, whose prelude defines `u16` and the dtype structs
// F16 / BF16 with `cvt` (f32 → the dtype, round to nearest even), `ld` / `st`, and `mma`
// (`mma.sync.aligned.m16n8k16.row.col.f32.<dtype>.<dtype>.f32`: c += a·b for one warp, register
// fragments as the PTX ISA lays them out). crates/cli/tests/kernel_emulation.rs compiles this
// same file on the host against an emulation of that prelude and checks it against a reference.
//
// Layout: q (batch, sq, heads·64), k (batch, sk, heads·64), v (batch, sk, heads·64), each with
// its own batch and sequence strides (values; the 64 values of a head contiguous, heads
// adjacent); o (batch, sq, heads·64) contiguous. Grid (batch·heads, row blocks); a block of
// `warps` warps takes 16·warps query rows of one head, each warp 16 of them. The block loads a
// tile of 64 keys and values into shared memory (values transposed; keys in 16-byte loads when
// aligned), then each warp computes its
// 16×64 scores with tensor-core products, rescales its running max / sum / output, and adds
// P·V. Lane (g = lane / 4, t = lane % 4) holds rows g and g + 8 of the warp's tile, columns
// 2t, 2t + 1 of each group of 8.

#define FA_D 64
#define FA_BN 64
#define FA_PAD 72

__device__ __forceinline__ unsigned fa_pair(const u16* p) {
  return (unsigned)p[0] | ((unsigned)p[1] << 16);
}

// Eight values in one 16-byte load or store.
struct alignas(16) fa_vec {
  unsigned w[4];
};

template <class L>
__device__ void flash_attention(const u16* q, const u16* k, const u16* v, u16* o, int heads, int sq,
                                int sk, long long qb, long long qs, long long kb, long long ks,
                                long long vb, long long vs, float scale_log2, int causal) {
  __shared__ fa_vec k_raw[FA_BN * FA_PAD / 8];
  __shared__ u16 vt_tile[FA_D * FA_PAD];
  u16* k_tile = (u16*)k_raw;
  const float NEG_INF = __int_as_float(0xff800000);
  const int warps = blockDim.x >> 5;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int batch = blockIdx.x / heads, head = blockIdx.x % heads;
  const int block_rows = 16 * warps;
  const int row0 = blockIdx.y * block_rows + warp * 16;
  const u16* qp = q + batch * qb + head * FA_D;
  const u16* kp = k + batch * kb + head * FA_D;
  const u16* vp = v + batch * vb + head * FA_D;
  // Keys in 16-byte loads when every key row starts 16-byte aligned.
  const bool k_vec = ((kb | ks) & 7) == 0 && ((unsigned long long)kp & 15) == 0;

  // The warp's 16 query rows as A fragments, one per 16 values of the head (rows past sq: 0).
  unsigned qa[4][4];
  for (int kk = 0; kk < 4; ++kk)
    for (int r = 0; r < 4; ++r) {
      const int row = row0 + g + (r & 1) * 8;
      const int col = kk * 16 + t * 2 + (r >> 1) * 8;
      qa[kk][r] = row < sq ? fa_pair(qp + row * qs + col) : 0u;
    }

  float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.0f, 0.0f};
  float acc[8][4];
  for (int n = 0; n < 8; ++n)
    for (int i = 0; i < 4; ++i) acc[n][i] = 0.0f;

  // With the causal mask no row of this block sees keys past its last row.
  const int kend = causal ? min(sk, (int)(blockIdx.y + 1) * block_rows) : sk;
  for (int k0 = 0; k0 < kend; k0 += FA_BN) {
    __syncthreads();
    if (k_vec) {
      for (int i = threadIdx.x; i < FA_BN * FA_D / 8; i += blockDim.x) {
        const int key = i / (FA_D / 8), d = (i % (FA_D / 8)) * 8, kg = k0 + key;
        fa_vec kv = {{0u, 0u, 0u, 0u}};
        if (kg < sk) kv = *(const fa_vec*)(kp + kg * ks + d);
        *(fa_vec*)(k_tile + key * FA_PAD + d) = kv;
      }
    } else {
      for (int i = threadIdx.x; i < FA_BN * FA_D; i += blockDim.x) {
        const int key = i / FA_D, d = i % FA_D, kg = k0 + key;
        k_tile[key * FA_PAD + d] = kg < sk ? kp[kg * ks + d] : (u16)0;
      }
    }
    for (int i = threadIdx.x; i < FA_BN * FA_D; i += blockDim.x) {
      const int key = i / FA_D, d = i % FA_D, kg = k0 + key;
      vt_tile[d * FA_PAD + key] = kg < sk ? vp[kg * vs + d] : (u16)0;
    }
    __syncthreads();

    // Scores: 8 column groups of 8 keys, accumulated over the head's 4 × 16 values.
    float s[8][4];
    for (int n = 0; n < 8; ++n) {
      for (int i = 0; i < 4; ++i) s[n][i] = 0.0f;
      const u16* kr = k_tile + (n * 8 + g) * FA_PAD + t * 2;
      for (int kk = 0; kk < 4; ++kk) {
        unsigned b[2] = {fa_pair(kr + kk * 16), fa_pair(kr + kk * 16 + 8)};
        L::mma(s[n], qa[kk], b);
      }
    }

    // Online softmax in base 2 (scale_log2 = log2(e)/√64): masked keys are -inf.
    float mx[2] = {NEG_INF, NEG_INF};
    for (int n = 0; n < 8; ++n)
      for (int i = 0; i < 4; ++i) {
        const int key = k0 + n * 8 + t * 2 + (i & 1);
        const int row = row0 + g + (i >> 1) * 8;
        float x = s[n][i] * scale_log2;
        if (key >= sk || (causal && key > row)) x = NEG_INF;
        s[n][i] = x;
        mx[i >> 1] = fmaxf(mx[i >> 1], x);
      }
    float base[2], corr[2], rs[2] = {0.0f, 0.0f};
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      const float mn = fmaxf(m[h], mx[h]);
      base[h] = mn == NEG_INF ? 0.0f : mn;
      corr[h] = exp2f(m[h] - base[h]);
      m[h] = mn;
    }
    for (int n = 0; n < 8; ++n)
      for (int i = 0; i < 4; ++i) {
        const float p = exp2f(s[n][i] - base[i >> 1]);
        s[n][i] = p;
        rs[i >> 1] += p;
      }
    for (int h = 0; h < 2; ++h) {
      rs[h] += __shfl_xor_sync(0xffffffffu, rs[h], 1);
      rs[h] += __shfl_xor_sync(0xffffffffu, rs[h], 2);
      l[h] = l[h] * corr[h] + rs[h];
    }
    for (int n = 0; n < 8; ++n)
      for (int i = 0; i < 4; ++i) acc[n][i] *= corr[i >> 1];

    // O += P·V: the probabilities (rounded to the dtype) are the A fragments as they lie in the
    // score registers; V's B fragments come from the transposed tile.
    for (int kk = 0; kk < 4; ++kk) {
      unsigned a[4] = {
          (unsigned)L::cvt(s[2 * kk][0]) | ((unsigned)L::cvt(s[2 * kk][1]) << 16),
          (unsigned)L::cvt(s[2 * kk][2]) | ((unsigned)L::cvt(s[2 * kk][3]) << 16),
          (unsigned)L::cvt(s[2 * kk + 1][0]) | ((unsigned)L::cvt(s[2 * kk + 1][1]) << 16),
          (unsigned)L::cvt(s[2 * kk + 1][2]) | ((unsigned)L::cvt(s[2 * kk + 1][3]) << 16),
      };
      for (int n = 0; n < 8; ++n) {
        const u16* vr = vt_tile + (n * 8 + g) * FA_PAD + kk * 16 + t * 2;
        unsigned b[2] = {fa_pair(vr), fa_pair(vr + 8)};
        L::mma(acc[n], a, b);
      }
    }
  }

  for (int h = 0; h < 2; ++h) {
    const int row = row0 + g + h * 8;
    if (row >= sq) continue;
    const float inv = 1.0f / l[h];
    u16* out = o + (((long long)batch * sq + row) * heads + head) * FA_D + t * 2;
    for (int n = 0; n < 8; ++n) {
      L::st(out, n * 8, acc[n][h * 2] * inv);
      L::st(out, n * 8 + 1, acc[n][h * 2 + 1] * inv);
    }
  }
}

#define FLASH(NAME, L)                                                                            \
  extern "C" __global__ void NAME(const u16* q, const u16* k, const u16* v, u16* o, int heads,    \
                                  int sq, int sk, long long qb, long long qs, long long kb,       \
                                  long long ks, long long vb, long long vs, float scale_log2,     \
                                  int causal) {                                                   \
    flash_attention<L>(q, k, v, o, heads, sq, sk, qb, qs, kb, ks, vb, vs, scale_log2, causal);    \
  }
FLASH(reel_flash_f16, F16)
FLASH(reel_flash_bf16, BF16)
