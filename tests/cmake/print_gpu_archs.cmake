# Prints what cmake/gpu_archs.cmake resolves, for tests/python/test_gpu_archs.py:
#   FLASH_SIGMOID_GPU_CC=9.0 cmake [-DFLASH_SIGMOID_ARCHS=...] [-DFLASH_SIGMOID_SM80_SASS=...] -P print_gpu_archs.cmake
cmake_minimum_required(VERSION 3.24)
include("${CMAKE_CURRENT_LIST_DIR}/../../cmake/gpu_archs.cmake")
message("archs=${FLASH_SIGMOID_RESOLVED_ARCHS}")
message("sm80_sass=${FLASH_SIGMOID_RESOLVED_SM80_SASS}")
message("why=${FLASH_SIGMOID_ARCHS_WHY}")
