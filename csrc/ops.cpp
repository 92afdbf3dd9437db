// The dispatcher schemas of bp_torch's ops, their input checks, and the Python module stub that loads them.
//
// Each op is a forward/backward pair. The backward ops take an output mask, so gradients that nobody asked for
// cost nothing. Autograd is attached in csrc/autograd.cpp, the CPU kernels live in csrc/cpu/, and the fake
// kernels that let torch.compile trace the ops, and the backward ops' differentiable Autograd kernels (the Python
// backend's formulas), are in bp_torch/_ops.py.
#include <Python.h>
#include <cmath>
#include <c10/util/irange.h>
#include <torch/library.h>

#include "bp_torch.h"

namespace bp_torch {
namespace {

std::string dtype_name(at::ScalarType t) {
  return "torch." + std::string(c10::getDtypeNames(t).first);
}

bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble;
}

using NamedTensor = std::pair<const char*, const at::Tensor*>;

// Every one of `count` tensors (tensor(i), called name(i)) must be float32 or float64 and share the first one's
// dtype and device. The names are built only when a check fails, so a passing call costs no string work.
template <typename Tensor, typename Name>
void check_dtypes_and_devices(const char* op, size_t count, const Tensor& tensor, const Name& name) {
  for (const auto i : c10::irange(count)) {
    TORCH_CHECK_TYPE(is_supported_dtype(tensor(i).scalar_type()),
                     op, ": ", name(i), " must be float32 or float64, got ", dtype_name(tensor(i).scalar_type()));
  }
  const at::Tensor& first = tensor(0);
  for (const auto i : c10::irange(count)) {
    TORCH_CHECK_TYPE(tensor(i).scalar_type() == first.scalar_type(), op, ": ", name(0), " and ", name(i),
                     " must have the same dtype, got ", dtype_name(first.scalar_type()), " and ",
                     dtype_name(tensor(i).scalar_type()));
  }
  for (const auto i : c10::irange(count)) {
    TORCH_CHECK_VALUE(tensor(i).device() == first.device(), op, ": ", name(0), " and ", name(i),
                      " must be on the same device, got ", first.device(), " and ", tensor(i).device());
  }
}

void check_dtypes_and_devices(const char* op, std::initializer_list<NamedTensor> tensors) {
  const NamedTensor* named = tensors.begin();
  check_dtypes_and_devices(
      op, tensors.size(), [&](size_t i) -> const at::Tensor& { return *named[i].second; },
      [&](size_t i) { return named[i].first; });
}

// A network's parameter lists: at least one layer, and biases either absent or one per layer.
void check_layer_count(const char* op, at::TensorList weights, at::TensorList biases) {
  TORCH_CHECK_VALUE(!weights.empty(), op, ": weights must have at least one entry (one per layer), got none");
  TORCH_CHECK_VALUE(biases.empty() || biases.size() == weights.size(), op,
                    ": biases must be empty (no bias) or have one entry per layer (", weights.size(), "), got ",
                    biases.size());
}

}  // namespace

void check_sigmoid_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "sigmoid_linear";
  TORCH_CHECK_VALUE(weight.dim() == 2, op, ": weight must be 2-D (out_features, in_features), got shape ",
                    weight.sizes());
  TORCH_CHECK_VALUE(x.dim() > 0, op, ": input must have at least 1 dimension (*, in_features), got a 0-d tensor");
  TORCH_CHECK_VALUE(x.size(-1) == weight.size(1), op, ": input's last dimension must equal in_features=",
                    weight.size(1), ", got input shape ", x.sizes(), " and weight shape ", weight.sizes());
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.size(0), op, ": bias must have shape [",
                      weight.size(0), "] (out_features), got shape ", bias->sizes());
    check_dtypes_and_devices(op, {{"input", &x}, {"weight", &weight}, {"bias", &*bias}});
  } else {
    check_dtypes_and_devices(op, {{"input", &x}, {"weight", &weight}});
  }
}

Reduction parse_reduction(c10::string_view reduction, const char* op) {
  if (reduction == "none") return Reduction::None;
  if (reduction == "mean") return Reduction::Mean;
  TORCH_CHECK_VALUE(reduction == "sum", op, ": reduction must be one of ('none', 'mean', 'sum'), got '", reduction,
                    "'");
  return Reduction::Sum;
}

