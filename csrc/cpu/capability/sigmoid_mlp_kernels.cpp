// Fused CPU kernels for a whole SigmoidMLP, a^l = sigma(W^l a^(l-1) + b^l) for l = 1 .. L: the forward through every
// layer, the back-propagation loop over every layer, and one whole step of Nielsen's update_mini_batch.
//
// Rows are samples: a^l is stored (n, n_l) row-major, W^l is (n_l, n_(l-1)), as in torch. Per layer, the three
// matrix products of the chapter are
//
//     forward        Z^l      = A^(l-1) (W^l)^T              (n, n_l)          a dot product per entry
//     (1.1, as in A) dC/dW^l  = (Delta^l)^T A^(l-1)           (n_l, n_(l-1))    a sum of outer products
//     (2.3.2)        dC/dA^(l-1) = Delta^l W^l                (n, n_(l-1))      a sum of scaled rows
//
// Why not just call at::mm: for Nielsen's [784, 30, 10] at mini-batch 10 the arithmetic of a whole training step is
// about a microsecond of FMAs per layer, while every ATen call costs about a microsecond of dispatch and allocation
// on its own. So small products run in the register-blocked loops below (no allocation, no thread pool, no
// dispatcher), and large ones go to BLAS (MKL here, multi-threaded), chosen by the measured crossover
// kSmallGemmMaxMacs. A step allocates one work buffer for its activations and deltas.
//
// The loops are written once, on GCC vector types of a template width N. This file is compiled once per CPU
// capability (setup.py: baseline, AVX2 + FMA, AVX-512), with CPU_CAPABILITY naming the copy's namespace and N the
// width of its vectors (kLanes below); csrc/cpu/sigmoid_mlp.cpp chooses a copy at run time. Only the entry points
// at the end of the file leave its anonymous namespace. It includes as few headers as it can (see kernels.h).
#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>

#include "kernels.h"

#define BP_TORCH_CAT_(a, b) a##b
#define BP_TORCH_CAT(a, b) BP_TORCH_CAT_(a, b)

namespace bp_torch {
namespace BP_TORCH_CAT(cpu_, CPU_CAPABILITY) {
namespace {


#define BP_TORCH_INLINE inline __attribute__((always_inline))

// Below this many multiply-adds (I * J * K) a product runs in the loops here, above it in BLAS: below it BLAS's fixed
// cost per call dominates, above it BLAS's cache blocking wins. With torch's 2 threads BLAS gains its second core
// on large products and loses more to waking it on small ones, so the crossover stays between 1M and 4M MACs
// (`bench_mlp.py --crossover`; the table is in BENCHMARKS.md).
constexpr int64_t kSmallGemmMaxMacs = 1 << 20;

// Multiply-adds from which a product in the loops is split over torch's threads (see split_over_threads): each
// thread then keeps its rows of W in its own cache from the forward to the update. Nielsen's [784, 100, 10] (0.78M
// per product) gains from the split; [784, 30, 10] (0.24M) loses, its thread wake-ups costing more than the split
// saves (BENCHMARKS.md).
constexpr int64_t kThreadedMinMacs = 1 << 19;

// Sums over more samples than this (dC/dW and dC/db add one term per sample) go to ATen whatever their size: the
// loops here add the samples in order, and in float32 that order's rounding error grows with their number (an
// 18,002-sample cancelling sum in tests/test_numerics.py came out 4% off), while BLAS blocks its sums and at::sum
// adds in a cascade. Mini-batches are far below it.
constexpr int64_t kMaxInOrderSamples = 256;

// kParallelGrain: see kernels.h.

// ---------------------------------------------------------------------------------------------------------------
// Small-matrix loops. T is float or double; N lanes per vector (4/2 baseline, 8/4 for AVX2, 16/8 for AVX-512).

template <typename T, int N>
struct Simd {
  typedef T vec __attribute__((vector_size(N * sizeof(T))));
  static BP_TORCH_INLINE vec load(const T* p) { vec v; std::memcpy(&v, p, sizeof v); return v; }
  static BP_TORCH_INLINE void store(T* p, vec v) { std::memcpy(p, &v, sizeof v); }
  // s - 0 is s for every s, -0 included, so this compiles to one broadcast; `vec{} + s` would add 0 to s first
  // (an instruction per splat), as -0 + 0 is +0.
  static BP_TORCH_INLINE vec splat(T s) { return s - vec{}; }
  // A tree of halves (log2 N vector adds), not N dependent scalar adds: the forward does one per output.
  static BP_TORCH_INLINE T sum(vec v) {
    if constexpr (N == 1) {
      return v[0];
    } else {
      typename Simd<T, N / 2>::vec lo, hi;
      std::memcpy(&lo, &v, sizeof lo);
      std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
      return Simd<T, N / 2>::sum(lo + hi);
    }
  }
};

// The register blocks of the loops below. dot_block: 4 x 3 accumulators fill AVX2's 16 registers with the 3 loaded
// rows of B and 1 of A; AVX-512 has 32 registers. axpy_block: RI rows of C by CV vectors. With AVX-512 both blocks
// are 5 rows of W deep, so the split of Nielsen's 30 hidden neurons with an epoch's partner thread (25 / 5, see
// Partner) falls on whole blocks of both products (5 x 4 is no slower than 6 x 4 for dC/dW: BENCHMARKS.md).
template <typename T, int N>
struct Blocks {
  static constexpr bool kWide = N * sizeof(T) == 64;
  static constexpr int kDotRows = kWide ? 5 : 4, kDotCols = kWide ? 5 : 3;
  static constexpr int kAxpyRows = kWide ? 5 : 3, kAxpyVectors = 4;
};

// C[i, j] = sum_k A[i, k] B[j, k] for an RI x RJ block: RI * RJ vector accumulators over k, one horizontal sum
// each at the end. Used for the forward, Z = A W^T, where k runs along rows of both operands.
template <typename T, int N, int RI, int RJ>
BP_TORCH_INLINE void dot_block(int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc) {
  using S = Simd<T, N>;
  using V = typename S::vec;
  V acc[RI][RJ];
  for (int i = 0; i < RI; ++i) for (int j = 0; j < RJ; ++j) acc[i][j] = V{};
  int64_t k = 0;
  for (; k + N <= K; k += N) {
    V b[RJ];
    for (int j = 0; j < RJ; ++j) b[j] = S::load(B + j * ldb + k);
    for (int i = 0; i < RI; ++i) {
      const V a = S::load(A + i * lda + k);
      for (int j = 0; j < RJ; ++j) acc[i][j] += a * b[j];
    }
  }
  for (int i = 0; i < RI; ++i) {
    for (int j = 0; j < RJ; ++j) {
      T s = S::sum(acc[i][j]);
      for (int64_t kk = k; kk < K; ++kk) s += A[i * lda + kk] * B[j * ldb + kk];
      C[i * ldc + j] = s;
    }
  }
}

// The blocks of C's last rows/columns are smaller: peel RJ (then RI) down to the remainder, at compile time.
template <typename T, int N, int RI, int RJ>
BP_TORCH_INLINE void dot_block_upto(int ri, int rj, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                                    T* C, int64_t ldc) {
  if constexpr (RJ > 1) {
    if (rj < RJ) return dot_block_upto<T, N, RI, RJ - 1>(ri, rj, K, A, lda, B, ldb, C, ldc);
  }
  if constexpr (RI > 1) {
    if (ri < RI) return dot_block_upto<T, N, RI - 1, RJ>(ri, rj, K, A, lda, B, ldb, C, ldc);
  }
  dot_block<T, N, RI, RJ>(K, A, lda, B, ldb, C, ldc);
}

// The rows of an epoch's next mini-batch, prefetched into cache while this one's forward product runs: they lie at
// random places in a data set larger than the caches, and gathering them cold stalls on memory for each row (about
// a fifth of a [784, 30, 10] step). The product calls it after each of its blocks with its progress, done of
// total, and it issues the matching share of the rows' cache lines: a few at a time, which the memory system
// serves alongside the arithmetic, where all of them at once would stall it.
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
      __builtin_prefetch(row + next_ % lines_per_row_ * kLine);
    }
  }

