// The SigmoidMLP ops on tensors: they take the tensors apart into raw pointers (csrc/cpu/capability/kernels.h),
// run the kernel copy chosen for this CPU (csrc/cpu/capability/: passes.cpp and epoch.cpp), and keep the cases the
// fused kernels do not take (parameters that share memory). Compiled for baseline x86-64, as is everything that runs at
// import: no instruction here needs more than the CPU torch itself runs on. The kernels' BLAS side is in blas.cpp.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/ops/arange.h>
#include <c10/util/SmallVector.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "../bp_torch.h"
#include "capability/kernels.h"

namespace bp_torch {

// ---------------------------------------------------------------------------------------------------------------
// The kernel copy, chosen once per process.

namespace {

Capability choose_capability() {
#if defined(BP_TORCH_X86_CAPABILITIES)
  // torch's own choice for its kernels: the CPU's best, or ATEN_CPU_CAPABILITY's if set ("default", "avx2",
  // "avx512"). The CPU is asked too, so that no setting can pick instructions it lacks.
  const std::string torch_choice = at::get_cpu_capability();
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (torch_choice == "AVX512" && avx512) return Capability::Avx512;
  if ((torch_choice == "AVX512" || torch_choice == "AVX2") && avx2) return Capability::Avx2;
#endif
  return Capability::Default;
}

}  // namespace

Capability kernel_capability() {
  static const Capability chosen_capability = choose_capability();
  return chosen_capability;
}

const char* capability_name(Capability capability) {
  switch (capability) {
    case Capability::Avx512: return "AVX512";
    case Capability::Avx2: return "AVX2";
    default: return "DEFAULT";
  }
}

std::string kernel_capability_name() { return capability_name(kernel_capability()); }

namespace {

#if defined(BP_TORCH_X86_CAPABILITIES)
#define BP_TORCH_RUN_KERNEL(call)                                \
  switch (kernel_capability()) {                                 \
    case Capability::Avx512: return cpu_AVX512::call;            \
    case Capability::Avx2: return cpu_AVX2::call;                \
    default: return cpu_DEFAULT::call;                           \
  }
#else
#define BP_TORCH_RUN_KERNEL(call) return cpu_DEFAULT::call;
#endif

template <typename T>
void run_forward(const Net<T>& net, const T* x, T* const* acts) {
  BP_TORCH_RUN_KERNEL(forward(net, x, acts))
}
template <typename T>
void run_backward(const Net<T>& net, const T* grad_output, const T* x, const T* const* acts, T* const* grad_w,
                  T* const* grad_b, T* grad_x, bool from_delta) {
  BP_TORCH_RUN_KERNEL(backward(net, grad_output, x, acts, grad_w, grad_b, grad_x, from_delta))
}
template <typename T>
double run_sgd_step(const Net<T>& net, const T* x, const T* y, const SgdRule<T>& rule) {
  BP_TORCH_RUN_KERNEL(sgd_step(net, x, y, rule))
}
template <typename T>
void run_sgd_epoch(const Net<T>& net, const T* x, int64_t x_row, const T* y, int64_t y_row, const int64_t* order,
                   int64_t n, int64_t batch, const SgdRule<T>& rule, T* costs) {
  BP_TORCH_RUN_KERNEL(sgd_epoch(net, x, x_row, y, y_row, order, n, batch, rule, costs))
}


// Raw pointers of already-checked, contiguous weights and biases, and the Net that points at them (which must not
// outlive this object).
template <typename T>
class NetPointers {
 public:
  NetPointers(int64_t n, const at::Tensor& x, at::TensorList weights, at::TensorList biases) : n_(n) {
    sizes_.push_back(x.size(-1));
    for (const auto& w : weights) {
      sizes_.push_back(w.size(0));
      weights_.push_back(w.data_ptr<T>());
    }
    for (const auto& b : biases) biases_.push_back(b.data_ptr<T>());
  }
  NetPointers(const NetPointers&) = delete;
  NetPointers& operator=(const NetPointers&) = delete;

  Net<T> net() const {
    Net<T> net;
    net.n = n_;
    net.layer_count = static_cast<int64_t>(weights_.size());
    net.sizes = sizes_.data();
    net.weights = weights_.data();
    net.biases = biases_.empty() ? nullptr : biases_.data();
    return net;
  }

