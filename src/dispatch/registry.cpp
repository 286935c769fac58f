// Layer: dispatch. The runtime registry over the generated list of compiled kernels.
#include "dispatch/registry.hpp"

#include <sstream>

namespace flash_sigmoid::dispatch {

// The launchers (defined in the generated TUs, so with external linkage) and kCompiledKernels.
#include "kernel_registry.inc"

namespace {

bool same_family(const KernelEntry& e, Direction direction, DType dtype, MaskKind mask) {
  return e.direction == direction && e.dtype == dtype && e.mask == mask;
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

bool any_kernel_for(Direction direction, DType dtype, int head_dim, MaskKind mask, int arch, bool deterministic,
                    std::string* why) {
  for (const KernelEntry* e = kCompiledKernels; e->name != nullptr; ++e) {
    if (same_family(*e, direction, dtype, mask) && e->head_dim >= head_dim && (arch == 0 || e->arch == arch) &&
        (!deterministic || e->deterministic)) {
      return true;
    }
  }
  std::ostringstream os;
  os << "no " << direction_name(direction) << " kernel";
  if (arch != 0) os << " of the sm" << arch << " family";
  if (deterministic) os << " with a deterministic mode";
  os << " is built for dtype " << dtype_name(dtype) << ", head_dim "
     << head_dim << ", mask " << mask_name(mask) << "; built " << direction_name(direction)
     << " kernels: " << built_summary(direction);
  *why = os.str();
  return false;
}

const KernelEntry* find_kernel(const KernelQuery& q, std::string* why) {
  const KernelEntry* best = nullptr;
  for (const KernelEntry* e = kCompiledKernels; e->name != nullptr; ++e) {
    if (!same_family(*e, q.direction, q.dtype, q.mask) || e->head_dim < q.head_dim) continue;
    if (q.arch != 0 && e->arch != q.arch) continue;
    if (q.deterministic && !e->deterministic) continue;
    // sm80-family code runs on any device from kSm80FamilyMinDeviceArch up (8.x through its
    // compute_80 PTX, or 9.x only when the build holds sm_90 code alone); sm_90a code only on 9.0.
    const bool runs = e->arch == 80 ? q.device_arch >= kSm80FamilyMinDeviceArch : q.device_arch == 90;
    if (!runs) continue;
    if (best == nullptr || e->head_dim < best->head_dim ||
        (e->head_dim == best->head_dim && e->arch > best->arch)) {
      best = e;
    }
  }
  if (best == nullptr) {
    std::ostringstream os;
    os << "no " << direction_name(q.direction) << " kernel";
    if (q.arch != 0) os << " of the sm" << q.arch << " family";
    if (q.deterministic) os << " with a deterministic mode";
    os << " for dtype " << dtype_name(q.dtype) << ", head_dim " << q.head_dim << ", mask " << mask_name(q.mask)
       << " runs on this device (compute capability " << q.device_arch / 10 << "." << q.device_arch % 10
       << "); built " << direction_name(q.direction) << " kernels: " << built_summary(q.direction);
    *why = os.str();
  }
  return best;
}

std::string compiled_keys() {
  std::ostringstream os;
  for (const KernelEntry* e = kCompiledKernels; e->name != nullptr; ++e) os << e->name << "\n";
  return os.str();
}

}  // namespace flash_sigmoid::dispatch
