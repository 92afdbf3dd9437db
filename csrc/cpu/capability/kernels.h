// The interface between the SigmoidMLP kernels, compiled once per CPU capability, and the rest of the extension.
//
// The files of csrc/cpu/capability/ (the capability set: passes.cpp with microkernels.h, epoch.cpp; internal.h is
// what they share) are compiled three times on x86-64 (setup.py): for baseline x86-64, for AVX2 + FMA and for
// AVX-512, each copy in its own namespace (bp_torch::cpu_DEFAULT, cpu_AVX2, cpu_AVX512, from the CPU_CAPABILITY
// macro, as ATen names its own kernel copies). csrc/cpu/sigmoid_mlp.cpp, compiled for baseline x86-64 like all the
// code that runs at import, picks one copy at run time (kernel_capability below).
//
// Only plain data crosses this interface (raw pointers and integers, no tensors, no containers): a header's inline
// function instantiated in a vector copy may be merged by the linker with the baseline copy of the same function,
// so the vector copies use as few of them as they can, and tests/test_isa.py checks the built library for vector
// instructions outside the vector copies.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bp_torch {

// Elements below which an elementwise pass stays on one thread: Nielsen-sized layers (hundreds of elements) never
// wake the thread pool, while layers whose products run multi-threaded in BLAS spread their sigmoids and sigma'
// over the threads too: a middle-sized layer such as (64, 256, 256), 16k elements, gains from its second thread
// (BENCHMARKS.md, "The kernels' thresholds").
constexpr int64_t kParallelGrain = 8192;

// A network as raw pointers, with n samples (rows). sizes[0 .. L]; weights[l] is (sizes[l+1] x sizes[l]) row-major;
// biases null when the layers have none, else one per layer.
template <typename T>
struct Net {
  using scalar = T;
  int64_t n = 0;
  int64_t layer_count = 0;
  const int64_t* sizes = nullptr;
  T* const* weights = nullptr;
  T* const* biases = nullptr;
  int64_t layers() const { return layer_count; }
  bool has_biases() const { return biases != nullptr; }
};

// The cost a training step minimizes, averaged over its mini-batch: the quadratic C_x = 1/2 ||y - a^L||^2 or the
// cross-entropy (3.1); and the weight decay of its update (3.4), W <- (1 - lr decay) W - lr dC/dW, biases not
// decayed (decay = Nielsen's lambda / n_train, as torch.optim.SGD's weight_decay on the mean cost).
enum class Cost { Quadratic, CrossEntropy };
template <typename T>
struct SgdRule {
  T lr = 0;
  Cost cost = Cost::Quadratic;
  T weight_decay = 0;
};

// ln 0 in the cross-entropy cost (3.1), in the training step's kernels and the cost's own (csrc/cpu/
// cross_entropy_cost.cpp): the Python backend's LOG_FLOOR (bp_torch/autograd.py), as in torch.nn.BCELoss, so 0 ln 0
// is 0, as Nielsen's nan_to_num makes it.
constexpr double kLogFloor = -100.0;

// The CPU capabilities there are kernel copies for, in increasing order.
enum class Capability { Default, Avx2, Avx512 };

// The copy this process runs: torch's choice (at::get_cpu_capability(), which honours ATEN_CPU_CAPABILITY), never
// one the CPU lacks the instructions for, and only one this build has. Chosen once.
Capability kernel_capability();
const char* capability_name(Capability capability);

// The large products, in BLAS through ATen (csrc/cpu/blas.cpp, baseline): called by every copy. BLAS picks its own
// instructions at run time from the CPU present, whichever copy calls it.
// Z (n x out) = A (n x in) W^T.
template <typename T>
void blas_z(int64_t n, int64_t in, int64_t out, const T* a_prev, const T* w, T* z);
// G (out x in) = [beta G +] alpha Delta^T A.
template <typename T>
void blas_grad_w(int64_t n, int64_t in, int64_t out, T alpha, const T* delta, const T* a_prev, bool accumulate,
                 T beta, T* g);
// D (n x in) = (Delta W) [* a (1 - a)]; a_prev null: no sigma' factor.
template <typename T>
void blas_back(int64_t n, int64_t in, int64_t out, const T* delta, const T* w, const T* a_prev, T* d);
// g_b = [g_b +] alpha sum over the n rows of delta (n x out), summed in a cascade.
template <typename T>
void blas_grad_b(int64_t n, int64_t out, T alpha, const T* delta, bool accumulate, T* gb);
// Raises the out-of-memory error of a work buffer (a Python RuntimeError).
[[noreturn]] void fail_out_of_memory(size_t elements);

// The entry points of each copy: forward (acts[l] receives a^l), backward (gradients into grad_w / grad_b / grad_x,
// each null when not wanted; from dC/da^L, or from delta^L = dC/dz^L itself with from_delta), one training step
// (returns the cost before the update) and one epoch.
#define BP_TORCH_DECLARE_KERNELS(T)                                                                                \
  void forward(const Net<T>& net, const T* x, T* const* acts);                                                     \
  void backward(const Net<T>& net, const T* grad_output, const T* x, const T* const* acts, T* const* grad_w,      \
                T* const* grad_b, T* grad_x, bool from_delta);                                                     \
  double sgd_step(const Net<T>& net, const T* x, const T* y, const SgdRule<T>& rule);                              \
  void sgd_epoch(const Net<T>& net, const T* x, int64_t x_row, const T* y, int64_t y_row, const int64_t* order,  \
                 int64_t n, int64_t batch, const SgdRule<T>& rule, T* costs);

namespace cpu_DEFAULT {
BP_TORCH_DECLARE_KERNELS(float)
BP_TORCH_DECLARE_KERNELS(double)
}  // namespace cpu_DEFAULT
#if defined(BP_TORCH_X86_CAPABILITIES)
namespace cpu_AVX2 {
BP_TORCH_DECLARE_KERNELS(float)
BP_TORCH_DECLARE_KERNELS(double)
}  // namespace cpu_AVX2
namespace cpu_AVX512 {
BP_TORCH_DECLARE_KERNELS(float)
BP_TORCH_DECLARE_KERNELS(double)
}  // namespace cpu_AVX512
#endif
#undef BP_TORCH_DECLARE_KERNELS

}  // namespace bp_torch
