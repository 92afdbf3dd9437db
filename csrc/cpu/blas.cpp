// The BLAS side of the SigmoidMLP kernels (csrc/cpu/capability/kernels.h): the products too large for their
// loops, through ATen's tensors. Baseline code, called by every kernel copy.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <ATen/ops/sum_cpu_dispatch.h>
#include <c10/util/Exception.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <array>

#include "capability/kernels.h"

namespace bp_torch {
namespace {

// ATen's exported CPU kernels (at::cpu::mm_out / addmm_out, MKL here) on tensors that wrap the raw buffers, as
// torch's wheel does not export at::native::cpublas::gemm.

// A (rows x cols) row-major view of a raw buffer, for ATen's BLAS kernels. No copy, no ownership.
template <typename T>
at::Tensor wrap(const T* data, int64_t rows, int64_t cols) {
  return at::from_blob(const_cast<T*>(data), {rows, cols},
                       at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

// The fewest multiply-adds worth a thread's block of a product: a few microseconds of arithmetic, more than
// waking a thread costs.
constexpr int64_t kMinBlockMacs = int64_t{1} << 17;

// Runs f(begin, end) on blocks of a product's `rows` output rows, one per thread of torch's. BLAS's own threads
// would split each product too, but they sync with each other inside it, and on a mini-batch's thin products
// (K = n samples) that sync costs several times the arithmetic (BENCHMARKS.md, "The kernels' thresholds"). Called
// inside the parallel region, BLAS runs single-threaded on each block. Inside one already (the concurrent products
// of passes.cpp), f takes all the rows on the calling thread. The loops split their products with passes.cpp's
// split_over_threads, whose blocks follow their register blocks; that one is compiled once per capability, and
// this file, baseline code, cannot share a header template with it without the linker's being free to keep a
// wide-vector instantiation for both.
template <typename F>
void over_row_blocks(int64_t rows, int64_t macs_per_row, const F& f) {
  const int64_t threads = at::get_num_threads();
  if (threads == 1 || at::in_parallel_region()) return f(0, rows);
  const int64_t per_thread = (rows + threads - 1) / threads;
  const int64_t fewest = (kMinBlockMacs + macs_per_row - 1) / std::max<int64_t>(macs_per_row, 1);
  at::parallel_for(0, rows, std::max(per_thread, fewest), f);
}

}  // namespace

template <typename T>
void blas_z(int64_t n, int64_t in, int64_t out, const T* a_prev, const T* w, T* z) {
  const auto w_t = wrap(w, out, in).t();
  over_row_blocks(n, in * out, [&](int64_t begin, int64_t end) {
    auto z_t = wrap(z + begin * out, end - begin, out);
    at::cpu::mm_out(z_t, wrap(a_prev + begin * in, end - begin, in), w_t);
  });
}

template <typename T>
void blas_grad_w(int64_t n, int64_t in, int64_t out, T alpha, const T* delta, const T* a_prev, bool accumulate,
                 T beta, T* g) {
  // Accumulating, beta scales g (W <- beta W + alpha Delta^T A, the update fused into the product, beta the weight
  // decay's factor); beta = 0 ignores g's old contents, NaN included.
  const auto delta_t = wrap(delta, n, out).t();
  const auto a_t = wrap(a_prev, n, in);
  over_row_blocks(out, n * in, [&](int64_t begin, int64_t end) {
    auto g_t = wrap(g + begin * in, end - begin, in);
    at::cpu::addmm_out(g_t, g_t, delta_t.narrow(0, begin, end - begin), a_t, accumulate ? beta : T(0), alpha);
  });
}

template <typename T>
void blas_back(int64_t n, int64_t in, int64_t out, const T* delta, const T* w, const T* a_prev, T* d) {
  const auto w_t = wrap(w, out, in);
  over_row_blocks(n, in * out, [&](int64_t begin, int64_t end) {
    auto d_t = wrap(d + begin * in, end - begin, in);
    at::cpu::mm_out(d_t, wrap(delta + begin * out, end - begin, out), w_t);
    if (a_prev == nullptr) return;
    for (int64_t i = begin * in; i < end * in; ++i) d[i] *= a_prev[i] * (T(1) - a_prev[i]);   // (2.2) sigma'(z^(l-1))
  });
}

// Sums over many samples add in ATen's cascade, whose rounding error does not grow with their number as an in-order
// sum's does.
template <typename T>
void blas_grad_b(int64_t n, int64_t out, T alpha, const T* delta, bool accumulate, T* gb) {
  const std::array<int64_t, 1> sample_dim{0};
  const auto sum = at::cpu::sum(wrap(delta, n, out), sample_dim);
  const T* s = sum.template data_ptr<T>();
  for (const auto j : c10::irange(out)) gb[j] = (accumulate ? gb[j] : T(0)) + alpha * s[j];
}

#define BP_TORCH_INSTANTIATE_BLAS(T)                                                                            \
  template void blas_z<T>(int64_t, int64_t, int64_t, const T*, const T*, T*);                                   \
  template void blas_grad_w<T>(int64_t, int64_t, int64_t, T, const T*, const T*, bool, T, T*);                  \
  template void blas_back<T>(int64_t, int64_t, int64_t, const T*, const T*, const T*, T*);                      \
  template void blas_grad_b<T>(int64_t, int64_t, T, const T*, bool, T*);
BP_TORCH_INSTANTIATE_BLAS(float)
BP_TORCH_INSTANTIATE_BLAS(double)
#undef BP_TORCH_INSTANTIATE_BLAS

void fail_out_of_memory(size_t elements) {
  TORCH_CHECK(false, "bp_torch: out of memory for a work buffer of ", elements, " elements");
}

}  // namespace bp_torch
