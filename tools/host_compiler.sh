# Sourced by tools/setup_env.sh and tools/gpu_tier.sh: picks the host C++ compiler.
#
# The H100 machine's image has a g++ wrapper (/opt/gcc/bin) that links a libflash_sigmoid.so which
# crashes in its C++ runtime; the system compiler does not. If any compiler the build would use
# lives under /opt/gcc (CXX and CUDAHOSTCXX, first word, where set; else c++ and g++ for CMake and
# gcc and g++ for nvcc's host code), /usr/bin/g++ is used for all of them. Anywhere else the
# caller's choice stands. (CMake keeps the compiler of an existing build tree: remove a build
# directory configured with the wrapper.)
flash_sigmoid_host_compilers=()
if [ -n "${CXX:-}" ]; then flash_sigmoid_host_compilers+=("${CXX%% *}"); else flash_sigmoid_host_compilers+=(c++ g++); fi
if [ -n "${CUDAHOSTCXX:-}" ]; then flash_sigmoid_host_compilers+=("${CUDAHOSTCXX%% *}"); else flash_sigmoid_host_compilers+=(gcc g++); fi
for flash_sigmoid_c in "${flash_sigmoid_host_compilers[@]}"; do
  flash_sigmoid_cpath="$(command -v "$flash_sigmoid_c" 2>/dev/null || true)"
  case "$flash_sigmoid_cpath|$(readlink -f "$flash_sigmoid_cpath" 2>/dev/null || true)" in
    */opt/gcc/*)
      if [ -x /usr/bin/g++ ]; then export CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++; fi
      break ;;
  esac
done
unset flash_sigmoid_host_compilers flash_sigmoid_c flash_sigmoid_cpath
