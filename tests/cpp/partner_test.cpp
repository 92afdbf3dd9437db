// The epoch's partner under ThreadSanitizer (scripts/tsan_test.sh builds this file with the real sources, all of
// them with -fsanitize=thread, and fails on any report or failed check).
//
// * Partner's hand-over on its own: every index of a split product is computed exactly once, whoever runs it; a job
//   that throws on the partner is rethrown on the training thread (which would otherwise wait forever); a training
//   thread whose own part throws leaves split only once the partner is done with the job (or the job is taken back),
//   so the partner never runs a closure from a frame that is gone.
// * The partnered epoch through the kernel copy's entry point (sgd_epoch, kernels.h): with torch's two threads it
//   runs the partner thread, and its costs and parameters equal those of the same epoch alone, bit for bit.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../../csrc/cpu/capability/kernels.h"
#include "../../csrc/cpu/partner.h"

#define BP_TORCH_CAT_(a, b) a##b
#define BP_TORCH_CAT(a, b) BP_TORCH_CAT_(a, b)
namespace kernels = bp_torch::BP_TORCH_CAT(cpu_, CPU_CAPABILITY);

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
  if (!ok) ++failures;
}

// A partner thread that runs posted jobs until destroyed, as the epoch's does between its other chores.
struct JobRunner {
  bp_torch::Partner& partner;
  bp_torch::PartnerThread thread{[](void* p) { return static_cast<bp_torch::Partner*>(p)->run_job(); }, &partner};
};

// A job whose parts are given as lambdas: the training thread's part [0, mid) and the partner's [mid, size).
template <typename F>
void split(bp_torch::Partner& partner, int64_t size, int64_t align, const F& fn) {
  partner.split(size, align, [](const void* f, int64_t b, int64_t e) { (*static_cast<const F*>(f))(b, e); }, &fn);
}

// Waits until flag is set, for at most a few seconds: a hand-over that never happens fails the check instead of
// hanging the test.
bool wait_for(const std::atomic<bool>& flag) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!flag.load(std::memory_order_acquire)) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::yield();
  }
  return true;
}

void every_index_once() {
  bp_torch::Partner partner;
  JobRunner runner{partner};
  bool ok = true;
  int64_t on_partner = 0;
  for (int64_t size = 1; size <= 300; size += 7) {
    for (const int64_t align : {1, 3, 5, 16}) {
      std::vector<int> hits(size, 0);
      std::atomic<int64_t> partner_entries{0};
      std::atomic<bool> second_part_started{false};
      const std::thread::id training = std::this_thread::get_id();
      // Half the products hold the training thread's part until the other part has started, so that both ways a
      // job ends (taken back, or run by the partner) are covered.
      const bool hold = size % 2 == 1;
      split(partner, size, align, [&](int64_t begin, int64_t end) {
        if (begin > 0) second_part_started.store(true, std::memory_order_release);
        for (int64_t i = begin; i < end; ++i) ++hits[i];
        if (std::this_thread::get_id() != training) partner_entries += end - begin;
        if (begin == 0 && hold && end < size) ok = wait_for(second_part_started) && ok;
      });
      for (const int h : hits) ok = ok && h == 1;
      on_partner += partner_entries.load();
    }
  }
  check(ok, "a split product computes every index exactly once");
  std::printf("    (the partner computed %lld of the entries)\n", static_cast<long long>(on_partner));
}

void a_throwing_job_is_rethrown_on_the_training_thread() {
  bp_torch::Partner partner;
  JobRunner runner{partner};
  std::atomic<bool> partner_started{false};
  bool timed_out = false;
  std::string caught;
  try {
    split(partner, 60, 1, [&](int64_t begin, int64_t) {
      if (begin == 0) {                      // the training thread's part: finish only once the partner has begun
        timed_out = !wait_for(partner_started);
        return;
      }
      partner_started.store(true, std::memory_order_release);
      throw std::runtime_error("thrown on the partner");
    });
  } catch (const std::runtime_error& e) {
    caught = e.what();
  }
  check(!timed_out && caught == "thrown on the partner", "a job that throws on the partner is rethrown by split");
  std::vector<int> hits(60, 0);
  split(partner, 60, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) ++hits[i];
  });
  check(std::count(hits.begin(), hits.end(), 1) == 60, "the partner takes jobs again after one threw");
}

