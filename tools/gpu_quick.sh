#!/usr/bin/env bash
# One narrowed GPU step in one device call, for iterating on a kernel (the GPU tier,
# tools/gpu_tier.sh, is the full check): builds a slice of the kernel table, then runs each
# argument as a shell command with the library on the path, and prints what passed.
#   FLASH_SIGMOID_HEAD_DIMS="64;128" FLASH_SIGMOID_DIRECTIONS=fwd FLASH_SIGMOID_ARCHS=90a \
#     bash tools/gpu_quick.sh "python3 -m pytest -q -x tests/gpu/test_forward_gpu.py -k ws" \
#                             "python3 benchmarks/bench_variants.py"
# Expects the CUTLASS wheel in .whl/ when it is not installed (docs/gpu_testing.md).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root/out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/fs_site .whl/*.whl && export PYTHONPATH="/tmp/fs_site:${PYTHONPATH:-}"
fi
source tools/host_compiler.sh
build="${FLASH_SIGMOID_BUILD_DIR:-$root/build-quick}"
gtest_root=()
[ -d .deps/gtest ] && gtest_root=(-DGTEST_ROOT="$root/.deps/gtest")
t0=$SECONDS
# FLASH_SIGMOID_QUICK_TESTS=ON also builds the C++ tests ($build/tests/cpp/..., e.g. for compute-sanitizer).
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASH_SIGMOID_BUILD_TESTS="${FLASH_SIGMOID_QUICK_TESTS:-OFF}" "${gtest_root[@]}" \
  -DFLASH_SIGMOID_ARCHS="${FLASH_SIGMOID_ARCHS:-90a}" -DFLASH_SIGMOID_HEAD_DIMS="${FLASH_SIGMOID_HEAD_DIMS:-64;128}" \
  -DFLASH_SIGMOID_DTYPES="${FLASH_SIGMOID_DTYPES:-fp16;bf16}" -DFLASH_SIGMOID_MASKS="${FLASH_SIGMOID_MASKS:-none;right;band}" -DFLASH_SIGMOID_DIRECTIONS="${FLASH_SIGMOID_DIRECTIONS:-fwd}" \
  -DFLASH_SIGMOID_VARIANTS="${FLASH_SIGMOID_VARIANTS-all}" -DFLASH_SIGMOID_SM80_SASS="${FLASH_SIGMOID_SM80_SASS:-90}" -DFLASH_SIGMOID_DECODE_HEAD_DIMS="${FLASH_SIGMOID_DECODE_HEAD_DIMS:-}" -DPython3_EXECUTABLE="$(command -v python3)" >"$out/configure.log" 2>&1 \
  || { tail -n 30 "$out/configure.log"; echo "configure FAILED"; exit 1; }
cmake --build "$build" -j "$(nproc)" >"$out/build.log" 2>&1 || { grep -E "error|Error" "$out/build.log" | head -n 40; echo "build FAILED"; exit 1; }
grep -iE "spill|C7508|C7513|warning" "$out/build.log" | head -n 20
echo "== build: $((SECONDS - t0)) s"
export FLASH_SIGMOID_LIBRARY="$build/libflash_sigmoid.so"
export PYTHONPATH="$root/python:${PYTHONPATH:-}"
summary=()
for cmd in "$@"; do
  t=$SECONDS
  echo "== $cmd"
  if bash -c "$cmd"; then summary+=("pass ($((SECONDS - t)) s)  $cmd"); else summary+=("FAIL ($((SECONDS - t)) s)  $cmd"); fi
done
echo "== summary (commit $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- 2>/dev/null || echo -dirty))"
for line in "${summary[@]}"; do echo "$line"; done
