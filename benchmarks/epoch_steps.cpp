// The epoch kernel alone, timed in C++: the sgd_epoch entry point of the kernel copy torch picks here (or
// ATEN_CPU_CAPABILITY's), linked from the real sources as the extension compiles them (scripts/kernel_binary.sh), on
// Nielsen's [784, 30, 10] at mini-batch 10, float32, with torch's two threads (the partner thread, from 1,024
// mini-batches on) and with one (no partner), interleaved round by round; medians of the per-step times.
//
//     bash benchmarks/epoch_steps.sh            # builds against the venv's torch, then runs
//
// No Python, no op dispatch and no input checks: what is left is the epoch itself, so partner changes can be
// compared with less noise than benchmarks/bench_epoch.py sees. Data: uniform pixels, one-hot targets, lr 0 (the
// arithmetic does not depend on the values; lr 0 keeps the weights, so every round does the same work).
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "../csrc/cpu/capability/kernels.h"

#define BP_TORCH_CAT_(a, b) a##b
#define BP_TORCH_CAT(a, b) BP_TORCH_CAT_(a, b)
#define BP_TORCH_STR_(x) #x
#define BP_TORCH_STR(x) BP_TORCH_STR_(x)

int main() {
  using namespace bp_torch;
  using namespace bp_torch::BP_TORCH_CAT(cpu_, CPU_CAPABILITY);
  const int64_t in = 784, hidden = 30, out = 10, batch = 10, n_large = 60000, n_small = 1000;
  std::vector<float> x(n_large * in), y(n_large * out, 0.f), w1(hidden * in), b1(hidden, 0.1f), w2(out * hidden),
      b2(out, 0.1f);
  std::mt19937 gen(0);
  std::uniform_real_distribution<float> uniform(0, 1);
  for (auto& v : x) v = uniform(gen);
  for (int64_t i = 0; i < n_large; ++i) y[i * out + gen() % out] = 1.f;
  for (auto& v : w1) v = uniform(gen) - 0.5f;
  for (auto& v : w2) v = uniform(gen) - 0.5f;
  const int64_t sizes[] = {in, hidden, out};
  float* const weights[] = {w1.data(), w2.data()};
  float* const biases[] = {b1.data(), b2.data()};
  Net<float> net;
  net.layer_count = 2;
  net.sizes = sizes;
  net.weights = weights;
  net.biases = biases;
  std::vector<int64_t> perm(n_large);
  std::vector<float> costs(n_large / batch + 1);

  // Microseconds a step of one shuffled epoch of n samples on `threads` torch threads.
  const auto epoch = [&](int64_t n, int threads) {
    at::set_num_threads(threads);
    for (int64_t i = 0; i < n; ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.begin() + n, gen);
    const auto start = std::chrono::steady_clock::now();
    sgd_epoch(net, x.data(), in, y.data(), out, perm.data(), n, batch, SgdRule<float>{0.f}, costs.data());
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / (n / batch) * 1e6;
  };
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::vector<double> large[2], small[2];
  for (int round = 0; round < 11; ++round) {
    for (int threads = 1; threads <= 2; ++threads) {
      large[threads - 1].push_back(epoch(n_large, threads));
      std::vector<double> runs;
      for (int r = 0; r < 20; ++r) runs.push_back(epoch(n_small, threads));
      small[threads - 1].push_back(median(runs));
    }
  }
  std::printf("[784, 30, 10], batch 10, float32, shuffled, %s kernels; us a step, median of 11 interleaved rounds\n",
              BP_TORCH_STR(CPU_CAPABILITY));
  std::printf("| epoch | 1 thread (alone) | 2 threads (partnered from 1,024 mini-batches) |\n|---|---|---|\n");
  std::printf("| 60,000 samples (188 MB, from memory) | %.2f | %.2f |\n", median(large[0]), median(large[1]));
  std::printf("| 1,000 samples (3 MB, in cache; too short to partner) | %.2f | %.2f |\n", median(small[0]),
              median(small[1]));
}
