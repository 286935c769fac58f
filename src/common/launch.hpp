// Layer: common kernel parts. The one way a kernel is launched: a grid (from the kernel's
// scheduler), a block size and dynamic shared-memory size (from its traits), optionally a thread
// block cluster, on the caller's stream, with no allocation and no host synchronisation.
//
// Owns: the empty-grid rule (a grid with a zero extent is an invalid launch, so nothing is
// launched: there is nothing to compute), the opt-in above 48 KiB of dynamic shared memory, and
// the cluster launch. Does not own: which kernels run in which order (each family's launcher).
#pragma once

#include <cuda_runtime_api.h>

namespace flash_sigmoid {

struct LaunchShape {
  dim3 grid;
  int threads = 0;
  int smem_bytes = 0;
  int cluster_x = 1;  // thread blocks per cluster along x (sm90); 1: no cluster
};

inline bool grid_is_empty(const dim3& grid) { return grid.x == 0 || grid.y == 0 || grid.z == 0; }

#if defined(__CUDACC__)
template <class... KernelArgs, class... Args>
cudaError_t launch_kernel(void (*kernel)(KernelArgs...), const LaunchShape& shape, cudaStream_t stream,
                          Args const&... args) {
  if (grid_is_empty(shape.grid)) return cudaSuccess;
  // Above 48 KiB of dynamic shared memory a kernel must opt in, per device, so this is set on every
  // launch (it is cheap, and the current device may differ from the last call's).
  if (shape.smem_bytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shape.smem_bytes);
    if (err != cudaSuccess) return err;
  }
  if (shape.cluster_x > 1) {
    cudaLaunchConfig_t config{};
    config.gridDim = shape.grid;
    config.blockDim = dim3(static_cast<unsigned>(shape.threads));
    config.dynamicSmemBytes = static_cast<size_t>(shape.smem_bytes);
    config.stream = stream;
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = static_cast<unsigned>(shape.cluster_x);
    attribute.val.clusterDim.y = 1;
    attribute.val.clusterDim.z = 1;
    config.attrs = &attribute;
    config.numAttrs = 1;
    return cudaLaunchKernelEx(&config, kernel, args...);
  }
  kernel<<<shape.grid, shape.threads, shape.smem_bytes, stream>>>(args...);
  return cudaGetLastError();
}
#endif

}  // namespace flash_sigmoid
