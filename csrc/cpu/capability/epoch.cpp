// The epoch driver: one epoch of update_mini_batch in one call (the entry point sgd_epoch, kernels.h), its
// mini-batches taken in order or shuffled, and, for long epochs where torch has a second thread, the partner thread
// (csrc/cpu/partner.h) that gathers the next mini-batches and takes a share of each large product.
//
// Every step is the one the sgd_step op would take on that mini-batch, bit for bit: each mini-batch's rows are
// gathered into one small buffer, which is exactly x[order[k b : (k + 1) b]], and sgd_step_impl (passes.cpp) takes
// it, with the same kernels and the same register blocks whichever thread computes an entry.
#include <ATen/Parallel.h>
#include <c10/util/irange.h>

#include <array>
#include <atomic>
#include <cstring>
#include <optional>

#include "internal.h"

namespace bp_torch {
namespace BP_TORCH_CPU_NAMESPACE {
namespace {

// An epoch's mini-batch k: rows order[k b .. k b + count) of x and y (rows start .. of x, y without an order),
// copied into xb (count x in) and yb (count x out).
template <typename T>
void gather_rows(const T* x, int64_t x_row, int64_t in, const T* y, int64_t y_row, int64_t out, const int64_t* order,
                 int64_t start, int64_t count, T* xb, T* yb) {
  for (const auto i : c10::irange(count)) {
    const int64_t row = order != nullptr ? order[start + i] : start + i;
    // A zero-width x or y may have no memory at all (a null data pointer), which memcpy must not be given.
    if (in > 0) std::memcpy(xb + i * in, x + row * x_row, in * sizeof(T));
    if (out > 0) std::memcpy(yb + i * out, y + row * y_row, out * sizeof(T));
  }
}

// Mini-batches gathered ahead of the arithmetic by the epoch's partner thread: a shuffled mini-batch's rows lie at
// random places in a data set larger than the caches, and reading them from memory costs a page walk and a DRAM
// round trip per 4 KiB page, which prefetching from the training thread cannot hide without stalling its
// arithmetic. The partner copies mini-batches k + 1, k + 2, .. into a ring of slots, a row at a time between its
// jobs, while the training thread runs step k; step k + 1 then reads its rows from cache.
//
// The training thread never waits for a slot: a mini-batch that is not ready it gathers itself, as without the
// ring. Every step sees exactly the rows x[order[k b ..]], wherever they were copied. After each row it copies, the
// partner prefetches the same row of the mini-batch after, whose memory latency then passes while it works.
//
// Protocol (one producer, one consumer): slot k % kSlots holds mini-batch k once ready_[k % kSlots] == k; the
// producer writes mini-batch k there only after the consumer has finished mini-batch k - kSlots (consumed_ > that).
template <typename T>
class BatchRing {
 public:
  static constexpr int64_t kSlots = 4;

  BatchRing(const T* x, int64_t x_row, int64_t in, const T* y, int64_t y_row, int64_t out, const int64_t* order,
            int64_t n, int64_t batch)
      : x_(x), y_(y), x_row_(x_row), y_row_(y_row), in_(in), out_(out), order_(order), n_(n), batch_(batch),
        slot_size_(std::min(batch, n) * (in + out)),
        slots_(kSlots * slot_size_) {
    for (auto& r : ready_) r.store(-1, std::memory_order_relaxed);
  }

  // Consumer: the rows of mini-batch k (x's, then y's), or nullptr if they are not gathered (yet).
  const T* rows(int64_t k) const {
    return ready_[k % kSlots].load(std::memory_order_acquire) == k ? slot(k) : nullptr;
  }
  // Consumer: done with mini-batch k, whose slot may now take k + kSlots.
  void consumed(int64_t k) { consumed_.store(k + 1, std::memory_order_release); }

  // Producer: whether the mini-batch after the consumer's current one is gathered already.
  bool next_ready() const { return next_ - 1 > consumed_.load(std::memory_order_acquire); }

  // Producer: copies one row of the next mini-batch that is due; false if none is due now (all slots ahead are
  // full, or the epoch has no more).
  bool gather_one_row() {
    const int64_t done = consumed_.load(std::memory_order_acquire);
    if (next_ <= done) {                     // the consumer got ahead (gathering itself): skip to its next one
      next_ = done + 1;
      row_ = 0;
    }
    const int64_t start = next_ * batch_;
    if (start >= n_ || next_ - done >= kSlots) return false;
    const int64_t count = std::min(batch_, n_ - start);
    T* xb = slot(next_);
    gather_rows(x_, x_row_, in_, y_, y_row_, out_, order_, start + row_, 1, xb + row_ * in_,
                xb + count * in_ + row_ * out_);
    if (const int64_t ahead = start + batch_ + row_; ahead < n_) {
      RowPrefetch<T>(x_, x_row_, in_, order_, ahead, 1)(1, 1);
      RowPrefetch<T>(y_, y_row_, out_, order_, ahead, 1)(1, 1);
    }
    if (++row_ == count) {
      ready_[next_ % kSlots].store(next_, std::memory_order_release);
      ++next_;
      row_ = 0;
    }
    return true;
  }

 private:
  T* slot(int64_t k) const { return slots_.data() + k % kSlots * slot_size_; }

  const T *x_, *y_;
  int64_t x_row_, y_row_, in_, out_;
  const int64_t* order_;
  int64_t n_, batch_, slot_size_;
  Workspace<T> slots_;
  std::array<std::atomic<int64_t>, kSlots> ready_;
  std::atomic<int64_t> consumed_{0};
  int64_t next_ = 1, row_ = 0;               // the producer's place: mini-batch 0 the consumer gathers itself
};

// The partner thread's chores (PartnerThread), one piece at a time: the next mini-batch first, then a job, then
// mini-batches further ahead. A mini-batch not ready costs the training thread a cold gather, a job not taken
// only its own arithmetic, so gathering the next mini-batch comes before jobs, and jobs before gathering further
// ahead.
template <typename T>
struct Chores {
  BatchRing<T>& ring;
  Partner& partner;

