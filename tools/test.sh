#!/usr/bin/env bash
# The CPU test tier (DESIGN §7), the README's test command and what .ci/run calls: sets up the
# pinned environment, builds (in build-test/, its own tree: the main job's build/ is never touched)
#   - a compile-only kernel slice, every kernel family on each architecture (8 kernels): the sm80 forward
#     and backward as sm_80 and sm_90 machine code, the sm90 forward and backward as sm_90a (bf16,
#     head dim 64, no mask and the band mask (both bounds); FLASH_SIGMOID_TEST_* widen it),
#   - the C++ tests and the PyTorch op library,
# runs the C++ tests through CTest and the Python tests on CPU tensors (the package finds
# libflash_sigmoid_torch.so beside $FLASH_SIGMOID_LIBRARY). Needs no GPU. Fails when a runner
# runs no test: CTest's "No tests were found", a pytest run that collects nothing (exit 5) or
# passes nothing (every test skipped).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source tools/setup_env.sh
build="${FLASH_SIGMOID_BUILD_DIR:-$root/build-test}"
jobs="${FLASH_SIGMOID_JOBS:-$(nproc)}"
export NINJA_STATUS="${NINJA_STATUS:-[%f/%t steps, %es] }"
t_start=$SECONDS

echo "== configure $build (compile-only kernel slice: every family on both architectures)"
# Every option is given, so that the tree's cache never keeps another run's choice.
mkdir -p "$build"
if ! cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASH_SIGMOID_BUILD_TESTS=ON \
  -DFLASH_SIGMOID_ARCHS="80;90a" -DFLASH_SIGMOID_SM80_SASS="80;90" \
  -DFLASH_SIGMOID_HEAD_DIMS="${FLASH_SIGMOID_TEST_HEAD_DIMS:-64}" -DFLASH_SIGMOID_BWD_HEAD_DIMS="" \
  -DFLASH_SIGMOID_DTYPES="${FLASH_SIGMOID_TEST_DTYPES:-bf16}" -DFLASH_SIGMOID_MASKS="${FLASH_SIGMOID_TEST_MASKS:-none;band}" \
  -DFLASH_SIGMOID_DIRECTIONS="fwd;bwd" -DFLASH_SIGMOID_VARIANTS=all -DFLASH_SIGMOID_BUILD_TORCH=ON -DPython3_EXECUTABLE="$(command -v python)" \
  > "$build/configure.log" 2>&1; then
  cat "$build/configure.log" >&2
  echo "configure failed in $build" >&2
  exit 1
fi
grep -E "^-- FlashSigmoid" "$build/configure.log" || true
echo "== build"
cmake --build "$build" -j "$jobs"
echo "== built in $((SECONDS - t_start)) s"
echo "== C++ tests"
ctest --test-dir "$build" --output-on-failure -j "$jobs" -LE gpu --no-tests=error
echo "== Python tests (CPU tensors)"
FLASH_SIGMOID_LIBRARY="$build/libflash_sigmoid.so" python -m pytest -q -p no:cacheprovider \
  --junitxml="$build/pytest.xml" tests/python tests/gpu
python - "$build/pytest.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "skipped", "failures", "errors")}
passed = n["tests"] - n["skipped"] - n["failures"] - n["errors"]
print(f"pytest: {passed} passed, {n['skipped']} skipped, {n['failures'] + n['errors']} failed")
sys.exit(0 if passed > 0 else "pytest ran no test that passed")
PY
echo "== tests passed in $((SECONDS - t_start)) s after the installs"
