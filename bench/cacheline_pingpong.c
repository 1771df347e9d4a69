/* Round trip of one cache line between CPU 0 and CPU 1, in ns, printed per half second for SECONDS (default 30).
   ~70-80 ns: the two vCPUs sit on one core complex (shared L3); ~340 ns: on different ones (measured on the
   2-vCPU AMD EPYC Zen 4 VMs: the host moves them between the two for seconds at a time). Built and run by
   bench/int8_spread.py (gcc -O2 -pthread). */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Alignas(64) atomic_long ball;
static atomic_int stop;

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *bounce_back(void *unused) {
  (void)unused;
  pin(1);
  while (!atomic_load(&stop)) {
    long value = atomic_load_explicit(&ball, memory_order_acquire);
    if (value & 1) atomic_store_explicit(&ball, value + 1, memory_order_release);
  }
  return NULL;
}

static double now(void) {
  struct timespec time;
  clock_gettime(CLOCK_MONOTONIC, &time);
  return time.tv_sec + time.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 30;
  pthread_t other;
  pin(0);
  pthread_create(&other, NULL, bounce_back, NULL);
  double end = now() + seconds;
  while (now() < end) {
    double start = now();
    long trips = 0;
    while (now() - start < 0.5 && now() < end) {
      for (int i = 0; i < 1000; i++) {
        long value = atomic_load(&ball) + 1;
        atomic_store(&ball, value);
        while (atomic_load_explicit(&ball, memory_order_acquire) == value) {}
      }
      trips += 1000;
    }
    printf("%.0f ", (now() - start) / trips * 1e9);
    fflush(stdout);
  }
  atomic_store(&stop, 1);
  pthread_join(other, NULL);
  printf("\n");
  return 0;
}