// Both costs take the same arguments: `op` names the one checked.
void check_quadratic_cost(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction, const char* op) {
  parse_reduction(reduction, op);
  TORCH_CHECK_VALUE(a.dim() > 0, op, ": input must have at least 1 dimension (*, n_outputs), got a 0-d tensor");
  TORCH_CHECK_VALUE(a.sizes() == y.sizes(), op, ": input and target must have the same shape, got input shape ",
                    a.sizes(), " and target shape ", y.sizes());
  check_dtypes_and_devices(op, {{"input", &a}, {"target", &y}});
}

// A whole network: each layer's in_features equal to the width of what feeds it, biases empty or one per layer.
void check_sigmoid_mlp(const char* op, const at::Tensor& x, at::TensorList weights, at::TensorList biases) {
  check_layer_count(op, weights, biases);
  TORCH_CHECK_VALUE(x.dim() > 0, op, ": input must have at least 1 dimension (*, in_features), got a 0-d tensor");
  int64_t n_in = x.size(-1);
  for (const auto l : c10::irange(weights.size())) {
    const auto& weight = weights[l];
    TORCH_CHECK_VALUE(weight.dim() == 2, op, ": weights[", l, "] must be 2-D (out_features, in_features), got shape ",
                      weight.sizes());
    TORCH_CHECK_VALUE(weight.size(1) == n_in, op, ": weights[", l, "] must have in_features=", n_in, " (",
                      l == 0 ? "the input's last dimension" : "the previous layer's out_features", "), got shape ",
                      weight.sizes());
    if (!biases.empty()) {
      TORCH_CHECK_VALUE(biases[l].dim() == 1 && biases[l].size(0) == weight.size(0), op, ": biases[", l,
                        "] must have shape [", weight.size(0), "] (out_features), got shape ", biases[l].sizes());
    }
    n_in = weight.size(0);
  }
  // Over input, weights[0], biases[0], weights[1], ...
  const size_t per_layer = biases.empty() ? 1 : 2;
  const auto tensor = [&](size_t i) -> const at::Tensor& {
    if (i == 0) return x;
    return (i - 1) % per_layer == 0 ? weights[(i - 1) / per_layer] : biases[(i - 1) / per_layer];
  };
  const auto name = [&](size_t i) -> std::string {
    if (i == 0) return "input";
    return c10::str((i - 1) % per_layer == 0 ? "weights[" : "biases[", (i - 1) / per_layer, "]");
  };
  check_dtypes_and_devices(op, 1 + per_layer * weights.size(), tensor, name);
}

// The Python backend's checks of sgd_step and sgd_epoch (bp_torch/_checks.py), in the same order with the same
// words: each layer as sigmoid_linear checks it, with x standing in for the layer's input's dtype and device.
void check_sigmoid_mlp_sgd_step(const char* op, const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                at::TensorList biases) {
  check_layer_count(op, weights, biases);
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": x must be 2-D (batch, ", weights[0].size(1), "), got shape ", x.sizes());
  for (const auto l : c10::irange(weights.size())) {
    const auto& weight = weights[l];
    TORCH_CHECK_VALUE(weight.dim() == 2, "sigmoid_linear: weight must be 2-D (out_features, in_features), got shape ",
                      weight.sizes());
    if (!biases.empty()) {
      TORCH_CHECK_VALUE(biases[l].dim() == 1 && biases[l].size(0) == weight.size(0), "sigmoid_linear: bias must have "
                        "shape [", weight.size(0), "] (out_features), got shape ", biases[l].sizes());
      check_dtypes_and_devices("sigmoid_linear", {{"input", &x}, {"weight", &weight}, {"bias", &biases[l]}});
    } else {
      check_dtypes_and_devices("sigmoid_linear", {{"input", &x}, {"weight", &weight}});
    }
    if (l > 0) {
      TORCH_CHECK_VALUE(weight.size(1) == weights[l - 1].size(0), op, ": weights[", l, "] must have in_features=",
                        weights[l - 1].size(0), " (the previous layer's out_features), got shape ", weight.sizes());
    }
  }
  // An in-place update cannot change the elements of an expanded tensor (stride 0) one by one.
  const auto check_not_expanded = [&](const char* name, at::TensorList parameters) {
    for (const auto l : c10::irange(parameters.size())) {
      const auto& p = parameters[l];
      for (const auto d : c10::irange(p.dim())) {
        TORCH_CHECK_VALUE(p.stride(d) != 0 || p.size(d) <= 1, op, ": ", name, "[", l,
                          "] has elements that share memory (an expanded tensor), which an in-place update cannot "
                          "change one by one");
      }
    }
  };
  check_not_expanded("weights", weights);
  check_not_expanded("biases", biases);
  TORCH_CHECK_VALUE(x.size(1) == weights[0].size(1), op, ": x must have shape [batch, ", weights[0].size(1),
                    "], got ", x.sizes());
  const std::array<int64_t, 2> expected_y{x.size(0), weights.back().size(0)};
  TORCH_CHECK_VALUE(y.sizes() == at::IntArrayRef(expected_y), op, ": y must have shape ", at::IntArrayRef(expected_y),
                    " to match x of shape ", x.sizes(), ", got ", y.sizes());
  check_dtypes_and_devices(op, {{"x", &x}, {"y", &y}, {"weight", &weights[0]}});
}

