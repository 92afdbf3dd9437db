// Autograd for bp_torch's ops, registered under the Autograd dispatch key, as torchvision does in
// csrc/ops/autograd/. One call of an op is then one dispatch and one autograd node, with no Python per call. The
// nodes are written as torch writes its own (see SavedTensorsNode).
//
// Each backward calls the fused backward op. When the caller asks for a graph of the gradient (create_graph=True,
// so grad mode is on inside backward), it composes differentiable ATen ops instead: the same formulas, slower,
// but differentiable, so double backward is exact on this backend too.
#include <c10/util/irange.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/dynamo/compiled_autograd.h>
#include <torch/library.h>

#include "bp_torch.h"

namespace bp_torch {
namespace {

using torch::autograd::collect_next_edges;
using torch::autograd::compute_requires_grad;
using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::set_history;
using torch::autograd::variable_list;
using torch::dynamo::autograd::CompiledNodeArgs;
using torch::dynamo::autograd::SwapSavedVariables;

// Runs an op below autograd. A forward op would otherwise come back to its own Autograd kernel; a backward op, which
// has none, would take the boxed fallback, which costs more than its kernel at mini-batch sizes.
template <typename Op, typename... Args>
auto below_autograd(const Op& op, Args&&... args) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return op(std::forward<Args>(args)...);
}

c10::string_view reduction_name(Reduction reduction) {
  switch (reduction) {
    case Reduction::None: return "none";
    case Reduction::Mean: return "mean";
    case Reduction::Sum: return "sum";
  }
  TORCH_INTERNAL_ASSERT(false, "unknown reduction");
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

at::Tensor sigmoid_mlp_sgd_step_op(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                   at::TensorList biases, double lr) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::sigmoid_mlp_sgd_step", "")
                       .typed<decltype(sigmoid_mlp_sgd_step_cpu)>();
  return op.call(x, y, weights, biases, lr);
}

at::Tensor sigmoid_mlp_sgd_epoch_op(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                    at::TensorList biases, double lr, int64_t batch_size,
                                    const std::optional<at::Tensor>& perm) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("bp_torch::sigmoid_mlp_sgd_epoch", "")
                       .typed<decltype(sigmoid_mlp_sgd_epoch_cpu)>();
  return op.call(x, y, weights, biases, lr, batch_size, perm);
}

// Whether a backward must be composed of differentiable ATen ops rather than the fused backward op: when the caller
// wants a graph of the gradient (create_graph=True turns grad mode on inside backward), or when the gradients are
// batched by the vmap behind torch.autograd.grad(is_grads_batched=True) and jacobian(vectorize=True), which has
// batching rules for ATen's ops but none for the fused ones.
bool needs_aten_backward(const variable_list& grads) {
  if (at::GradMode::is_enabled()) return true;
  for (const auto& g : grads) {
    if (g.defined() && g.key_set().has(c10::DispatchKey::Batched)) return true;
  }
  return false;
}

