#!/usr/bin/env bash
# Installs what the build and the tests need, pinned, from Debian's and PyPI's registries, into a
# virtual environment at $FLASH_SIGMOID_VENV (default .venv). Sourced by tools/test.sh and
# tools/main_job.sh; safe to run again (skips what is there).
#
# Offline, on a machine whose python3 already has torch, numpy and pytest (the H100 machine's image):
# FLASH_SIGMOID_USE_SYSTEM_PYTHON=1 installs nothing from the registries and uses python3 as it is;
# wheels in .whl/ (the CUTLASS headers wheel, docs/gpu_testing.md) are installed from there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FLASH_SIGMOID_VENV:-$root/.venv}"

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v ninja >/dev/null || need_apt+=(ninja-build)
[ -f /usr/include/gtest/gtest.h ] || [ -d "$root/.deps/gtest" ] || need_apt+=(libgtest-dev)
# ccache: the build compiles through it when present (a rebuild of unchanged kernels takes seconds).
# FLASH_SIGMOID_CCACHE=0 neither installs nor uses it.
if [ "${FLASH_SIGMOID_CCACHE:-1}" = 1 ]; then
  command -v ccache >/dev/null || [ "${FLASH_SIGMOID_USE_SYSTEM_PYTHON:-0}" = 1 ] || need_apt+=(ccache)
else
  export CCACHE_DISABLE=1
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "${FLASH_SIGMOID_USE_SYSTEM_PYTHON:-0}" = 1 ]; then
    # Offline: nothing to install from. GoogleTest is only needed for the C++ tests.
    for pkg in "${need_apt[@]}"; do
      [ "$pkg" = libgtest-dev ] || { echo "FLASH_SIGMOID_USE_SYSTEM_PYTHON=1: $pkg is missing and nothing is installed offline" >&2; return 1 2>/dev/null || exit 1; }
    done
  else
    echo "== installing Debian packages: ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  fi
fi
if ! command -v nvcc >/dev/null; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; else
    echo "nvcc (CUDA 13.0) is required to build FlashSigmoid" >&2; exit 1; fi
fi

source "$root/tools/host_compiler.sh"
echo "== C++ compiler: ${CXX:-$(command -v c++ || command -v g++ || echo none)}"

if [ "${FLASH_SIGMOID_USE_SYSTEM_PYTHON:-0}" = 1 ]; then
  if ! python3 -c "import torch, numpy, pytest, triton, matplotlib"; then
    echo "FLASH_SIGMOID_USE_SYSTEM_PYTHON=1: python3 lacks torch, numpy, pytest, triton or matplotlib" >&2
    return 1 2>/dev/null || exit 1
  fi
  site="$root/.deps/site"
  [ -d "$site" ] && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  if ! python3 -c "import cutlass_library" 2>/dev/null && ls "$root"/.whl/*.whl >/dev/null 2>&1; then
    echo "== installing the wheels in .whl/ (no index)"
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$root"/.whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  # The scripts call `python`; on such a machine it may be missing or another interpreter.
  mkdir -p "$root/.deps/bin"
  rm -f "$root/.deps/bin/python"  # never write through an earlier link
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$(command -v python3)" > "$root/.deps/bin/python"
  chmod +x "$root/.deps/bin/python"
  export PATH="$root/.deps/bin:$PATH"
  return 0 2>/dev/null || exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "== creating virtual environment $venv"
  python3 -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
if ! python -c "import torch, cutlass_library, pytest, numpy, matplotlib, scikit_build_core" 2>/dev/null; then
  echo "== installing Python packages (pinned)"
  python -m pip install -q --upgrade pip
  python -m pip install -q -r "$root/tools/requirements.txt"
fi
