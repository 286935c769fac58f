#!/usr/bin/env bash
# The README's main job. On a machine with an NVIDIA GPU: build the kernels, check them against the
# fp64 reference and benchmark them against the baselines (benchmarks/bench.py): by default DESIGN §6's
# whole sweep (S 512 … 16k, D 64/128/256, causal and not; forward, backward and forward + backward),
# one progress line per case, results in $OUT (default ./out): bench.json, bench.md, bench_d<D>.png.
# Arguments go to bench.py, e.g. `bash tools/main_job.sh --quick` or `--head-dims 128 --seqlens 8192`.
# Without a GPU: build the library and run the CPU implementation on a small problem, checked
# against fp64 (and say so). Offline, with the packages already installed (the H100 machine):
# FLASH_SIGMOID_USE_SYSTEM_PYTHON=1 bash tools/main_job.sh (tools/setup_env.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source tools/setup_env.sh
jobs="${FLASH_SIGMOID_JOBS:-$(nproc)}"
if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  build="$root/build"
  out="${OUT:-$root/out}"
  mkdir -p "$out"
  # SASS for this GPU only (an sm80-family target it can run), unless FLASH_SIGMOID_SM80_SASS says
  # otherwise: half the compile time of the default "80;90".
  cap=$(python -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")
  case "$cap" in 80|86|89|90) sass_default="$cap" ;; *) sass_default="80;90" ;; esac
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASH_SIGMOID_BUILD_TESTS=OFF \
    -DFLASH_SIGMOID_HEAD_DIMS="${FLASH_SIGMOID_HEAD_DIMS:-64;128;256}" -DPython3_EXECUTABLE="$(command -v python)" \
    -DFLASH_SIGMOID_SM80_SASS="${FLASH_SIGMOID_SM80_SASS:-$sass_default}"
  cmake --build "$build" -j "$jobs"
  # Options given to this script come last, so they override these outputs.
  PYTHONUNBUFFERED=1 FLASH_SIGMOID_LIBRARY="$build/libflash_sigmoid.so" python benchmarks/bench.py \
    --json "$out/bench.json" --markdown "$out/bench.md" --plot "$out/bench" "$@"
else
  build="$root/build-ci"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASH_SIGMOID_BUILD_TESTS=OFF \
    -DFLASH_SIGMOID_HEAD_DIMS="64" -DFLASH_SIGMOID_DTYPES="bf16" -DPython3_EXECUTABLE="$(command -v python)"
  cmake --build "$build" -j "$jobs"
  FLASH_SIGMOID_LIBRARY="$build/libflash_sigmoid.so" python tools/cpu_demo.py
fi
