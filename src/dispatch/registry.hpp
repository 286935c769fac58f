// Layer: dispatch. The runtime registry: finds the compiled kernel for a problem, or says which
// keys were built. Its entries come only from the generated kernel_registry.inc (kernel_table.py).
#pragma once

#include <string>

#include <cuda_runtime_api.h>

#include "common/params.hpp"
#include "flash_sigmoid/flash_sigmoid.hpp"

namespace flash_sigmoid::dispatch {

enum class Direction : int { kFwd = 0, kBwd = 1 };

using ForwardLauncher = cudaError_t (*)(const ForwardParams&, cudaStream_t);
using BackwardLauncher = cudaError_t (*)(const BackwardParams&, cudaStream_t);

struct KernelEntry {
  const char* name;  // nullptr ends the table
  int arch;          // 80 or 90
  Direction direction;
  DType dtype;
  int head_dim;  // bucket: serves head dims in (previous bucket, head_dim]
  MaskKind mask;
  ForwardLauncher forward;
  BackwardLauncher backward;
  bool deterministic;  // backward: also serves BackwardParams::deterministic
};

struct KernelQuery {
  Direction direction;
  DType dtype;
  int head_dim;
  MaskKind mask;
  int arch;  // 0: best for device_arch
  int device_arch;  // compute capability * 10 of the device, e.g. 90
  bool deterministic = false;  // backward: bitwise-reproducible gradients asked for
};

// The entry with the smallest bucket >= head_dim among those that run on device_arch and serve the
// query's mode (a deterministic backward only from entries that have one), preferring arch 90 on a
// 9.x device when arch == 0; nullptr if none. `why` then says what was built.
const KernelEntry* find_kernel(const KernelQuery& query, std::string* why);

// Whether a kernel for this key is built for `arch` (0: any arch) that serves the mode (deterministic:
// a backward with a deterministic mode); no device needed. `why` as above.
bool any_kernel_for(Direction direction, DType dtype, int head_dim, MaskKind mask, int arch, bool deterministic,
                    std::string* why);

// Every compiled key, one per line.
std::string compiled_keys();

const char* mask_name(MaskKind mask);
const char* dtype_name(DType dtype);

}  // namespace flash_sigmoid::dispatch