 private:
  int64_t n_;
  c10::SmallVector<int64_t, 8> sizes_;
  c10::SmallVector<T*, 8> weights_;
  c10::SmallVector<T*, 8> biases_;
};

std::vector<at::Tensor> contiguous_all(at::TensorList tensors) {
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(t.contiguous());
  return out;
}

}  // namespace

std::vector<at::Tensor> sigmoid_mlp_forward_unchecked(const at::Tensor& x, at::TensorList weights,
                                                      at::TensorList biases) {
  const int64_t n = leading_numel(x);
  const auto x_c = x.contiguous();
  const auto weights_c = contiguous_all(weights);
  const auto biases_c = contiguous_all(biases);
  std::vector<at::Tensor> activations;
  activations.reserve(weights.size());
  for (const auto& w : weights) activations.push_back(empty_cpu(with_last_dim(x, w.size(0)), x));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sigmoid_mlp_cpu", [&] {
    const NetPointers<scalar_t> net(n, x_c, weights_c, biases_c);
    c10::SmallVector<scalar_t*, 8> acts;
    for (auto& a : activations) acts.push_back(a.data_ptr<scalar_t>());
    run_forward<scalar_t>(net.net(), x_c.data_ptr<scalar_t>(), acts.data());
  });
  return activations;
}

std::vector<at::Tensor> sigmoid_mlp_cpu(const at::Tensor& x, at::TensorList weights, at::TensorList biases) {
  check_sigmoid_mlp("sigmoid_mlp", x, weights, biases);
  return sigmoid_mlp_forward_unchecked(x, weights, biases);
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> sigmoid_mlp_backward_unchecked(
    const at::Tensor& grad_output, const at::Tensor& x, at::TensorList weights, at::TensorList activations,
    std::array<bool, 3> output_mask, bool from_delta) {
  // Plain bools, not a structured binding: the lambda below captures them, which C++17 and clang 14 do not allow
  // for structured bindings.
  const bool input_grad = output_mask[0], weight_grad = output_mask[1], bias_grad = output_mask[2];
  const int64_t n = leading_numel(x);
  // Upstream gradients may be expanded (stride 0, from .sum()) or otherwise strided: read them as real memory.
  const auto grad_c = grad_output.contiguous();
  const auto x_c = x.contiguous();
  const auto weights_c = contiguous_all(weights);
  const auto acts_c = contiguous_all(activations);
  at::Tensor grad_x = input_grad ? empty_cpu(x.sizes(), x) : at::Tensor();
  std::vector<at::Tensor> grad_weights, grad_biases;
  for (const auto& w : weights) {
    if (weight_grad) grad_weights.push_back(empty_cpu(w.sizes(), w));
    if (bias_grad) grad_biases.push_back(empty_cpu({w.size(0)}, w));
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sigmoid_mlp_backward_cpu", [&] {
    const NetPointers<scalar_t> net(n, x_c, weights_c, {});
    c10::SmallVector<scalar_t*, 8> acts, gw, gb;
    for (const auto& a : acts_c) acts.push_back(a.data_ptr<scalar_t>());
    for (auto& g : grad_weights) gw.push_back(g.data_ptr<scalar_t>());
    for (auto& g : grad_biases) gb.push_back(g.data_ptr<scalar_t>());
    run_backward<scalar_t>(
        net.net(), grad_c.data_ptr<scalar_t>(), x_c.data_ptr<scalar_t>(), acts.data(), weight_grad ? gw.data() : nullptr,
        bias_grad ? gb.data() : nullptr, input_grad ? grad_x.data_ptr<scalar_t>() : nullptr, from_delta);
  });
  return {grad_x, grad_weights, grad_biases};
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> sigmoid_mlp_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& x, at::TensorList weights, at::TensorList activations,
    bool input_grad, bool bias_grad) {
  check_sigmoid_mlp("sigmoid_mlp_backward", x, weights, {});
  TORCH_CHECK_VALUE(activations.size() == weights.size(), "sigmoid_mlp_backward: expected one activation per layer (",
                    weights.size(), "), got ", activations.size());
  for (const auto l : c10::irange(weights.size())) {
    const auto shape = with_last_dim(x, weights[l].size(0));
    TORCH_CHECK_VALUE(activations[l].sizes() == at::IntArrayRef(shape), "sigmoid_mlp_backward: activations[", l,
                      "] must have shape ", at::IntArrayRef(shape), ", got ", activations[l].sizes());
    TORCH_CHECK_TYPE(activations[l].scalar_type() == x.scalar_type(),
                     "sigmoid_mlp_backward: activations must have the input's dtype");
  }
  TORCH_CHECK_VALUE(grad_output.sizes() == activations.back().sizes(), "sigmoid_mlp_backward: grad_output must have "
                    "shape ", activations.back().sizes(), ", got ", grad_output.sizes());
  TORCH_CHECK_TYPE(grad_output.scalar_type() == x.scalar_type(),
                   "sigmoid_mlp_backward: grad_output must have the input's dtype");

  auto [grad_x, grad_weights, grad_biases] =
      sigmoid_mlp_backward_unchecked(grad_output, x, weights, activations, {input_grad, true, bias_grad});
  return {grad_x, grad_weights, grad_biases};
}

