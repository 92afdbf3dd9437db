// CPU kernels for one layer, a = sigmoid(x W^T + b), and its backward.
//
// A layer is a one-layer network, so these check their inputs and run the network kernels of sigmoid_mlp.cpp:
// there the product x W^T is written straight into the buffer that becomes a, and the bias and the sigmoid are
// applied in one pass over it (no z tensor is kept); the backward computes delta = g a (1 - a) in one pass and
// feeds it to the two products. Small products run in register-blocked loops, large ones in BLAS.
#include "../bp_torch.h"

namespace bp_torch {

at::Tensor sigmoid_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_sigmoid_linear(x, weight, bias);
  const bool has_bias = bias.has_value() && bias->defined();
  return sigmoid_mlp_forward_unchecked(x, {weight}, has_bias ? at::TensorList(*bias) : at::TensorList())[0];
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sigmoid_linear_backward_cpu(
    const at::Tensor& grad_a, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& a,
    std::array<bool, 3> output_mask) {
  check_sigmoid_linear(x, weight, std::nullopt);
  const auto out_shape = with_last_dim(x, weight.size(0));
  TORCH_CHECK_VALUE(a.sizes() == at::IntArrayRef(out_shape) && grad_a.sizes() == a.sizes(),
                    "sigmoid_linear_backward: grad_a and a must have shape ", at::IntArrayRef(out_shape),
                    ", got ", grad_a.sizes(), " and ", a.sizes());
  TORCH_CHECK_TYPE(grad_a.scalar_type() == x.scalar_type() && a.scalar_type() == x.scalar_type(),
                   "sigmoid_linear_backward: grad_a and a must have the input's dtype");
  // delta = dC/da * a (1 - a) (1.2, 2.2); dC/dx = delta W (2.3.2); dC/dW = delta^T x (1.1); dC/db = sum of delta.
  auto [grad_x, grad_weights, grad_biases] = sigmoid_mlp_backward_unchecked(grad_a, x, {weight}, {a}, output_mask);
  return {grad_x, output_mask[1] ? grad_weights[0] : at::Tensor(), output_mask[2] ? grad_biases[0] : at::Tensor()};
}

}  // namespace bp_torch
