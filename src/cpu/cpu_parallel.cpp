// Layer: CPU implementation. Runs independent tasks on std::thread workers (see cpu_parallel.hpp).
#include "cpu_parallel.hpp"

#include <algorithm>
#include <atomic>
#include <thread>

namespace flash_sigmoid::cpu_impl {

int resolve_thread_count(int num_threads, int64_t num_tasks, int64_t work) {
  int64_t n = num_threads;
  if (n <= 0) n = static_cast<int64_t>(std::thread::hardware_concurrency());
  n = std::min({n, num_tasks, work / kWorkPerThread + 1});
  return static_cast<int>(std::max<int64_t>(n, 1));
}

bool parallel_for(int64_t num_tasks, int num_threads, int64_t work, const TaskFn& fn) noexcept {
  if (num_tasks <= 0) return true;
  const int thread_count = resolve_thread_count(num_threads, num_tasks, work);
  // The counter only hands out task indices (dynamic scheduling balances causal rows); no result
  // is accumulated across tasks, so the outputs do not depend on who took which task.
  std::atomic<int64_t> next_task{0};
  std::atomic<bool> failed{false};
  auto drain = [&]() noexcept {
    try {
      std::vector<float> scratch;
      for (;;) {
        const int64_t task = next_task.fetch_add(1, std::memory_order_relaxed);
        if (task >= num_tasks || failed.load(std::memory_order_relaxed)) break;
        fn(task, scratch);
      }
    } catch (...) {
      failed.store(true, std::memory_order_relaxed);
    }
  };
  std::vector<std::thread> threads;
  try {
    threads.reserve(static_cast<size_t>(thread_count - 1));
    for (int t = 1; t < thread_count; ++t) threads.emplace_back(drain);
  } catch (...) {
    // Fewer threads than asked for: the ones running (and this one) drain the queue.
  }
  drain();
  for (std::thread& thread : threads) thread.join();
  return !failed.load();
}

}  // namespace flash_sigmoid::cpu_impl
