// Autograd for bp_torch's ops, registered under the Autograd dispatch key, as torchvision does in
// csrc/ops/autograd/. One call of an op is then one dispatch and one autograd node, with no Python per call.
//
// Each backward calls the fused backward op. When the caller asks for a graph of the gradient (create_graph=True,
// so grad mode is on inside backward), it composes differentiable ATen ops instead: the same formulas, slower,
// but differentiable, so double backward is exact on this backend too.
#include <c10/util/irange.h>
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

std::vector<at::Tensor> sigmoid_mlp_op(const at::Tensor& x, at::TensorList weights, at::TensorList biases) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::sigmoid_mlp", "")
                       .typed<decltype(sigmoid_mlp_cpu)>();
  return op.call(x, weights, biases);
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> sigmoid_mlp_backward_op(
    const at::Tensor& grad_output, const at::Tensor& x, at::TensorList weights, at::TensorList activations,
    bool input_grad, bool bias_grad) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::sigmoid_mlp_backward", "")
                       .typed<decltype(sigmoid_mlp_backward_cpu)>();
  return op.call(grad_output, x, weights, activations, input_grad, bias_grad);
}

// One layer's backward in differentiable ATen ops, for create_graph: delta = dC/da a (1 - a) (1.2, 2.2), then
// (dC/da_prev = delta W (2.3.2), dC/dW = delta^T a_prev (1.1), dC/db = sum of delta), each only where mask asks.
std::array<at::Tensor, 3> differentiable_layer_backward(const at::Tensor& grad_a, const at::Tensor& a,
                                                        const at::Tensor& a_prev, const at::Tensor& weight,
                                                        std::array<bool, 3> mask) {
  const int64_t rows = leading_numel(a_prev), out = weight.size(0), in = weight.size(1);
  const auto delta = grad_a * a * (1 - a);
  const auto delta_rows = delta.reshape({rows, out});
  return {
      mask[0] ? at::matmul(delta, weight) : at::Tensor(),
      mask[1] ? delta_rows.t().mm(a_prev.reshape({rows, in})) : at::Tensor(),
      mask[2] ? delta_rows.sum(0) : at::Tensor(),
  };
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
    auto [grad_x, grad_weight, grad_bias] = differentiable_layer_backward(grad_a, a, x, weight, mask);
    return {grad_x, grad_weight, grad_bias};
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

// A whole network as one autograd node. It returns every activation a^1 .. a^L as an output (SigmoidMLP uses the
// last) and saves them, with x and the weights: the saved activations are outputs of this node, so a graph built
// from them in backward (create_graph) leads back here, and double backward works. Gradients of outputs nobody
// used arrive undefined (set_materialize_grads(false)) and count as zero, at no cost.
class SigmoidMLPFunction : public torch::autograd::Function<SigmoidMLPFunction> {
 public:
  // at::TensorList (not std::vector) so that autograd sees each weight and bias as an input of its own.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList weights,
                               at::TensorList biases) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto activations = sigmoid_mlp_op(x, weights, biases);
    variable_list to_save{x};
    to_save.insert(to_save.end(), weights.begin(), weights.end());
    to_save.insert(to_save.end(), activations.begin(), activations.end());  // never z: sigma'(z) = a (1 - a) (1.2)
    ctx->save_for_backward(to_save);
    ctx->saved_data["n_layers"] = static_cast<int64_t>(weights.size());
    ctx->saved_data["has_bias"] = !biases.empty();
    ctx->set_materialize_grads(false);
    return activations;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const int64_t L = ctx->saved_data["n_layers"].toInt();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const auto& x = saved[0];
    const auto weights = at::TensorList(saved).slice(1, L), acts = at::TensorList(saved).slice(1 + L);
    // Inputs, as autograd counts them: x, W^1 .. W^L, then b^1 .. b^L if there are biases.
    const bool input_grad = ctx->needs_input_grad(0);
    bool bias_grad = false;
    for (int64_t l = 0; has_bias && l < L; ++l) bias_grad = bias_grad || ctx->needs_input_grad(1 + L + l);
    variable_list grads(1 + L + (has_bias ? L : 0));

    bool intermediate_grads = false;
    for (int64_t l = 0; l + 1 < L; ++l) intermediate_grads = intermediate_grads || grad_outputs[l].defined();
    if (!at::GradMode::is_enabled() && !intermediate_grads) {
      // The common case, only a^L used: the fused back-propagation loop, one op. Called below autograd: the op
      // has no Autograd kernel, and the boxed fallback that would otherwise run costs more than the kernel.
      if (!grad_outputs[L - 1].defined()) return grads;
      at::AutoDispatchBelowADInplaceOrView guard;
      auto [grad_x, grad_weights, grad_biases] =
          sigmoid_mlp_backward_op(grad_outputs[L - 1], x, weights, acts, input_grad, bias_grad);
      grads[0] = grad_x;
      for (const auto l : c10::irange(L)) {
        if (ctx->needs_input_grad(1 + l)) grads[1 + l] = grad_weights[l];
        if (bias_grad && ctx->needs_input_grad(1 + L + l)) grads[1 + L + l] = grad_biases[l];
      }
      return grads;
    }
    // create_graph, or a^l (l < L) used as well: the same loop in differentiable ATen ops, adding the gradient that
    // reaches each a^l directly to the one back-propagated from above.
    at::Tensor grad_a = grad_outputs[L - 1];
    for (int64_t l = L - 1; l >= 0; --l) {
      const auto& a_prev = l > 0 ? acts[l - 1] : x;
      at::Tensor grad_a_prev;
      if (grad_a.defined()) {
        // delta^l = dC/da^l sigma'(z^l); dC/dW^l = delta^l (a^(l-1))^T (as in A); (W^l)^T delta^l (as in B).
        const bool bias_wanted = has_bias && ctx->needs_input_grad(1 + L + l);
        auto [back, grad_weight, grad_bias] = differentiable_layer_backward(
            grad_a, acts[l], a_prev, weights[l], {l > 0 || input_grad, ctx->needs_input_grad(1 + l), bias_wanted});
        grads[1 + l] = grad_weight;
        if (bias_wanted) grads[1 + L + l] = grad_bias;
        grad_a_prev = back;
      }
      if (l > 0 && grad_outputs[l - 1].defined()) {
        grad_a_prev = grad_a_prev.defined() ? grad_a_prev + grad_outputs[l - 1] : grad_outputs[l - 1];
      }
      grad_a = grad_a_prev;
    }
    if (input_grad) grads[0] = grad_a;
    return grads;
  }
};

