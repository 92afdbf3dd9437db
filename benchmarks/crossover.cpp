// The loops-vs-BLAS crossover of the kernels' products (csrc/cpu/capability/passes.cpp), measured
// (benchmarks/bench_mlp.py --crossover). crossover.py links the kernel sources into this module, compiled for the
// capability torch picks here with setup.py's flags for it, so both paths of each product can be called directly.
#include <torch/extension.h>

#include "../csrc/cpu/capability/internal.h"

namespace bp_torch {
using namespace BP_TORCH_CPU_NAMESPACE;

namespace {
void small_loops(int kind, int64_t n, int64_t in, int64_t out, float* a, float* w, float* d, float* z) {
  switch (kind) {
    case 0: return small_z<float>(n, in, out, a, w, z, nullptr, nullptr);
    case 1: return small_grad_w<float>(n, in, out, -0.01f, d, a, true, 1.0f, w, nullptr);
    default: return small_back<float>(n, in, out, d, w, a, z, nullptr);
  }
}
}  // namespace

// kind: 0 forward Z = A W^T, 1 W += alpha Delta^T A, 2 D = Delta W * sigma'; reps products on float32 buffers.
void run(int kind, bool small, int64_t n, int64_t in, int64_t out, at::Tensor a, at::Tensor w, at::Tensor d,
         at::Tensor z, int64_t reps) {
  float *a_p = a.data_ptr<float>(), *w_p = w.data_ptr<float>(), *d_p = d.data_ptr<float>(), *z_p = z.data_ptr<float>();
  for (int64_t r = 0; r < reps; ++r) {
    if (small) {
      small_loops(kind, n, in, out, a_p, w_p, d_p, z_p);
    } else if (kind == 0) {
      blas_z<float>(n, in, out, a_p, w_p, z_p);
    } else if (kind == 1) {
      blas_grad_w<float>(n, in, out, -0.01f, d_p, a_p, true, 1.0f, w_p);
    } else {
      blas_back<float>(n, in, out, d_p, w_p, a_p, z_p);
    }
  }
}
}  // namespace bp_torch

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("run", &bp_torch::run); }
