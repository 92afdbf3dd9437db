// A network's passes, each product routed: the forward through every layer, the back-propagation loop over every
// layer, and one whole step of Nielsen's update_mini_batch (the update fused into the back-propagation), with the
// entry points forward, backward and sgd_step of this kernel copy (kernels.h).
//
// Each product runs in the loops (microkernels.h) below kSmallGemmMaxMacs multiply-adds, or in BLAS through ATen
// (csrc/cpu/blas.cpp) above it; a loop product large enough is split over torch's threads, or shared with an
// epoch's partner (csrc/cpu/partner.h). A step allocates one work buffer for its activations and deltas.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <utility>

#include "internal.h"
#include "microkernels.h"

namespace bp_torch {
namespace BP_TORCH_CPU_NAMESPACE {
namespace {

// fn(begin, end) over [0, size), one block per thread with edges on multiples of `align`, when a loop product has
// at least kThreadedMinMacs multiply-adds; on this thread alone otherwise. Each thread computes its own part of the
// output. With `align` the loop's register-block size, every entry is computed by the same code, in the same order,
// as on one thread (the compiler may fuse multiply-adds differently in a remainder block), so the result does not
// depend on the number of threads (tests/test_threads.py).
template <typename F>
BP_TORCH_INLINE void split_over_threads(int64_t macs, int64_t size, int64_t align, const F& fn) {
  if (macs < kThreadedMinMacs || at::in_parallel_region()) return fn(0, size);
  // At least kThreadedMinMacs / 2 per thread, the share worth a thread: a many-core machine does not wake
  // all its cores for a small product.
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), macs / (kThreadedMinMacs / 2));
  if (threads < 2) return fn(0, size);
  const int64_t block = ((size + threads - 1) / threads + align - 1) / align * align;
  at::parallel_for(0, (size + block - 1) / block, 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) fn(b * block, std::min(size, (b + 1) * block));
  });
}

// fn(begin, end) over [0, size): shared with the epoch's partner if there is one and the product is large enough,
// else as split_over_threads.
template <typename F>
BP_TORCH_INLINE void split_work(Partner* partner, int64_t macs, int64_t size, int64_t align, const F& fn) {
  if (partner != nullptr && macs >= kPartnerMinMacs) return partner_split(*partner, size, align, fn);
  split_over_threads(macs, size, align, fn);
}

}  // namespace

// Threads split the neurons (rows of W): each reads only its rows of W, as small_grad_w's threads write them.
template <typename T>
void small_z(int64_t n, int64_t in, int64_t out, const T* a_prev, const T* w, T* z, RowPrefetch<T>* prefetch,
             Partner* partner) {
  split_work(partner, n * in * out, out, Blocks<T>::kDotCols, [&](int64_t begin, int64_t end) {
    small_mm_nt<T>(n, end - begin, in, a_prev, in, w + begin * in, in, z + begin, out,
                   end - begin == out ? prefetch : nullptr);
  });
}

template <typename T>
void small_grad_w(int64_t n, int64_t in, int64_t out, T alpha, const T* delta, const T* a_prev, bool accumulate,
                  T beta, T* g, Partner* partner) {
  split_work(partner, n * in * out, out, Blocks<T>::kAxpyRows, [&](int64_t begin, int64_t end) {
    small_mm_axpy<T>(end - begin, n, in, alpha, delta + begin, 1, out, a_prev, in, accumulate, beta, g + begin * in, in,
                     nullptr);
  });
}

// Threads split D's columns, in whole steps of small_mm_axpy's widest block.
template <typename T>
void small_back(int64_t n, int64_t in, int64_t out, const T* delta, const T* w, const T* a_prev, T* d,
                Partner* partner) {
  split_work(partner, n * in * out, in, Blocks<T>::kAxpyVectors * kLanes<T>, [&](int64_t begin, int64_t end) {
    small_mm_axpy<T>(n, out, end - begin, T(1), delta, out, 1, w + begin, in, false, T(1), d + begin, in,
                     a_prev ? a_prev + begin : nullptr);
  });
}

