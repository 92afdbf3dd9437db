// Autograd for bp_torch's ops: one torch::autograd::Function per op, registered under the Autograd dispatch key, as
// torchvision does in csrc/ops/autograd/. One call of an op is then one dispatch and one autograd node, with no
// Python per call. The Function hands compiled autograd its saved tensors and scalars, and refuses torch.func
// transforms (bp_torch.functional routes calls made under one to the Python backend).
//
// Each backward calls the backward op's fused CPU kernel, below autograd. When the caller asks for a graph of the
// gradient (create_graph=True, so grad mode is on inside backward), it calls the op's differentiable twin instead,
// whose kernel is the Python backend's formula (bp_torch/_ops.py implements it with bp_torch.autograd's backward
// functions): torch ops, so double backward is exact on this backend too, and each formula is written once in
// Python and once in the kernels. Gradients batched by the vmap behind
// torch.autograd.grad(is_grads_batched=True) and jacobian(vectorize=True) reach the fused kernel through vmap's
// fallback, one sample of the batch at a time.
#include <c10/util/irange.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "bp_torch.h"

namespace bp_torch {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Runs an op below autograd, from its own Autograd kernel (or a Function's), which it would otherwise come back to.
// The op is a function pointer, taken by value: a reference to a static constexpr one would give it an address,
// a writable global in a sanitized build.
template <typename Op, typename... Args>
auto below_autograd(Op op, Args&&... args) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return op(std::forward<Args>(args)...);
}

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

std::tuple<at::Tensor, at::Tensor, at::Tensor> sigmoid_linear_backward_differentiable_op(
    const at::Tensor& grad_a, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& a,
    std::array<bool, 3> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::sigmoid_linear_backward_differentiable", "")
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

std::tuple<at::Tensor, at::Tensor> quadratic_cost_backward_differentiable_op(
    const at::Tensor& grad_cost, const at::Tensor& a, const at::Tensor& y, c10::string_view reduction,
    std::array<bool, 2> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::quadratic_cost_backward_differentiable", "")
                       .typed<decltype(quadratic_cost_backward_cpu)>();
  return op.call(grad_cost, a, y, reduction, output_mask);
}

at::Tensor cross_entropy_cost_op(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::cross_entropy_cost", "")
                       .typed<decltype(cross_entropy_cost_cpu)>();
  return op.call(a, y, reduction);
}

std::tuple<at::Tensor, at::Tensor> cross_entropy_cost_backward_op(
    const at::Tensor& grad_cost, const at::Tensor& a, const at::Tensor& y, c10::string_view reduction,
    std::array<bool, 2> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::cross_entropy_cost_backward", "")
                       .typed<decltype(cross_entropy_cost_backward_cpu)>();
  return op.call(grad_cost, a, y, reduction, output_mask);
}

std::tuple<at::Tensor, at::Tensor> cross_entropy_cost_backward_differentiable_op(
    const at::Tensor& grad_cost, const at::Tensor& a, const at::Tensor& y, c10::string_view reduction,
    std::array<bool, 2> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::cross_entropy_cost_backward_differentiable", "")
                       .typed<decltype(cross_entropy_cost_backward_cpu)>();
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

at::Tensor sigmoid_mlp_sgd_step_op(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                   at::TensorList biases, double lr, c10::string_view cost,
                                   double weight_decay) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::sigmoid_mlp_sgd_step", "")
                       .typed<decltype(sigmoid_mlp_sgd_step_cpu)>();
  return op.call(x, y, weights, biases, lr, cost, weight_decay);
}

at::Tensor sigmoid_mlp_sgd_epoch_op(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                    at::TensorList biases, double lr, int64_t batch_size,
                                    const std::optional<at::Tensor>& perm, c10::string_view cost,
                                    double weight_decay) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::sigmoid_mlp_sgd_epoch", "")
                       .typed<decltype(sigmoid_mlp_sgd_epoch_cpu)>();
  return op.call(x, y, weights, biases, lr, batch_size, perm, cost, weight_decay);
}

// The Functions have no forward-mode formula. A dual input is refused before the forward runs, with the
// NotImplementedError that torch raises for its own ops without one (a C++ Function's own refusal is a RuntimeError,
// raised after the forward).
void check_no_forward_ad(const char* op, std::initializer_list<at::TensorList> inputs) {
  for (const auto& list : inputs) {
    for (const auto& t : list) {
      TORCH_CHECK_NOT_IMPLEMENTED(!t.defined() || !t._fw_grad(/*level=*/0).defined(), "bp_torch::", op,
                                  ": forward-mode AD (torch.autograd.forward_ad) is not supported");
    }
  }
}

// Whether a backward op's gradients need a graph: grad mode on (inside a backward: create_graph=True) and an input
// that requires grad.
bool builds_graph(std::initializer_list<at::Tensor> inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const auto& t : inputs) {
    if (t.defined() && t.requires_grad()) return true;
  }
  return false;
}

