// Layer: dispatch. The runtime registry over the generated list of compiled kernels.
#include "dispatch/registry.hpp"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "common/dq_accum_layout.hpp"

namespace flash_sigmoid::dispatch {

// The launchers (defined in the generated TUs, so with external linkage) and kCompiledKernels.
#include "kernel_registry.inc"

namespace {

bool same_family(const KernelEntry& e, Direction direction, DType dtype, MaskKind mask) {
  return e.direction == direction && e.dtype == dtype && e.mask == mask;
}

bool named_variant(const char* variant) { return variant != nullptr && variant[0] != '\0'; }

// Default entries serve a query without a variant; a named variant is served by its entries only.
bool serves_variant(const KernelEntry& e, const char* variant) {
  return named_variant(variant) ? std::strcmp(e.variant, variant) == 0 : e.variant[0] == '\0';
}

// Every condition of the query but the device: key, bucket, arch, mode, variant.
bool matches_build(const KernelEntry& e, const KernelQuery& q) {
  return same_family(e, q.direction, q.dtype, q.mask) && e.head_dim >= q.head_dim && (q.arch == 0 || e.arch == q.arch) &&
         (!q.deterministic || e.deterministic) && (!q.dropout || e.dropout) && serves_variant(e, q.variant);
}

// "no fwd kernel of the sm80 family with a deterministic mode (variant ws)" and so on.
std::string describe(const KernelQuery& q) {
  std::ostringstream os;
  os << "no " << (q.direction == Direction::kFwd ? "fwd" : "bwd") << " kernel";
  if (q.arch != 0) os << " of the sm" << q.arch << " family";
  if (named_variant(q.variant)) os << " of variant '" << q.variant << "'";
  if (q.deterministic) os << " with a deterministic mode";
  if (q.dropout) os << " with dropout";
  return os.str();
}

std::string built_summary(Direction direction) {
  std::ostringstream os;
  int n = 0;
  for (const KernelEntry* e = kCompiledKernels; e->name != nullptr; ++e) {
    if (e->direction != direction) continue;
    os << (n++ ? ", " : "") << e->name;
  }
  return n ? os.str() : std::string("none");
}

// The build option that left the query's key out of this build, and how to rebuild with it: the
// first condition, in the order the kernel table is filtered, that no compiled kernel meets.
// Every answer names FLASH_SIGMOID_ARCHS (what this build compiled) so that a user can rebuild.
std::string rebuild_hint(const KernelQuery& q) {
  bool any = false, arch = false, direction = false, dtype = false, head_dim = false, mask = false;
  for (const KernelEntry* e = kCompiledKernels; e->name != nullptr; ++e) {
    any = true;
    if (q.arch != 0 && e->arch != q.arch) continue;
    arch = true;
    if (e->direction != q.direction) continue;
    direction = true;
    if (e->dtype != q.dtype) continue;
    dtype = true;
    if (e->head_dim < q.head_dim) continue;
    head_dim = true;
    if (e->mask == q.mask) mask = true;
  }
  const char* dir = q.direction == Direction::kFwd ? "fwd" : "bwd";
  std::ostringstream os;
  os << "; ";
  if (!any) {
    os << "this build has no GPU kernels: rebuild with FLASH_SIGMOID_ARCHS (e.g. 80;90a)";
  } else if (!arch) {
    os << "FLASH_SIGMOID_ARCHS left out the sm" << q.arch << " family: add " << q.arch << (q.arch == 90 ? "a" : "")
       << " to it and rebuild";
  } else if (!direction) {
    os << "FLASH_SIGMOID_DIRECTIONS left out " << dir << ": add it and rebuild";
  } else if (!dtype) {
    os << "FLASH_SIGMOID_DTYPES left out " << dtype_name(q.dtype) << ": add it and rebuild";
  } else if (!head_dim) {
    os << (q.direction == Direction::kBwd ? "FLASH_SIGMOID_BWD_HEAD_DIMS / " : "")
       << "FLASH_SIGMOID_HEAD_DIMS left out every bucket >= " << q.head_dim << ": add one and rebuild";
  } else if (!mask) {
    os << "FLASH_SIGMOID_MASKS left out mask " << mask_name(q.mask) << ": add it and rebuild";
  } else if (named_variant(q.variant)) {
    os << "FLASH_SIGMOID_VARIANTS left out variant '" << q.variant << "': add it and rebuild";
  } else if (q.dropout) {
    os << "no family of this build applies dropout to this key (docs/dropout.md lists the kernels that do)";
  } else {
    os << "no family of this build has it (the sm80 family has the deterministic backward: "
       << "rebuild with 80 in FLASH_SIGMOID_ARCHS)";
  }
  os << " (this build: FLASH_SIGMOID_ARCHS=" << FLASH_SIGMOID_BUILT_ARCHS << ", docs/install.md)";
  return os.str();
}

}  // namespace

const char* mask_name(MaskKind mask) {
  switch (mask) {
    case MaskKind::kNone: return "none";
    case MaskKind::kRight: return "right";
    case MaskKind::kBand: return "band";
  }
  return "?";
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return "fp16";
    case DType::kBFloat16: return "bf16";
    case DType::kFloat32: return "fp32";
  }
  return "?";
}

static const char* direction_name(Direction d) { return d == Direction::kFwd ? "fwd" : "bwd"; }

