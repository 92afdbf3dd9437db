// What the host gives the first two CPUs this process may run on, printed on one line for a benchmark's header:
//
//   cc -O2 -pthread benchmarks/host_probe.c -o /tmp/host_probe && /tmp/host_probe
//
// * the core-to-core round trip: the median time for the first to hand a flag to the second and get it back. A VM's two
//   vCPUs may sit on neighbouring cores or far apart, for minutes at a time, and the epoch's partner thread
//   (csrc/cpu/partner.h) helps only when they sit near (BENCHMARKS.md, "The host's two placements");
// * the vector arithmetic of each CPU, alone and with both busy: 128-bit multiplies and adds on independent chains,
//   in millions per second. A vCPU that shares its core's vector units with another tenant shows a lower rate, and
//   two that share one core show half the rate each when both are busy; then splitting a product over two threads
//   gains nothing.
//
// Baseline x86-64 (SSE2) and Linux only, like the benchmarks that print it. With a single CPU it says so and measures
// nothing: the ping-pong's two threads would then take turns on it, a time slice for each round trip.
#define _GNU_SOURCE
#include <emmintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { kRoundTrips = 20000, kChains = 12 };
static const long kVectorOps = 100000000;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cpus[2];  // the two CPUs measured

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static _Atomic int flag;

static void* echo(void* unused) {
  (void)unused;
  pin(cpus[1]);
  for (int i = 0; i < kRoundTrips; i++) {
    while (atomic_load_explicit(&flag, memory_order_acquire) != 1) {
    }
    atomic_store_explicit(&flag, 0, memory_order_release);
  }
  return NULL;
}

static int by_value(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static double round_trip_ns(void) {
  static double times[kRoundTrips];
  pthread_t partner;
  pin(cpus[0]);
  pthread_create(&partner, NULL, echo, NULL);
  for (int i = 0; i < kRoundTrips; i++) {
    const double start = now();
    atomic_store_explicit(&flag, 1, memory_order_release);
    while (atomic_load_explicit(&flag, memory_order_acquire) != 0) {
    }
    times[i] = now() - start;
  }
  pthread_join(partner, NULL);
  qsort(times, kRoundTrips, sizeof times[0], by_value);
  return times[kRoundTrips / 2] * 1e9;
}

struct Rate {
  int cpu;
  double per_second;
};

// Independent chains of a multiply and an add each, so that the vector units' throughput, not their latency, sets
// the pace.
static void* vector_rate(void* arg) {
  struct Rate* rate = arg;
  pin(rate->cpu);
  __m128 acc[kChains];
  const __m128 scale = _mm_set1_ps(0.999999f), step = _mm_set1_ps(1e-7f);
  for (int c = 0; c < kChains; c++) acc[c] = _mm_set1_ps(1.0f + c);
  const double start = now();
  for (long k = 0; k < kVectorOps / (2 * kChains); k++) {
    for (int c = 0; c < kChains; c++) acc[c] = _mm_add_ps(_mm_mul_ps(acc[c], scale), step);
  }
  rate->per_second = kVectorOps / (now() - start);
  float sink = 0;
  for (int c = 0; c < kChains; c++) sink += _mm_cvtss_f32(acc[c]);
  if (sink == 42.0f) puts("");  // keeps the chains from being optimised away
  return NULL;
}

int main(void) {
  cpu_set_t allowed;
  int found = 0;
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE && found < 2; cpu++) {
      if (CPU_ISSET(cpu, &allowed)) cpus[found++] = cpu;
    }
  }
  if (found < 2) {
    puts("host: fewer than two CPUs to run on, not probed");
    return 0;
  }
  const double rtt = round_trip_ns();
  struct Rate alone[2] = {{cpus[0], 0}, {cpus[1], 0}}, together[2] = {{cpus[0], 0}, {cpus[1], 0}};
  vector_rate(&alone[0]);
  vector_rate(&alone[1]);
  pthread_t threads[2];
  for (int i = 0; i < 2; i++) pthread_create(&threads[i], NULL, vector_rate, &together[i]);
  for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);
  printf("host: core-to-core round trip %.0f ns; vector ops (M/s) alone %.0f / %.0f, both busy %.0f / %.0f\n", rtt,
         alone[0].per_second / 1e6, alone[1].per_second / 1e6, together[0].per_second / 1e6,
         together[1].per_second / 1e6);
  return 0;
}