// The backward ops' Autograd kernels, which the Functions' backwards call too: the differentiable twin (the Python
// backend's formula in torch ops) when the gradients need a graph, the fused kernel otherwise.
std::tuple<at::Tensor, at::Tensor, at::Tensor> sigmoid_linear_backward_autograd(
    const at::Tensor& grad_a, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& a,
    std::array<bool, 3> output_mask) {
  if (builds_graph({grad_a, x, weight, a})) {
    return sigmoid_linear_backward_differentiable_op(grad_a, x, weight, a, output_mask);
  }
  return below_autograd(sigmoid_linear_backward_op, grad_a, x, weight, a, output_mask);
}

std::tuple<at::Tensor, at::Tensor> quadratic_cost_backward_autograd(
    const at::Tensor& grad_cost, const at::Tensor& a, const at::Tensor& y, c10::string_view reduction,
    std::array<bool, 2> output_mask) {
  if (builds_graph({grad_cost, a, y})) {
    return quadratic_cost_backward_differentiable_op(grad_cost, a, y, reduction, output_mask);
  }
  return below_autograd(quadratic_cost_backward_op, grad_cost, a, y, reduction, output_mask);
}

std::tuple<at::Tensor, at::Tensor> cross_entropy_cost_backward_autograd(
    const at::Tensor& grad_cost, const at::Tensor& a, const at::Tensor& y, c10::string_view reduction,
    std::array<bool, 2> output_mask) {
  if (builds_graph({grad_cost, a, y})) {
    return cross_entropy_cost_backward_differentiable_op(grad_cost, a, y, reduction, output_mask);
  }
  return below_autograd(cross_entropy_cost_backward_op, grad_cost, a, y, reduction, output_mask);
}

at::TensorList optional_list(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? at::TensorList(*t) : at::TensorList();
}

// One layer, a = sigma(x W^T + b). Inputs: x, W, b (or None). Saves x, W, a (never z: sigma'(z) = a (1 - a),
// equation 1.2).
struct SigmoidLinearFunction : public torch::autograd::Function<SigmoidLinearFunction> {
  static constexpr bool is_traceable = true;     // the backward calls ops only, which compiled autograd can trace

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {
    auto a = below_autograd(sigmoid_linear_op, x, weight, bias);
    ctx->save_for_backward({x, weight, a});
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return a;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      has_bias && ctx->needs_input_grad(2)};
    auto [grad_x, grad_weight, grad_bias] =
        sigmoid_linear_backward_autograd(grads[0], saved[0], saved[1], saved[2], mask);
    return {grad_x, grad_weight, grad_bias};
  }
};

// A cost per sample, reduced: C = 1/2 sum_j (y_j - a_j)^2 (QuadraticCost) or the cross-entropy (3.1)
// (CrossEntropyCost), each with its ops. Inputs: a, y, reduction. Saves a and y.
struct QuadraticCost {
  static constexpr auto forward_op = quadratic_cost_op;
  static constexpr auto backward_op = quadratic_cost_backward_autograd;
};
struct CrossEntropyCost {
  static constexpr auto forward_op = cross_entropy_cost_op;
  static constexpr auto backward_op = cross_entropy_cost_backward_autograd;
};

template <typename Cost>
struct CostFunction : public torch::autograd::Function<CostFunction<Cost>> {
  static constexpr bool is_traceable = true;

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& y,
                            c10::string_view reduction) {
    auto cost = below_autograd(Cost::forward_op, a, y, reduction);
    ctx->save_for_backward({a, y});
    ctx->saved_data["reduction"] = std::string(reduction);
    return cost;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const std::array<bool, 2> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
    auto [grad_a, grad_y] =
        Cost::backward_op(grads[0], saved[0], saved[1], ctx->saved_data["reduction"].toStringRef(), mask);
    return {grad_a, grad_y, at::Tensor()};
  }
};

