// Layer: policies. The one macro that lets policy code compile for host and device alike.
#pragma once

#if defined(__CUDACC__)
#define FLASH_SIGMOID_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FLASH_SIGMOID_HOST_DEVICE inline
#endif
