#!/usr/bin/env bash
# Compiler launcher of the kernel translation units (CMakeLists.txt sets it on the flash_sigmoid
# target): runs the compile (through ccache when the build found one), then prints one line per kernel
# with how many have compiled in this build, of how many the table holds, and the time taken.
# Ninja shows a command's output when it finishes, so `cmake --build` and `pip install -v .` show
# these lines as the kernels complete.
#   kernel_progress.sh TOTAL CLOCK_DIR compiler args...
# CLOCK_DIR/start is touched and CLOCK_DIR/done emptied at the start of every build (the
# flash_sigmoid_build_clock target); each kernel that compiles leaves a marker in CLOCK_DIR/done.
total=$1 clock=$2
shift 2
t0=$(date +%s)
"$@"
rc=$?
out=""
prev=""
for arg in "$@"; do
  [ "$prev" = "-o" ] && out=$arg
  prev=$arg
done
name=$(basename "${out:-kernel}")
name=${name%.o}
name=${name%.cu}
t1=$(date +%s)
start=$(stat -c %Y "$clock/start" 2>/dev/null || echo "$t0")
if [ $rc -eq 0 ]; then
  mkdir -p "$clock/done" && : > "$clock/done/$name"
  n=$(ls "$clock/done" | wc -l)
  e=$((t1 - start))
  echo "FlashSigmoid: kernel $n compiled in this build ($total in the table): $name in $((t1 - t0)) s, $((e / 60)) min $((e % 60)) s since the build began"
else
  echo "FlashSigmoid: kernel $name FAILED to compile (exit $rc) after $((t1 - t0)) s"
fi
exit $rc
