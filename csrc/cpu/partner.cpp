// The epoch's partner (partner.h): its job hand-over and its thread. Baseline code, compiled once.
#include "partner.h"

#include <algorithm>
#include <system_error>
#include <utility>

namespace bp_torch {

Partner::Partner()
    : state_(kIdle), job_(nullptr), context_(nullptr), begin_(0), end_(0), stalled_(0), backoff_(kMinBackoff) {}

Partner::~Partner() = default;

// A job posted by split, owned by the training thread's frame. Every way out of that frame takes the job back or
// waits until the partner is done with it: finish() on the normal path, the destructor when the training thread's
// own part throws. Either way the partner's pointer to the frame's closure is dead before the frame is.
class PostedJob {
 public:
  PostedJob(Partner& partner, Partner::Job job, const void* context, int64_t begin, int64_t end)
      : partner_(partner) {
    partner_.job_ = job;
    partner_.context_ = context;
    partner_.begin_ = begin;
    partner_.end_ = end;
    partner_.state_.store(Partner::kPosted, std::memory_order_release);
  }
  PostedJob(const PostedJob&) = delete;
  PostedJob& operator=(const PostedJob&) = delete;

  // Unwinding: the job is taken back, or waited for; what it threw is dropped, as one exception is already on its
  // way.
  ~PostedJob() {
    if (active_ && take_back_or_wait()) partner_.error_ = nullptr;
  }

  // The normal path: the job run here if the partner has not taken it up, else waited for; its exception rethrown.
  void finish() {
    active_ = false;
    if (!take_back_or_wait()) {
      partner_.job_(partner_.context_, partner_.begin_, partner_.end_);
      return;
    }
    if (partner_.error_) std::rethrow_exception(std::exchange(partner_.error_, nullptr));
  }

 private:
  // True if the partner ran the job (now finished), false if it was taken back before the partner started it.
  bool take_back_or_wait() {
    int posted = Partner::kPosted;
    if (partner_.state_.compare_exchange_strong(posted, Partner::kIdle, std::memory_order_acq_rel)) return false;
    int spins = 0;
    while (partner_.state_.load(std::memory_order_acquire) != Partner::kDone) Partner::relax(spins);
    partner_.state_.store(Partner::kIdle, std::memory_order_relaxed);
    if (spins == Partner::kPauses) {
      partner_.stalled_ = partner_.backoff_;
      partner_.backoff_ = std::min(2 * partner_.backoff_, Partner::kMaxBackoff);
    } else if (partner_.backoff_ > Partner::kMinBackoff) {
      --partner_.backoff_;
    }
    return true;
  }

  Partner& partner_;
  bool active_ = true;
};

void Partner::split(int64_t size, int64_t align, Job job, const void* context) {
  const int64_t mid = ((2 * size + 1) / 3 + align / 2) / align * align;
  if (mid == 0 || mid >= size || stalled_ > 0) {
    stalled_ -= stalled_ > 0;
    return job(context, 0, size);
  }
  PostedJob posted(*this, job, context, mid, size);
  job(context, 0, mid);
  posted.finish();
}

bool Partner::run_job() {
  int posted = kPosted;
  if (state_.load(std::memory_order_relaxed) != kPosted ||
      !state_.compare_exchange_strong(posted, kRunning, std::memory_order_acq_rel)) {
    return false;
  }
  try {
    job_(context_, begin_, end_);
  } catch (...) {
    error_ = std::current_exception();
  }
  state_.store(kDone, std::memory_order_release);
  return true;
}

void Partner::relax(int& spins) {
  if (spins < kPauses) {
    ++spins;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  } else {
    std::this_thread::yield();
  }
}

PartnerThread::PartnerThread(Chore chore, void* context) : stop_(false) {
  try {
    thread_ = std::thread([this, chore, context] {
      for (int idle = 0; !stop_.load(std::memory_order_acquire);) {
        if (chore(context)) {
          idle = 0;
        } else {
          Partner::relax(idle);
        }
      }
    });
  } catch (const std::system_error&) {
    // No thread to be had: started() says so, and the epoch runs alone.
  }
}

PartnerThread::~PartnerThread() {
  stop_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
}

bool PartnerThread::started() const { return thread_.joinable(); }

}  // namespace bp_torch
