// Runs reel's kernels (flash_attention.cu, elementwise.cu, included as the GPU build appends them) on
// the host emulation of cuda_emulation.h, one launch as nvrtc.rs makes it.
// Input file (argv[1]): little-endian int64 — the kernel (0 flash attention, 1 GEGLU), its
// header — then the operands; output file (argv[2]): the result, unwritten values left as
// 0xff bytes (a NaN in every dtype).
//   flash attention: 16 int64 — dtype (0 f16, 1 bf16), batch, heads, sq, sk, causal, warps, the
//     q / k / v batch and sequence strides, the lengths of the q, k, v buffers in values — then
//     the three u16 buffers; result (batch, sq, heads·64) u16.
//   GEGLU: 3 int64 — dtype (0 f32, 1 f16, 2 bf16), rows, dim — then x (rows, 2·dim); result
//     (rows, dim).
//   layer norm rows (f32): 3 int64 — rows, dim, warps a block — then x, w, b and eps as f32;
//     result (rows, dim).
//   residual start (f16): 4 int64 — dtype, rows, cols, with bias (0/1) — then the residual and
//     the bias; result (rows, cols).
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <thread>
#include <vector>

#include "cuda_emulation.h"
#include "flash_attention.cu"
#include "elementwise.cu"

// Runs `kernel` on a grid of blocks_x × blocks_y blocks of `threads` threads.
static void launch(unsigned blocks_x, unsigned blocks_y, int threads, const std::function<void()>& kernel) {
  blockDim = {(unsigned)threads, 1, 1};
  gridDim = {blocks_x, blocks_y, 1};
  pthread_barrier_init(&emu_block_barrier, nullptr, threads);
  std::vector<EmuWarp> warp_state((threads + 31) / 32);
  for (auto& w : warp_state) pthread_barrier_init(&w.barrier, nullptr, 32);
  emu_warps = warp_state.data();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      threadIdx = {(unsigned)t, 0, 0};
      for (unsigned bx = 0; bx < gridDim.x; ++bx)
        for (unsigned by = 0; by < gridDim.y; ++by) {
          blockIdx = {bx, by, 0};
          kernel();
          __syncthreads();
        }
    });
  for (auto& t : pool) t.join();
}

template <class T>
static bool read(FILE* f, std::vector<T>& v) {
  return std::fread(v.data(), sizeof(T), v.size(), f) == v.size();
}

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  FILE* in = std::fopen(argv[1], "rb");
  if (!in) return 3;
  long long kernel;
  if (std::fread(&kernel, 8, 1, in) != 1) return 4;
  std::vector<unsigned char> result;
  if (kernel == 0) {
    long long h[16];
    if (std::fread(h, 8, 16, in) != 16) return 4;
    const int dtype = (int)h[0], batch = (int)h[1], heads = (int)h[2], sq = (int)h[3], sk = (int)h[4];
    const int causal = (int)h[5], warps = (int)h[6];
    std::vector<u16> q(h[13]), k(h[14]), v(h[15]);
    if (!read(in, q) || !read(in, k) || !read(in, v)) return 5;
    std::vector<u16> o((size_t)batch * sq * heads * 64, 0xffff);
    const float scale_log2 = 1.4426950408889634f / 8.0f;
    const int row_blocks = (sq + 16 * warps - 1) / (16 * warps);
    launch((unsigned)(batch * heads), (unsigned)row_blocks, 32 * warps, [&] {
      if (dtype == 0)
        reel_flash_f16(q.data(), k.data(), v.data(), o.data(), heads, sq, sk, h[7], h[8], h[9], h[10], h[11], h[12],
                       scale_log2, causal);
      else
        reel_flash_bf16(q.data(), k.data(), v.data(), o.data(), heads, sq, sk, h[7], h[8], h[9], h[10], h[11], h[12],
                        scale_log2, causal);
    });
    result.assign((unsigned char*)o.data(), (unsigned char*)(o.data() + o.size()));
  } else if (kernel == 1) {
    long long h[3];
    if (std::fread(h, 8, 3, in) != 3) return 4;
    const int dtype = (int)h[0], dim = (int)h[2];
    const long long rows = h[1], total = rows * dim;
    const int threads = 64;
    const unsigned blocks = (unsigned)std::min<long long>((total + threads - 1) / threads, 7);  // grid-stride: fewer blocks than items
    if (dtype == 0) {
      std::vector<float> x(rows * 2 * dim), y(total);
      std::memset(y.data(), 0xff, y.size() * 4);
      if (!read(in, x)) return 5;
      launch(blocks, 1, threads, [&] { reel_geglu_f32(x.data(), y.data(), rows, dim); });
      result.assign((unsigned char*)y.data(), (unsigned char*)(y.data() + y.size()));
    } else {
      std::vector<u16> x(rows * 2 * dim), y(total, 0xffff);
      if (!read(in, x)) return 5;
      launch(blocks, 1, threads, [&] {
        if (dtype == 1)
          reel_geglu_f16(x.data(), y.data(), rows, dim);
        else
          reel_geglu_bf16(x.data(), y.data(), rows, dim);
      });
      result.assign((unsigned char*)y.data(), (unsigned char*)(y.data() + y.size()));
    }
  } else if (kernel == 2) {
    // The residual start: 4 int64 — dtype (1 f16), rows, cols, with bias — then the residual
    // (rows, cols) and the bias (cols) as u16; result (rows, cols).
    long long h[4];
    if (std::fread(h, 8, 4, in) != 4) return 4;
    const long long total = h[1] * h[2];
    std::vector<u16> r(total), b(h[3] ? h[2] : 0), y(total, 0xffff);
    if (!read(in, r) || !read(in, b)) return 5;
    const int cols = (int)h[2];
    launch(3, 1, 64, [&] { reel_residual_start_f16(r.data(), h[3] ? b.data() : nullptr, y.data(), total, cols); });
    result.assign((unsigned char*)y.data(), (unsigned char*)(y.data() + y.size()));
  } else if (kernel == 3) {
    // Layer norm rows (f32): 3 int64 — rows, dim, warps a block — then x (rows, dim), w (dim),
    // b (dim) as f32, eps as an f32; result (rows, dim).
    long long h[3];
    if (std::fread(h, 8, 3, in) != 3) return 4;
    const long long rows = h[0];
    const int dim = (int)h[1], warps = (int)h[2];
    std::vector<float> x(rows * dim), w(dim), b(dim), eps(1), y(rows * dim);
    std::memset(y.data(), 0xff, y.size() * 4);
    if (!read(in, x) || !read(in, w) || !read(in, b) || !read(in, eps)) return 5;
    const unsigned blocks = (unsigned)((rows + warps - 1) / warps);
    launch(blocks, 1, 32 * warps, [&] { reel_layer_norm_rows_f32(x.data(), w.data(), b.data(), y.data(), rows, dim, eps[0]); });
    result.assign((unsigned char*)y.data(), (unsigned char*)(y.data() + y.size()));
  } else {
    return 7;
  }
  std::fclose(in);
  FILE* out = std::fopen(argv[2], "wb");
  if (!out || std::fwrite(result.data(), 1, result.size(), out) != result.size()) return 6;
  std::fclose(out);
  return 0;
}
