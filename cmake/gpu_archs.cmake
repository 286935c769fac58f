# Which kernel families to compile, and for which machine code: FLASH_SIGMOID_ARCHS and
# FLASH_SIGMOID_SM80_SASS resolved into the lists that kernel_table.py filters the table with.
# Included from the top-level CMakeLists.txt before the table is generated. Sets
#   FLASH_SIGMOID_RESOLVED_ARCHS      kernel families: "" (none), "80", "80;90a", "90a"
#   FLASH_SIGMOID_RESOLVED_SM80_SASS  machine code of the sm80 family (80, 86, 89, 90)
#   FLASH_SIGMOID_ARCHS_WHY           one line saying how they were chosen (printed; main_job.sh shows it)
#
# FLASH_SIGMOID_ARCHS:
#   auto (default)  the family of every visible GPU (nvidia-smi --query-gpu=compute_cap), as below;
#                   no kernels where no GPU is visible: the CPU implementation and the op library only
#   none            no kernels (a CPU-only build; the GPU entry points answer "not built")
#   all             80;90a
#   80, 90a, 80;90a the kernel families named
# The compute capability that auto sees can be given instead of asked for: the environment variable
# FLASH_SIGMOID_GPU_CC (e.g. "9.0", "8.0,8.6", or "none"), which also lets the choice be tested on a
# machine without a GPU (tests/cmake/test_gpu_archs.sh).
#   cc 8.0, 8.7     80      with sm_80 machine code (sm_80 code runs on every 8.x)
#   cc 8.6 / 8.9    80      with sm_86 / sm_89 machine code
#   cc 9.0          80;90a  with sm_90 machine code for the sm80 family (head dims the sm90 family lacks,
#                           the deterministic backward)
#   cc >= 10        80      with sm_90 machine code and compute_90 PTX, which the driver compiles at first use
#   cc < 8.0        none    (the kernels need sm_80)
# FLASH_SIGMOID_SM80_SASS: auto (default) is the detected GPUs' machine code when FLASH_SIGMOID_ARCHS
# is auto, else "80;90" (every GPU from the A100 on; two compiler passes per sm80 kernel).

set(FLASH_SIGMOID_ARCHS "auto" CACHE STRING
    "Kernel families to compile: auto (the visible GPU's; none without one), none, all, or a list of 80, 90a")
set(FLASH_SIGMOID_SM80_SASS "auto" CACHE STRING
    "Machine code of the sm80 family (80, 86, 89, 90); auto: the detected GPU's, or 80;90 when FLASH_SIGMOID_ARCHS is given")

# _fs_detect_ccs(<out_var> <how_var>): the visible GPUs' compute capabilities as "major.minor", "" if none.
function(_fs_detect_ccs out_var how_var)
  if(DEFINED ENV{FLASH_SIGMOID_GPU_CC})
    set(_ccs "$ENV{FLASH_SIGMOID_GPU_CC}")
    if(_ccs STREQUAL "none")
      set(_ccs "")
    endif()
    set(_how "FLASH_SIGMOID_GPU_CC=$ENV{FLASH_SIGMOID_GPU_CC}")
  else()
    set(_ccs "")
    find_program(FLASH_SIGMOID_NVIDIA_SMI nvidia-smi)
    if(FLASH_SIGMOID_NVIDIA_SMI)
      execute_process(COMMAND "${FLASH_SIGMOID_NVIDIA_SMI}" --query-gpu=compute_cap --format=csv,noheader
                      OUTPUT_VARIABLE _ccs RESULT_VARIABLE _rc ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE
                      TIMEOUT 30)
      if(NOT _rc EQUAL 0)
        set(_ccs "")
      endif()
      set(_how "nvidia-smi")
    else()
      set(_how "no nvidia-smi on PATH")
    endif()
  endif()
  string(REGEX REPLACE "[ \t\r\n,;]+" ";" _ccs "${_ccs}")
  list(REMOVE_ITEM _ccs "")
  list(REMOVE_DUPLICATES _ccs)
  foreach(_cc IN LISTS _ccs)
    if(NOT _cc MATCHES "^[0-9]+\\.[0-9]+$")
      message(FATAL_ERROR "FlashSigmoid: cannot read the GPU compute capability '${_cc}' (from ${_how}); "
                          "expected e.g. 9.0, or set FLASH_SIGMOID_ARCHS")
    endif()
  endforeach()
  set(${out_var} "${_ccs}" PARENT_SCOPE)
  set(${how_var} "${_how}" PARENT_SCOPE)
