// The dispatcher schemas of bp_torch's ops, their input checks, and the Python module stub that loads them.
//
// Each op is a forward/backward pair. The backward ops take an output mask, so gradients that nobody asked for
// cost nothing. Autograd is attached in csrc/autograd.cpp, the CPU kernels live in csrc/cpu/, and the fake
// kernels that let torch.compile trace the ops are in bp_torch/_backend.py.
#include <Python.h>
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

// Every tensor must be float32 or float64 and share one dtype and one device.
void check_dtypes_and_devices(const char* op, std::initializer_list<NamedTensor> tensors) {
  for (const auto& [name, t] : tensors) {
    TORCH_CHECK_TYPE(is_supported_dtype(t->scalar_type()),
                     op, ": ", name, " must be float32 or float64, got ", dtype_name(t->scalar_type()));
  }
  const auto& [first_name, first] = *tensors.begin();
  for (const auto& [name, t] : tensors) {
    TORCH_CHECK_TYPE(t->scalar_type() == first->scalar_type(), op, ": ", first_name, " and ", name,
                     " must have the same dtype, got ", dtype_name(first->scalar_type()), " and ",
                     dtype_name(t->scalar_type()));
  }
  for (const auto& [name, t] : tensors) {
    TORCH_CHECK_VALUE(t->device() == first->device(), op, ": ", first_name, " and ", name,
                      " must be on the same device, got ", first->device(), " and ", t->device());
  }
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

Reduction parse_reduction(c10::string_view reduction) {
  if (reduction == "none") return Reduction::None;
  if (reduction == "mean") return Reduction::Mean;
  TORCH_CHECK_VALUE(reduction == "sum", "quadratic_cost: reduction must be one of ('none', 'mean', 'sum'), got '",
                    reduction, "'");
  return Reduction::Sum;
}

void check_quadratic_cost(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction) {
  constexpr const char* op = "quadratic_cost";
  parse_reduction(reduction);
  TORCH_CHECK_VALUE(a.dim() > 0, op, ": input must have at least 1 dimension (*, n_outputs), got a 0-d tensor");
  TORCH_CHECK_VALUE(a.sizes() == y.sizes(), op, ": input and target must have the same shape, got input shape ",
                    a.sizes(), " and target shape ", y.sizes());
  check_dtypes_and_devices(op, {{"input", &a}, {"target", &y}});
}

TORCH_LIBRARY(bp_torch, m) {
  // a = sigmoid(x W^T + b), for x of shape (*, in_features).
  m.def("sigmoid_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  // Returns (dC/dx, dC/dW, dC/db) from dC/da and the saved x, W, a; an entry whose output_mask is false is None.
  m.def("sigmoid_linear_backward(Tensor grad_a, Tensor x, Tensor weight, Tensor a, bool[3] output_mask) "
        "-> (Tensor, Tensor, Tensor)");
  // C = 1/2 sum_j (y_j - a_j)^2 per sample, reduced by 'none' | 'mean' | 'sum'.
  m.def("quadratic_cost(Tensor a, Tensor y, str reduction) -> Tensor");
  // Returns (dC/da, dC/dy); an entry whose output_mask is false is None.
  m.def("quadratic_cost_backward(Tensor grad_cost, Tensor a, Tensor y, str reduction, bool[2] output_mask) "
        "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(bp_torch, CPU, m) {
  m.impl("sigmoid_linear", &sigmoid_linear_cpu);
  m.impl("sigmoid_linear_backward", &sigmoid_linear_backward_cpu);
  m.impl("quadratic_cost", &quadratic_cost_cpu);
  m.impl("quadratic_cost_backward", &quadratic_cost_backward_cpu);
}

}  // namespace bp_torch

// `import bp_torch._C` loads this library, which runs the TORCH_LIBRARY blocks above. The module itself is empty:
// every entry point is a dispatcher op, reached as torch.ops.bp_torch.*.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