// A whole network. Returns every activation a^1 .. a^L (SigmoidMLP uses the last) and saves them, with x and the
// weights. Inputs, in autograd's order: x, W^1 .. W^L, then b^1 .. b^L if there are biases. Gradients of outputs
// nobody used arrive undefined (not materialized as zeros) and count as zero, at no cost.
struct SigmoidMLPFunction : public torch::autograd::Function<SigmoidMLPFunction> {
  static constexpr bool is_traceable = true;

  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList weights,
                               at::TensorList biases) {
    auto activations = below_autograd(sigmoid_mlp_op, x, weights, biases);
    variable_list to_save{x};
    to_save.reserve(1 + weights.size() + activations.size());
    to_save.insert(to_save.end(), weights.begin(), weights.end());
    to_save.insert(to_save.end(), activations.begin(), activations.end());  // never z: sigma'(z) = a (1 - a) (1.2)
    ctx->save_for_backward(std::move(to_save));
    ctx->saved_data["has_bias"] = !biases.empty();
    ctx->set_materialize_grads(false);
    return activations;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const int64_t L = static_cast<int64_t>(grads.size());
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const auto& x = saved[0];
    const auto weights = at::TensorList(saved).slice(1, L), acts = at::TensorList(saved).slice(1 + L);
    const auto weight_grad = [&](int64_t l) { return ctx->needs_input_grad(1 + l); };
    const auto bias_grad = [&](int64_t l) { return has_bias && ctx->needs_input_grad(1 + L + l); };
    variable_list result(1 + 2 * L);

    bool intermediate_grads = false;
    for (int64_t l = 0; l + 1 < L; ++l) intermediate_grads = intermediate_grads || grads[l].defined();
    // vmap's fallback runs an op on one sample of a batch at a time, but cannot split an op that returns lists:
    // batched gradients take the layer-by-layer path, whose ops it can split.
    const bool batched = grads[L - 1].defined() && grads[L - 1].key_set().has(c10::DispatchKey::Batched);
    if (!at::GradMode::is_enabled() && !intermediate_grads && !batched) {
      // The common case, only a^L used: the fused back-propagation loop, one op.
      if (!grads[L - 1].defined()) return result;
      bool any_bias_grad = false;
      for (int64_t l = 0; l < L; ++l) any_bias_grad = any_bias_grad || bias_grad(l);
      auto [grad_x, grad_weights, grad_biases] = below_autograd(
          sigmoid_mlp_backward_op, grads[L - 1], x, weights, acts, ctx->needs_input_grad(0), any_bias_grad);
      result[0] = grad_x;
      for (const auto l : c10::irange(L)) {
        if (weight_grad(l)) result[1 + l] = grad_weights[l];
        if (bias_grad(l)) result[1 + L + l] = grad_biases[l];
      }
      return result;
    }
    // create_graph, batched gradients, or a^l (l < L) used as well: layer by layer, adding the gradient that
    // reaches each a^l directly to the one back-propagated from above (the multivariable chain rule).
    at::Tensor grad_a = grads[L - 1];
    for (int64_t l = L - 1; l >= 0; --l) {
      const auto& a_prev = l > 0 ? acts[l - 1] : x;
      at::Tensor grad_a_prev;
      if (grad_a.defined()) {
        const std::array<bool, 3> mask = {l > 0 || ctx->needs_input_grad(0), weight_grad(l), bias_grad(l)};
        auto [back, grad_weight, grad_bias] =
            sigmoid_linear_backward_autograd(grad_a, a_prev, weights[l], acts[l], mask);
        result[1 + l] = grad_weight;
        result[1 + L + l] = grad_bias;
        grad_a_prev = back;
      }
      if (l > 0 && grads[l - 1].defined()) {
        grad_a_prev = grad_a_prev.defined() ? grad_a_prev + grads[l - 1] : grads[l - 1];
      }
      grad_a = grad_a_prev;
    }
    if (ctx->needs_input_grad(0)) result[0] = grad_a;
    return result;
  }
};

// The Autograd kernels: each op's Function, after the forward-mode check.

at::Tensor sigmoid_linear_autograd(const at::Tensor& x, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
  check_no_forward_ad("sigmoid_linear", {x, weight, optional_list(bias)});
  return SigmoidLinearFunction::apply(x, weight, bias);
}

