// Runs reel_flash_f16 / reel_flash_bf16 (flash_attention.cu, included as the GPU build
// appends it) on the host emulation of cuda_emulation.h: one launch as nvrtc.rs makes it.
// Input file (argv[1]): 16 little-endian int64 — dtype (0 f16, 1 bf16), batch, heads, sq, sk,
// causal, warps, the q / k / v batch and sequence strides, and the lengths of the q, k, v
// buffers in values — then the three u16 buffers. Output file (argv[2]): the (batch, sq,
// heads·64) result as u16, the unwritten values left as 0xffff (a NaN in both dtypes).
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "cuda_emulation.h"
#include "flash_attention.cu"

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  FILE* in = std::fopen(argv[1], "rb");
  if (!in) return 3;
  long long h[16];
  if (std::fread(h, 8, 16, in) != 16) return 4;
  const int dtype = (int)h[0], batch = (int)h[1], heads = (int)h[2], sq = (int)h[3], sk = (int)h[4];
  const int causal = (int)h[5], warps = (int)h[6];
  std::vector<u16> q(h[13]), k(h[14]), v(h[15]);
  if (std::fread(q.data(), 2, q.size(), in) != q.size() || std::fread(k.data(), 2, k.size(), in) != k.size() ||
      std::fread(v.data(), 2, v.size(), in) != v.size())
    return 5;
  std::fclose(in);
  std::vector<u16> o((size_t)batch * sq * heads * 64, 0xffff);

  const int threads = 32 * warps;
  const int row_blocks = (sq + 16 * warps - 1) / (16 * warps);
  blockDim = {(unsigned)threads, 1, 1};
  gridDim = {(unsigned)(batch * heads), (unsigned)row_blocks, 1};
  pthread_barrier_init(&emu_block_barrier, nullptr, threads);
  std::vector<EmuWarp> warp_state(warps);
  for (auto& w : warp_state) pthread_barrier_init(&w.barrier, nullptr, 32);
  emu_warps = warp_state.data();
  const float scale_log2 = 1.4426950408889634f / 8.0f;

  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      threadIdx = {(unsigned)t, 0, 0};
      for (unsigned bx = 0; bx < gridDim.x; ++bx)
        for (unsigned by = 0; by < gridDim.y; ++by) {
          blockIdx = {bx, by, 0};
          if (dtype == 0)
            reel_flash_f16(q.data(), k.data(), v.data(), o.data(), heads, sq, sk, h[7], h[8], h[9], h[10], h[11], h[12],
                           scale_log2, causal);
          else
            reel_flash_bf16(q.data(), k.data(), v.data(), o.data(), heads, sq, sk, h[7], h[8], h[9], h[10], h[11],
                            h[12], scale_log2, causal);
          __syncthreads();
        }
    });
  for (auto& t : pool) t.join();

  FILE* out = std::fopen(argv[2], "wb");
  if (!out || std::fwrite(o.data(), 2, o.size(), out) != o.size()) return 6;
  std::fclose(out);
  return 0;
}
