// Layer: base (below policies and kernels). The macros that let code compile for host and device alike.
#pragma once

#if defined(__CUDACC__)
#define FLASH_SIGMOID_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FLASH_SIGMOID_HOST_DEVICE inline
#endif

// Unroll a loop with a constant trip count in device code (as CUTE_UNROLL does).
#if defined(__CUDA_ARCH__)
#define FLASH_SIGMOID_UNROLL _Pragma("unroll")
#else
#define FLASH_SIGMOID_UNROLL
#endif
