// Helpers of the GPU C++ tests (label "gpu"): whether a device exists, and device copies of the
// oracle's host tensors.
#pragma once

#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include "oracle.hpp"

namespace flash_sigmoid::testing_gpu {

using oracle::HostTensor;

inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// A device copy of a host tensor's bytes (same strides).
class DeviceCopy {
 public:
  explicit DeviceCopy(HostTensor& host) : host_(host) {
    const FlashSigmoidTensor v = host.view();
    bytes_ = host.byte_size();
    EXPECT_EQ(cudaMalloc(&data_, bytes_), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(data_, v.data, bytes_, cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceCopy() { cudaFree(data_); }
  FlashSigmoidTensor view() {
    FlashSigmoidTensor t = host_.view();
    t.data = data_;
    return t;
  }
  void copy_back() { EXPECT_EQ(cudaMemcpy(host_.view().data, data_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess); }

 private:
  HostTensor& host_;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace flash_sigmoid::testing_gpu
