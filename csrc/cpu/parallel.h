// A fork-join loop over independent tasks on plain std::threads. Each task index is handled by exactly one
// thread and results never depend on the split, so every pass stays bitwise deterministic.
//
// Threads are started per call: a pass big enough to be split runs far longer than the 35-50 us this costs
// (measured; smaller calls stay on the caller's thread), and per-call threads cannot deadlock or contend
// for a shared pool when XLA runs several of these calls at once.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace jax_conv1d::cpu {

// Threads per call: JAX_CONV1D_CPU_THREADS when set to a positive integer, else one per hardware thread.
inline int worker_count() {
  static const int n = [] {
    if (const char* env = std::getenv("JAX_CONV1D_CPU_THREADS")) {
      const long v = std::strtol(env, nullptr, 10);
      if (v > 0) return static_cast<int>(std::min<long>(v, 1024));
    }
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
  }();
  return n;
}

// Runs fn(i) for i in [0, count). `work_per_task` (rough multiply-adds) keeps small calls on one thread,
// where starting threads would cost more than the arithmetic. An exception thrown by a task stops the
// remaining tasks and is rethrown on the calling thread.
template <typename Fn>
void parallel_for(int64_t count, double work_per_task, Fn&& fn) {
  if (count <= 0) return;
  const double total = work_per_task * static_cast<double>(count);
  int64_t threads = std::min<int64_t>(worker_count(), count);
  threads = std::min<int64_t>(threads, static_cast<int64_t>(total / 1.0e6) + 1);  // >= ~1M MACs per thread
  if (threads <= 1) {
    for (int64_t i = 0; i < count; ++i) fn(i);
    return;
  }
  // Threads claim runs of consecutive tasks, so a task can prefetch the inputs of the next one with a good
  // chance that it is this thread's; runs are short enough to balance load on a busy machine.
  const int64_t run = std::max<int64_t>(1, count / (threads * 16));
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&] {
    try {
      for (int64_t i0 = next.fetch_add(run); i0 < count; i0 = next.fetch_add(run))
        for (int64_t i = i0, i1 = std::min(count, i0 + run); i < i1; ++i) fn(i);
    } catch (...) {
      next.store(count);
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace jax_conv1d::cpu
