#!/usr/bin/env bash
# The GPU test tier (DESIGN §7), one command on the H100 machine:
#   bash tools/gpu_tier.sh            # full kernel table
#   FLASH_SIGMOID_HEAD_DIMS="64;128" bash tools/gpu_tier.sh   # a subset, faster
#   FLASH_SIGMOID_TIER_PHASE=build bash tools/gpu_tier.sh; FLASH_SIGMOID_TIER_PHASE=test bash tools/gpu_tier.sh
#                                     # the same in two calls (each under the device tool's 10 minutes)
# Builds the kernel table with all cores, runs the C++ tests (CPU and GPU labels), the pytest GPU
# grid, compute-sanitizer (memcheck, racecheck) on a small case per mask type, a determinism loop
# and a benchmark smoke run, and prints a summary table last. Logs go to $OUT (or ./out).
# Expects the CUTLASS wheel in .whl/ and GoogleTest in .deps/gtest when they are not installed
# (docs/gpu_testing.md says how to prepare them).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-$root/out}"      # what comes back: logs.tgz, bench.{json,md}, bench_d*.png, numerics.md
logs="$(mktemp -d)"          # one log per step, packed into $out/logs.tgz at the end
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/fs_site .whl/*.whl && export PYTHONPATH="/tmp/fs_site:${PYTHONPATH:-}"
fi
source tools/host_compiler.sh  # not the H100 image's /opt/gcc wrapper (its libraries crash)
gtest_root=()
[ -d .deps/gtest ] && gtest_root=(-DGTEST_ROOT="$root/.deps/gtest")
build="${FLASH_SIGMOID_BUILD_DIR:-$root/build-gpu}"
# Phases: build (configure, build, ctest), test (everything after ctest, on the build that the
# build phase left), or all. Step results are kept in the build tree, so the test phase's summary
# covers both.
phase="${FLASH_SIGMOID_TIER_PHASE:-all}"
case "$phase" in all|build|test) ;; *) echo "FLASH_SIGMOID_TIER_PHASE must be all, build or test, not '$phase'" >&2; exit 2 ;; esac
results="$build/tier_results.txt"
label="${FLASH_SIGMOID_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
declare -A result
if [ "$phase" = test ]; then
  # The build phase's results, logs and commit label; the test phase refuses a build that failed
  # or that it cannot tell apart from a leftover.
  [ -f "$results" ] || { echo "no build phase results in $build: run FLASH_SIGMOID_TIER_PHASE=build first" >&2; exit 2; }
  while IFS='=' read -r name value; do result[$name]=$value; done < "$results"
  case "${result[configure]:-}${result[build]:-}" in
    pass*pass*) ;;
    *) echo "the build phase did not pass (configure: ${result[configure]:-not run}, build: ${result[build]:-not run})" >&2; exit 1 ;;
  esac
  if [ "${result[commit]:-}" != "$label" ]; then
    echo "the build in $build is of commit '${result[commit]:-?}', not '$label': run the build phase again" >&2; exit 2
  fi
  [ -f "$build/tier_logs.tgz" ] && tar xzf "$build/tier_logs.tgz" -C "$logs"
fi

step() {  # step NAME command...: runs, logs to $logs/NAME.log, records pass/fail and seconds
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name"
  if "$@" >"$logs/$name.log" 2>&1; then result[$name]="pass ($((SECONDS - t0)) s)"; else result[$name]="FAIL ($((SECONDS - t0)) s)"; fi
  tail -n 15 "$logs/$name.log"
}

if [ "$phase" != test ]; then
step configure cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${gtest_root[@]}" \
  -DFLASH_SIGMOID_ARCHS="${FLASH_SIGMOID_ARCHS:-80;90a}" \
  -DFLASH_SIGMOID_HEAD_DIMS="${FLASH_SIGMOID_HEAD_DIMS:-32;64;96;128;160;192;224;256}" \
  -DFLASH_SIGMOID_DTYPES="${FLASH_SIGMOID_DTYPES:-fp16;bf16}" \
  -DFLASH_SIGMOID_DIRECTIONS="${FLASH_SIGMOID_DIRECTIONS:-fwd;bwd}" -DFLASH_SIGMOID_VARIANTS="${FLASH_SIGMOID_VARIANTS-all}" \
  -DPython3_EXECUTABLE="$(command -v python3)" \
  -DFLASH_SIGMOID_SM80_SASS="${FLASH_SIGMOID_SM80_SASS:-90}" -DFLASH_SIGMOID_BWD_HEAD_DIMS="${FLASH_SIGMOID_BWD_HEAD_DIMS:-}"
step build cmake --build "$build" -j "$(nproc)"
grep -iE "spill|warning|C7513" "$logs/build.log" | grep -v "^--" | head -n 20 > "$logs/build_warnings.txt"
step ctest ctest --test-dir "$build" --output-on-failure -j 8
fi
export FLASH_SIGMOID_LIBRARY="$build/libflash_sigmoid.so"
failed() {  # any step FAIL?
  local name
  for name in "${!result[@]}"; do [[ "${result[$name]}" == FAIL* ]] && return 0; done
  return 1
}
if [ "$phase" = build ]; then
  result[commit]="$label"
  for name in "${!result[@]}"; do echo "$name=${result[$name]}"; done > "$results"
  tar czf "$build/tier_logs.tgz" -C "$logs" .
  cp "$build/tier_logs.tgz" "$out/logs_build.tgz"
  grep -E "tests passed|tests failed" "$logs/ctest.log" | tail -1
  for name in configure build ctest; do printf '%-12s %s\n' "$name" "${result[$name]:-not run}"; done
  if failed; then echo "build phase FAILED (commit $label)"; exit 1; fi
  echo "build phase done (commit $label); next: FLASH_SIGMOID_TIER_PHASE=test bash tools/gpu_tier.sh"
  exit 0
fi
xdist=()
python3 -c "import xdist" 2>/dev/null && xdist=(-n 8)
step pytest python3 -m pytest -q -p no:cacheprovider "${xdist[@]}" tests/gpu tests/python
step numerics python3 tools/numerics.py --markdown "$out/numerics.md"
step bench python3 benchmarks/bench.py ${FLASH_SIGMOID_BENCH_ARGS:---quick} --json "$out/bench.json" --markdown "$out/bench.md" --plot "$out/bench"
# compute-sanitizer on the C++ GPU test's small cases (one per mask kind and dtype, head dim 64):
# a framework-free process starts in seconds under the sanitizer, torch does not.
sanitize_filter='*d64*'
step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 "$build/tests/cpp/test_gpu_forward" --gtest_filter="$sanitize_filter"
step racecheck compute-sanitizer --tool racecheck --error-exitcode 1 "$build/tests/cpp/test_gpu_forward" --gtest_filter="$sanitize_filter"
step determinism python3 tools/determinism.py
step mix_bound "$build/sm80_mix_bound"
step memcheck_bwd compute-sanitizer --tool memcheck --error-exitcode 1 python3 tools/sanitize_case.py
step racecheck_bwd compute-sanitizer --tool racecheck --error-exitcode 1 python3 tools/sanitize_case.py

echo
echo "== summary: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), commit $label"
grep -E "tests passed|tests failed" "$logs/ctest.log" | tail -1
grep -E "passed|failed" "$logs/pytest.log" | tail -1
echo "spill/warning lines in build: $(wc -l < "$logs/build_warnings.txt")"
printf '%-12s %s\n' step result
for name in configure build ctest pytest numerics bench memcheck racecheck determinism mix_bound memcheck_bwd racecheck_bwd; do
  printf '%-12s %s\n' "$name" "${result[$name]:-not run}"
done
[ -f "$out/numerics.md" ] && cat "$out/numerics.md"
[ -f "$out/bench.md" ] && cat "$out/bench.md"
[ -f "$logs/mix_bound.log" ] && { echo; echo "sm80 instruction-mix ceiling (benchmarks/sm80_mix_bound.cu):"; cat "$logs/mix_bound.log"; }
tar czf "$out/logs.tgz" -C "$logs" .
if failed; then echo "GPU tier FAILED (commit $label)"; exit 1; fi
echo "GPU tier passed (commit $label)"
