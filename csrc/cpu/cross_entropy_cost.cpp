// CPU kernels for the cross-entropy cost C = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)] (3.1) and its backward,
// dC/da = (a - y) / (a (1 - a)) (3.2), dC/dy = ln(1 - a) - ln a. The logs and the floor of a (1 - a) are the
// Python backend's (bp_torch/autograd.py: floored_logs, LOG_FLOOR, SIGMOID_PRIME_FLOOR), so a saturated output gives
// finite costs and gradients, as Nielsen's nan_to_num does.
#include <ATen/Dispatch.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/irange.h>

#include "capability/kernels.h"
#include "cost.h"

namespace bp_torch {
namespace {

constexpr const char* kOp = "cross_entropy_cost";
// The floor of a (1 - a) in (3.2): a = 0 or 1 gets a finite gradient, 0 where a = y.
constexpr double kSigmoidPrimeFloor = 1e-12;

// (ln a, ln(1 - a)), each at least kLogFloor; log1p(-a) keeps ln(1 - a) exact for small a.
template <typename scalar_t>
struct FlooredLogs {
  using Vec = at::vec::Vectorized<scalar_t>;
  Vec log_a, log_1ma;
  explicit FlooredLogs(Vec act) {
    const Vec floor(static_cast<scalar_t>(kLogFloor));
    log_a = at::vec::maximum(act.log(), floor);
    log_1ma = at::vec::maximum(act.neg().log1p(), floor);
  }
};

}  // namespace

at::Tensor cross_entropy_cost_cpu(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction) {
  check_quadratic_cost(a, y, reduction, kOp);
  const Reduction r = parse_reduction(reduction, kOp);
  const auto a_c = a.contiguous();
  const auto y_c = y.contiguous();
  auto cost = empty_cpu(cost_shape(a, r), a);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "cross_entropy_cost_cpu", [&] {
    using Vec = at::vec::Vectorized<scalar_t>;
    reduce_costs<scalar_t>(a_c.data_ptr<scalar_t>(), y_c.data_ptr<scalar_t>(), leading_numel(a), a.size(-1), r,
                           cost.data_ptr<scalar_t>(), [](const scalar_t* a_i, const scalar_t* y_i, int64_t n) {
      const scalar_t sum = n == 0 ? scalar_t(0) : at::vec::map2_reduce_all<scalar_t>(
          [](Vec act, Vec target) {
            const FlooredLogs<scalar_t> logs(act);
            return target * logs.log_a + (Vec(1) - target) * logs.log_1ma;
          },
          [](Vec u, Vec v) { return u + v; }, a_i, y_i, n);
      return -sum;                                                 // (3.1)
    });
  });
  return cost;
}

std::tuple<at::Tensor, at::Tensor> cross_entropy_cost_backward_cpu(
    const at::Tensor& grad_cost, const at::Tensor& a, const at::Tensor& y, c10::string_view reduction,
    std::array<bool, 2> output_mask) {
  check_quadratic_cost(a, y, reduction, kOp);
  const Reduction r = parse_reduction(reduction, kOp);
  check_cost_grad(kOp, grad_cost, a, r);
  const int64_t n = a.size(-1);
  const int64_t samples = leading_numel(a);
  const auto a_c = a.contiguous();
  const auto y_c = y.contiguous();
  const auto grad_cost_c = grad_cost.contiguous();
  at::Tensor grad_a = output_mask[0] ? empty_cpu(a.sizes(), a) : at::Tensor();
  at::Tensor grad_y = output_mask[1] ? empty_cpu(a.sizes(), a) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "cross_entropy_cost_backward_cpu", [&] {
    using Vec = at::vec::Vectorized<scalar_t>;
    const scalar_t* a_p = a_c.data_ptr<scalar_t>();
    const scalar_t* y_p = y_c.data_ptr<scalar_t>();
    const SampleScale<scalar_t> sample_scale(r, grad_cost_c.data_ptr<scalar_t>(), samples);
    const Vec prime_floor(static_cast<scalar_t>(kSigmoidPrimeFloor));
    for (const auto i : c10::irange(samples)) {
      const Vec scale(sample_scale(i));
      if (output_mask[0]) {
        at::vec::map2([&](Vec act, Vec target) {                   // (3.2) dC/da = (a - y) / (a (1 - a))
          return (act - target) / at::vec::maximum(act * (Vec(1) - act), prime_floor) * scale;
        }, grad_a.data_ptr<scalar_t>() + i * n, a_p + i * n, y_p + i * n, n);
      }
      if (output_mask[1]) {
        at::vec::map([&](Vec act) {                                // d(3.1)/dy_j = ln(1 - a_j) - ln a_j
          const FlooredLogs<scalar_t> logs(act);
          return (logs.log_1ma - logs.log_a) * scale;
        }, grad_y.data_ptr<scalar_t>() + i * n, a_p + i * n, n);
      }
    }
  });
  return {grad_a, grad_y};
}

}  // namespace bp_torch