namespace {

template <typename T>
BP_TORCH_INLINE void layer_z(int64_t n, int64_t in, int64_t out, const T* a_prev, const T* w, T* z,
                             RowPrefetch<T>* prefetch, Partner* partner) {
  if (use_small(n, out, in)) return small_z<T>(n, in, out, a_prev, w, z, prefetch, partner);
  blas_z<T>(n, in, out, a_prev, w, z);
}
template <typename T>
BP_TORCH_INLINE void layer_grad_w(int64_t n, int64_t in, int64_t out, T alpha, const T* delta, const T* a_prev,
                                  bool accumulate, T beta, T* g, Partner* partner) {
  if (n <= kMaxInOrderSamples && use_small(n, out, in)) {
    return small_grad_w<T>(n, in, out, alpha, delta, a_prev, accumulate, beta, g, partner);
  }
  blas_grad_w<T>(n, in, out, alpha, delta, a_prev, accumulate, beta, g);
}
template <typename T>
BP_TORCH_INLINE void layer_back(int64_t n, int64_t in, int64_t out, const T* delta, const T* w, const T* a_prev,
                                T* d, Partner* partner) {
  if (use_small(n, out, in)) return small_back<T>(n, in, out, delta, w, a_prev, d, partner);
  blas_back<T>(n, in, out, delta, w, a_prev, d);
}

// Where a layer's products go to BLAS and torch has two threads, bp_torch splits the work between the threads
// itself, and BLAS, called inside a parallel region, runs single-threaded on each: the forward gives each thread
// half the samples, whose sigmoids it then takes while they are in its cache; the backward runs its two products,
// Delta W and Delta^T A (the same n * in * out multiply-adds), one per thread. Each thread then works on data it
// has in its cache, where BLAS's own threads would split every product and sync between them (BENCHMARKS.md).
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

// `prefetch`, if given, runs during the first layer's product (see RowPrefetch); `partner`, if given, takes a share
// of each large product (see Partner).
template <typename T>
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
      layer_z<T>(net.n, in, out, a_prev, net.weights[l], acts[l], l == 0 ? prefetch : nullptr, partner);
      bias_sigmoid_inplace<T>(net.n, out, bias, acts[l]);                     // a^l = sigma(z^l + b^l)
    }
    a_prev = acts[l];
  }
}