 private:
  static constexpr int64_t kLine = 64;
  const T* x_;
  int64_t row_stride_;
  const int64_t* order_;
  int64_t first_, lines_per_row_, lines_, next_ = 0;
};

// C (I x J) = A (I x K) B^T, B stored (J x K); calls prefetch(done, total) after each block when given.
template <typename T, int N>
BP_TORCH_INLINE void small_mm_nt(int64_t I, int64_t J, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                                 T* C, int64_t ldc, RowPrefetch<T>* prefetch) {
  constexpr int RI = Blocks<T, N>::kDotRows, RJ = Blocks<T, N>::kDotCols;
  const int64_t blocks = (I + RI - 1) / RI * ((J + RJ - 1) / RJ);
  int64_t done = 0;
  for (int64_t i = 0; i < I; i += RI) {
    const int ri = static_cast<int>(std::min<int64_t>(RI, I - i));
    for (int64_t j = 0; j < J; j += RJ) {
      const int rj = static_cast<int>(std::min<int64_t>(RJ, J - j));
      dot_block_upto<T, N, RI, RJ>(ri, rj, K, A + i * lda, lda, B + j * ldb, ldb, C + i * ldc + j, ldc);
      if (prefetch != nullptr) (*prefetch)(++done, blocks);
    }
  }
}

// C[i, k0 : k0 + CV N] = beta C + alpha sum_j A(i, j) B[j, k0 : ...] for RI rows of C: each step broadcasts one
// A(i, j) against CV vectors of B's row j, so no horizontal sums are needed. A(i, j) = A[i * a_rs + j * a_cs] lets
// the same loop read Delta (rows, for Delta W) or Delta^T (columns, for Delta^T A). With `sp` (the activations of
// C's layer, laid out like C), the result is multiplied by sigma'(z) = a (1 - a) on the way out (1.2, 2.2).
template <typename T, int N, int RI, int CV>
BP_TORCH_INLINE void axpy_block(int64_t J, T alpha, const T* A, int64_t a_rs, int64_t a_cs, const T* B,
                                int64_t ldb, bool accumulate, T* C, int64_t ldc, const T* sp) {
  using S = Simd<T, N>;
  using V = typename S::vec;
  V acc[RI][CV];
  for (int i = 0; i < RI; ++i) for (int c = 0; c < CV; ++c) acc[i][c] = V{};
  for (int64_t j = 0; j < J; ++j) {
    V b[CV];
    for (int c = 0; c < CV; ++c) b[c] = S::load(B + j * ldb + c * N);
    for (int i = 0; i < RI; ++i) {
      const V s = S::splat(A[i * a_rs + j * a_cs]);
      for (int c = 0; c < CV; ++c) acc[i][c] += s * b[c];
    }
  }
  for (int i = 0; i < RI; ++i) {
    for (int c = 0; c < CV; ++c) {
      V out = acc[i][c] * alpha;                     // exact for alpha = 1: no branch needed
      if (sp != nullptr) {
        const V a = S::load(sp + i * ldc + c * N);
        out *= a * (T(1) - a);
      }
      if (accumulate) out += S::load(C + i * ldc + c * N);
      S::store(C + i * ldc + c * N, out);
    }
  }
}

template <typename T, int N, int RI, int CV>
BP_TORCH_INLINE void axpy_block_upto(int ri, int64_t J, T alpha, const T* A, int64_t a_rs, int64_t a_cs, const T* B,
                                     int64_t ldb, bool accumulate, T* C, int64_t ldc, const T* sp) {
  if constexpr (RI > 1) {
    if (ri < RI) return axpy_block_upto<T, N, RI - 1, CV>(ri, J, alpha, A, a_rs, a_cs, B, ldb, accumulate, C, ldc, sp);
  }
  axpy_block<T, N, RI, CV>(J, alpha, A, a_rs, a_cs, B, ldb, accumulate, C, ldc, sp);
}