// One layer's backward in differentiable ATen ops, for create_graph: delta = dC/da a (1 - a) (1.2, 2.2), then
// (dC/da_prev = delta W (2.3.2), dC/dW = delta^T a_prev (1.1), dC/db = sum of delta), each only where mask asks.
std::tuple<at::Tensor, at::Tensor, at::Tensor> differentiable_layer_backward(
    const at::Tensor& grad_a, const at::Tensor& a, const at::Tensor& a_prev, const at::Tensor& weight,
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

// What the three nodes share. Each is a torch::autograd::Node, as PyTorch's own ops build theirs
// (torch/csrc/autograd/generated/Functions.h), rather than a torch::autograd::Function: the CppNode behind a
// Function records a VariableInfo for every input and output, keeps its scalars in a hash map of IValues and
// locks a mutex in backward: about 10 us of [784, 30, 10]'s ~165 us autograd-loop step (BENCHMARKS.md, issue 4).
// A node keeps its saved tensors in one list; freeing them after backward and compiled autograd's two hooks are
// written once, here.
class SavedTensorsNode : public Node {
 public:
  void release_variables() override {
    for (auto& s : saved_) s.reset_data();
  }

  // Compiled autograd (torch._dynamo.compiled_autograd) keys its cache on what a node collects, then traces apply
  // with the saved tensors swapped for its own: the backward ops reach their fake kernels, as under torch.compile.
  void compiled_args(CompiledNodeArgs& args) const override {
    args.collect(name());
    for (const auto i : c10::irange(saved_.size())) args.collect(saved_[i], is_output_[i]);
    args.collect(attributes_);
  }
  variable_list apply_with_saved(const variable_list& grads, SwapSavedVariables& swap) override {
    for (auto& s : saved_) swap.before(s);
    auto result = apply(variable_list(grads));
    for (auto& s : saved_) swap.after(s);
    return result;
  }

 protected:
  // Outputs of this node are saved as outputs: unpacked, they lead back here (a graph built from them in a
  // create_graph backward does), and saving them does not make a reference cycle.
  void save(const at::Tensor& t, bool is_output) {
    saved_.emplace_back(t, is_output);
    is_output_.push_back(is_output);
  }
  // The saved tensors, after the version check: "modified by an inplace operation" if one changed since, "backward
  // through the graph a second time" once released.
  variable_list unpack_saved() {
    const auto self = getptr();
    variable_list out;
    out.reserve(saved_.size());
    for (const auto& s : saved_) out.push_back(s.unpack(self));
    return out;
  }

  std::vector<SavedVariable> saved_;
  std::vector<bool> is_output_;
  std::vector<int64_t> attributes_;   // the scalars that shape the backward: layer count, has_bias, reduction
};

// What a torch::autograd::Function refuses for itself (custom_function.h), refused here too, loudly: torch.func
// transforms cannot look into these nodes (bp_torch.functional routes calls made under one to the Python backend),
// and the nodes have no forward-mode formula, so a dual tensor's tangent would otherwise be dropped silently.
void check_autograd_support(const char* op, std::initializer_list<at::TensorList> inputs) {
  if (const auto& functorch_tls = at::functorch::functorchTLSAccessor()) {
    functorch_tls->checkSupportsCppAutogradFunction();
  }
  for (const auto& list : inputs) {
    for (const auto& t : list) {
      TORCH_CHECK_NOT_IMPLEMENTED(!t.defined() || !t._fw_grad(/*level=*/0).defined(), "bp_torch::", op,
                                  ": forward-mode AD (torch.autograd.forward_ad) is not supported");
    }
  }
}

at::TensorList optional_list(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? at::TensorList(*t) : at::TensorList();
}

// One layer, a = sigma(x W^T + b). Inputs, in autograd's order: x, W, b (if any). Saves x, W, a (never z:
// sigma'(z) = a (1 - a), equation 1.2).
class SigmoidLinearBackward : public SavedTensorsNode {
 public:
  std::string name() const override { return "SigmoidLinearBackward"; }

  static void attach(const at::Tensor& x, const at::Tensor& weight, at::TensorList bias, const at::Tensor& a) {
    auto node = c10::make_intrusive<SigmoidLinearBackward>();
    node->set_next_edges(collect_next_edges(x, weight, bias));
    set_history(a, node);
    node->save(x, false);
    node->save(weight, false);
    node->save(a, true);
    node->attributes_ = {static_cast<int64_t>(!bias.empty())};
  }

  variable_list apply(variable_list&& grads) override {
    const auto saved = unpack_saved();
    const auto &x = saved[0], &weight = saved[1], &a = saved[2];
    const bool has_bias = attributes_[0] != 0;
    variable_list result(has_bias ? 3 : 2);
    if (!grads[0].defined()) return result;
    const std::array<bool, 3> mask = {task_should_compute_output(0), task_should_compute_output(1),
                                      has_bias && task_should_compute_output(2)};
    const auto [grad_x, grad_weight, grad_bias] =
        needs_aten_backward(grads)
            ? differentiable_layer_backward(grads[0], a, x, weight, mask)
            : below_autograd(sigmoid_linear_backward_op, grads[0], x, weight, a, mask);
    result[0] = grad_x;
    result[1] = grad_weight;
    if (has_bias) result[2] = grad_bias;
    return result;
  }
};

// The cost, C = 1/2 sum_j (y_j - a_j)^2 per sample, reduced. Inputs: a, y. Saves both.
class QuadraticCostBackward : public SavedTensorsNode {
 public:
  std::string name() const override { return "QuadraticCostBackward"; }

  static void attach(const at::Tensor& a, const at::Tensor& y, Reduction reduction, const at::Tensor& cost) {
    auto node = c10::make_intrusive<QuadraticCostBackward>();
    node->set_next_edges(collect_next_edges(a, y));
    set_history(cost, node);
    node->save(a, false);
    node->save(y, false);
    node->attributes_ = {static_cast<int64_t>(reduction)};
  }

  variable_list apply(variable_list&& grads) override {
    const auto saved = unpack_saved();
    const auto &a = saved[0], &y = saved[1];
    const auto reduction = static_cast<Reduction>(attributes_[0]);
    const auto& grad_cost = grads[0];
    if (!grad_cost.defined()) return variable_list(2);
    const std::array<bool, 2> mask = {task_should_compute_output(0), task_should_compute_output(1)};
    if (!needs_aten_backward(grads)) {
      auto [grad_a, grad_y] =
          below_autograd(quadratic_cost_backward_op, grad_cost, a, y, reduction_name(reduction), mask);
      return {grad_a, grad_y};
    }
    at::Tensor scale = grad_cost;
    switch (reduction) {
      case Reduction::None: scale = grad_cost.unsqueeze(-1); break;
      case Reduction::Mean: scale = grad_cost / std::max<int64_t>(leading_numel(a), 1); break;
      case Reduction::Sum: break;
    }
    const auto grad_a = (a - y) * scale;                           // (1.3)
    return {mask[0] ? grad_a : at::Tensor(), mask[1] ? grad_a.neg() : at::Tensor()};
  }
};

// A whole network. Returns every activation a^1 .. a^L (SigmoidMLP uses the last) and saves them, with x and the
// weights. Inputs, in autograd's order: x, W^1 .. W^L, then b^1 .. b^L if there are biases. Gradients of outputs
// nobody used arrive undefined and count as zero, at no cost.
class SigmoidMLPBackward : public SavedTensorsNode {
 public:
  std::string name() const override { return "SigmoidMLPBackward"; }

  static void attach(const at::Tensor& x, at::TensorList weights, at::TensorList biases,
                     const variable_list& activations) {
    auto node = c10::make_intrusive<SigmoidMLPBackward>();
    node->set_next_edges(collect_next_edges(x, weights, biases));
    set_history(activations, node);
    node->save(x, false);
    for (const auto& w : weights) node->save(w, false);
    for (const auto& a : activations) node->save(a, true);   // never z: sigma'(z) = a (1 - a) (1.2)
    node->attributes_ = {static_cast<int64_t>(weights.size()), static_cast<int64_t>(!biases.empty())};
  }

  variable_list apply(variable_list&& grads) override {
    const auto saved = unpack_saved();
    const int64_t L = attributes_[0];
    const bool has_bias = attributes_[1] != 0;
    const auto& x = saved[0];
    const auto weights = at::TensorList(saved).slice(1, L), acts = at::TensorList(saved).slice(1 + L);
    const bool input_grad = task_should_compute_output(0);
    bool bias_grad = false;
    for (int64_t l = 0; has_bias && l < L; ++l) bias_grad = bias_grad || task_should_compute_output(1 + L + l);
    variable_list result(1 + L + (has_bias ? L : 0));

    bool intermediate_grads = false;
    for (int64_t l = 0; l + 1 < L; ++l) intermediate_grads = intermediate_grads || grads[l].defined();
    if (!needs_aten_backward(grads) && !intermediate_grads) {
      // The common case, only a^L used: the fused back-propagation loop, one op.
      if (!grads[L - 1].defined()) return result;
      auto [grad_x, grad_weights, grad_biases] =
          below_autograd(sigmoid_mlp_backward_op, grads[L - 1], x, weights, acts, input_grad, bias_grad);
      result[0] = grad_x;
      for (const auto l : c10::irange(L)) {
        if (task_should_compute_output(1 + l)) result[1 + l] = grad_weights[l];
        if (bias_grad && task_should_compute_output(1 + L + l)) result[1 + L + l] = grad_biases[l];
      }
      return result;
    }
    // create_graph, batched gradients, or a^l (l < L) used as well: the same loop in differentiable ATen ops, adding the gradient that
    // reaches each a^l directly to the one back-propagated from above.
    at::Tensor grad_a = grads[L - 1];
    for (int64_t l = L - 1; l >= 0; --l) {
      const auto& a_prev = l > 0 ? acts[l - 1] : x;
      at::Tensor grad_a_prev;
      if (grad_a.defined()) {
        // delta^l = dC/da^l sigma'(z^l); dC/dW^l = delta^l (a^(l-1))^T (as in A); (W^l)^T delta^l (as in B).
        const bool bias_wanted = has_bias && task_should_compute_output(1 + L + l);
        auto [back, grad_weight, grad_bias] = differentiable_layer_backward(
            grad_a, acts[l], a_prev, weights[l],
            {l > 0 || input_grad, task_should_compute_output(1 + l), bias_wanted});
        result[1 + l] = grad_weight;
        if (bias_wanted) result[1 + L + l] = grad_bias;
        grad_a_prev = back;
      }
      if (l > 0 && grads[l - 1].defined()) {
        grad_a_prev = grad_a_prev.defined() ? grad_a_prev + grads[l - 1] : grads[l - 1];
      }
      grad_a = grad_a_prev;
    }
    if (input_grad) result[0] = grad_a;
    return result;
  }
};

// The Autograd kernels: the op below autograd, then a node if any input requires grad (and grad mode is on).

at::Tensor sigmoid_linear_autograd(const at::Tensor& x, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
  const auto bias_list = optional_list(bias);
  check_autograd_support("sigmoid_linear", {x, weight, bias_list});
  const auto a = below_autograd(sigmoid_linear_op, x, weight, bias);
  if (compute_requires_grad(x, weight, bias_list)) SigmoidLinearBackward::attach(x, weight, bias_list, a);
  return a;
}

at::Tensor quadratic_cost_autograd(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction) {
  check_autograd_support("quadratic_cost", {a, y});
  const auto cost = below_autograd(quadratic_cost_op, a, y, reduction);
  if (compute_requires_grad(a, y)) QuadraticCostBackward::attach(a, y, parse_reduction(reduction), cost);
  return cost;
}

variable_list sigmoid_mlp_autograd(const at::Tensor& x, at::TensorList weights, at::TensorList biases) {
  check_autograd_support("sigmoid_mlp", {x, weights, biases});
  auto activations = below_autograd(sigmoid_mlp_op, x, weights, biases);
  if (compute_requires_grad(x, weights, biases)) SigmoidMLPBackward::attach(x, weights, biases, activations);
  return activations;
}

// The sgd step is an optimizer's update, not a differentiable function: it runs below autograd, as torch.optim's
// updates run under no_grad, and its cost never requires grad. (The CPU kernel bumps the parameters' versions.)
at::Tensor sigmoid_mlp_sgd_step_autograd(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                         at::TensorList biases, double lr) {
  return below_autograd(sigmoid_mlp_sgd_step_op, x, y, weights, biases, lr);
}

at::Tensor sigmoid_mlp_sgd_epoch_autograd(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                          at::TensorList biases, double lr, int64_t batch_size,
                                          const std::optional<at::Tensor>& perm) {
  return below_autograd(sigmoid_mlp_sgd_epoch_op, x, y, weights, biases, lr, batch_size, perm);
}

}  // namespace

TORCH_LIBRARY_IMPL(bp_torch, Autograd, m) {
  m.impl("sigmoid_linear", &sigmoid_linear_autograd);
  m.impl("quadratic_cost", &quadratic_cost_autograd);
  m.impl("sigmoid_mlp", &sigmoid_mlp_autograd);
  m.impl("sigmoid_mlp_sgd_step", &sigmoid_mlp_sgd_step_autograd);
  m.impl("sigmoid_mlp_sgd_epoch", &sigmoid_mlp_sgd_epoch_autograd);
}

}  // namespace bp_torch
