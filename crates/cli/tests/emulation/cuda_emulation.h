// A host emulation of the CUDA features reel's fused attention kernel uses, so the kernel's own
// source (crates/cli/src/vendor/flash_attention.cu) runs on a CPU in the tests: each CUDA thread
// of a block is a host thread (the blocks of a launch run one after another on the same
// threads), `__syncthreads` is a barrier of the block, and the warp-wide operations
// (`__shfl_xor_sync`, the tensor-core product `mma.sync.aligned.m16n8k16.row.col.f32`) exchange
// their registers through a per-warp scratch area between two barriers of the warp, with the
// register fragments laid out as the PTX ISA documents them ("Matrix Fragments for
// mma.m16n8k16 with floating point type": lane = 4·groupID + threadID_in_group). The dtype
// structs mirror the prelude in nvrtc.rs: `cvt` rounds f32 to f16 (GCC's _Float16, round to
// nearest even) or to bf16 (the same bit arithmetic as the GPU prelude).
#pragma once
#include <pthread.h>

#include <algorithm>
#include <cmath>
#include <cstring>

typedef unsigned short u16;
using std::min;

struct Dim3 {
  unsigned x, y, z;
};
static thread_local Dim3 threadIdx, blockIdx;
static Dim3 blockDim, gridDim;

#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static

static pthread_barrier_t emu_block_barrier;

struct EmuWarp {
  pthread_barrier_t barrier;
  float f[32];
  unsigned a[32][4];
  unsigned b[32][2];
};
static EmuWarp* emu_warps;

inline void __syncthreads() { pthread_barrier_wait(&emu_block_barrier); }

inline EmuWarp& emu_warp() { return emu_warps[threadIdx.x >> 5]; }

inline float __shfl_xor_sync(unsigned, float v, int mask) {
  EmuWarp& w = emu_warp();
  const int lane = threadIdx.x & 31;
  w.f[lane] = v;
  pthread_barrier_wait(&w.barrier);
  const float r = w.f[lane ^ mask];
  pthread_barrier_wait(&w.barrier);
  return r;
}

inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline float __uint_as_float(unsigned i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned i;
  std::memcpy(&i, &f, 4);
  return i;
}

// c += a·b over the warp: A 16×16 (row), B 16×8 (col), f32 accumulators.
template <class L>
inline void emu_mma(float* c, const unsigned* a, const unsigned* b) {
  EmuWarp& w = emu_warp();
  const int lane = threadIdx.x & 31;
  for (int r = 0; r < 4; ++r) w.a[lane][r] = a[r];
  for (int r = 0; r < 2; ++r) w.b[lane][r] = b[r];
  pthread_barrier_wait(&w.barrier);
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    for (int r = 0; r < 4; ++r) {  // a0..a7: register r holds elements 2r (low half), 2r + 1
      const int row = g + (r & 1) * 8, col = t * 2 + (r >> 1) * 8;
      A[row][col] = L::to_f32(w.a[l][r] & 0xffffu);
      A[row][col + 1] = L::to_f32(w.a[l][r] >> 16);
    }
    for (int r = 0; r < 2; ++r) {  // b0..b3: rows 2t, 2t + 1 (+ 8), column g
      const int k = t * 2 + r * 8;
      B[k][g] = L::to_f32(w.b[l][r] & 0xffffu);
      B[k + 1][g] = L::to_f32(w.b[l][r] >> 16);
    }
  }
  pthread_barrier_wait(&w.barrier);
  const int g = lane >> 2, t = lane & 3;
  for (int i = 0; i < 4; ++i) {  // c0..c3: row g (+ 8 for c2, c3), columns 2t, 2t + 1
    const int row = g + (i >> 1) * 8, col = t * 2 + (i & 1);
    float sum = 0.0f;
    for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
    c[i] += sum;
  }
}

struct F32 {
  typedef float T;
  static float ld(const float* p, long long i) { return p[i]; }
  static void st(float* p, long long i, float v) { p[i] = v; }
};

struct F16 {
  typedef u16 T;
  static float to_f32(unsigned bits) {
    u16 h = (u16)bits;
    _Float16 f;
    std::memcpy(&f, &h, 2);
    return (float)f;
  }
  static float ld(const u16* p, long long i) { return to_f32(p[i]); }
  static u16 cvt(float v) {
    _Float16 f = (_Float16)v;
    u16 h;
    std::memcpy(&h, &f, 2);
    return h;
  }
  static void st(u16* p, long long i, float v) { p[i] = cvt(v); }
  static void mma(float* c, const unsigned* a, const unsigned* b) { emu_mma<F16>(c, a, b); }
};

struct BF16 {
  typedef u16 T;
  static float to_f32(unsigned bits) { return __uint_as_float((bits & 0xffffu) << 16); }
  static float ld(const u16* p, long long i) { return to_f32(p[i]); }
  static u16 cvt(float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
  }
  static void st(u16* p, long long i, float v) { p[i] = cvt(v); }
  static void mma(float* c, const unsigned* a, const unsigned* b) { emu_mma<BF16>(c, a, b); }
};
