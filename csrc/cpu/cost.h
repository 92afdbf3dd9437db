// What the costs' CPU kernels share (csrc/cpu/quadratic_cost.cpp, cross_entropy_cost.cpp): a cost per sample of a
// (*, n), reduced by 'none' | 'mean' | 'sum', and the incoming gradient of each sample's cost in the backward.
#pragma once

#include <c10/util/irange.h>

#include <algorithm>

#include "../bp_torch.h"

namespace bp_torch {

// The costs' shape: (*) for 'none', () for 'mean' and 'sum'.
inline at::IntArrayRef cost_shape(const at::Tensor& a, Reduction r) {
  return r == Reduction::None ? a.sizes().slice(0, a.dim() - 1) : at::IntArrayRef{};
}

// cost_p[i] = sample_cost(a row i, y row i) for 'none'; their sum or mean into cost_p[0] otherwise, reduced in the
// same loop (calling at::mean on the per-sample costs would cost more dispatches than a whole kernel at mini-batch
// sizes). The mean of no samples is NaN (0/0), as torch's mean gives.
template <typename scalar_t, typename SampleCost>
void reduce_costs(const scalar_t* a_p, const scalar_t* y_p, int64_t samples, int64_t n, Reduction r,
                  scalar_t* cost_p, const SampleCost& sample_cost) {
  double total = 0;
  for (const auto i : c10::irange(samples)) {
    const scalar_t c = sample_cost(a_p + i * n, y_p + i * n, n);
    if (r == Reduction::None) cost_p[i] = c;
    total += c;
  }
  if (r == Reduction::Sum) *cost_p = static_cast<scalar_t>(total);
  if (r == Reduction::Mean) *cost_p = static_cast<scalar_t>(total / static_cast<double>(samples));
}

// The backward's grad_cost: the costs' shape and the input's dtype.
inline void check_cost_grad(const char* op, const at::Tensor& grad_cost, const at::Tensor& a, Reduction r) {
  const auto expected = cost_shape(a, r);
  TORCH_CHECK_VALUE(grad_cost.sizes() == expected, op, "_backward: grad_cost must have shape ", expected, ", got ",
                    grad_cost.sizes());
  TORCH_CHECK_TYPE(grad_cost.scalar_type() == a.scalar_type(), op, "_backward: grad_cost must have the input's dtype");
}

// d(reduced cost)/d(sample i's cost) times the incoming gradient g: g[i] for 'none', g / n for 'mean' (1/n per
// sample), g for 'sum'.
template <typename scalar_t>
struct SampleScale {
  SampleScale(Reduction r, const scalar_t* g, int64_t samples)
      : r_(r), g_(g),
        shared_(r == Reduction::None ? scalar_t(0)
                                     : (r == Reduction::Mean ? g[0] / std::max<int64_t>(samples, 1) : g[0])) {}
  scalar_t operator()(int64_t i) const { return r_ == Reduction::None ? g_[i] : shared_; }

 private:
  Reduction r_;
  const scalar_t* g_;
  scalar_t shared_;
};

}  // namespace bp_torch
