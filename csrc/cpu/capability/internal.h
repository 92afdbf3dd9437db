// What the files of one kernel copy share: the copy's vector width and register blocks, the thresholds that route
// each product, the work buffers, and the functions one file calls in another. Included only by the files of the
// capability set (this folder), each compiled once per CPU capability (setup.py), so everything here lives in the
// copy's own namespace, bp_torch::cpu_<CPU_CAPABILITY>: an inline function of a header shared with baseline code
// could be merged by the linker with its baseline copy (kernels.h).
//
// The files, each readable on its own:
//   microkernels.h    the register-blocked loops of the small products, on vectors of the copy's width
//                     (included by passes.cpp);
//   passes.cpp        a network's passes: forward, back-propagation and the update, each product routed to the
//                     loops, to BLAS (csrc/cpu/blas.cpp) or split over threads; the forward/backward/sgd_step
//                     entry points;
//   epoch.cpp         the epoch driver: mini-batches gathered in order or shuffled, and the partner thread
//                     (csrc/cpu/partner.h) that gathers ahead and takes a share of each large product.
//
// Rows are samples: a^l is stored (n, n_l) row-major, W^l is (n_l, n_(l-1)), as in torch. Per layer, the three
// matrix products of the chapter are
//
//     forward        Z^l      = A^(l-1) (W^l)^T              (n, n_l)          a dot product per entry
//     (1.1, as in A) dC/dW^l  = (Delta^l)^T A^(l-1)           (n_l, n_(l-1))    a sum of outer products
//     (2.3.2)        dC/dA^(l-1) = Delta^l W^l                (n, n_(l-1))      a sum of scaled rows
#pragma once

#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "../partner.h"
#include "kernels.h"

#define BP_TORCH_CAT_(a, b) a##b
#define BP_TORCH_CAT(a, b) BP_TORCH_CAT_(a, b)
#define BP_TORCH_CPU_NAMESPACE BP_TORCH_CAT(cpu_, CPU_CAPABILITY)

#define BP_TORCH_INLINE inline __attribute__((always_inline))

namespace bp_torch {
namespace BP_TORCH_CPU_NAMESPACE {

// ---------------------------------------------------------------------------------------------------------------
// The vector width of this copy: that of the instruction set it is compiled for (64 bytes for AVX-512, 32 for
// AVX2, 16 for baseline x86-64's SSE2 and for other architectures' baseline vectors), in lanes of T.

#if defined(CPU_CAPABILITY_AVX512)
constexpr int kVectorBytes = 64;
#elif defined(CPU_CAPABILITY_AVX2)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif
template <typename T>
constexpr int kLanes = kVectorBytes / static_cast<int>(sizeof(T));

// The register blocks of the loops (microkernels.h). dot_block: 4 x 3 accumulators fill AVX2's 16 registers with
// the 3 loaded rows of B and 1 of A; AVX-512 has 32 registers. axpy_block: kAxpyRows rows of C by kAxpyVectors
// vectors. With AVX-512 both blocks are 5 rows of W deep, so the split of Nielsen's 30 hidden neurons with an
// epoch's partner thread (20 / 10, see Partner) falls on whole blocks of both products. The threads that split a
// product split it on these blocks (passes.cpp), so every entry is computed by the same code on any split.
template <typename T>
struct Blocks {
  static constexpr bool kWide = kVectorBytes == 64;
  static constexpr int kDotRows = kWide ? 5 : 4, kDotCols = kWide ? 5 : 3;
  static constexpr int kAxpyRows = kWide ? 5 : 3, kAxpyVectors = 4;
};

// ---------------------------------------------------------------------------------------------------------------
// Where each product runs (passes.cpp; the measurements behind each are in BENCHMARKS.md, "The kernels'
// thresholds").

// Below this many multiply-adds (I * J * K) a product runs in the loops, above it in BLAS: below it BLAS's fixed
// cost per call dominates, above it BLAS's cache blocking wins. With torch's 2 threads BLAS gains its second core
// on large products and loses more to waking it on small ones, so the crossover stays between 1M and 4M MACs.
constexpr int64_t kSmallGemmMaxMacs = int64_t{1} << 20;

// Multiply-adds from which a product in the loops is split over torch's threads (passes.cpp, split_over_threads):
// each thread then keeps its rows of W in its own cache from the forward to the update. Nielsen's [784, 100, 10]
// (0.78M per product) gains from the split; [784, 30, 10] (0.24M) loses, its thread wake-ups costing more than the
// split saves.
constexpr int64_t kThreadedMinMacs = int64_t{1} << 19;

// Whether a product runs in the loops. The baseline copy's loops have 128-bit vectors and no fused multiply-add:
// from kThreadedMinMacs on, BLAS on one thread is faster than they are, and they are faster than BLAS only where
// they are split over threads. Such a product runs in BLAS on one thread (torch's only one, or inside a parallel
// region) and in the loops otherwise; so Nielsen's [784, 30, 10] at mini-batch 10 stays in the loops on one
// thread, as the epoch's partner needs.
BP_TORCH_INLINE bool use_small(int64_t I, int64_t J, int64_t K) {
  const int64_t macs = I * J * K;
  if (kVectorBytes > 16 || macs < kThreadedMinMacs) return macs <= kSmallGemmMaxMacs;
  return macs <= kSmallGemmMaxMacs && at::get_num_threads() > 1 && !at::in_parallel_region();
}

// Sums over more samples than this (dC/dW and dC/db add one term per sample) go to ATen whatever their size: the
// loops add the samples in order, and in float32 that order's rounding error grows with their number (an
// 18,002-sample cancelling sum in tests/test_numerics.py comes out 4% off), while BLAS blocks its sums and at::sum
// adds in a cascade. Mini-batches are far below it.
constexpr int64_t kMaxInOrderSamples = 256;

// Multiply-adds from which a product is worth sharing with an epoch's partner: Nielsen's hidden layer (235k at
// mini-batch 10) is, its output layer (3k) is not, a job's hand-over costing about as much as 10k multiply-adds.
constexpr int64_t kPartnerMinMacs = int64_t{1} << 15;

// kParallelGrain (elementwise passes): see kernels.h.

// ---------------------------------------------------------------------------------------------------------------
// Work buffers: a step's activations and deltas, an epoch's gathered mini-batches. On the heap, as a thread's
// stack may be small (threading.stack_size allows 32 KiB), and one allocation per call is nothing next to a step's
// arithmetic. The memory is private to the call: the extension keeps no writable state outside a call
// (tests/test_threads.py). 64-byte aligned, as torch allocates tensors, so the kernels' vector loads split no cache
// line where the rows' own alignment allows it.
template <typename T>
class Workspace {
 public:
  explicit Workspace(size_t size) : data_(static_cast<T*>(std::aligned_alloc(64, round_up(size * sizeof(T))))) {
    if (data_ == nullptr && size != 0) fail_out_of_memory(size);
  }
  ~Workspace() { std::free(data_); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  T* data() const { return data_; }

 private:
  // aligned_alloc wants a multiple of the alignment, and at least one byte.
  static size_t round_up(size_t bytes) { return std::max<size_t>(64, (bytes + 63) / 64 * 64); }
  T* data_;
};

// The rows of an epoch's next mini-batch, prefetched into cache while this one's forward product runs: they lie at
// random places in a data set larger than the caches, and gathering them cold stalls on memory for each row. The
// product calls it after each of its blocks with its progress, done of total, and it issues the matching share of
// the rows' cache lines: a few at a time, which the memory system serves alongside the arithmetic, where all of
// them at once would stall it. Into the second-level cache (prefetcht1), not the first: a mini-batch's rows are as
// large as the first-level cache (10 rows of 784 floats, 31 KB), and pulling them there evicts the operands of the
// product that runs meanwhile, or of the copy they are prefetched for.
template <typename T>
class RowPrefetch {
 public:
  RowPrefetch(const T* x, int64_t row_stride, int64_t row_length, const int64_t* order, int64_t first, int64_t count)
      : x_(x), row_stride_(row_stride), order_(order), first_(first),
        lines_per_row_((row_length * static_cast<int64_t>(sizeof(T)) + kLine - 1) / kLine),
        lines_(count * lines_per_row_) {}

