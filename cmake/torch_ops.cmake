# The PyTorch op library, flash_sigmoid_torch (src/torch/): the flash_sigmoid ops registered with
# torch's dispatcher through the stable ABI. Included from the top-level CMakeLists.txt after the
# flash_sigmoid target exists.
#
# Torch is located through the configured Python (`torch.utils.cmake_prefix_path`, or
# -DTorch_ROOT=<site-packages/torch>), but TorchConfig.cmake is not loaded: the stable ABI needs
# only torch's headers and the C shim exported by libtorch_cpu (and libtorch_cuda for the current
# CUDA stream), whereas TorchConfig pulls in Caffe2's CUDA/cuDNN detection and links libc10 and
# libtorch's C++ API, which is what would tie the build to one torch version.

set(_torch_probe [=[
import os, torch
print(torch.utils.cmake_prefix_path)
print(os.path.dirname(torch.__file__))
print(int(torch.version.cuda is not None))
print(torch.__version__)
]=])
set(_torch_found OFF)
if(Torch_ROOT)
  set(_torch_root "${Torch_ROOT}")
  set(_torch_found ON)
  set(_torch_version "given by Torch_ROOT")
  set(_torch_cuda OFF)
  if(EXISTS "${_torch_root}/lib/libtorch_cuda.so")
    set(_torch_cuda ON)
  endif()
else()
  execute_process(COMMAND "${Python3_EXECUTABLE}" -c "${_torch_probe}"
                  OUTPUT_VARIABLE _torch_out RESULT_VARIABLE _torch_rc ERROR_QUIET
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(_torch_rc EQUAL 0)
    string(REPLACE "\n" ";" _torch_out "${_torch_out}")
    list(GET _torch_out 0 _torch_prefix)
    list(GET _torch_out 1 _torch_root)
    list(GET _torch_out 2 _torch_cuda)
    list(GET _torch_out 3 _torch_version)
    if(EXISTS "${_torch_prefix}/Torch/TorchConfig.cmake" AND EXISTS "${_torch_root}/include/torch/csrc/stable/library.h")
      set(_torch_found ON)
    endif()
  endif()
endif()

option(FLASH_SIGMOID_BUILD_TORCH "Build the PyTorch op library (needs torch >= 2.10 importable by Python3_EXECUTABLE)"
       ${_torch_found})
if(NOT FLASH_SIGMOID_BUILD_TORCH)
  message(STATUS "FlashSigmoid: PyTorch op library not built (FLASH_SIGMOID_BUILD_TORCH=OFF or torch not importable)")
  return()
endif()
if(NOT _torch_found)
  message(FATAL_ERROR "FLASH_SIGMOID_BUILD_TORCH=ON but torch (with torch/csrc/stable headers, torch >= 2.10) was "
                      "not found through ${Python3_EXECUTABLE}; install torch or pass -DTorch_ROOT=<.../site-packages/torch>")
endif()

# Libraries found by an earlier configure against another torch (pip's isolated build environments
# are temporary directories) are looked up again.
foreach(_lib FLASH_SIGMOID_TORCH_CPU_LIB FLASH_SIGMOID_TORCH_CUDA_LIB)
  if(${_lib})
    string(FIND "${${_lib}}" "${_torch_root}/" _at)
    if(NOT _at EQUAL 0 OR NOT EXISTS "${${_lib}}")
      unset(${_lib} CACHE)
    endif()
  endif()
endforeach()
find_library(FLASH_SIGMOID_TORCH_CPU_LIB torch_cpu PATHS "${_torch_root}/lib" NO_DEFAULT_PATH REQUIRED)
set(_torch_libs "${FLASH_SIGMOID_TORCH_CPU_LIB}")
if(_torch_cuda)
  find_library(FLASH_SIGMOID_TORCH_CUDA_LIB torch_cuda PATHS "${_torch_root}/lib" NO_DEFAULT_PATH REQUIRED)
  list(APPEND _torch_libs "${FLASH_SIGMOID_TORCH_CUDA_LIB}")
endif()
message(STATUS "FlashSigmoid: PyTorch op library against torch ${_torch_version} in ${_torch_root} "
               "(CUDA ops: ${_torch_cuda})")

file(GLOB _torch_op_sources CONFIGURE_DEPENDS src/torch/*.cpp)
add_library(flash_sigmoid_torch SHARED ${_torch_op_sources})
target_include_directories(flash_sigmoid_torch SYSTEM PRIVATE "${_torch_root}/include")
target_link_libraries(flash_sigmoid_torch PRIVATE flash_sigmoid ${_torch_libs})
# TORCH_TARGET_VERSION: use only the stable ABI of torch 2.10, so one build loads in torch 2.10,
# 2.11 and later releases that keep that ABI.
target_compile_definitions(flash_sigmoid_torch PRIVATE TORCH_TARGET_VERSION=0x020a000000000000)
if(_torch_cuda)
  # USE_CUDA declares the shim's CUDA entry points (the current stream); ours registers CUDA kernels.
  target_compile_definitions(flash_sigmoid_torch PRIVATE USE_CUDA FLASH_SIGMOID_TORCH_CUDA)
endif()
target_compile_options(flash_sigmoid_torch PRIVATE -Wall -Wextra)
set_target_properties(flash_sigmoid_torch PROPERTIES
  CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON POSITION_INDEPENDENT_CODE ON
  # Installed beside libflash_sigmoid.so in flash_sigmoid/lib. torch's own libraries are already
  # loaded by `import torch` when the package loads this one, and are found by soname.
  INSTALL_RPATH "$ORIGIN"
  BUILD_RPATH "${CMAKE_BINARY_DIR};${_torch_root}/lib")
