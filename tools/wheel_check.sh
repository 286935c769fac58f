#!/usr/bin/env bash
# The wheel check of CI (.ci/run, after tools/test.sh): builds the CPU-only wheel (no GPU kernels:
# FLASH_SIGMOID_ARCHS=none) with `pip wheel`, installs it into a fresh virtual environment with pip,
# from wheels only (nothing compiled at install time; torch from PyPI, from pip's cache when the
# environment's torch was downloaded already), and runs tools/wheel_smoke.py there, outside the source
# tree, with no compiler on PATH. Prints the wheel's size and each step's time.
#   FLASH_SIGMOID_WHEEL_ARGS   more options for `pip wheel`, e.g. -C cmake.define.FLASH_SIGMOID_ARCHS=80;90a
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source tools/setup_env.sh
dist="$root/dist/cpu"
fresh="$(mktemp -d /tmp/flash_sigmoid_wheel_venv.XXXXXX)"
trap 'rm -rf "$fresh"' EXIT
t0=$SECONDS

echo "== pip wheel (CPU only)"
rm -rf "$dist"
# The build environment is .venv itself (--no-build-isolation): its torch, CUTLASS and scikit-build-core.
# shellcheck disable=SC2086
python -m pip wheel . --no-build-isolation --no-deps -w "$dist" \
  -C cmake.define.FLASH_SIGMOID_ARCHS=none -C build-dir="$root/build-wheel" ${FLASH_SIGMOID_WHEEL_ARGS:-}
wheel=$(ls "$dist"/flash_sigmoid-*.whl)
echo "== built $(basename "$wheel"): $(du -k "$wheel" | cut -f1) KiB, in $((SECONDS - t0)) s"
python - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
for lib in ("flash_sigmoid/lib/libflash_sigmoid.so", "flash_sigmoid/lib/libflash_sigmoid_torch.so"):
    assert lib in names, f"{lib} missing from the wheel: {names}"
PY

echo "== fresh virtual environment $fresh: pip install (wheels only)"
t1=$SECONDS
torch_version=$(python -c "import importlib.metadata as m; print(m.version('torch'))")
python3 -m venv "$fresh"
"$fresh/bin/python" -m pip install -q --upgrade pip  # the pip that wrote the cache reads it
# The torch of .venv's version, so that pip takes it from its cache rather than downloading anew.
"$fresh/bin/python" -m pip install -q --only-binary=:all: "$wheel" "torch==$torch_version"
echo "== installed in $((SECONDS - t1)) s"

echo "== check through the installed wheel (outside the source tree, no compiler on PATH)"
(cd "$fresh" && env -u PYTHONPATH -u FLASH_SIGMOID_LIBRARY -u FLASH_SIGMOID_TORCH_LIBRARY -u CC -u CXX \
   PATH="$fresh/bin" "$fresh/bin/python" "$root/tools/wheel_smoke.py" "$fresh")
echo "== wheel check passed in $((SECONDS - t0)) s"
