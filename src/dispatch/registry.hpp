// Layer: dispatch. The runtime registry: finds the compiled kernel for a problem, or says which
// keys were built. Its entries come only from the generated kernel_registry.inc (kernel_table.py).
#pragma once

#include <cstddef>
#include <string>

#include <cuda_runtime_api.h>

#include "common/params.hpp"
#include "flash_sigmoid/flash_sigmoid.hpp"

namespace flash_sigmoid::dispatch {

enum class Direction : int { kFwd = 0, kBwd = 1 };

using ForwardLauncher = cudaError_t (*)(const ForwardParams&, cudaStream_t);
using BackwardLauncher = cudaError_t (*)(const BackwardParams&, cudaStream_t);
// The workspace bytes a kernel's launcher uses for these params (each kernel owns its size).
using ForwardWorkspace = size_t (*)(const ForwardParams&);
using BackwardWorkspace = size_t (*)(const BackwardParams&);
// nullptr when the kernel serves these params, else why it does not (a kernel whose tensors must
// meet conditions beyond validation's, such as TMA's alignment; the registry then picks another).
using ForwardDeclines = const char* (*)(const ForwardParams&);

struct KernelEntry {
  const char* name;  // nullptr ends the table
  int arch;          // 80 or 90
  Direction direction;
  const char* variant;  // "": the family's default mainloop; others only when asked for by name
  DType dtype;
  int head_dim;  // bucket: serves head dims in (previous bucket, head_dim]
  MaskKind mask;
  ForwardLauncher forward;
  BackwardLauncher backward;
  ForwardWorkspace forward_workspace;
  BackwardWorkspace backward_workspace;
  bool deterministic;  // backward: also serves BackwardParams::deterministic
  ForwardDeclines forward_declines;  // forward: nullptr when it serves every validated problem
  bool dropout;  // applies attention dropout (ProblemParams::dropout_threshold)
};

// The KV-cache decode kernel (kernel_table.py: its own key, no mask column).
using DecodeLauncher = cudaError_t (*)(const DecodeParams&, cudaStream_t);
using AppendLauncher = cudaError_t (*)(const AppendParams&, cudaStream_t);
struct DecodeKernelEntry {
  const char* name;  // nullptr ends the table
  int arch;          // 80 (sm80-family code) or 90 (sm_90a)
  DType dtype;
  int head_dim;  // bucket: serves head dims <= it, from the smallest bucket that does
  DecodeLauncher launch;
  AppendLauncher append;  // the KV-cache append for this dtype (any head dim)
};

// What a caller asks for. Without a device (device_arch 0) only the build is consulted.
struct KernelQuery {
  Direction direction;
  DType dtype;
  int head_dim;
  MaskKind mask;
  int arch;  // 0: best for device_arch
  int device_arch;  // compute capability * 10 of the device, e.g. 90
  bool deterministic = false;  // backward: bitwise-reproducible gradients asked for
  bool dropout = false;        // the call applies attention dropout
  const char* variant = nullptr;  // nullptr or "": default mainloops only; else only this variant
  const ForwardParams* forward = nullptr;  // the forward's params, where known: entries that decline them are skipped
};

// The entry with the smallest bucket >= head_dim among those that run on device_arch and serve the
// query's mode (a deterministic backward only from entries that have one) and variant, preferring
// arch 90 on a 9.x device when arch == 0, and not declining query.forward; nullptr if none. `why`
// then says what was built, or which kernels declined the tensors and why.
const KernelEntry* find_kernel(const KernelQuery& query, std::string* why);

// Whether a kernel for the query's key, arch (0: any), mode and variant is built; no device needed
// (device_arch is not read). `why` as above.
bool any_kernel_for(const KernelQuery& query, std::string* why);

// The backward workspace the API reports: the most that any built kernel which could serve the
// query (any device; arch, mode and variant as asked) uses for these params, so that whichever is
// picked at launch has enough. Where none is built, the default mode's dQ accumulator
// (dq_accum_workspace_bytes), so that a caller's sizing does not depend on the build.
size_t backward_workspace_bytes(const KernelQuery& query, const BackwardParams& params);

// The decode kernel for dtype and head_dim that runs on device_arch (0: only whether one is
// built), or nullptr with `why` naming what was built and how to rebuild.
const DecodeKernelEntry* find_decode_kernel(DType dtype, int head_dim, int device_arch, std::string* why);

// Every compiled key, one per line.
std::string compiled_keys();

const char* mask_name(MaskKind mask);
const char* dtype_name(DType dtype);

}  // namespace flash_sigmoid::dispatch
