#!/usr/bin/env bash
# Compares the machine code of the same kernel keys built from two source trees (a refactor's
# "no behaviour change" check):
#
#   tools/sass_diff.sh OLD_ROOT NEW_ROOT [KEY_FILTER]
#
# OLD_ROOT and NEW_ROOT each hold src/ and include/ (e.g. `git archive <commit> src include | tar -x -C old`). Each
# tree's own src/dispatch/kernel_table.py generates the translation units of a narrowed table
# (FLASH_SIGMOID_SASS_HEAD_DIMS, default "64;128"; bf16; masks none and band; fwd and bwd; sm80
# family as sm_80 and sm_90 code, and sm_90a), which are compiled with the build's kernel options
# on every core. For each unit, every kernel's machine code (the instruction and control words that
# cuobjdump -sass prints; kernel names are dropped) is hashed, and the units' sets of kernel bodies are compared,
# so renamed kernels or parameter types whose layout did not change still compare equal. Prints one
# line per unit (identical, or which kernel bodies differ with their register counts) and exits 1 if
# any unit differs. KEY_FILTER (a grep -E pattern) narrows the units.
set -uo pipefail
old_root=$(cd "$1" && pwd)
new_root=$(cd "$2" && pwd)
filter="${3:-.}"
work="$(mktemp -d)"
cutlass="${CUTLASS_INCLUDE_DIR:-$(python3 -c "import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source', 'include'))")}"
head_dims="${FLASH_SIGMOID_SASS_HEAD_DIMS:-64;128}"

generate() {  # generate ROOT OUT: writes OUT/list (path|flags...) from ROOT's table
  python3 "$1/src/dispatch/kernel_table.py" --out "$2" --archs "80;90a" --head-dims "$head_dims" --dtypes bf16 \
    --masks "none;band" --directions "fwd;bwd" --sm80-sass "80;90" | grep -E "$filter" > "$2/list"
}
compile_one() {  # compile_one ROOT GEN LINE
  local root=$1 gen=$2 line=$3
  IFS='|' read -r -a parts <<< "$line"
  local src=${parts[0]}
  nvcc -c -std=c++17 -O3 -DNDEBUG --expt-relaxed-constexpr -lineinfo -Xptxas=--warn-on-spills \
    -Xcompiler=-fvisibility=hidden -I"$root/src" -I"$root/include" -I"$gen" -isystem "$cutlass" "${parts[@]:1}" \
    -o "${src%.cu}.o" "$src" > "${src%.cu}.log" 2>&1 || { echo "compile failed: $src"; cat "${src%.cu}.log"; }
}
export -f compile_one
export cutlass
# "<arch> <hash> <registers> <name>", one line per kernel of an object, sorted.
bodies() {
  local dir; dir=$(mktemp -d)
  cuobjdump -sass "$1" | awk -v dir="$dir" '
    /^[[:space:]]*arch = / { arch = $3 }
    /Function : / { n++; file = sprintf("%s/%04d", dir, n); print arch > file; print $3 > (file ".name"); next }
    n > 0 && /\/\* 0x[0-9a-f]+ \*\// { match($0, /0x[0-9a-f]+ \*\/[[:space:]]*$/); print substr($0, RSTART, 18) >> file }'
  for f in "$dir"/[0-9][0-9][0-9][0-9]; do
    local name; name=$(cat "$f.name")
    local regs; regs=$(cuobjdump -res-usage "$1" 2>/dev/null | grep -A1 "Function $name:" | grep -oE 'REG:[0-9]+' | head -1)
    echo "$(head -1 "$f") $(tail -n +2 "$f" | sha1sum | cut -c1-16) ${regs:-REG:?} $name"
  done | sort
  rm -rf "$dir"
}

for side in old new; do
  root=$([ $side = old ] && echo "$old_root" || echo "$new_root")
  mkdir -p "$work/$side"
  generate "$root" "$work/$side"
  echo "== compiling $(wc -l < "$work/$side/list") units of $side ($root)"
  tr '\n' '\0' < "$work/$side/list" | xargs -0 -P "$(nproc)" -I{} bash -c 'compile_one "$0" "$1" "$2"' "$root" "$work/$side" {}
done

status=0
while IFS='|' read -r src _; do
  unit=$(basename "$src" .cu)
  old_o="$work/old/$unit.o"
  new_o="$work/new/$unit.o"
  if [ ! -f "$old_o" ] || [ ! -f "$new_o" ]; then echo "$unit: MISSING (old $( [ -f "$old_o" ] && echo ok || echo none ), new $( [ -f "$new_o" ] && echo ok || echo none ))"; status=1; continue; fi
  bodies "$old_o" > "$work/$unit.old"
  bodies "$new_o" > "$work/$unit.new"
  if diff <(cut -d' ' -f1-3 "$work/$unit.old") <(cut -d' ' -f1-3 "$work/$unit.new") > /dev/null; then
    echo "$unit: identical ($(wc -l < "$work/$unit.old") kernels; registers $(cut -d' ' -f3 "$work/$unit.old" | sort -u | tr '\n' ' '))"
  else
    status=1
    echo "$unit: DIFFERENT"
    diff <(cut -d' ' -f1-3 "$work/$unit.old") <(cut -d' ' -f1-3 "$work/$unit.new") | grep '^[<>]' | sed 's/^/    /'
  fi
done < "$work/new/list"
grep -hiE "spill|warning" "$work"/new/*.log | sort -u | head -n 5
rm -rf "$work"
exit $status