// The last K % N columns, in vectors of N/2, N/4, ... lanes, then one at a time: the hidden layer of
// [784, 30, 10] has 30 = 16 + 8 + 4 + 2 columns.
template <typename T, int H, int RI>
BP_TORCH_INLINE void axpy_tail(int ri, int64_t k, int64_t K, int64_t J, T alpha, const T* A_i, int64_t a_rs,
                               int64_t a_cs, const T* B, int64_t ldb, bool accumulate, T* C_i, int64_t ldc,
                               const T* sp_i) {
  if constexpr (H >= 1) {
    if (k + H <= K) {
      axpy_block_upto<T, H, RI, 1>(ri, J, alpha, A_i, a_rs, a_cs, B + k, ldb, accumulate, C_i + k, ldc,
                                   sp_i ? sp_i + k : nullptr);
      k += H;
    }
    axpy_tail<T, H / 2, RI>(ri, k, K, J, alpha, A_i, a_rs, a_cs, B, ldb, accumulate, C_i, ldc, sp_i);
  }
}

// C (I x K) = [C +] alpha A B [* sigma'], A(i, j) = A[i * a_rs + j * a_cs] (I x J), B (J x K) row-major.
template <typename T, int N>
BP_TORCH_INLINE void small_mm_axpy(int64_t I, int64_t J, int64_t K, T alpha, const T* A, int64_t a_rs, int64_t a_cs,
                                   const T* B, int64_t ldb, bool accumulate, T* C, int64_t ldc, const T* sp) {
  constexpr int RI = Blocks<T, N>::kAxpyRows, CV = Blocks<T, N>::kAxpyVectors;
  for (int64_t i = 0; i < I; i += RI) {
    const int ri = static_cast<int>(std::min<int64_t>(RI, I - i));
    const T* A_i = A + i * a_rs;
    T* C_i = C + i * ldc;
    const T* sp_i = sp ? sp + i * ldc : nullptr;
    int64_t k = 0;
    for (; k + CV * N <= K; k += CV * N) {
      axpy_block_upto<T, N, RI, CV>(ri, J, alpha, A_i, a_rs, a_cs, B + k, ldb, accumulate, C_i + k, ldc,
                                    sp_i ? sp_i + k : nullptr);
    }
    for (; k + N <= K; k += N) {
      axpy_block_upto<T, N, RI, 1>(ri, J, alpha, A_i, a_rs, a_cs, B + k, ldb, accumulate, C_i + k, ldc,
                                   sp_i ? sp_i + k : nullptr);
    }
    axpy_tail<T, N / 2, RI>(ri, k, K, J, alpha, A_i, a_rs, a_cs, B, ldb, accumulate, C_i, ldc, sp_i);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The three products of a layer, each either the loops above or BLAS. BLAS is reached through ATen's exported CPU
// kernels (at::cpu::mm_out / addmm_out, MKL here) on tensors that wrap the raw buffers: torch's wheel does not
// export at::native::cpublas::gemm. The wrappers (blas_*, in csrc/cpu/blas.cpp) cost about a microsecond per
// product, which only the large products that take this path pay (see kSmallGemmMaxMacs).

BP_TORCH_INLINE bool use_small(int64_t I, int64_t J, int64_t K) { return I * J * K <= kSmallGemmMaxMacs; }


// fn(begin, end) over [0, size), one block per thread with edges on multiples of `align`, when a loop product has
// at least kThreadedMinMacs multiply-adds; on this thread alone otherwise. Each thread computes its own part of the
// output. With `align` the loop's register-block size, every entry is computed by the same code, in the same order,
// as on one thread (the compiler may fuse multiply-adds differently in a remainder block), so the result does not
// depend on the number of threads (tests/test_threads.py).
template <typename F>
BP_TORCH_INLINE void split_over_threads(int64_t macs, int64_t size, int64_t align, const F& fn) {
  if (macs < kThreadedMinMacs || at::in_parallel_region()) return fn(0, size);
  // At least kThreadedMinMacs / 2 per thread, the share that was worth a thread: a many-core machine does not wake
  // all its cores for a small product.
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), macs / (kThreadedMinMacs / 2));
  if (threads < 2) return fn(0, size);
  const int64_t block = ((size + threads - 1) / threads + align - 1) / align * align;
  at::parallel_for(0, (size + block - 1) / block, 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) fn(b * block, std::min(size, (b + 1) * block));
  });
}

// The second thread of an epoch (sgd_epoch_impl), lent to each of its steps: it takes the last sixth of each large
// product while the training thread computes the rest. Only a sixth because its first task is to gather the next
// mini-batches (BatchRing), which is bound by memory bandwidth: a third or a half of each product leaves it too
// little time for that (BENCHMARKS.md). A product is posted as a job, which the partner takes up when it is free.
// The training thread never waits for a job that has not started: if the partner has not taken it up by the time
// the first part is done, the training thread runs it itself. Only a job in progress is waited for, and if that wait
// outlasts the pauses of a busy-wait (the partner lost its core to another process, say), the training thread
// keeps its next products to itself, 16 after a first stall, twice as many after each stall that follows (up to
// 4,096), one fewer after each job that came back in time: a descheduled partner must not stall every step, and a
// fixed long backoff would lose the partner's help after each of the host's occasional preemptions.
//
// Job states: kIdle -> kPosted (training thread) -> kRunning (partner) -> kDone (partner) -> kIdle (training
// thread); or kPosted -> kIdle when the training thread takes its job back.
class Partner {
 public:
  // fn(begin, end) over [0, size), split at a multiple of `align` (each entry is then computed by the same code, in
  // the same order, whichever thread runs it: the result does not depend on the split, as in split_over_threads).
  template <typename F>
  void split(int64_t size, int64_t align, const F& fn) {
    const int64_t mid = ((5 * size + 5) / 6 + align - 1) / align * align;
    if (mid >= size || stalled_ > 0) {
      stalled_ -= stalled_ > 0;
      return fn(0, size);
    }
    job_ = [](const void* f, int64_t begin, int64_t end) { (*static_cast<const F*>(f))(begin, end); };
    job_fn_ = &fn;
    job_begin_ = mid;
    job_end_ = size;
    state_.store(kPosted, std::memory_order_release);
    fn(0, mid);
    int posted = kPosted;
    if (state_.compare_exchange_strong(posted, kIdle, std::memory_order_acq_rel)) return fn(mid, size);
    int spins = 0;
    while (state_.load(std::memory_order_acquire) != kDone) relax(spins);
    state_.store(kIdle, std::memory_order_relaxed);
    if (spins == kPauses) {
      stalled_ = backoff_;
      backoff_ = std::min(2 * backoff_, kMaxBackoff);
    } else if (backoff_ > kMinBackoff) {
      --backoff_;
    }
  }

