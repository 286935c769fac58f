#!/usr/bin/env bash
# Installs what the build and the tests need, pinned, from Debian's and PyPI's registries, into a
# virtual environment at $FLASH_SIGMOID_VENV (default .venv). Sourced by tools/test.sh and
# tools/main_job.sh; safe to run again (skips what is there).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FLASH_SIGMOID_VENV:-$root/.venv}"

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v ninja >/dev/null || need_apt+=(ninja-build)
[ -f /usr/include/gtest/gtest.h ] || need_apt+=(libgtest-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v nvcc >/dev/null; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; else
    echo "nvcc (CUDA 13.0) is required to build FlashSigmoid" >&2; exit 1; fi
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "== creating virtual environment $venv"
  python3 -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
if ! python -c "import torch, cutlass_library, pytest, numpy" 2>/dev/null; then
  echo "== installing Python packages (pinned)"
  python -m pip install -q --upgrade pip
  python -m pip install -q -r "$root/tools/requirements.txt"
fi
