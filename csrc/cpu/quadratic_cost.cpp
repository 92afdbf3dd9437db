// CPU kernels for the chapter's quadratic cost C = 1/2 sum_j (y_j - a_j)^2 and its backward dC/da = a - y (1.3).
#include <ATen/Dispatch.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/irange.h>

#include "cost.h"

namespace bp_torch {

at::Tensor quadratic_cost_cpu(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction) {
  check_quadratic_cost(a, y, reduction);
  const Reduction r = parse_reduction(reduction);
  const auto a_c = a.contiguous();
  const auto y_c = y.contiguous();
  auto cost = empty_cpu(cost_shape(a, r), a);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "quadratic_cost_cpu", [&] {
    using Vec = at::vec::Vectorized<scalar_t>;
    reduce_costs<scalar_t>(a_c.data_ptr<scalar_t>(), y_c.data_ptr<scalar_t>(), leading_numel(a), a.size(-1), r,
                           cost.data_ptr<scalar_t>(), [](const scalar_t* a_i, const scalar_t* y_i, int64_t n) {
      const scalar_t sum_sq = n == 0 ? scalar_t(0) : at::vec::map2_reduce_all<scalar_t>(
          [](Vec act, Vec target) { return (target - act) * (target - act); },
          [](Vec u, Vec v) { return u + v; }, a_i, y_i, n);
      return scalar_t(0.5) * sum_sq;                              // C = 1/2 sum_j (y_j - a_j)^2
    });
  });
  return cost;
}

std::tuple<at::Tensor, at::Tensor> quadratic_cost_backward_cpu(
    const at::Tensor& grad_cost, const at::Tensor& a, const at::Tensor& y, c10::string_view reduction,
    std::array<bool, 2> output_mask) {
  check_quadratic_cost(a, y, reduction);
  const Reduction r = parse_reduction(reduction);
  check_cost_grad("quadratic_cost", grad_cost, a, r);
  const int64_t n = a.size(-1);
  const int64_t samples = leading_numel(a);
  const auto a_c = a.contiguous();
  const auto y_c = y.contiguous();
  const auto grad_cost_c = grad_cost.contiguous();
  auto grad_a = empty_cpu(a.sizes(), a);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "quadratic_cost_backward_cpu", [&] {
    using Vec = at::vec::Vectorized<scalar_t>;
    const scalar_t* a_p = a_c.data_ptr<scalar_t>();
    const scalar_t* y_p = y_c.data_ptr<scalar_t>();
    scalar_t* out_p = grad_a.data_ptr<scalar_t>();
    const SampleScale<scalar_t> sample_scale(r, grad_cost_c.data_ptr<scalar_t>(), samples);
    for (const auto i : c10::irange(samples)) {
      const Vec scale(sample_scale(i));
      at::vec::map2([&](Vec act, Vec target) { return (act - target) * scale; },   // (1.3) dC/da = a - y
                    out_p + i * n, a_p + i * n, y_p + i * n, n);
    }
  });
  at::Tensor grad_y = output_mask[1] ? grad_a.neg() : at::Tensor();
  return {output_mask[0] ? grad_a : at::Tensor(), grad_y};
}

}  // namespace bp_torch
