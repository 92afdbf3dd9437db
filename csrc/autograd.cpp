// Autograd for bp_torch's ops, registered under the Autograd dispatch key, as torchvision does in
// csrc/ops/autograd/. One call of an op is then one dispatch and one autograd node, with no Python per call.
//
// Each backward calls the fused backward op. When the caller asks for a graph of the gradient (create_graph=True,
// so grad mode is on inside backward), it composes differentiable ATen ops instead: the same formulas, slower,
// but differentiable, so double backward is exact on this backend too.
#include <torch/autograd.h>
#include <torch/library.h>

#include "bp_torch.h"

namespace bp_torch {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor sigmoid_linear_op(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::sigmoid_linear", "")
                       .typed<decltype(sigmoid_linear_cpu)>();
  return op.call(x, weight, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sigmoid_linear_backward_op(
    const at::Tensor& grad_a, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& a,
    std::array<bool, 3> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::sigmoid_linear_backward", "")
                       .typed<decltype(sigmoid_linear_backward_cpu)>();
  return op.call(grad_a, x, weight, a, output_mask);
}

at::Tensor quadratic_cost_op(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::quadratic_cost", "")
                       .typed<decltype(quadratic_cost_cpu)>();
  return op.call(a, y, reduction);
}

std::tuple<at::Tensor, at::Tensor> quadratic_cost_backward_op(
    const at::Tensor& grad_cost, const at::Tensor& a, const at::Tensor& y, c10::string_view reduction,
    std::array<bool, 2> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::quadratic_cost_backward", "")
                       .typed<decltype(quadratic_cost_backward_cpu)>();
  return op.call(grad_cost, a, y, reduction, output_mask);
}

class SigmoidLinearFunction : public torch::autograd::Function<SigmoidLinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto a = sigmoid_linear_op(x, weight, bias);
    ctx->save_for_backward({x, weight, a});  // never z: sigma'(z) = a (1 - a)  (1.2)
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return a;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &a = saved[2];
    const auto& grad_a = grad_outputs[0];
    // needs_input_grad counts tensor inputs only: without a bias there is no third one to ask about.
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      has_bias && ctx->needs_input_grad(2)};
    if (!at::GradMode::is_enabled()) {
      auto [grad_x, grad_weight, grad_bias] = sigmoid_linear_backward_op(grad_a, x, weight, a, mask);
      return {grad_x, grad_weight, grad_bias};
    }
    const int64_t rows = leading_numel(x), out = weight.size(0), in = weight.size(1);
    const auto delta = grad_a * a * (1 - a);                       // (1.2, 2.2)
    const auto delta_rows = delta.reshape({rows, out});
    return {
        mask[0] ? at::matmul(delta, weight) : at::Tensor(),        // (2.3.2)
        mask[1] ? delta_rows.t().mm(x.reshape({rows, in})) : at::Tensor(),  // (1.1, 2.1)
        mask[2] ? delta_rows.sum(0) : at::Tensor(),
    };
  }
};

class QuadraticCostFunction : public torch::autograd::Function<QuadraticCostFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& y,
                            c10::string_view reduction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({a, y});
    ctx->saved_data["reduction"] = std::string(reduction);
    return quadratic_cost_op(a, y, reduction);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto &a = saved[0], &y = saved[1];
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    const auto& grad_cost = grad_outputs[0];
    const std::array<bool, 2> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
    if (!at::GradMode::is_enabled()) {
      auto [grad_a, grad_y] = quadratic_cost_backward_op(grad_cost, a, y, reduction, mask);
      return {grad_a, grad_y, at::Tensor()};
    }
    at::Tensor scale = grad_cost;
    switch (parse_reduction(reduction)) {
      case Reduction::None: scale = grad_cost.unsqueeze(-1); break;
      case Reduction::Mean: scale = grad_cost / std::max<int64_t>(leading_numel(a), 1); break;
      case Reduction::Sum: break;
    }
    const auto grad_a = (a - y) * scale;                           // (1.3)
    return {mask[0] ? grad_a : at::Tensor(), mask[1] ? grad_a.neg() : at::Tensor(), at::Tensor()};
  }
};

at::Tensor sigmoid_linear_autograd(const at::Tensor& x, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
  return SigmoidLinearFunction::apply(x, weight, bias);
}

at::Tensor quadratic_cost_autograd(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction) {
  return QuadraticCostFunction::apply(a, y, reduction);
}

}  // namespace

TORCH_LIBRARY_IMPL(bp_torch, Autograd, m) {
  m.impl("sigmoid_linear", &sigmoid_linear_autograd);
  m.impl("quadratic_cost", &quadratic_cost_autograd);
}

}  // namespace bp_torch