endfunction()

set(_fs_archs "")
set(_fs_sass "")
if(FLASH_SIGMOID_ARCHS STREQUAL "auto")
  _fs_detect_ccs(_fs_ccs _fs_how)
  set(_fs_unserved "")
  foreach(_cc IN LISTS _fs_ccs)
    string(REPLACE "." ";" _parts "${_cc}")
    list(GET _parts 0 _major)
    list(GET _parts 1 _minor)
    if(_major LESS 8)
      list(APPEND _fs_unserved "${_cc}")
    elseif(_major EQUAL 8)
      list(APPEND _fs_archs 80)
      if(_minor EQUAL 6 OR _minor EQUAL 9)
        list(APPEND _fs_sass "8${_minor}")
      else()
        list(APPEND _fs_sass 80)
      endif()
    elseif(_major EQUAL 9)
      list(APPEND _fs_archs 80 90a)
      list(APPEND _fs_sass 90)
    else()
      list(APPEND _fs_archs 80)
      list(APPEND _fs_sass 90)
    endif()
  endforeach()
  list(REMOVE_DUPLICATES _fs_archs)
  list(REMOVE_DUPLICATES _fs_sass)
  if(_fs_ccs STREQUAL "")
    set(FLASH_SIGMOID_ARCHS_WHY "no GPU visible (${_fs_how}): no GPU kernels, the CPU implementation only")
  else()
    string(REPLACE ";" ", " _fs_ccs_text "${_fs_ccs}")
    set(FLASH_SIGMOID_ARCHS_WHY "GPU compute capability ${_fs_ccs_text} (${_fs_how})")
    if(_fs_unserved AND NOT _fs_archs)
      string(APPEND FLASH_SIGMOID_ARCHS_WHY ": below 8.0, where no kernel runs; the CPU implementation only")
    elseif(_fs_unserved)
      string(APPEND FLASH_SIGMOID_ARCHS_WHY "; no kernel runs on the ones below 8.0")
    endif()
    if("90" IN_LIST _fs_sass AND NOT "90a" IN_LIST _fs_archs)
      string(APPEND FLASH_SIGMOID_ARCHS_WHY "; the sm80 family as compute_90 PTX, which the driver compiles at first use")
    endif()
  endif()
  string(APPEND FLASH_SIGMOID_ARCHS_WHY "; set FLASH_SIGMOID_ARCHS (none, all, 80, 90a) to choose")
elseif(FLASH_SIGMOID_ARCHS STREQUAL "none" OR FLASH_SIGMOID_ARCHS STREQUAL "")
  set(FLASH_SIGMOID_ARCHS_WHY "FLASH_SIGMOID_ARCHS=none: no GPU kernels, the CPU implementation only")
elseif(FLASH_SIGMOID_ARCHS STREQUAL "all")
  set(_fs_archs 80 90a)
  set(FLASH_SIGMOID_ARCHS_WHY "FLASH_SIGMOID_ARCHS=all")
else()
  set(_fs_archs ${FLASH_SIGMOID_ARCHS})
  string(REPLACE "," ";" _fs_archs "${_fs_archs}")
  set(FLASH_SIGMOID_ARCHS_WHY "FLASH_SIGMOID_ARCHS=${FLASH_SIGMOID_ARCHS}")
endif()

if(FLASH_SIGMOID_SM80_SASS STREQUAL "auto" OR FLASH_SIGMOID_SM80_SASS STREQUAL "")
  if(NOT _fs_sass)
    set(_fs_sass 80 90)
  endif()
else()
  set(_fs_sass ${FLASH_SIGMOID_SM80_SASS})
  string(REPLACE "," ";" _fs_sass "${_fs_sass}")
endif()

set(FLASH_SIGMOID_RESOLVED_ARCHS "${_fs_archs}")
set(FLASH_SIGMOID_RESOLVED_SM80_SASS "${_fs_sass}")
