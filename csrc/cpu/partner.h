// The partner of an epoch (csrc/cpu/capability/epoch.cpp): a second thread that takes a share of each large product
// of the training thread's steps (Partner) and does background chores between those jobs (PartnerThread).
//
// Baseline code, compiled once: nothing here depends on the CPU capability, and the kernel copies reach it only
// through out-of-line functions taking plain data (a function pointer and its context), so no inline function of
// this header is ever compiled with a copy's vector flags (csrc/cpu/capability/kernels.h says why that matters).
// For the same reason every constructor and destructor is declared here and defined in partner.cpp.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>

namespace bp_torch {

// Jobs posted by the training thread and run by the partner thread.
//
// split(size, align, job, context) runs job(context, begin, end) over [0, size): the training thread computes [0, mid)
// while the last third [mid, size) is posted for the partner, mid being the multiple of `align` nearest to 2/3 of size
// (Nielsen's 30 hidden neurons split 20 / 10 in the AVX-512 copy's blocks of 5, 21 / 9 in the others' blocks of 3); a
// product too small to share runs on the training thread alone. The training thread never waits for a job that has not
// started: if the partner has not taken it up by the time the first part is done, the training thread takes it back and
// runs it itself. Only a job in progress is waited for, and if that wait outlasts the pauses of a busy-wait (the
// partner lost its core to another process, say), the training thread keeps its next products to itself, 16 after a
// first stall, twice as many after each stall that follows (up to 4,096), one fewer after each job that came back in
// time: a descheduled partner must not stall every step, and a fixed long backoff would lose the partner's help after
// each of the host's occasional preemptions.
//
// A third, not a half: the partner's first chore is to gather the next mini-batches, which waits on memory, and a
// half leaves it too little time for that; a sixth leaves the training thread most of the arithmetic (BENCHMARKS.md,
// "The kernels' thresholds").
//
// Safety: the posted job points at a closure on the training thread's stack. A guard (PostedJob, in partner.cpp)
// retracts the job or waits for its end on every path out of split, exceptions included, so the partner never
// holds a pointer into a frame that is gone. A job that throws on the partner is caught there, marks the job done,
// and is rethrown on the training thread by split: neither thread waits forever.
//
// Job states: kIdle -> kPosted (training thread) -> kRunning (partner) -> kDone (partner) -> kIdle (training
// thread); or kPosted -> kIdle when the training thread takes its job back.
class Partner {
 public:
  using Job = void (*)(const void* context, int64_t begin, int64_t end);

  Partner();
  ~Partner();
  Partner(const Partner&) = delete;
  Partner& operator=(const Partner&) = delete;

  // On the training thread. [0, size) is split at a multiple of `align`: each entry is then computed by the same
  // code, in the same order, whichever thread runs it, so the result does not depend on the split. Rethrows an
  // exception the job threw on the partner.
  void split(int64_t size, int64_t align, Job job, const void* context);

  // On the partner thread: runs the posted job, if there is one; false if there was none.
  bool run_job();

  // One round of a busy-wait, the spins-th: short pauses first (a job takes microseconds), then the core is
  // offered to other threads.
  static void relax(int& spins);

 private:
  friend class PostedJob;
  static constexpr int kPauses = 256;
  static constexpr int64_t kMinBackoff = 16, kMaxBackoff = 4096;
  enum : int { kIdle, kPosted, kRunning, kDone };
  std::atomic<int> state_;
  Job job_;
  const void* context_;
  int64_t begin_, end_;
  std::exception_ptr error_;                 // what the job threw on the partner, read once it is kDone
  int64_t stalled_;                          // products left that the training thread keeps to itself
  int64_t backoff_;                          // how many the next stall keeps
};

// The partner thread: calls chore(context) until destroyed, relaxing (Partner::relax) while chore finds nothing to
// do (returns false). The destructor stops and joins it, so an object declared after the data its chores touch
// ends before that data does, on every path. A chore must not throw.
//
// A thread of its own rather than torch's pool (at::parallel_for): which pool thread runs which chunk is
// the pool's business, while the partner's protocol needs the training on the calling thread and the chores on
// another, always; and a plain thread is one that ThreadSanitizer follows (scripts/tsan_test.sh).
class PartnerThread {
 public:
  using Chore = bool (*)(void* context);

  // started() is false when the system refuses a thread: the epoch then runs alone.
  PartnerThread(Chore chore, void* context);
  ~PartnerThread();
  PartnerThread(const PartnerThread&) = delete;
  PartnerThread& operator=(const PartnerThread&) = delete;

  bool started() const;

 private:
  std::atomic<bool> stop_;
  std::thread thread_;
};

}  // namespace bp_torch
