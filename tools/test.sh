#!/usr/bin/env bash
# The CPU test tier (DESIGN §7), the README's test command and what .ci/run calls: sets up the
# pinned environment, builds the reduced kernel table compile-only (sm80 family as sm_80 and sm_90
# SASS, sm_90a) and the PyTorch op library, runs the C++ tests through CTest and the Python tests on
# CPU tensors (the package finds libflash_sigmoid_torch.so beside $FLASH_SIGMOID_LIBRARY). Needs no
# GPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source tools/setup_env.sh
build="${FLASH_SIGMOID_BUILD_DIR:-$root/build-ci}"
jobs="${FLASH_SIGMOID_JOBS:-$(nproc)}"

echo "== configure (reduced kernel table)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DFLASH_SIGMOID_ARCHS="80;90a" -DFLASH_SIGMOID_HEAD_DIMS="64;128" -DFLASH_SIGMOID_DTYPES="bf16" \
  -DFLASH_SIGMOID_MASKS="none;right;band" -DFLASH_SIGMOID_DIRECTIONS="fwd;bwd" \
  -DFLASH_SIGMOID_BUILD_TORCH=ON -DFLASH_SIGMOID_SM80_SASS="80;90" -DPython3_EXECUTABLE="$(command -v python)"
echo "== build"
cmake --build "$build" -j "$jobs"
echo "== C++ tests"
ctest --test-dir "$build" --output-on-failure -j "$jobs" -LE gpu
echo "== Python tests (CPU tensors)"
FLASH_SIGMOID_LIBRARY="$build/libflash_sigmoid.so" python -m pytest -q tests/python tests/gpu