  // On the partner thread: runs the posted job, if there is one; false if there was none.
  bool run_job() {
    int posted = kPosted;
    if (state_.load(std::memory_order_relaxed) != kPosted ||
        !state_.compare_exchange_strong(posted, kRunning, std::memory_order_acq_rel)) {
      return false;
    }
    job_(job_fn_, job_begin_, job_end_);
    state_.store(kDone, std::memory_order_release);
    return true;
  }

  // One round of a busy-wait, the spins-th: short pauses first (a job takes microseconds), then the core is
  // offered to other threads.
  static void relax(int& spins) {
    if (spins < kPauses) {
      ++spins;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }

 private:
  static constexpr int kPauses = 256;
  static constexpr int64_t kMinBackoff = 16, kMaxBackoff = 4096;
  enum : int { kIdle, kPosted, kRunning, kDone };
  std::atomic<int> state_{kIdle};
  void (*job_)(const void*, int64_t, int64_t) = nullptr;
  const void* job_fn_ = nullptr;
  int64_t job_begin_ = 0, job_end_ = 0;
  int64_t stalled_ = 0;                      // products left that the training thread keeps to itself
  int64_t backoff_ = kMinBackoff;            // how many the next stall keeps
};

// Multiply-adds from which a product is worth a partner: Nielsen's hidden layer (235k at mini-batch 10) is,
// its output layer (3k) is not, a job's hand-over costing about as much as 10k multiply-adds.
constexpr int64_t kPartnerMinMacs = 1 << 15;

// fn(begin, end) over [0, size): shared with the epoch's partner if there is one and the product is large enough,
// else as split_over_threads.
template <typename F>
BP_TORCH_INLINE void split_work(Partner* partner, int64_t macs, int64_t size, int64_t align, const F& fn) {
  if (partner != nullptr && macs >= kPartnerMinMacs) return partner->split(size, align, fn);
  split_over_threads(macs, size, align, fn);
}

// Z (n x out) = A (n x in) W^T, W (out x in).                                          forward, z = w a + b
// Threads split the neurons (rows of W): each reads only its rows of W, as layer_grad_w's threads write them.
// A prefetch is made by the thread that computes all of Z, where there is one: it is not shared between threads.
template <typename T, int N>
BP_TORCH_INLINE void small_z(int64_t n, int64_t in, int64_t out, const T* a_prev, const T* w, T* z,
                             RowPrefetch<T>* prefetch, Partner* partner) {
  split_work(partner, n * in * out, out, Blocks<T, N>::kDotCols, [&](int64_t begin, int64_t end) {
    small_mm_nt<T, N>(n, end - begin, in, a_prev, in, w + begin * in, in, z + begin, out,
                      end - begin == out ? prefetch : nullptr);
  });
}

// G (out x in) = [G +] alpha Delta^T A, Delta (n x out), A (n x in).                   (1.1), as in (A) and (B)
template <typename T, int N>
BP_TORCH_INLINE void small_grad_w(int64_t n, int64_t in, int64_t out, T alpha, const T* delta, const T* a_prev,
                                  bool accumulate, T* g, Partner* partner) {
  split_work(partner, n * in * out, out, Blocks<T, N>::kAxpyRows, [&](int64_t begin, int64_t end) {
    small_mm_axpy<T, N>(end - begin, n, in, alpha, delta + begin, 1, out, a_prev, in, accumulate, g + begin * in, in,
                        nullptr);
  });
}
// D (n x in) = (Delta W) [* a (1 - a)], Delta (n x out), W (out x in); `a_prev` null: no sigma' factor (dC/dx).
template <typename T, int N>
BP_TORCH_INLINE void small_back(int64_t n, int64_t in, int64_t out, const T* delta, const T* w, const T* a_prev,
                                T* d, Partner* partner) {
  // Threads split D's columns, in whole steps of small_mm_axpy's widest block.
  split_work(partner, n * in * out, in, Blocks<T, N>::kAxpyVectors * N, [&](int64_t begin, int64_t end) {
    small_mm_axpy<T, N>(n, out, end - begin, T(1), delta, out, 1, w + begin, in, false, d + begin, in,
                        a_prev ? a_prev + begin : nullptr);
  });
}

template <typename T, int N>
BP_TORCH_INLINE void layer_z(int64_t n, int64_t in, int64_t out, const T* a_prev, const T* w, T* z,
                             RowPrefetch<T>* prefetch, Partner* partner) {
  if (use_small(n, out, in)) return small_z<T, N>(n, in, out, a_prev, w, z, prefetch, partner);
  blas_z<T>(n, in, out, a_prev, w, z);
}
template <typename T, int N>
BP_TORCH_INLINE void layer_grad_w(int64_t n, int64_t in, int64_t out, T alpha, const T* delta, const T* a_prev,
                                  bool accumulate, T* g, Partner* partner) {
  if (n <= kMaxInOrderSamples && use_small(n, out, in)) {
    return small_grad_w<T, N>(n, in, out, alpha, delta, a_prev, accumulate, g, partner);
  }
  blas_grad_w<T>(n, in, out, alpha, delta, a_prev, accumulate, g);
}
template <typename T, int N>
BP_TORCH_INLINE void layer_back(int64_t n, int64_t in, int64_t out, const T* delta, const T* w, const T* a_prev,
                                T* d, Partner* partner) {
  if (use_small(n, out, in)) return small_back<T, N>(n, in, out, delta, w, a_prev, d, partner);
  blas_back<T>(n, in, out, delta, w, a_prev, d);
}

// Where a layer's products go to BLAS and torch has two threads, bp_torch splits the work between the threads
// itself, and BLAS, called inside a parallel region, runs single-threaded on each: the forward gives each thread
// half the samples, whose sigmoids it then takes while they are in its cache; the backward runs its two products,
// Delta W and Delta^T A (the same n * in * out multiply-adds), one per thread. Measured at (64, 256, 256): the
// forward went from 1.0x to 0.89x the time of torch.mm + sigmoid_, the backward from 0.92x to 0.81x the time of its
// masked parts (dC/dx alone plus dC/dW alone); benchmarks/bench_layers.py from 0.88-0.94 to 0.84-0.87.
BP_TORCH_INLINE bool concurrent_products(int64_t n, int64_t in, int64_t out) {
  return !use_small(n, out, in) && at::get_num_threads() == 2 && !at::in_parallel_region();
}

// a = sigma(z + b), row by row, in place; exp(-z) overflows to inf for very negative z, which gives exactly 0.
template <typename T>
BP_TORCH_INLINE void bias_sigmoid_inplace(int64_t n, int64_t out, const T* b, T* a) {
  using Vec = at::vec::Vectorized<T>;
  const auto sigmoid = [](Vec z) { return (Vec(1) + z.neg().exp()).reciprocal(); };
  const auto rows = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (b != nullptr) {
        at::vec::map2([&](Vec z, Vec bias) { return sigmoid(z + bias); }, a + i * out, a + i * out, b, out);
      } else {
        at::vec::map(sigmoid, a + i * out, a + i * out, out);
      }
    }
  };
  // Small layers stay on this thread (no thread pool); a large one's exps are worth spreading like its product.
  if (n * out < kParallelGrain) return rows(0, n);
  at::parallel_for(0, n, std::max<int64_t>(1, kParallelGrain / out), rows);
}