// From delta^L (in delta_buf), downwards: dC/dW^l, dC/db^l, then delta^(l-1) with W^l as it was before this call
// touched it. With `update`, the gradients go straight into the parameters, W <- decay W - lr dC/dW (alpha = -lr,
// decay = 1 - lr weight_decay, 3.4), b <- b - lr dC/db, instead of into grad_w / grad_b. Deltas alternate between
// two buffers of max n * n_l.
template <typename T>
BP_TORCH_INLINE void backprop_impl(const Net<T>& net, const T* x, const T* const* acts, T* delta, T* delta_prev,
                                   T alpha, bool update, T decay, T* const* grad_w, T* const* grad_b, T* grad_x,
                                   Partner* partner = nullptr) {
  for (int64_t l = net.layers() - 1; l >= 0; --l) {
    const int64_t in = net.sizes[l], out = net.sizes[l + 1];
    const T* a_prev = l > 0 ? acts[l - 1] : x;
    // delta^(l-1) = (W^l)^T delta^l * sigma'(z^(l-1)) (2.3.2, 2.2, as in B), before W^l changes below;
    // for l = 0 it is dC/dx (no sigma'), wanted only when grad_x is.
    const bool back_wanted = l > 0 || grad_x != nullptr;
    const auto back = [&] {
      layer_back<T>(net.n, in, out, delta, net.weights[l], l > 0 ? a_prev : nullptr, l > 0 ? delta_prev : grad_x,
                    partner);
    };
    // dC/dW^l = delta^l (a^(l-1))^T (1.1, as in A); dC/db^l = delta^l.
    const bool grad_w_wanted = update || grad_w != nullptr;
    const bool grad_b_wanted = update ? net.has_biases() : grad_b != nullptr;
    const auto parameter_grads = [&] {
      if (grad_w_wanted) {
        layer_grad_w<T>(net.n, in, out, alpha, delta, a_prev, update, decay, update ? net.weights[l] : grad_w[l],
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

}  // namespace

// delta^L = dC/da^L * sigma'(z^L) = (a^L - y) a^L (1 - a^L) / n  (1.3, 1.2), averaged over the mini-batch; returns
// sum_x C_x, C_x = 1/2 ||y(x) - a^L(x)||^2.
template <typename T>
BP_TORCH_INLINE double quadratic_output_error(int64_t n, int64_t out, const T* a, const T* y, T inv_n, T* delta) {
  double cost = 0;
  for (const auto i : c10::irange(n)) {
    T sample_cost = 0;
    for (const auto j : c10::irange(out)) {
      const int64_t k = i * out + j;
      const T err = a[k] - y[k];
      sample_cost += err * err;
      delta[k] = err * a[k] * (T(1) - a[k]) * inv_n;
    }
    cost += T(0.5) * sample_cost;                                    // C_x = 1/2 ||y(x) - a^L(x)||^2
  }
  return cost;
}

// delta^L = a^L - y over n (3.3): the cross-entropy's sigma'(z^L) in the denominator of (3.2) cancels the one of
// (1.2). Returns sum_x C_x, C_x = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)] (3.1), each log at least kLogFloor,
// as in the cost op (csrc/cpu/cross_entropy_cost.cpp, baseline code this copy does not call: kernels.h). Only the
// mini-batch's total is wanted, so both run over its n x n_L outputs as one array, in whole vectors.
//
// Where every target of a vector is 0 or 1 (one-hot labels), the sum's term is one log, ln a or ln(1 - a), taken
// in a single call: the step's logs are then half the work. ln(1 - a) is then log(1 - a) rather than log1p(-a):
// they differ only for small a, by at most an ulp of 1 in 1 - a, where the term itself is about -a, so the cost
// differs from the floored_logs formula by far less than its own rounding.
template <typename T>
BP_TORCH_INLINE double cross_entropy_output_error(int64_t n, int64_t out, const T* a, const T* y, T inv_n,
                                                  T* delta) {
  using Vec = at::vec::Vectorized<T>;
  const int64_t size = n * out;
  if (size == 0) return 0;
  at::vec::map2([&](Vec act, Vec target) { return (act - target) * Vec(inv_n); }, delta, a, y, size);
  const Vec floor(static_cast<T>(kLogFloor));
  const T sum = at::vec::map2_reduce_all<T>(
      [&](Vec act, Vec target) {
        const Vec is_one = target == Vec(1);
        if ((is_one | (target == Vec(0))).zero_mask() == 0) {
          return at::vec::maximum(Vec::blendv(Vec(1) - act, act, is_one).log(), floor);
        }
        const Vec log_a = at::vec::maximum(act.log(), floor);
        const Vec log_1ma = at::vec::maximum(act.neg().log1p(), floor);
        return target * log_a + (Vec(1) - target) * log_1ma;
      },
      [](Vec u, Vec v) { return u + v; }, a, y, size);
  return -static_cast<double>(sum);                                  // (3.1)
}

// One step of update_mini_batch (internal.h).
template <typename T>
double sgd_step_impl(const Net<T>& net, const T* x, const T* y, const SgdRule<T>& rule, RowPrefetch<T>* prefetch,
                     Partner* partner) {
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

  forward_impl<T>(net, x, acts, prefetch, partner);

  const int64_t out = net.sizes[L];
  const T* a = acts[L - 1];
  const T inv_n = T(1) / static_cast<T>(std::max<int64_t>(net.n, 1));
  const double cost = rule.cost == Cost::CrossEntropy
                          ? cross_entropy_output_error<T>(net.n, out, a, y, inv_n, delta)
                          : quadratic_output_error<T>(net.n, out, a, y, inv_n, delta);
  const T decay = T(1) - rule.lr * rule.weight_decay;                // (3.4) 1 - eta lambda / n
  backprop_impl<T>(net, x, acts, delta, delta_prev, -rule.lr, /*update=*/true, decay, nullptr, nullptr, nullptr,
                   partner);
  return cost / static_cast<double>(net.n);                          // NaN for an empty batch, as torch's mean
}

#define BP_TORCH_INSTANTIATE_PASSES(T)                                                                          \
  template void small_z<T>(int64_t, int64_t, int64_t, const T*, const T*, T*, RowPrefetch<T>*, Partner*);      \
  template void small_grad_w<T>(int64_t, int64_t, int64_t, T, const T*, const T*, bool, T, T*, Partner*);       \
  template void small_back<T>(int64_t, int64_t, int64_t, const T*, const T*, const T*, T*, Partner*);           \
  template double sgd_step_impl<T>(const Net<T>&, const T*, const T*, const SgdRule<T>&, RowPrefetch<T>*,         \
                                   Partner*);
BP_TORCH_INSTANTIATE_PASSES(float)
BP_TORCH_INSTANTIATE_PASSES(double)
#undef BP_TORCH_INSTANTIATE_PASSES

namespace {

template <typename T>
BP_TORCH_INLINE void backward_impl(const Net<T>& net, const T* grad_output, const T* x, const T* const* acts,
                                   T* const* grad_w, T* const* grad_b, T* grad_x, bool from_delta) {
  const int64_t L = net.layers();
  int64_t widest = 0;
  for (const auto l : c10::irange(L)) widest = std::max(widest, net.n * net.sizes[l + 1]);
  Workspace<T> workspace(2 * widest);
  T* delta = workspace.data();
  // delta^L = dC/da^L * sigma'(z^L) = g a^L (1 - a^L)  (1.2), unless g is delta^L already
  const T* a = acts[L - 1];
  const int64_t count = net.n * net.sizes[L];
  if (from_delta) {
    std::copy(grad_output, grad_output + count, delta);
  } else {
    for (const auto k : c10::irange(count)) delta[k] = grad_output[k] * a[k] * (T(1) - a[k]);
  }
  backprop_impl<T>(net, x, acts, delta, delta + widest, T(1), /*update=*/false, T(1), grad_w, grad_b, grad_x);
}

}  // namespace

void forward(const Net<float>& net, const float* x, float* const* acts) { forward_impl(net, x, acts); }
void forward(const Net<double>& net, const double* x, double* const* acts) { forward_impl(net, x, acts); }
void backward(const Net<float>& net, const float* grad_output, const float* x, const float* const* acts,
              float* const* grad_w, float* const* grad_b, float* grad_x, bool from_delta) {
  backward_impl(net, grad_output, x, acts, grad_w, grad_b, grad_x, from_delta);
}
void backward(const Net<double>& net, const double* grad_output, const double* x, const double* const* acts,
              double* const* grad_w, double* const* grad_b, double* grad_x, bool from_delta) {
  backward_impl(net, grad_output, x, acts, grad_w, grad_b, grad_x, from_delta);
}
double sgd_step(const Net<float>& net, const float* x, const float* y, const SgdRule<float>& rule) {
  return sgd_step_impl<float>(net, x, y, rule, nullptr, nullptr);
}
double sgd_step(const Net<double>& net, const double* x, const double* y, const SgdRule<double>& rule) {
  return sgd_step_impl<double>(net, x, y, rule, nullptr, nullptr);
}

}  // namespace BP_TORCH_CPU_NAMESPACE
}  // namespace bp_torch