bool any_kernel_for(const KernelQuery& q, std::string* why) {
  for (const KernelEntry* e = kCompiledKernels; e->name != nullptr; ++e) {
    if (matches_build(*e, q)) return true;
  }
  std::ostringstream os;
  os << describe(q) << " is built for dtype " << dtype_name(q.dtype) << ", head_dim " << q.head_dim << ", mask "
     << mask_name(q.mask) << "; built " << direction_name(q.direction) << " kernels: " << built_summary(q.direction)
     << rebuild_hint(q);
  *why = os.str();
  return false;
}

const KernelEntry* find_kernel(const KernelQuery& q, std::string* why) {
  const KernelEntry* best = nullptr;
  std::string declined;  // "name: reason; " for each kernel that declined the tensors (empty on the usual path)
  for (const KernelEntry* e = kCompiledKernels; e->name != nullptr; ++e) {
    if (!matches_build(*e, q)) continue;
    // sm80-family code runs on any device from kSm80FamilyMinDeviceArch up (8.x through its
    // compute_80 PTX, or 9.x only when the build holds sm_90 code alone); sm_90a code only on 9.0.
    const bool runs = e->arch == 80 ? q.device_arch >= kSm80FamilyMinDeviceArch : q.device_arch == 90;
    if (!runs) continue;
    if (q.forward != nullptr && e->forward_declines != nullptr) {
      if (const char* reason = e->forward_declines(*q.forward)) {
        declined += std::string(e->name) + ": " + reason + "; ";
        continue;
      }
    }
    if (best == nullptr || e->head_dim < best->head_dim ||
        (e->head_dim == best->head_dim && e->arch > best->arch)) {
      best = e;
    }
  }
  if (best == nullptr && !declined.empty()) {
    std::ostringstream os;
    os << describe(q) << " for dtype " << dtype_name(q.dtype) << ", head_dim " << q.head_dim << ", mask "
       << mask_name(q.mask) << " serves these tensors (" << declined;
    if (q.arch != 0 || named_variant(q.variant)) {
      os << "ask for the default: kernel_arch 0 and no kernel_variant, so that another family may serve them)";
    } else {
      os << "the sm80 family takes any strides: rebuild with 80 in FLASH_SIGMOID_ARCHS; this build: "
            "FLASH_SIGMOID_ARCHS=" << FLASH_SIGMOID_BUILT_ARCHS << ", docs/install.md)";
    }
    *why = os.str();
  } else if (best == nullptr) {
    std::ostringstream os;
    os << describe(q) << " for dtype " << dtype_name(q.dtype) << ", head_dim " << q.head_dim << ", mask "
       << mask_name(q.mask) << " runs on this device (compute capability " << q.device_arch / 10 << "."
       << q.device_arch % 10 << "); built " << direction_name(q.direction) << " kernels: " << built_summary(q.direction)
       << "; rebuild with this device's family in FLASH_SIGMOID_ARCHS (this build: FLASH_SIGMOID_ARCHS="
       << FLASH_SIGMOID_BUILT_ARCHS << "; sm80-family machine code: FLASH_SIGMOID_SM80_SASS, docs/install.md)";
    *why = os.str();
  }
  return best;
}

size_t backward_workspace_bytes(const KernelQuery& q, const BackwardParams& params) {
  bool any = false;
  size_t bytes = 0;
  for (const KernelEntry* e = kCompiledKernels; e->name != nullptr; ++e) {
    if (!matches_build(*e, q) || e->backward_workspace == nullptr) continue;
    any = true;
    bytes = std::max(bytes, e->backward_workspace(params));
  }
  return any ? bytes : dq_accum_workspace_bytes(params);
}

const DecodeKernelEntry* find_decode_kernel(DType dtype, int head_dim, int device_arch, std::string* why) {
  const DecodeKernelEntry* best = nullptr;
  bool built = false;
  for (const DecodeKernelEntry* e = kCompiledDecodeKernels; e->name != nullptr; ++e) {
    if (e->dtype != dtype || e->head_dim < head_dim) continue;
    built = true;
    const bool runs = device_arch == 0 ||
                      (e->arch == 80 ? device_arch >= kSm80FamilyMinDeviceArch : device_arch == 90);
    if (runs && (best == nullptr || e->head_dim < best->head_dim)) best = e;
  }
  if (best != nullptr) return best;
  std::ostringstream os;
  os << "no KV-cache decode kernel for dtype " << dtype_name(dtype) << ", head_dim " << head_dim;
  if (built) {
    os << " runs on this device (compute capability " << device_arch / 10 << "." << device_arch % 10 << ")";
  } else {
    os << " is built";
  }
  os << "; built decode kernels: ";
  int n = 0;
  for (const DecodeKernelEntry* e = kCompiledDecodeKernels; e->name != nullptr; ++e) os << (n++ ? ", " : "") << e->name;
  if (n == 0) os << "none";
  os << "; rebuild with the forward in FLASH_SIGMOID_DIRECTIONS, the dtype in FLASH_SIGMOID_DTYPES and a bucket >= "
     << head_dim << " in FLASH_SIGMOID_DECODE_HEAD_DIMS (this build: FLASH_SIGMOID_ARCHS=" << FLASH_SIGMOID_BUILT_ARCHS
     << ", docs/install.md)";
  *why = os.str();
  return nullptr;
}

std::string compiled_keys() {
  std::ostringstream os;
  for (const KernelEntry* e = kCompiledKernels; e->name != nullptr; ++e) os << e->name << "\n";
  for (const DecodeKernelEntry* e = kCompiledDecodeKernels; e->name != nullptr; ++e) os << e->name << "\n";
  return os.str();
}

}  // namespace flash_sigmoid::dispatch