// g_b = [g_b +] alpha sum over samples of delta: dz/db = 1.
template <typename T>
BP_TORCH_INLINE void layer_grad_b(int64_t n, int64_t out, T alpha, const T* delta, bool accumulate, T* gb) {
  if (n > kMaxInOrderSamples) return blas_grad_b<T>(n, out, alpha, delta, accumulate, gb);
  if (!accumulate) std::fill(gb, gb + out, T(0));
  for (const auto i : c10::irange(n)) {
    for (const auto j : c10::irange(out)) gb[j] += alpha * delta[i * out + j];
  }
}

// small (threading.stack_size allows 32 KiB), and one allocation per call is nothing next to a step's arithmetic.
// The memory is private to the call: the extension keeps no writable state outside a call (tests/test_threads.py).
// 64-byte aligned, so the kernels' vector loads split no cache line.
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

// `prefetch`, if given, runs during the first layer's product (see RowPrefetch); `partner`, if given, takes a share
// of each large product (see Partner).
template <typename T, int N>
BP_TORCH_INLINE void forward_impl(const Net<T>& net, const T* x, T* const* acts, RowPrefetch<T>* prefetch = nullptr,
                                  Partner* partner = nullptr) {
  const T* a_prev = x;
  for (const auto l : c10::irange(net.layers())) {
    const int64_t in = net.sizes[l], out = net.sizes[l + 1];
    const T* bias = net.has_biases() ? net.biases[l] : nullptr;
    if (concurrent_products(net.n, in, out)) {
      // Each thread its half of the samples, product then sigmoid, while its rows of a are in its cache.
      at::parallel_for(0, net.n, (net.n + 1) / 2, [&](int64_t begin, int64_t end) {
        blas_z<T>(end - begin, in, out, a_prev + begin * in, net.weights[l], acts[l] + begin * out);
        bias_sigmoid_inplace<T>(end - begin, out, bias, acts[l] + begin * out);
      });
    } else {
      // z^l = w^l a^(l-1) ...
      layer_z<T, N>(net.n, in, out, a_prev, net.weights[l], acts[l], l == 0 ? prefetch : nullptr, partner);
      bias_sigmoid_inplace<T>(net.n, out, bias, acts[l]);                     // a^l = sigma(z^l + b^l)
    }
    a_prev = acts[l];
  }
}

// From delta^L (in delta_buf), downwards: dC/dW^l, dC/db^l, then delta^(l-1) with W^l as it was before this call
// touched it. With `update`, the gradients go straight into the parameters, W <- W - lr dC/dW (alpha = -lr),
// instead of into grad_w / grad_b. Deltas alternate between two buffers of max n * n_l.
template <typename T, int N>
BP_TORCH_INLINE void backprop_impl(const Net<T>& net, const T* x, const T* const* acts, T* delta, T* delta_prev,
                                   T alpha, bool update, T* const* grad_w, T* const* grad_b, T* grad_x,
                                   Partner* partner = nullptr) {
  for (int64_t l = net.layers() - 1; l >= 0; --l) {
    const int64_t in = net.sizes[l], out = net.sizes[l + 1];
    const T* a_prev = l > 0 ? acts[l - 1] : x;
    // delta^(l-1) = (W^l)^T delta^l * sigma'(z^(l-1)) (2.3.2, 2.2, as in B), before W^l changes below;
    // for l = 0 it is dC/dx (no sigma'), wanted only when grad_x is.
    const bool back_wanted = l > 0 || grad_x != nullptr;
    const auto back = [&] {
      layer_back<T, N>(net.n, in, out, delta, net.weights[l], l > 0 ? a_prev : nullptr, l > 0 ? delta_prev : grad_x,
                       partner);
    };
    // dC/dW^l = delta^l (a^(l-1))^T (1.1, as in A); dC/db^l = delta^l.
    const bool grad_w_wanted = update || grad_w != nullptr;
    const bool grad_b_wanted = update ? net.has_biases() : grad_b != nullptr;
    const auto parameter_grads = [&] {
      if (grad_w_wanted) {
        layer_grad_w<T, N>(net.n, in, out, alpha, delta, a_prev, update, update ? net.weights[l] : grad_w[l],
                           partner);
      }
      if (grad_b_wanted) layer_grad_b<T>(net.n, out, alpha, delta, update, update ? net.biases[l] : grad_b[l]);
    };
    if (!update && back_wanted && grad_w_wanted && concurrent_products(net.n, in, out)) {
      at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) task == 0 ? back() : parameter_grads();
      });
    } else {
      if (back_wanted) back();
      parameter_grads();
    }
    std::swap(delta, delta_prev);
  }
}

