// CPU kernels for the chapter's quadratic cost C = 1/2 sum_j (y_j - a_j)^2 and its backward dC/da = a - y (1.3).
#include <ATen/Dispatch.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/irange.h>

#include "../bp_torch.h"

namespace bp_torch {

at::Tensor quadratic_cost_cpu(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction) {
  check_quadratic_cost(a, y, reduction);
  const Reduction r = parse_reduction(reduction);
  const int64_t n = a.size(-1);
  const int64_t samples = leading_numel(a);
  const auto a_c = a.contiguous();
  const auto y_c = y.contiguous();
  // 'none' keeps one cost per sample; 'mean' and 'sum' are reduced in the same loop, into a 0-d tensor (calling
  // at::mean on the per-sample costs would cost more dispatches than this whole kernel at mini-batch sizes).
  auto cost = empty_cpu(r == Reduction::None ? a.sizes().slice(0, a.dim() - 1) : at::IntArrayRef{}, a);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "quadratic_cost_cpu", [&] {
    using Vec = at::vec::Vectorized<scalar_t>;
    const scalar_t* a_p = a_c.data_ptr<scalar_t>();
    const scalar_t* y_p = y_c.data_ptr<scalar_t>();
    scalar_t* cost_p = cost.data_ptr<scalar_t>();
    double total = 0;
    for (const auto i : c10::irange(samples)) {
      const scalar_t sum_sq = n == 0 ? scalar_t(0) : at::vec::map2_reduce_all<scalar_t>(
          [](Vec act, Vec target) { return (target - act) * (target - act); },
          [](Vec u, Vec v) { return u + v; }, a_p + i * n, y_p + i * n, n);
      const scalar_t sample_cost = scalar_t(0.5) * sum_sq;        // C = 1/2 sum_j (y_j - a_j)^2
      if (r == Reduction::None) cost_p[i] = sample_cost;
      total += sample_cost;
    }
    // The mean of no samples is NaN (0/0), as torch's mean gives.
    if (r == Reduction::Sum) *cost_p = static_cast<scalar_t>(total);
    if (r == Reduction::Mean) *cost_p = static_cast<scalar_t>(total / static_cast<double>(samples));
  });
  return cost;
}

std::tuple<at::Tensor, at::Tensor> quadratic_cost_backward_cpu(
    const at::Tensor& grad_cost, const at::Tensor& a, const at::Tensor& y, c10::string_view reduction,
    std::array<bool, 2> output_mask) {
  check_quadratic_cost(a, y, reduction);
  const Reduction r = parse_reduction(reduction);
  const int64_t n = a.size(-1);
  const int64_t samples = leading_numel(a);
  const auto expected_grad_shape = r == Reduction::None ? a.sizes().slice(0, a.dim() - 1) : at::IntArrayRef{};
  TORCH_CHECK_VALUE(grad_cost.sizes() == expected_grad_shape, "quadratic_cost_backward: grad_cost must have shape ",
                    expected_grad_shape, ", got ", grad_cost.sizes());
  TORCH_CHECK_TYPE(grad_cost.scalar_type() == a.scalar_type(),
                   "quadratic_cost_backward: grad_cost must have the input's dtype");

  const auto a_c = a.contiguous();
  const auto y_c = y.contiguous();
  const auto grad_cost_c = grad_cost.contiguous();
  auto grad_a = empty_cpu(a.sizes(), a);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "quadratic_cost_backward_cpu", [&] {
    using Vec = at::vec::Vectorized<scalar_t>;
    const scalar_t* a_p = a_c.data_ptr<scalar_t>();
    const scalar_t* y_p = y_c.data_ptr<scalar_t>();
    const scalar_t* g_p = grad_cost_c.data_ptr<scalar_t>();
    scalar_t* out_p = grad_a.data_ptr<scalar_t>();
    // d(mean)/d(one sample's cost) = 1/n; 'sum' passes the incoming gradient through; 'none' has one per sample.
    const scalar_t shared_scale =
        r == Reduction::None ? scalar_t(0) : (r == Reduction::Mean ? g_p[0] / std::max<int64_t>(samples, 1) : g_p[0]);
    for (const auto i : c10::irange(samples)) {
      const Vec scale(r == Reduction::None ? g_p[i] : shared_scale);
      at::vec::map2([&](Vec act, Vec target) { return (act - target) * scale; },   // (1.3) dC/da = a - y
                    out_p + i * n, a_p + i * n, y_p + i * n, n);
    }
  });
  at::Tensor grad_y = output_mask[1] ? grad_a.neg() : at::Tensor();
  return {output_mask[0] ? grad_a : at::Tensor(), grad_y};
}

}  // namespace bp_torch