void the_training_thread_throwing_waits_for_a_running_job() {
  bp_torch::Partner partner;
  JobRunner runner{partner};
  std::atomic<bool> partner_started{false}, partner_finished{false};
  bool finished_before_split_returned = false, timed_out = false;
  try {
    split(partner, 60, 1, [&](int64_t begin, int64_t) {
      if (begin == 0) {
        timed_out = !wait_for(partner_started);
        throw std::runtime_error("thrown on the training thread");
      }
      partner_started.store(true, std::memory_order_release);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      partner_finished.store(true, std::memory_order_release);
    });
  } catch (const std::runtime_error&) {
    finished_before_split_returned = partner_finished.load(std::memory_order_acquire);
  }
  check(!timed_out && finished_before_split_returned,
        "a throw from the training thread's part leaves split only after the partner's part has ended");
}

void the_training_thread_throwing_takes_back_a_job_not_started() {
  bp_torch::Partner partner;                 // no partner thread: nobody takes the job up
  int partner_parts = 0;
  try {
    split(partner, 60, 1, [&](int64_t begin, int64_t) {
      if (begin == 0) throw std::runtime_error("thrown on the training thread");
      ++partner_parts;
    });
  } catch (const std::runtime_error&) {
  }
  check(!partner.run_job() && partner_parts == 0, "a throw before the partner starts the job takes the job back");
}

// The partnered epoch against the same epoch alone, through the kernel copy's entry point.
template <typename T>
void partnered_epoch_equals_epoch_alone(const char* dtype) {
  const int64_t in = 784, hidden = 30, out = 10, batch = 10, n = 1024 * batch + 7;
  std::mt19937 gen(0);
  std::uniform_real_distribution<T> uniform(0, 1);
  std::vector<T> x(n * in), y(n * out, T(0)), w1(hidden * in), b1(hidden), w2(out * hidden), b2(out);
  for (auto& v : x) v = uniform(gen);
  for (int64_t i = 0; i < n; ++i) y[i * out + gen() % out] = T(1);
  for (auto& v : w1) v = (uniform(gen) - T(0.5)) / T(10);
  for (auto& v : w2) v = uniform(gen) - T(0.5);
  for (auto& v : b1) v = uniform(gen) - T(0.5);
  for (auto& v : b2) v = uniform(gen) - T(0.5);
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), gen);

  const int64_t sizes[] = {in, hidden, out};
  const auto run = [&](int threads, std::vector<T>& costs, std::vector<std::vector<T>>& params) {
    params = {w1, b1, w2, b2};
    T* const weights[] = {params[0].data(), params[2].data()};
    T* const biases[] = {params[1].data(), params[3].data()};
    bp_torch::Net<T> net;
    net.layer_count = 2;
    net.sizes = sizes;
    net.weights = weights;
    net.biases = biases;
    costs.assign((n - 1) / batch + 1, T(0));
    at::set_num_threads(threads);
    kernels::sgd_epoch(net, x.data(), in, y.data(), out, order.data(), n, batch, bp_torch::SgdRule<T>{T(3)}, costs.data());
  };
  std::vector<T> costs_alone, costs_partnered;
  std::vector<std::vector<T>> alone, partnered;
  run(1, costs_alone, alone);
  run(2, costs_partnered, partnered);
  bool same = costs_alone == costs_partnered;
  for (size_t p = 0; p < alone.size(); ++p) same = same && alone[p] == partnered[p];
  check(same, std::string("a partnered epoch (") + dtype + ", 1,025 shuffled mini-batches) equals the epoch alone");
}

}  // namespace

int main() {
  every_index_once();
  a_throwing_job_is_rethrown_on_the_training_thread();
  the_training_thread_throwing_waits_for_a_running_job();
  the_training_thread_throwing_takes_back_a_job_not_started();
  partnered_epoch_equals_epoch_alone<float>("float32");
  partnered_epoch_equals_epoch_alone<double>("float64");
  std::printf("%s\n", failures == 0 ? "all checks passed" : "some checks FAILED");
  return failures == 0 ? 0 : 1;
}