at::Tensor sigmoid_linear_autograd(const at::Tensor& x, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
  return SigmoidLinearFunction::apply(x, weight, bias);
}

at::Tensor quadratic_cost_autograd(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction) {
  return QuadraticCostFunction::apply(a, y, reduction);
}

variable_list sigmoid_mlp_autograd(const at::Tensor& x, at::TensorList weights, at::TensorList biases) {
  return SigmoidMLPFunction::apply(x, weights, biases);
}

// The sgd step is an optimizer's update, not a differentiable function: it runs below autograd, as torch.optim's
// updates run under no_grad, and its cost never requires grad. (The CPU kernel bumps the parameters' versions.)
at::Tensor sigmoid_mlp_sgd_step_autograd(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                         at::TensorList biases, double lr) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::sigmoid_mlp_sgd_step", "")
                       .typed<decltype(sigmoid_mlp_sgd_step_cpu)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(x, y, weights, biases, lr);
}

}  // namespace

TORCH_LIBRARY_IMPL(bp_torch, Autograd, m) {
  m.impl("sigmoid_linear", &sigmoid_linear_autograd);
  m.impl("quadratic_cost", &quadratic_cost_autograd);
  m.impl("sigmoid_mlp", &sigmoid_mlp_autograd);
  m.impl("sigmoid_mlp_sgd_step", &sigmoid_mlp_sgd_step_autograd);
}

}  // namespace bp_torch
