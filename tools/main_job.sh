#!/usr/bin/env bash
# The README's main job. On a machine with an NVIDIA GPU: build the kernels of that GPU's family,
# check them against the fp64 reference and benchmark them against the baselines (benchmarks/bench.py):
# by default DESIGN §6's whole sweep (S 512 … 16k, D 64/128/256, causal and not; forward, backward and
# forward + backward), one progress line per case, results in $OUT (default ./out): bench.json,
# bench.md, bench_d<D>.png. Arguments go to bench.py, e.g. `bash tools/main_job.sh --quick` or
# `--head-dims 128 --seqlens 8192`.
# Without a GPU: build the library and the op library without GPU kernels (seconds, not the kernels'
# minutes) and run the CPU implementation on a small problem, checked against fp64, saying so and why.
# Its build tree is build/ (tools/test.sh uses build-test/: neither changes the other's configuration).
# FLASH_SIGMOID_ARCHS (default auto: the visible GPU's family; docs/install.md), FLASH_SIGMOID_SM80_SASS
# and FLASH_SIGMOID_HEAD_DIMS choose the kernels. Offline, with the packages already installed (the H100
# machine): FLASH_SIGMOID_USE_SYSTEM_PYTHON=1 bash tools/main_job.sh (tools/setup_env.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source tools/setup_env.sh
jobs="${FLASH_SIGMOID_JOBS:-$(nproc)}"
build="${FLASH_SIGMOID_BUILD_DIR:-$root/build}"
export NINJA_STATUS="${NINJA_STATUS:-[%f/%t steps, %es] }"
t_start=$SECONDS

# Whether torch sees a GPU, and why not. CMake's default (FLASH_SIGMOID_ARCHS=auto) asks nvidia-smi;
# where torch sees a GPU and nvidia-smi is missing, the capability torch reports is handed to CMake.
gpu_probe=$(python - <<'PY'
import torch
if torch.cuda.is_available():
    print("gpu %d.%d %s" % (*torch.cuda.get_device_capability(), torch.cuda.get_device_name()))
elif torch.version.cuda is None:
    print("cpu torch %s is built without CUDA" % torch.__version__)
else:
    print("cpu torch %s (CUDA %s) sees no CUDA device" % (torch.__version__, torch.version.cuda))
PY
)
if [[ "$gpu_probe" == gpu* ]] && [ -z "${FLASH_SIGMOID_GPU_CC:-}" ] && ! command -v nvidia-smi >/dev/null; then
  read -r _ cc _ <<<"$gpu_probe"
  export FLASH_SIGMOID_GPU_CC="$cc"
fi

configure() {  # configure EXTRA_CMAKE_ARGS...: the main job's build tree, architectures by default auto
  mkdir -p "$build"
  if ! cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASH_SIGMOID_BUILD_TESTS=OFF \
      -DFLASH_SIGMOID_ARCHS="${FLASH_SIGMOID_ARCHS:-auto}" -DFLASH_SIGMOID_SM80_SASS="${FLASH_SIGMOID_SM80_SASS:-auto}" \
      -DPython3_EXECUTABLE="$(command -v python)" "$@" > "$build/configure.log" 2>&1; then
    cat "$build/configure.log" >&2
    echo "configure failed in $build" >&2
    exit 1
  fi
  grep -E "^-- FlashSigmoid" "$build/configure.log" || true
}

if [[ "$gpu_probe" == gpu* ]]; then
  echo "== GPU: ${gpu_probe#gpu }: building its kernels, then the check against fp64 and the benchmark"
  out="${OUT:-$root/out}"
  mkdir -p "$out"
  configure -DFLASH_SIGMOID_HEAD_DIMS="${FLASH_SIGMOID_HEAD_DIMS:-64;128;256}"
  cmake --build "$build" -j "$jobs"
  echo "== built in $((SECONDS - t_start)) s"
  # Options given to this script come last, so they override these outputs.
  PYTHONUNBUFFERED=1 FLASH_SIGMOID_LIBRARY="$build/libflash_sigmoid.so" python benchmarks/bench.py \
    --json "$out/bench.json" --markdown "$out/bench.md" --plot "$out/bench" "$@"
else
  echo "== no GPU: ${gpu_probe#cpu }. Running the CPU path: the CPU implementation, built without GPU"
  echo "   kernels (FLASH_SIGMOID_ARCHS=${FLASH_SIGMOID_ARCHS:-auto}; set it, e.g. to 80;90a, to compile them anyway)."
  configure -DFLASH_SIGMOID_HEAD_DIMS="${FLASH_SIGMOID_HEAD_DIMS:-32;64;96;128;160;192;224;256}"
  cmake --build "$build" -j "$jobs"
  echo "== built in $((SECONDS - t_start)) s"
  FLASH_SIGMOID_LIBRARY="$build/libflash_sigmoid.so" python tools/cpu_demo.py
  echo "== main job (CPU path) done in $((SECONDS - t_start)) s after the installs"
fi