namespace {

// Runs update(net) on the parameters in place. Parameters are normally contiguous already (contiguous() is then the
// tensor itself, no copy); a strided one is updated in a contiguous copy, written back. Only for parameters that
// share no memory (see shares_memory): otherwise a copy written back would undo another use's update.
template <typename Update>
void update_parameters(const at::Tensor& x, at::TensorList weights, at::TensorList biases, const Update& update) {
  const auto weights_c = contiguous_all(weights);
  const auto biases_c = contiguous_all(biases);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sigmoid_mlp_update", [&] {
    const NetPointers<scalar_t> net(0, x, weights_c, biases_c);
    update(net.net());
  });
  for (const auto l : c10::irange(weights.size())) {
    if (!weights_c[l].is_same(weights[l])) weights[l].copy_(weights_c[l]);
  }
  for (const auto l : c10::irange(biases.size())) {
    if (!biases_c[l].is_same(biases[l])) biases[l].copy_(biases_c[l]);
  }
}

template <typename T>
SgdRule<T> sgd_rule(double lr, bool cross_entropy, double weight_decay) {
  return {static_cast<T>(lr), cross_entropy ? Cost::CrossEntropy : Cost::Quadratic, static_cast<T>(weight_decay)};
}

// The bytes a tensor's elements span, [first, last + 1); empty for a tensor without elements.
std::pair<uintptr_t, uintptr_t> byte_range(const at::Tensor& t) {
  if (t.numel() == 0) return {0, 0};
  auto first = reinterpret_cast<uintptr_t>(t.data_ptr()), last = first;
  for (const auto d : c10::irange(t.dim())) {
    const int64_t reach = (t.size(d) - 1) * t.stride(d) * static_cast<int64_t>(t.element_size());
    (reach < 0 ? first : last) += reach;
  }
  return {first, last + t.element_size()};
}

// Whether a parameter may share memory with another parameter or with x or y: tied weights (one tensor in several
// layers, or W and W.T), or x or y a view of a parameter. The fused step updates each layer during the backward
// sweep, which is exact only when nothing it reads later is what it has just written. x and y may share memory with
// each other (an autoencoder trains on y = x): both are only read. Conservative: tensors whose byte ranges overlap
// count as sharing. A few comparisons per call.
bool shares_memory(const at::Tensor& x, const at::Tensor& y, at::TensorList weights, at::TensorList biases) {
  c10::SmallVector<std::pair<uintptr_t, uintptr_t>, 16> params;
  for (const auto& t : weights) params.push_back(byte_range(t));
  for (const auto& t : biases) params.push_back(byte_range(t));
  const auto overlap = [](std::pair<uintptr_t, uintptr_t> a, std::pair<uintptr_t, uintptr_t> b) {
    return a.first < a.second && b.first < b.second && a.first < b.second && b.first < a.second;
  };
  const auto x_range = byte_range(x), y_range = byte_range(y);
  for (const auto i : c10::irange(params.size())) {
    if (overlap(params[i], x_range) || overlap(params[i], y_range)) return true;
    for (const auto j : c10::irange(i)) {
      if (overlap(params[i], params[j])) return true;
    }
  }
  return false;
}

// The step for parameters that share memory: as autograd + torch.optim.SGD take it, and as the Python backend does
// (bp_torch.autograd.sigmoid_mlp_sgd_step), every gradient at the values before the step, then the updates one
// tensor at a time, weights first. Shapes as sgd_step's, already checked.
at::Tensor sgd_step_unfused(const at::Tensor& x, const at::Tensor& y, at::TensorList weights, at::TensorList biases,
                            double lr, bool cross_entropy, double weight_decay) {
  const auto activations = sigmoid_mlp_forward_unchecked(x, weights, biases);
  const auto& output = activations.back();
  // (a - y) / n: dC/da^L of the quadratic cost (1.3), or delta^L itself for the cross-entropy (3.3), averaged.
  const auto error = (output - y) / std::max<int64_t>(x.size(0), 1);
  const auto cost = cross_entropy ? cross_entropy_cost_cpu(output, y, "mean")
                                  : (0.5 * (y - output).square().sum(-1)).mean();
  const auto [grad_x, grad_weights, grad_biases] = sigmoid_mlp_backward_unchecked(
      error, x, weights, activations, {false, true, !biases.empty()}, /*from_delta=*/cross_entropy);
  if (weight_decay != 0) {
    // (3.4) (1 - eta lambda / n) W, each distinct tensor once: a tensor tied into several layers decays once.
    for (const auto l : c10::irange(weights.size())) {
      bool seen = false;
      for (const auto k : c10::irange(l)) seen = seen || weights[k].is_same(weights[l]);
      if (!seen) weights[l].mul_(1 - lr * weight_decay);
    }
  }
  for (const auto l : c10::irange(weights.size())) weights[l].sub_(grad_weights[l] * lr);    // W <- W - eta dC/dW
  for (const auto l : c10::irange(biases.size())) biases[l].sub_(grad_biases[l] * lr);
  return cost;
}