// One step of update_mini_batch; returns C = 1/2n sum_x ||y(x) - a^L(x)||^2 before the update.
template <typename T, int N>
BP_TORCH_INLINE double sgd_step_impl(const Net<T>& net, const T* x, const T* y, T lr,
                                     RowPrefetch<T>* prefetch = nullptr, Partner* partner = nullptr) {
  const int64_t L = net.layers();
  int64_t acts_size = 0, widest = 0;
  for (const auto l : c10::irange(L)) {
    acts_size += net.n * net.sizes[l + 1];
    widest = std::max(widest, net.n * net.sizes[l + 1]);
  }
  Workspace<T> workspace(acts_size + 2 * widest);
  T* buffer = workspace.data();
  Workspace<T*> act_pointers(L);
  T** acts = act_pointers.data();
  for (const auto l : c10::irange(L)) {
    acts[l] = buffer;
    buffer += net.n * net.sizes[l + 1];
  }
  T* delta = buffer;
  T* delta_prev = buffer + widest;

  forward_impl<T, N>(net, x, acts, prefetch, partner);

  // delta^L = dC/da^L * sigma'(z^L) = (a^L - y) a^L (1 - a^L) / n  (1.3, 1.2), averaged over the mini-batch.
  const int64_t out = net.sizes[L];
  const T* a = acts[L - 1];
  const T inv_n = T(1) / static_cast<T>(std::max<int64_t>(net.n, 1));
  double cost = 0;
  for (const auto i : c10::irange(net.n)) {
    T sample_cost = 0;
    for (const auto j : c10::irange(out)) {
      const int64_t k = i * out + j;
      const T err = a[k] - y[k];
      sample_cost += err * err;
      delta[k] = err * a[k] * (T(1) - a[k]) * inv_n;
    }
    cost += T(0.5) * sample_cost;                                    // C_x = 1/2 ||y(x) - a^L(x)||^2
  }
  backprop_impl<T, N>(net, x, acts, delta, delta_prev, -lr, /*update=*/true, nullptr, nullptr, nullptr,
                      partner);
  return cost / static_cast<double>(net.n);                          // NaN for an empty batch, as torch's mean
}

// An epoch's mini-batch k: rows order[k b .. k b + count) of x and y (rows start .. of x, y without an order),
// copied into xb (count x in) and yb (count x out).
template <typename T>
BP_TORCH_INLINE void gather_rows(const T* x, int64_t x_row, int64_t in, const T* y, int64_t y_row, int64_t out,
                                 const int64_t* order, int64_t start, int64_t count, T* xb, T* yb) {
  for (const auto i : c10::irange(count)) {
    const int64_t row = order != nullptr ? order[start + i] : start + i;
    // A zero-width x or y may have no memory at all (a null data pointer), which memcpy must not be given.
    if (in > 0) std::memcpy(xb + i * in, x + row * x_row, in * sizeof(T));
    if (out > 0) std::memcpy(yb + i * out, y + row * y_row, out * sizeof(T));
  }
}

// Mini-batches gathered ahead of the arithmetic by the epoch's partner thread: a shuffled mini-batch's rows lie at
// random places in a data set larger than the caches, and reading them from memory cost a [784, 30, 10] step about
// 6 us (a page walk and a DRAM round trip per 4 KiB page), which prefetching from the training thread did not hide
// without stalling its arithmetic. The partner copies mini-batches k + 1, k + 2, .. into a ring of slots, a row at a
// time between its jobs, while the training thread runs step k; step k + 1 then reads its rows from cache.
//
// The training thread never waits for a slot: a mini-batch that is not ready it gathers itself, as without the
// ring. Every step sees exactly the rows x[order[k b ..]], wherever they were copied. After each row it copies, the
// partner prefetches the same row of the mini-batch after, whose memory latency then passes while it works: a
// shuffled step took 12.3 us with that prefetch, 13.2 without (interleaved, 7 rounds, when the partner took a third
// of each product before the next mini-batch).
//
// Protocol (one producer, one consumer): slot k % kSlots holds mini-batch k once ready_[k % kSlots] == k; the
// producer writes mini-batch k there only after the consumer has finished mini-batch k - kSlots (consumed_ > that).
template <typename T>
class BatchRing {
 public:
  static constexpr int64_t kSlots = 4;

  BatchRing(const T* x, int64_t x_row, int64_t in, const T* y, int64_t y_row, int64_t out, const int64_t* order,
            int64_t n, int64_t batch)
      : x_(x), y_(y), x_row_(x_row), y_row_(y_row), in_(in), out_(out), order_(order), n_(n), batch_(batch),
        slot_size_(std::min(batch, n) * (in + out)),
        slots_(kSlots * slot_size_) {
    for (auto& r : ready_) r.store(-1, std::memory_order_relaxed);
  }

