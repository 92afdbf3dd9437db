// Fused CPU kernels for a = sigmoid(x W^T + b) and its backward.
//
// The matrix products go to ATen's CPU kernels (BLAS), called directly (at::cpu::*) rather than through the
// dispatcher: these kernels already run below autograd, so a second dispatch would only add overhead. The
// elementwise parts, the sigmoid and delta = g a (1 - a), are single vectorised passes over memory.
#include <ATen/CPUFunctions.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/irange.h>

#include "../bp_torch.h"

namespace bp_torch {
namespace {

// Elements per task below which at::parallel_for stays on one thread: smaller loops cost more to hand out than
// they take to run.
constexpr int64_t kParallelGrain = 32768;

// a <- sigma(a) = 1 / (1 + exp(-a)), in place. exp(-z) overflows to inf for very negative z, which gives
// exactly 0, never NaN; NaN stays NaN.
template <typename scalar_t>
void sigmoid_inplace(scalar_t* a, int64_t n) {
  using Vec = at::vec::Vectorized<scalar_t>;
  at::parallel_for(0, n, kParallelGrain, [&](int64_t begin, int64_t end) {
    at::vec::map([](Vec z) { return (Vec(1) + z.neg().exp()).reciprocal(); }, a + begin, a + begin, end - begin);
  });
}

// delta = dC/da * a (1 - a): the error at z, with sigma'(z) computed from the saved output (1.2, 2.2).
template <typename scalar_t>
void delta_from_output(const scalar_t* grad_a, const scalar_t* a, scalar_t* delta, int64_t n) {
  using Vec = at::vec::Vectorized<scalar_t>;
  at::parallel_for(0, n, kParallelGrain, [&](int64_t begin, int64_t end) {
    at::vec::map2([](Vec g, Vec act) { return g * act * (Vec(1) - act); },
                  delta + begin, grad_a + begin, a + begin, end - begin);
  });
}

}  // namespace

at::Tensor sigmoid_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_sigmoid_linear(x, weight, bias);
  const auto x_rows = x.reshape({leading_numel(x), weight.size(1)});
  // z = x W^T + b is written straight into the buffer that becomes a: no separate z tensor is ever kept.
  at::Tensor a = (bias.has_value() && bias->defined()) ? at::cpu::addmm(*bias, x_rows, weight.t())
                                                       : at::cpu::mm(x_rows, weight.t());
  TORCH_INTERNAL_ASSERT(a.is_contiguous());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "sigmoid_linear_cpu", [&] {
    sigmoid_inplace(a.data_ptr<scalar_t>(), a.numel());
  });
  auto out_shape = x.sizes().vec();
  out_shape.back() = weight.size(0);
  return a.view(out_shape);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sigmoid_linear_backward_cpu(
    const at::Tensor& grad_a, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& a,
    std::array<bool, 3> output_mask) {
  check_sigmoid_linear(x, weight, std::nullopt);
  auto out_shape = x.sizes().vec();
  out_shape.back() = weight.size(0);
  TORCH_CHECK_VALUE(a.sizes() == at::IntArrayRef(out_shape) && grad_a.sizes() == a.sizes(),
                    "sigmoid_linear_backward: grad_a and a must have shape ", at::IntArrayRef(out_shape),
                    ", got ", grad_a.sizes(), " and ", a.sizes());
  TORCH_CHECK_TYPE(grad_a.scalar_type() == x.scalar_type() && a.scalar_type() == x.scalar_type(),
                   "sigmoid_linear_backward: grad_a and a must have the input's dtype");

  const int64_t rows = leading_numel(x);
  // Upstream gradients may be expanded (stride 0, from .sum()) or otherwise strided: read them as real memory.
  const auto grad_a_c = grad_a.contiguous();
  const auto a_c = a.contiguous();
  auto delta = at::empty({rows, weight.size(0)}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "sigmoid_linear_backward_cpu", [&] {
    delta_from_output(grad_a_c.data_ptr<scalar_t>(), a_c.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(),
                      delta.numel());
  });

  at::Tensor grad_x, grad_weight, grad_bias;
  if (output_mask[0]) {
    grad_x = at::cpu::mm(delta, weight).view(x.sizes());           // dC/da_prev = delta W          (2.3.2)
  }
  if (output_mask[1]) {
    grad_weight = at::cpu::mm(delta.t(), x.reshape({rows, weight.size(1)}));  // dC/dW = delta^T a_prev (1.1)
  }
  if (output_mask[2]) {
    const std::array<int64_t, 1> sample_dim{0};
    grad_bias = at::cpu::sum(delta, sample_dim);                   // dC/db = sum of delta
  }
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace bp_torch