// The epoch for parameters that share memory with each other or with x or y: sgd_step_unfused on each mini-batch,
// whose rows are gathered when its step begins (x[order[k b ..]], as a loop of sgd_step reads them).
at::Tensor sgd_epoch_unfused(const at::Tensor& x, const at::Tensor& y, at::TensorList weights, at::TensorList biases,
                             double lr, bool cross_entropy, double weight_decay, int64_t batch_size,
                             const at::Tensor& order, at::Tensor& costs) {
  const int64_t n = x.size(0);
  for (int64_t start = 0, k = 0; start < n; start += batch_size, ++k) {
    const int64_t count = std::min(batch_size, n - start);
    const auto rows = order.defined() ? order.narrow(0, start, count) : at::arange(start, start + count, at::kLong);
    costs[k].copy_(sgd_step_unfused(x.index_select(0, rows), y.index_select(0, rows), weights, biases, lr,
                                    cross_entropy, weight_decay));
  }
  return costs;
}

}  // namespace

at::Tensor sigmoid_mlp_sgd_step_cpu(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                    at::TensorList biases, double lr, c10::string_view cost,
                                    double weight_decay) {
  check_sigmoid_mlp_sgd_step("sgd_step", x, y, weights, biases);
  const bool cross_entropy = check_sgd_rule("sgd_step", cost, weight_decay);
  if (shares_memory(x, y, weights, biases)) {
    return sgd_step_unfused(x, y, weights, biases, lr, cross_entropy, weight_decay);
  }
  const auto x_c = x.contiguous();
  const auto y_c = y.contiguous();
  at::Tensor result = empty_cpu({}, x);      // at::scalar_tensor would be two more dispatcher calls
  update_parameters(x, weights, biases, [&](auto net) {
    using T = typename decltype(net)::scalar;
    net.n = x.size(0);
    const double value = run_sgd_step<T>(net, x_c.data_ptr<T>(), y_c.data_ptr<T>(),
                                         sgd_rule<T>(lr, cross_entropy, weight_decay));
    *result.data_ptr<T>() = static_cast<T>(value);
  });
  return result;
}

at::Tensor sigmoid_mlp_sgd_epoch_cpu(const at::Tensor& x, const at::Tensor& y, at::TensorList weights,
                                     at::TensorList biases, double lr, int64_t batch_size,
                                     const std::optional<at::Tensor>& perm, c10::string_view cost,
                                     double weight_decay) {
  check_sigmoid_mlp_sgd_epoch(x, y, weights, biases, batch_size, perm);
  const bool cross_entropy = check_sgd_rule("sgd_epoch", cost, weight_decay);
  const bool shuffled = perm.has_value() && perm->defined();
  const auto order = shuffled ? perm->contiguous() : at::Tensor();
  const int64_t n = x.size(0);
  at::Tensor costs = empty_cpu({n == 0 ? 0 : (n - 1) / batch_size + 1}, x);   // ceil(n / batch), for any batch
  if (n == 0) return costs;                  // no step, no parameter changed
  if (shares_memory(x, y, weights, biases)) {
    return sgd_epoch_unfused(x, y, weights, biases, lr, cross_entropy, weight_decay, batch_size, order, costs);
  }
  // Rows are read where they lie, by index: only a tensor whose rows are themselves strided is copied.
  const auto x_c = x.stride(1) == 1 ? x : x.contiguous();
  const auto y_c = y.stride(1) == 1 ? y : y.contiguous();
  update_parameters(x, weights, biases, [&](auto net) {
    using T = typename decltype(net)::scalar;
    run_sgd_epoch<T>(net, x_c.data_ptr<T>(), x_c.stride(0), y_c.data_ptr<T>(), y_c.stride(0),
                     shuffled ? order.data_ptr<int64_t>() : nullptr, n, batch_size,
                     sgd_rule<T>(lr, cross_entropy, weight_decay), costs.data_ptr<T>());
  });
  return costs;
}

}  // namespace bp_torch