// sgd_epoch takes x's rows in perm's order: perm must hold each of 0 .. n-1 once, or some rows would be read out of
// bounds or trained on twice. The values are checked here, in the CPU kernel; fake tensors have none.
void check_sigmoid_mlp_sgd_epoch(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                 at::TensorList biases, int64_t batch_size, const std::optional<at::Tensor>& perm) {
  constexpr const char* op = "sgd_epoch";
  check_sigmoid_mlp_sgd_step(op, x, y, weights, biases);
  TORCH_CHECK_VALUE(batch_size >= 1, op, ": batch_size must be at least 1, got ", batch_size);
  if (!perm.has_value() || !perm->defined()) return;
  const int64_t n = x.size(0);
  TORCH_CHECK_TYPE(perm->scalar_type() == at::kLong, op, ": perm must be a torch.int64 tensor, got ",
                   dtype_name(perm->scalar_type()));
  TORCH_CHECK_VALUE(perm->dim() == 1 && perm->size(0) == n, op, ": perm must have shape [", n,
                    "] (one index per sample of x), got ", perm->sizes());
  TORCH_CHECK_VALUE(perm->device() == x.device(), op, ": x and perm must be on the same device, got ", x.device(),
                    " and ", perm->device());
  const auto order = perm->contiguous();
  const int64_t* index = order.data_ptr<int64_t>();
  std::vector<bool> seen(n);
  for (const auto i : c10::irange(n)) {
    const int64_t row = index[i];
    TORCH_CHECK_VALUE(row >= 0 && row < n, op, ": perm must be a permutation of range(", n, "), got perm[", i,
                      "] = ", row);
    TORCH_CHECK_VALUE(!seen[row], op, ": perm must be a permutation of range(", n, "), got perm[", i, "] = ", row,
                      ", a repeat");
    seen[row] = true;
  }
}

bool check_sgd_rule(const char* op, c10::string_view cost, double weight_decay) {
  TORCH_CHECK_VALUE(cost == "quadratic" || cost == "cross_entropy", op,
                    ": cost must be one of ('quadratic', 'cross_entropy'), got '", cost, "'");
  TORCH_CHECK_VALUE(std::isfinite(weight_decay) && weight_decay >= 0, op,
                    ": weight_decay must be a finite number >= 0, got ", weight_decay);
  return cost == "cross_entropy";
}

