// The loops of the small products, small_mm_nt and small_mm_axpy, register-blocked on vectors of this copy's width.
//
// Why not just call at::mm: for Nielsen's [784, 30, 10] at mini-batch 10 the arithmetic of a whole training step is
// about a microsecond of FMAs per layer, while every ATen call costs about a microsecond of dispatch and allocation
// on its own. So small products run here (no allocation, no thread pool, no dispatcher), and large ones in BLAS
// (passes.cpp routes them).
//
// A header, included by passes.cpp alone: the loops are inlined into each product's call, where the compiler sees
// the strides the product passes (for Z = A W^T both operands' row strides are the layer's input width), which an
// out-of-line copy does not.
//
// The loops are written once, on GCC vector types of a template width N; this file is compiled once per CPU
// capability (passes.cpp, compiled once per capability by setup.py), and N is the copy's width, kLanes. The loops sum in a fixed order that depends only on the
// shapes and on N, so that an entry comes out the same whichever thread computes it.
#pragma once

#include <cstring>

#include "internal.h"

namespace bp_torch {
namespace BP_TORCH_CPU_NAMESPACE {
namespace loops {

// T is float or double; N lanes per vector (4/2 baseline, 8/4 for AVX2, 16/8 for AVX-512).
template <typename T, int N>
struct Simd {
  typedef T vec __attribute__((vector_size(N * sizeof(T))));
  static BP_TORCH_INLINE vec load(const T* p) { vec v; std::memcpy(&v, p, sizeof v); return v; }
  static BP_TORCH_INLINE void store(T* p, vec v) { std::memcpy(p, &v, sizeof v); }
  // s - 0 is s for every s, -0 included, so this compiles to one broadcast; `vec{} + s` would add 0 to s first
  // (an instruction per splat), as -0 + 0 is +0.
  static BP_TORCH_INLINE vec splat(T s) { return s - vec{}; }
  // A tree of halves (log2 N vector adds), not N dependent scalar adds: the forward does one per output.
  static BP_TORCH_INLINE T sum(vec v) {
    if constexpr (N == 1) {
      return v[0];
    } else {
      typename Simd<T, N / 2>::vec lo, hi;
      std::memcpy(&lo, &v, sizeof lo);
      std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
      return Simd<T, N / 2>::sum(lo + hi);
    }
  }
};

// C[i, j] = sum_k A[i, k] B[j, k] for an RI x RJ block: RI * RJ vector accumulators over k, one horizontal sum
// each at the end. Used for the forward, Z = A W^T, where k runs along rows of both operands.
template <typename T, int N, int RI, int RJ>
BP_TORCH_INLINE void dot_block(int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc) {
  using S = Simd<T, N>;
  using V = typename S::vec;
  V acc[RI][RJ];
  for (int i = 0; i < RI; ++i) for (int j = 0; j < RJ; ++j) acc[i][j] = V{};
  int64_t k = 0;
  for (; k + N <= K; k += N) {
    V b[RJ];
    for (int j = 0; j < RJ; ++j) b[j] = S::load(B + j * ldb + k);
    for (int i = 0; i < RI; ++i) {
      const V a = S::load(A + i * lda + k);
      for (int j = 0; j < RJ; ++j) acc[i][j] += a * b[j];
    }
  }
  for (int i = 0; i < RI; ++i) {
    for (int j = 0; j < RJ; ++j) {
      T s = S::sum(acc[i][j]);
      for (int64_t kk = k; kk < K; ++kk) s += A[i * lda + kk] * B[j * ldb + kk];
      C[i * ldc + j] = s;
    }
  }
}

// The blocks of C's last rows/columns are smaller: peel RJ (then RI) down to the remainder, at compile time.
template <typename T, int N, int RI, int RJ>
BP_TORCH_INLINE void dot_block_upto(int ri, int rj, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                                    T* C, int64_t ldc) {
  if constexpr (RJ > 1) {
    if (rj < RJ) return dot_block_upto<T, N, RI, RJ - 1>(ri, rj, K, A, lda, B, ldb, C, ldc);
  }
  if constexpr (RI > 1) {
    if (ri < RI) return dot_block_upto<T, N, RI - 1, RJ>(ri, rj, K, A, lda, B, ldb, C, ldc);
  }
  dot_block<T, N, RI, RJ>(K, A, lda, B, ldb, C, ldc);
}

// small_mm_nt (internal.h) on vectors of N lanes.
template <typename T, int N>
BP_TORCH_INLINE void mm_nt(int64_t I, int64_t J, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                                 T* C, int64_t ldc, RowPrefetch<T>* prefetch) {
  constexpr int RI = Blocks<T>::kDotRows, RJ = Blocks<T>::kDotCols;
  const int64_t blocks = (I + RI - 1) / RI * ((J + RJ - 1) / RJ);
  int64_t done = 0;
  for (int64_t i = 0; i < I; i += RI) {
    const int ri = static_cast<int>(std::min<int64_t>(RI, I - i));
    for (int64_t j = 0; j < J; j += RJ) {
      const int rj = static_cast<int>(std::min<int64_t>(RJ, J - j));
      dot_block_upto<T, N, RI, RJ>(ri, rj, K, A + i * lda, lda, B + j * ldb, ldb, C + i * ldc + j, ldc);
      if (prefetch != nullptr) (*prefetch)(++done, blocks);
    }
  }
}

// C[i, k0 : k0 + CV N] = [beta C +] alpha sum_j A(i, j) B[j, k0 : ...] for RI rows of C: each step broadcasts one
// A(i, j) against CV vectors of B's row j, so no horizontal sums are needed. A(i, j) = A[i * a_rs + j * a_cs] lets
// the same loop read Delta (rows, for Delta W) or Delta^T (columns, for Delta^T A). With `sp` (the activations of
// C's layer, laid out like C), the result is multiplied by sigma'(z) = a (1 - a) on the way out (1.2, 2.2).
template <typename T, int N, int RI, int CV, bool Decay>
BP_TORCH_INLINE void axpy_block(int64_t J, T alpha, const T* A, int64_t a_rs, int64_t a_cs, const T* B,
                                int64_t ldb, bool accumulate, T beta, T* C, int64_t ldc, const T* sp) {
  using S = Simd<T, N>;
  using V = typename S::vec;
  V acc[RI][CV];
  for (int i = 0; i < RI; ++i) for (int c = 0; c < CV; ++c) acc[i][c] = V{};
  for (int64_t j = 0; j < J; ++j) {
    V b[CV];
    for (int c = 0; c < CV; ++c) b[c] = S::load(B + j * ldb + c * N);
    for (int i = 0; i < RI; ++i) {
      const V s = S::splat(A[i * a_rs + j * a_cs]);
      for (int c = 0; c < CV; ++c) acc[i][c] += s * b[c];
    }
  }
  for (int i = 0; i < RI; ++i) {
    for (int c = 0; c < CV; ++c) {
      V out = acc[i][c] * alpha;                     // exact for alpha = 1: no branch needed
      if (sp != nullptr) {
        const V a = S::load(sp + i * ldc + c * N);
        out *= a * (T(1) - a);
      }
      if (accumulate) {
        V old = S::load(C + i * ldc + c * N);
        if constexpr (Decay) old *= beta;            // the weight decay's factor (3.4)
        out += old;
      }
      S::store(C + i * ldc + c * N, out);
    }
  }
}

template <typename T, int N, int RI, int CV, bool Decay>
BP_TORCH_INLINE void axpy_block_upto(int ri, int64_t J, T alpha, const T* A, int64_t a_rs, int64_t a_cs, const T* B,
                                     int64_t ldb, bool accumulate, T beta, T* C, int64_t ldc, const T* sp) {
  if constexpr (RI > 1) {
    if (ri < RI) {
      return axpy_block_upto<T, N, RI - 1, CV, Decay>(ri, J, alpha, A, a_rs, a_cs, B, ldb, accumulate, beta, C, ldc,
                                                      sp);
    }
  }
  axpy_block<T, N, RI, CV, Decay>(J, alpha, A, a_rs, a_cs, B, ldb, accumulate, beta, C, ldc, sp);
}

// The last K % N columns, in vectors of N/2, N/4, ... lanes, then one at a time: the hidden layer of
// [784, 30, 10] has 30 = 16 + 8 + 4 + 2 columns.
template <typename T, int H, int RI, bool Decay>
BP_TORCH_INLINE void axpy_tail(int ri, int64_t k, int64_t K, int64_t J, T alpha, const T* A_i, int64_t a_rs,
                               int64_t a_cs, const T* B, int64_t ldb, bool accumulate, T beta, T* C_i, int64_t ldc,
                               const T* sp_i) {
  if constexpr (H >= 1) {
    if (k + H <= K) {
      axpy_block_upto<T, H, RI, 1, Decay>(ri, J, alpha, A_i, a_rs, a_cs, B + k, ldb, accumulate, beta, C_i + k, ldc,
                                   sp_i ? sp_i + k : nullptr);
      k += H;
    }
    axpy_tail<T, H / 2, RI, Decay>(ri, k, K, J, alpha, A_i, a_rs, a_cs, B, ldb, accumulate, beta, C_i, ldc, sp_i);
  }
}

// small_mm_axpy (internal.h) on vectors of N lanes.
template <typename T, int N, bool Decay>
BP_TORCH_INLINE void mm_axpy(int64_t I, int64_t J, int64_t K, T alpha, const T* A, int64_t a_rs, int64_t a_cs,
                                   const T* B, int64_t ldb, bool accumulate, T beta, T* C, int64_t ldc, const T* sp) {
  constexpr int RI = Blocks<T>::kAxpyRows, CV = Blocks<T>::kAxpyVectors;
  for (int64_t i = 0; i < I; i += RI) {
    const int ri = static_cast<int>(std::min<int64_t>(RI, I - i));
    const T* A_i = A + i * a_rs;
    T* C_i = C + i * ldc;
    const T* sp_i = sp ? sp + i * ldc : nullptr;
    int64_t k = 0;
    for (; k + CV * N <= K; k += CV * N) {
      axpy_block_upto<T, N, RI, CV, Decay>(ri, J, alpha, A_i, a_rs, a_cs, B + k, ldb, accumulate, beta, C_i + k, ldc,
                                    sp_i ? sp_i + k : nullptr);
    }
    for (; k + N <= K; k += N) {
      axpy_block_upto<T, N, RI, 1, Decay>(ri, J, alpha, A_i, a_rs, a_cs, B + k, ldb, accumulate, beta, C_i + k, ldc,
                                   sp_i ? sp_i + k : nullptr);
    }
    axpy_tail<T, N / 2, RI, Decay>(ri, k, K, J, alpha, A_i, a_rs, a_cs, B, ldb, accumulate, beta, C_i, ldc, sp_i);
  }
}

}  // namespace loops

// C (I x J) = A (I x K) B^T, B stored (J x K); calls (*prefetch)(done, total) after each block when given.
template <typename T>
BP_TORCH_INLINE void small_mm_nt(int64_t I, int64_t J, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                                 T* C, int64_t ldc, RowPrefetch<T>* prefetch) {
  loops::mm_nt<T, kLanes<T>>(I, J, K, A, lda, B, ldb, C, ldc, prefetch);
}

// C (I x K) = [beta C +] alpha A B [* sigma'], A(i, j) = A[i * a_rs + j * a_cs] (I x J), B (J x K) row-major. A's two
// strides let the same loop read Delta (rows, for Delta W) or Delta^T (columns, for Delta^T A). With `sp` (the
// activations of C's layer, laid out like C), the result is multiplied by sigma'(z) = a (1 - a) (1.2, 2.2).
template <typename T>
BP_TORCH_INLINE void small_mm_axpy(int64_t I, int64_t J, int64_t K, T alpha, const T* A, int64_t a_rs, int64_t a_cs,
                                   const T* B, int64_t ldb, bool accumulate, T beta, T* C, int64_t ldc, const T* sp) {
  // A step without weight decay runs the loop without the multiplication by beta (a copy of its own).
  if (accumulate && beta != T(1)) {
    return loops::mm_axpy<T, kLanes<T>, true>(I, J, K, alpha, A, a_rs, a_cs, B, ldb, accumulate, beta, C, ldc, sp);
  }
  loops::mm_axpy<T, kLanes<T>, false>(I, J, K, alpha, A, a_rs, a_cs, B, ldb, accumulate, beta, C, ldc, sp);
}

}  // namespace BP_TORCH_CPU_NAMESPACE
}  // namespace bp_torch
