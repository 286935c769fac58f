// Layer: CPU implementation. Runs independent tasks on std::thread workers.
//
// Owns: the worker threads, per-worker fp32 scratch, and the catch that keeps exceptions from
// escaping. Does not own any arithmetic: results must not depend on which worker runs a task or
// in which order tasks run (every output element belongs to exactly one task), which is what
// makes the CPU implementation deterministic for any thread count.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace flash_sigmoid::cpu_impl {

// What one task sees: its index and its worker's scratch, which persists (with whatever size and
// contents the previous task left) across the tasks of that worker.
using TaskFn = std::function<void(int64_t task, std::vector<float>& scratch)>;

// num_threads 0 means std::thread::hardware_concurrency(); never more threads than tasks, nor
// more than one per kWorkPerThread units of work (multiply-adds): below that, starting a thread
// costs more than it saves. Results never depend on the count.
constexpr int64_t kWorkPerThread = int64_t{1} << 18;
int resolve_thread_count(int num_threads, int64_t num_tasks, int64_t work);

// Runs fn for every task in [0, num_tasks), the calling thread included among the workers, on
// resolve_thread_count(num_threads, num_tasks, work) threads.
// Returns false if a task threw (e.g. scratch allocation failed): then the remaining tasks are
// abandoned and some outputs may be unwritten. If a thread cannot be started, the workers that
// exist take over its share; that is not a failure.
bool parallel_for(int64_t num_tasks, int num_threads, int64_t work, const TaskFn& fn) noexcept;

}  // namespace flash_sigmoid::cpu_impl
