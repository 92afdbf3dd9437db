// Declarations shared by bp_torch's C++ sources: the input checks (one per op, mirroring bp_torch/_checks.py) and
// the CPU kernels that csrc/ops.cpp registers with the dispatcher.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/core/DimVector.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/accumulate.h>
#include <c10/util/string_view.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace bp_torch {

// The checks raise ValueError (shapes, devices, options) or TypeError (dtypes) with the same words as the
// Python backend, so a user sees the same error whichever backend is active.
void check_sigmoid_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias);
void check_quadratic_cost(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction,
                          const char* op = "quadratic_cost");
void check_sigmoid_mlp(const char* op, const at::Tensor& x, at::TensorList weights, at::TensorList biases);
void check_sigmoid_mlp_sgd_step(const char* op, const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                at::TensorList biases);
void check_sigmoid_mlp_sgd_epoch(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                 at::TensorList biases, int64_t batch_size, const std::optional<at::Tensor>& perm);
// The sgd ops' cost and weight decay, as bp_torch/_checks.py's sgd_arguments: cost one of 'quadratic',
// 'cross_entropy' (returns true for the cross-entropy), the decay a finite number >= 0.
bool check_sgd_rule(const char* op, c10::string_view cost, double weight_decay);

// Number of samples in a (*, features) tensor: the product of its leading dimensions.
inline int64_t leading_numel(const at::Tensor& t) {
  return c10::multiply_integers(t.sizes().begin(), t.sizes().end() - 1);
}

// Shape (*, features): x's leading dimensions with a new last one.
inline at::DimVector with_last_dim(const at::Tensor& x, int64_t features) {
  at::DimVector shape(x.sizes());
  shape.back() = features;
  return shape;
}

// A new CPU tensor of like's dtype, for the CPU kernels' outputs.
inline at::Tensor empty_cpu(at::IntArrayRef shape, const at::Tensor& like) {
  return at::empty(shape, at::TensorOptions(like.scalar_type()));
}

// The kernel copy this process runs (csrc/cpu/sigmoid_mlp.cpp): "DEFAULT", "AVX2" or "AVX512".
std::string kernel_capability_name();

enum class Reduction { None, Mean, Sum };
Reduction parse_reduction(c10::string_view reduction, const char* op = "quadratic_cost");

at::Tensor sigmoid_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias);
std::tuple<at::Tensor, at::Tensor, at::Tensor> sigmoid_linear_backward_cpu(
    const at::Tensor& grad_a, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& a,
    std::array<bool, 3> output_mask);

at::Tensor quadratic_cost_cpu(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction);
std::tuple<at::Tensor, at::Tensor> quadratic_cost_backward_cpu(
    const at::Tensor& grad_cost, const at::Tensor& a, const at::Tensor& y, c10::string_view reduction,
    std::array<bool, 2> output_mask);

// The cross-entropy cost (3.1) per sample, reduced as quadratic_cost (csrc/cpu/cross_entropy_cost.cpp).
at::Tensor cross_entropy_cost_cpu(const at::Tensor& a, const at::Tensor& y, c10::string_view reduction);
std::tuple<at::Tensor, at::Tensor> cross_entropy_cost_backward_cpu(
    const at::Tensor& grad_cost, const at::Tensor& a, const at::Tensor& y, c10::string_view reduction,
    std::array<bool, 2> output_mask);

// A whole SigmoidMLP (csrc/cpu/sigmoid_mlp.cpp): weights[l] is (n_(l+1), n_l), biases empty or one per layer.
// The unchecked versions take inputs already checked; the single-layer ops are their one-layer case.
std::vector<at::Tensor> sigmoid_mlp_forward_unchecked(const at::Tensor& x, at::TensorList weights,
                                                      at::TensorList biases);
// output_mask: (dC/dx, dC/dW^l for every l, dC/db^l for every l); the lists are empty where the mask is false.
// grad_output is dC/da^L, or delta^L = dC/dz^L itself with from_delta.
std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> sigmoid_mlp_backward_unchecked(
    const at::Tensor& grad_output, const at::Tensor& x, at::TensorList weights, at::TensorList activations,
    std::array<bool, 3> output_mask, bool from_delta = false);
std::vector<at::Tensor> sigmoid_mlp_cpu(const at::Tensor& x, at::TensorList weights, at::TensorList biases);
std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> sigmoid_mlp_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& x, at::TensorList weights, at::TensorList activations,
    bool input_grad, bool bias_grad);
at::Tensor sigmoid_mlp_sgd_step_cpu(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                    at::TensorList biases, double lr, c10::string_view cost, double weight_decay);
at::Tensor sigmoid_mlp_sgd_epoch_cpu(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                     at::TensorList biases, double lr, int64_t batch_size,
                                     const std::optional<at::Tensor>& perm, c10::string_view cost,
                                     double weight_decay);

}  // namespace bp_torch