at::Tensor quadratic_cost_autograd(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction) {
  check_no_forward_ad("quadratic_cost", {a, y});
  return CostFunction<QuadraticCost>::apply(a, y, reduction);
}

at::Tensor cross_entropy_cost_autograd(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction) {
  check_no_forward_ad("cross_entropy_cost", {a, y});
  return CostFunction<CrossEntropyCost>::apply(a, y, reduction);
}

variable_list sigmoid_mlp_autograd(const at::Tensor& x, at::TensorList weights, at::TensorList biases) {
  check_no_forward_ad("sigmoid_mlp", {x, weights, biases});
  return SigmoidMLPFunction::apply(x, weights, biases);
}

// The sgd step is an optimizer's update, not a differentiable function: it runs below autograd, as torch.optim's
// updates run under no_grad, and its cost never requires grad. It stops at ADInplaceOrView, whose kernel below
// marks the parameters changed.
at::Tensor sigmoid_mlp_sgd_step_autograd(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                         at::TensorList biases, double lr, c10::string_view cost,
                                         double weight_decay) {
  at::AutoDispatchBelowAutograd guard;
  return sigmoid_mlp_sgd_step_op(x, y, weights, biases, lr, cost, weight_decay);
}

at::Tensor sigmoid_mlp_sgd_epoch_autograd(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                          at::TensorList biases, double lr, int64_t batch_size,
                                          const std::optional<at::Tensor>& perm, c10::string_view cost,
                                          double weight_decay) {
  at::AutoDispatchBelowAutograd guard;
  return sigmoid_mlp_sgd_epoch_op(x, y, weights, biases, lr, batch_size, perm, cost, weight_decay);
}

// The ADInplaceOrView kernels of the ops that change tensors in place (Tensor(a!)[] in their schemas), as torch
// generates them for its own in-place ops: the update, then each changed tensor's version counter moves, so that a
// graph that saved one refuses to back-propagate through it. Inference tensors have no counter and never reach here.
void bump_versions(at::TensorList weights, at::TensorList biases) {
  for (const auto& t : weights) t.unsafeGetTensorImpl()->bump_version();
  for (const auto& t : biases) t.unsafeGetTensorImpl()->bump_version();
}

at::Tensor sigmoid_mlp_sgd_step_inplace(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                        at::TensorList biases, double lr, c10::string_view cost,
                                        double weight_decay) {
  auto result = below_autograd(sigmoid_mlp_sgd_step_op, x, y, weights, biases, lr, cost, weight_decay);
  bump_versions(weights, biases);
  return result;
}

at::Tensor sigmoid_mlp_sgd_epoch_inplace(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                         at::TensorList biases, double lr, int64_t batch_size,
                                         const std::optional<at::Tensor>& perm, c10::string_view cost,
                                         double weight_decay) {
  auto costs =
      below_autograd(sigmoid_mlp_sgd_epoch_op, x, y, weights, biases, lr, batch_size, perm, cost, weight_decay);
  if (x.size(0) > 0) bump_versions(weights, biases);      // an epoch of no samples takes no step
  return costs;
}

}  // namespace

TORCH_LIBRARY_IMPL(bp_torch, Autograd, m) {
  m.impl("sigmoid_linear", &sigmoid_linear_autograd);
  m.impl("sigmoid_linear_backward", &sigmoid_linear_backward_autograd);
  m.impl("quadratic_cost", &quadratic_cost_autograd);
  m.impl("quadratic_cost_backward", &quadratic_cost_backward_autograd);
  m.impl("cross_entropy_cost", &cross_entropy_cost_autograd);
  m.impl("cross_entropy_cost_backward", &cross_entropy_cost_backward_autograd);
  m.impl("sigmoid_mlp", &sigmoid_mlp_autograd);
  m.impl("sigmoid_mlp_sgd_step", &sigmoid_mlp_sgd_step_autograd);
  m.impl("sigmoid_mlp_sgd_epoch", &sigmoid_mlp_sgd_epoch_autograd);
}

TORCH_LIBRARY_IMPL(bp_torch, ADInplaceOrView, m) {
  m.impl("sigmoid_mlp_sgd_step", &sigmoid_mlp_sgd_step_inplace);
  m.impl("sigmoid_mlp_sgd_epoch", &sigmoid_mlp_sgd_epoch_inplace);
}

}  // namespace bp_torch