  // Consumer: the rows of mini-batch k (x's, then y's), or nullptr if they are not gathered (yet).
  const T* rows(int64_t k) const {
    return ready_[k % kSlots].load(std::memory_order_acquire) == k ? slot(k) : nullptr;
  }
  // Consumer: done with mini-batch k, whose slot may now take k + kSlots.
  void consumed(int64_t k) { consumed_.store(k + 1, std::memory_order_release); }

  // Producer: whether the mini-batch after the consumer's current one is gathered already.
  bool next_ready() const { return next_ - 1 > consumed_.load(std::memory_order_acquire); }

  // Producer: copies one row of the next mini-batch that is due; false if none is due now (all slots ahead are
  // full, or the epoch has no more).
  bool gather_one_row() {
    const int64_t done = consumed_.load(std::memory_order_acquire);
    if (next_ <= done) {                     // the consumer got ahead (gathering itself): skip to its next one
      next_ = done + 1;
      row_ = 0;
    }
    const int64_t start = next_ * batch_;
    if (start >= n_ || next_ - done >= kSlots) return false;
    const int64_t count = std::min(batch_, n_ - start);
    T* xb = slot(next_);
    gather_rows(x_, x_row_, in_, y_, y_row_, out_, order_, start + row_, 1, xb + row_ * in_,
                xb + count * in_ + row_ * out_);
    if (const int64_t ahead = start + batch_ + row_; ahead < n_) {
      RowPrefetch<T>(x_, x_row_, in_, order_, ahead, 1)(1, 1);
      RowPrefetch<T>(y_, y_row_, out_, order_, ahead, 1)(1, 1);
    }
    if (++row_ == count) {
      ready_[next_ % kSlots].store(next_, std::memory_order_release);
      ++next_;
      row_ = 0;
    }
    return true;
  }

 private:
  T* slot(int64_t k) const { return slots_.data() + k % kSlots * slot_size_; }

  const T *x_, *y_;
  int64_t x_row_, y_row_, in_, out_;
  const int64_t* order_;
  int64_t n_, batch_, slot_size_;
  Workspace<T> slots_;                       // 64-byte aligned, as torch allocates
  std::array<std::atomic<int64_t>, kSlots> ready_;
  std::atomic<int64_t> consumed_{0};
  int64_t next_ = 1, row_ = 0;               // the producer's place: mini-batch 0 the consumer gathers itself
};

// Epochs of at least this many mini-batches get a partner thread where torch has a second one. The epoch ends by
// joining the partner, which on a loaded machine can wait a whole time slice for its core (a few ms): a short epoch
// would pay that for little gain, a long one does not notice it (BENCHMARKS.md).
constexpr int64_t kPartnerMinBatches = 1024;

// Whether a training step on mini-batches of `batch` stays on one thread: all its products in the loops here, none
// large enough to be split over torch's threads or to sum its samples in ATen. Only such steps get a partner: the
// training then runs inside a parallel region, where a step could no longer use torch's threads itself.
template <typename T>
bool step_stays_on_one_thread(const Net<T>& net, int64_t batch) {
  if (batch > kMaxInOrderSamples) return false;
  for (const auto l : c10::irange(net.layers())) {
    const int64_t macs = batch * net.sizes[l] * net.sizes[l + 1];
    if (!use_small(batch, net.sizes[l + 1], net.sizes[l]) || macs >= kThreadedMinMacs) return false;
    if (batch * net.sizes[l + 1] >= kParallelGrain) return false;
  }
  return true;
}

// One epoch of update_mini_batch: mini-batches of `batch` samples taken in `order` (null: 0, 1, .., n-1), the last
// one smaller when `batch` does not divide n; costs[k] = mini-batch k's cost before its update. Each mini-batch's
// rows are gathered into one small buffer, which is exactly x[order[k*batch : (k+1)*batch]], and sgd_step_impl
// takes it: every step is the one the sgd_step op would take on that slice, bit for bit. In order, x's own rows are
// used where they lie, unless the partner below has gathered them.
//
// Where torch has a second thread and the epoch is long, that thread partners it: it gathers the next mini-batches
// (BatchRing) and takes a sixth of each large product of every step (Partner); `bash benchmarks/epoch_steps.sh`
// times a step both ways (BENCHMARKS.md). The results are the same either way, bit for bit.
template <typename T, int N>
void sgd_epoch_impl(Net<T> net, const T* x, int64_t x_row, const T* y, int64_t y_row, const int64_t* order,
                    int64_t n, int64_t batch, T lr, T* costs) {
  const int64_t in = net.sizes[0], out = net.sizes[net.layers()];
  const bool gather = order != nullptr || x_row != in || y_row != out;
  const int64_t batches = n == 0 ? 0 : (n - 1) / batch + 1;
  const bool partnered = at::get_num_threads() >= 2 && !at::in_parallel_region() &&
                         batches >= kPartnerMinBatches && step_stays_on_one_thread(net, batch);
  std::optional<BatchRing<T>> ring;
  Partner partner;
  std::atomic<bool> finished{false};
  if (partnered) ring.emplace(x, x_row, in, y, y_row, out, order, n, batch);

  // The training thread's own gathering buffer, allocated here, outside the parallel region below. 64-byte
  // aligned, as torch allocates x[index]: the kernels' vector loads then split no cache line where the rows' own
  // alignment allows it (a shuffled [784, 30, 10] step took 25.5 us with a 16-byte aligned buffer, 15.9 with this
  // one). Room for the largest mini-batch there is, which a batch size beyond n is not.
  const int64_t rows_max = std::min(batch, n);
  Workspace<T> own(gather ? rows_max * (in + out) : 0);
  const auto train = [&] {
    for (int64_t start = 0, k = 0; start < n; start += batch, ++k) {
      net.n = std::min(batch, n - start);
      const T* xk = x + start * x_row;
      const T* yk = y + start * y_row;
      if (const T* ready = partnered ? ring->rows(k) : nullptr) {
        xk = ready;
        yk = ready + net.n * in;
      } else if (gather) {
        T* xb = own.data();
        gather_rows(x, x_row, in, y, y_row, out, order, start, net.n, xb, xb + net.n * in);
        xk = xb;
        yk = xb + net.n * in;
      }
      if (partnered) {
        costs[k] = static_cast<T>(sgd_step_impl<T, N>(net, xk, yk, lr, nullptr, &partner));
        ring->consumed(k);
        continue;
      }
      // Alone, this thread prefetches the next mini-batch's rows during its own arithmetic.
      const int64_t next = start + net.n, next_n = std::min(batch, n - next);
      RowPrefetch<T>(y, y_row, out, order, next, next_n)(1, 1);      // the next targets: a line or two per row
      RowPrefetch<T> next_rows(x, x_row, in, order, next, next_n);    // the next inputs: during the forward
      costs[k] = static_cast<T>(sgd_step_impl<T, N>(net, xk, yk, lr, &next_rows));
    }
  };
  if (!partnered) return train();

  // The partner's loop, until the training is over: the next mini-batch first, then jobs, then mini-batches
  // further ahead. A mini-batch not ready costs the training thread a cold gather (about 6 us), a job not taken
  // only its own arithmetic (2-3 us): jobs first lost 55% of the mini-batches to the training thread, this order
  // under 2% (the training thread then ran a third of the jobs itself), 13.7 against 14.6 us a step (one C++
  // process, interleaved, 7 rounds).
  const auto assist = [&] {
    for (int idle = 0; !finished.load(std::memory_order_acquire);) {
      if ((ring->next_ready() && partner.run_job()) || ring->gather_one_row() || partner.run_job()) {
        idle = 0;
      } else {
        Partner::relax(idle);
      }
    }
  };
  // Task 0, the training, runs on this thread; task 1, the partner, on torch's second one. Should torch run both on
  // one thread, the partner comes second, finds the epoch finished and returns: the training never needs it.
  at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      if (task == 0) {
        struct Finish {
          std::atomic<bool>& finished;
          ~Finish() { finished.store(true, std::memory_order_release); }
        } finish{finished};
        train();
      } else {
        assist();
      }
    }
  });
}