  void operator()(int64_t done, int64_t total) {
    for (const int64_t until = lines_ * done / total; next_ < until; ++next_) {
      const int64_t i = first_ + next_ / lines_per_row_;
      const char* row = reinterpret_cast<const char*>(x_ + (order_ != nullptr ? order_[i] : i) * row_stride_);
      __builtin_prefetch(row + next_ % lines_per_row_ * kLine, /*rw=*/0, /*locality=*/2);
    }
  }

 private:
  static constexpr int64_t kLine = 64;
  const T* x_;
  int64_t row_stride_;
  const int64_t* order_;
  int64_t first_, lines_per_row_, lines_, next_ = 0;
};

// ---------------------------------------------------------------------------------------------------------------
// The passes (passes.cpp); instantiated for float and double.

// The three products of a layer in the loops, each shared with `partner` when given and large enough, else split
// over torch's threads when large enough. A prefetch is made by the thread that computes all of Z, where there is
// one.
// Z (n x out) = A (n x in) W^T, W (out x in).                                          forward, z = w a + b
template <typename T>
void small_z(int64_t n, int64_t in, int64_t out, const T* a_prev, const T* w, T* z, RowPrefetch<T>* prefetch,
             Partner* partner);
// G (out x in) = [beta G +] alpha Delta^T A, Delta (n x out), A (n x in).              (1.1), as in (A) and (B)
template <typename T>
void small_grad_w(int64_t n, int64_t in, int64_t out, T alpha, const T* delta, const T* a_prev, bool accumulate,
                  T beta, T* g, Partner* partner);
// D (n x in) = (Delta W) [* a (1 - a)], Delta (n x out), W (out x in); `a_prev` null: no sigma' factor (dC/dx).
template <typename T>
void small_back(int64_t n, int64_t in, int64_t out, const T* delta, const T* w, const T* a_prev, T* d,
                Partner* partner);

// One step of update_mini_batch on the mini-batch x (n rows), y, with `update`'s cost, learning rate and weight
// decay; returns the cost averaged over the mini-batch before the update (without the decay's L2 term). `prefetch`,
// if given, runs during the first layer's product; `partner`, if given, takes a share of each large product.
template <typename T>
double sgd_step_impl(const Net<T>& net, const T* x, const T* y, const SgdRule<T>& rule, RowPrefetch<T>* prefetch,
                     Partner* partner);

// fn(begin, end) through Partner::split, whose jobs are plain function pointers: this instance, named in the
// copy's namespace through F, calls the closure.
template <typename F>
BP_TORCH_INLINE void partner_split(Partner& partner, int64_t size, int64_t align, const F& fn) {
  partner.split(
      size, align, [](const void* f, int64_t begin, int64_t end) { (*static_cast<const F*>(f))(begin, end); }, &fn);
}

}  // namespace BP_TORCH_CPU_NAMESPACE
}  // namespace bp_torch
