// A fork-join loop over independent tasks on plain std::threads. Each task index is handled by exactly one
// thread and results never depend on the split, so every pass stays bitwise deterministic.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace jax_conv1d::cpu {

inline int worker_count() {
  static const int n = [] {
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
  }();
  return n;
}

// Runs fn(i) for i in [0, count). `work_per_task` (rough multiply-adds) keeps tiny calls on one thread,
// where starting threads would cost more than the arithmetic.
template <typename Fn>
void parallel_for(int64_t count, double work_per_task, Fn&& fn) {
  if (count <= 0) return;
  const double total = work_per_task * static_cast<double>(count);
  int threads = std::min<int64_t>(worker_count(), count);
  if (total < 2.0e5) threads = 1;
  if (threads <= 1) {
    for (int64_t i = 0; i < count; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    for (int64_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) fn(i);
  };
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
}

}  // namespace jax_conv1d::cpu