  static bool run(void* context) {
    auto& self = *static_cast<Chores*>(context);
    return (self.ring.next_ready() && self.partner.run_job()) || self.ring.gather_one_row() ||
           self.partner.run_job();
  }
};

// Epochs of at least this many mini-batches get a partner thread where torch has a second one. The epoch starts
// the partner and ends by joining it, which on a loaded machine can wait a whole time slice for its core: a short
// epoch would pay that for little gain, a long one does not notice it (BENCHMARKS.md).
constexpr int64_t kPartnerMinBatches = 1024;

// Whether a training step on mini-batches of `batch` stays on one thread: all its products in the loops, none
// large enough to be split over torch's threads or to sum its samples in ATen. Only such steps get a partner: the
// two threads then are all the epoch uses, never more than torch's thread count.
template <typename T>
bool step_stays_on_one_thread(const Net<T>& net, int64_t batch) {
  if (batch > kMaxInOrderSamples) return false;
  for (const auto l : c10::irange(net.layers())) {
    const int64_t macs = batch * net.sizes[l] * net.sizes[l + 1];
    if (!use_small(batch, net.sizes[l + 1], net.sizes[l]) || macs >= kThreadedMinMacs) return false;
    if (batch * net.sizes[l + 1] >= kParallelGrain) return false;
  }
  return true;
}

// One epoch of update_mini_batch: mini-batches of `batch` samples taken in `order` (null: 0, 1, .., n-1), the last
// one smaller when `batch` does not divide n; costs[k] = mini-batch k's cost before its update. In order, x's own
// rows are used where they lie, unless the partner has gathered them.
//
// Where torch has a second thread and the epoch is long, a partner thread gathers the next mini-batches (BatchRing)
// and takes a third of each large product of every step (Partner); `bash benchmarks/epoch_steps.sh` times a step
// both ways (BENCHMARKS.md). The results are the same either way, bit for bit. The training runs on this thread.
template <typename T>
void sgd_epoch_impl(Net<T> net, const T* x, int64_t x_row, const T* y, int64_t y_row, const int64_t* order,
                    int64_t n, int64_t batch, const SgdRule<T>& rule, T* costs) {
  const int64_t in = net.sizes[0], out = net.sizes[net.layers()];
  const bool gather = order != nullptr || x_row != in || y_row != out;
  const int64_t batches = n == 0 ? 0 : (n - 1) / batch + 1;
  const bool wants_partner = at::get_num_threads() >= 2 && !at::in_parallel_region() &&
                             batches >= kPartnerMinBatches && step_stays_on_one_thread(net, batch);

  // Declared in this order so that the partner thread, last, is joined first, on every path out of this function:
  // its chores use the ring and the partner.
  std::optional<BatchRing<T>> ring;
  Partner partner;
  std::optional<Chores<T>> chores;
  std::optional<PartnerThread> partner_thread;
  if (wants_partner) {
    ring.emplace(x, x_row, in, y, y_row, out, order, n, batch);
    chores.emplace(Chores<T>{*ring, partner});
    partner_thread.emplace(&Chores<T>::run, &*chores);
  }
  const bool partnered = partner_thread && partner_thread->started();

  // The training thread's own gathering buffer: room for the largest mini-batch there is, which a batch size
  // beyond n is not.
  const int64_t rows_max = std::min(batch, n);
  Workspace<T> own(gather ? rows_max * (in + out) : 0);
  for (int64_t start = 0, k = 0; start < n; start += batch, ++k) {
    net.n = std::min(batch, n - start);
    const T* xk = x + start * x_row;
    const T* yk = y + start * y_row;
    if (const T* ready = partnered ? ring->rows(k) : nullptr) {
      xk = ready;
      yk = ready + net.n * in;
    } else if (gather) {
      T* xb = own.data();
      gather_rows(x, x_row, in, y, y_row, out, order, start, net.n, xb, xb + net.n * in);
      xk = xb;
      yk = xb + net.n * in;
    }
    if (partnered) {
      costs[k] = static_cast<T>(sgd_step_impl<T>(net, xk, yk, rule, nullptr, &partner));
      ring->consumed(k);
      continue;
    }
    // Alone, this thread prefetches the next mini-batch's rows during its own arithmetic.
    const int64_t next = start + net.n, next_n = std::min(batch, n - next);
    RowPrefetch<T>(y, y_row, out, order, next, next_n)(1, 1);      // the next targets: a line or two per row
    RowPrefetch<T> next_rows(x, x_row, in, order, next, next_n);    // the next inputs: during the forward
    costs[k] = static_cast<T>(sgd_step_impl<T>(net, xk, yk, rule, &next_rows, nullptr));
  }
}

}  // namespace

void sgd_epoch(const Net<float>& net, const float* x, int64_t x_row, const float* y, int64_t y_row,
               const int64_t* order, int64_t n, int64_t batch, const SgdRule<float>& rule, float* costs) {
  sgd_epoch_impl(net, x, x_row, y, y_row, order, n, batch, rule, costs);
}
void sgd_epoch(const Net<double>& net, const double* x, int64_t x_row, const double* y, int64_t y_row,
               const int64_t* order, int64_t n, int64_t batch, const SgdRule<double>& rule, double* costs) {
  sgd_epoch_impl(net, x, x_row, y, y_row, order, n, batch, rule, costs);
}

}  // namespace BP_TORCH_CPU_NAMESPACE
}  // namespace bp_torch