TORCH_LIBRARY(bp_torch, m) {
  // a = sigmoid(x W^T + b), for x of shape (*, in_features).
  m.def("sigmoid_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  // Returns (dC/dx, dC/dW, dC/db) from dC/da and the saved x, W, a; an entry whose output_mask is false is None.
  m.def("sigmoid_linear_backward(Tensor grad_a, Tensor x, Tensor weight, Tensor a, bool[3] output_mask) "
        "-> (Tensor, Tensor, Tensor)");
  // The same, in torch ops that autograd records: the Python backend's formula, implemented from Python
  // (bp_torch/_ops.py). sigmoid_linear_backward takes it when its gradients need a graph (create_graph=True).
  m.def("sigmoid_linear_backward_differentiable(Tensor grad_a, Tensor x, Tensor weight, Tensor a, "
        "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // C = 1/2 sum_j (y_j - a_j)^2 per sample, reduced by 'none' | 'mean' | 'sum'.
  m.def("quadratic_cost(Tensor a, Tensor y, str reduction) -> Tensor");
  // Returns (dC/da, dC/dy); an entry whose output_mask is false is None.
  m.def("quadratic_cost_backward(Tensor grad_cost, Tensor a, Tensor y, str reduction, bool[2] output_mask) "
        "-> (Tensor, Tensor)");
  // The same in torch ops, as sigmoid_linear_backward_differentiable.
  m.def("quadratic_cost_backward_differentiable(Tensor grad_cost, Tensor a, Tensor y, str reduction, "
        "bool[2] output_mask) -> (Tensor, Tensor)");
  // C = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)] per sample (3.1), each log at least -100, reduced by 'none' |
  // 'mean' | 'sum'. a and y in [0, 1] (checked in Python, bp_torch.functional, as on the Python backend).
  m.def("cross_entropy_cost(Tensor a, Tensor y, str reduction) -> Tensor");
  // Returns (dC/da, dC/dy) (3.2); an entry whose output_mask is false is None.
  m.def("cross_entropy_cost_backward(Tensor grad_cost, Tensor a, Tensor y, str reduction, bool[2] output_mask) "
        "-> (Tensor, Tensor)");
  // The same in torch ops, as sigmoid_linear_backward_differentiable.
  m.def("cross_entropy_cost_backward_differentiable(Tensor grad_cost, Tensor a, Tensor y, str reduction, "
        "bool[2] output_mask) -> (Tensor, Tensor)");
  // A whole network, a^l = sigmoid(a^(l-1) W_l^T + b_l): returns every activation [a^1, ..., a^L] (back-propagation
  // needs them all). biases: empty for a network without biases, else one per layer.
  m.def("sigmoid_mlp(Tensor x, Tensor[] weights, Tensor[] biases) -> Tensor[]");
  // Back-propagation through the whole network from dC/da^L: returns (dC/dx, [dC/dW_l], [dC/db_l]); dC/dx is None
  // unless input_grad, the bias list is empty unless bias_grad.
  m.def("sigmoid_mlp_backward(Tensor grad_output, Tensor x, Tensor[] weights, Tensor[] activations, bool input_grad, "
        "bool bias_grad) -> (Tensor, Tensor[], Tensor[])");
  // One step of Nielsen's update_mini_batch, in place: W <- (1 - lr weight_decay) W - lr dC/dW, b <- b - lr dC/db
  // (3.4) for C the cost ('quadratic' | 'cross_entropy') averaged over the mini-batch; returns C before the update.
  m.def("sigmoid_mlp_sgd_step(Tensor x, Tensor y, Tensor(a!)[] weights, Tensor(b!)[] biases, float lr, "
        "str cost=\"quadratic\", float weight_decay=0.0) -> Tensor");
  // One epoch of sgd_step over x's rows in perm's order (None: in order), in mini-batches of batch_size, the last
  // one partial; returns each mini-batch's cost, shape [ceil(n / batch_size)].
  m.def("sigmoid_mlp_sgd_epoch(Tensor x, Tensor y, Tensor(a!)[] weights, Tensor(b!)[] biases, float lr, "
        "int batch_size, Tensor? perm, str cost=\"quadratic\", float weight_decay=0.0) -> Tensor");
  // Which copy of the SIMD kernels runs: "DEFAULT", "AVX2" or "AVX512" (torch's choice, ATEN_CPU_CAPABILITY
  // included, limited to what the CPU has).
  m.def("kernel_capability() -> str", &kernel_capability_name);
}

TORCH_LIBRARY_IMPL(bp_torch, CPU, m) {
  m.impl("sigmoid_linear", &sigmoid_linear_cpu);
  m.impl("sigmoid_linear_backward", &sigmoid_linear_backward_cpu);
  m.impl("quadratic_cost", &quadratic_cost_cpu);
  m.impl("quadratic_cost_backward", &quadratic_cost_backward_cpu);
  m.impl("cross_entropy_cost", &cross_entropy_cost_cpu);
  m.impl("cross_entropy_cost_backward", &cross_entropy_cost_backward_cpu);
  m.impl("sigmoid_mlp", &sigmoid_mlp_cpu);
  m.impl("sigmoid_mlp_backward", &sigmoid_mlp_backward_cpu);
  m.impl("sigmoid_mlp_sgd_step", &sigmoid_mlp_sgd_step_cpu);
  m.impl("sigmoid_mlp_sgd_epoch", &sigmoid_mlp_sgd_epoch_cpu);
}

}  // namespace bp_torch

// `import bp_torch._C` loads this library, which runs the TORCH_LIBRARY blocks above. The module itself is empty:
// every entry point is a dispatcher op, reached as torch.ops.bp_torch.*.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