template <typename T, int N>
BP_TORCH_INLINE void backward_impl(const Net<T>& net, const T* grad_output, const T* x, const T* const* acts,
                                   T* const* grad_w, T* const* grad_b, T* grad_x) {
  const int64_t L = net.layers();
  int64_t widest = 0;
  for (const auto l : c10::irange(L)) widest = std::max(widest, net.n * net.sizes[l + 1]);
  Workspace<T> workspace(2 * widest);
  T* delta = workspace.data();
  // delta^L = dC/da^L * sigma'(z^L) = g a^L (1 - a^L)  (1.2)
  const T* a = acts[L - 1];
  for (const auto k : c10::irange(net.n * net.sizes[L])) delta[k] = grad_output[k] * a[k] * (T(1) - a[k]);
  backprop_impl<T, N>(net, x, acts, delta, delta + widest, T(1), /*update=*/false, grad_w, grad_b, grad_x);
}


// ---------------------------------------------------------------------------------------------------------------
// The vector width, N = kLanes<T>: that of the instruction set this copy is compiled for (64 bytes for AVX-512, 32
// for AVX2, 16 for baseline x86-64's SSE2 and for other architectures' baseline vectors).

#if defined(CPU_CAPABILITY_AVX512)
constexpr int kVectorBytes = 64;
#elif defined(CPU_CAPABILITY_AVX2)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif
template <typename T>
constexpr int kLanes = kVectorBytes / static_cast<int>(sizeof(T));

template <typename T>
void forward_entry(const Net<T>& net, const T* x, T* const* acts) {
  forward_impl<T, kLanes<T>>(net, x, acts);
}
template <typename T>
void backward_entry(const Net<T>& net, const T* grad_output, const T* x, const T* const* acts, T* const* grad_w,
                    T* const* grad_b, T* grad_x) {
  backward_impl<T, kLanes<T>>(net, grad_output, x, acts, grad_w, grad_b, grad_x);
}

}  // namespace

void forward(const Net<float>& net, const float* x, float* const* acts) { forward_entry(net, x, acts); }
void forward(const Net<double>& net, const double* x, double* const* acts) { forward_entry(net, x, acts); }
void backward(const Net<float>& net, const float* grad_output, const float* x, const float* const* acts,
              float* const* grad_w, float* const* grad_b, float* grad_x) {
  backward_entry(net, grad_output, x, acts, grad_w, grad_b, grad_x);
}
void backward(const Net<double>& net, const double* grad_output, const double* x, const double* const* acts,
              double* const* grad_w, double* const* grad_b, double* grad_x) {
  backward_entry(net, grad_output, x, acts, grad_w, grad_b, grad_x);
}
double sgd_step(const Net<float>& net, const float* x, const float* y, float lr) {
  return sgd_step_impl<float, kLanes<float>>(net, x, y, lr);
}
double sgd_step(const Net<double>& net, const double* x, const double* y, double lr) {
  return sgd_step_impl<double, kLanes<double>>(net, x, y, lr);
}
void sgd_epoch(const Net<float>& net, const float* x, int64_t x_row, const float* y, int64_t y_row,
               const int64_t* order, int64_t n, int64_t batch, float lr, float* costs) {
  sgd_epoch_impl<float, kLanes<float>>(net, x, x_row, y, y_row, order, n, batch, lr, costs);
}
void sgd_epoch(const Net<double>& net, const double* x, int64_t x_row, const double* y, int64_t y_row,
               const int64_t* order, int64_t n, int64_t batch, double lr, double* costs) {
  sgd_epoch_impl<double, kLanes<double>>(net, x, x_row, y, y_row, order, n, batch, lr, costs);
}

}  // namespace BP_TORCH_CAT(cpu_, CPU_CAPABILITY)
}  // namespace bp_torch
