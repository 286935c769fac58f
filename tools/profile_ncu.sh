#!/usr/bin/env bash
# Nsight Compute reports of the main kernel of one forward or backward call, FlashSigmoid and the
# SDPA flash baseline, at the benchmark's shapes (tools/profile_one.py). Writes one text report per
# case to $OUT (or ./out) and prints the headline metrics of each.
#   bash tools/profile_ncu.sh fwd 64 4096 "fs fs-tanh fs:ws_relu sdpa-flash sdpa-cudnn" [--causal]
# An impl "fs:NAME" is FlashSigmoid's kernel_variant NAME.
# Needs FLASH_SIGMOID_LIBRARY (a built libflash_sigmoid.so) and ncu on PATH.
set -uo pipefail
direction=${1:-fwd}; d=${2:-64}; s=${3:-4096}; impls=${4:-"fs sdpa-flash"}; extra=${5:-}
out="${OUT:-out}"; mkdir -p "$out"
sections=(--section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats
          --section SchedulerStats --section Occupancy --section LaunchStats --section InstructionStats
          --section MemoryWorkloadAnalysis
          --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active")
# The call's main kernel: the FlashSigmoid forward or dK/dV kernel, flash-attn's or cuDNN's.
for spec in $impls; do
  impl=${spec%%:*}; variant=""; [ "$spec" != "$impl" ] && variant=${spec#*:}
  if [ "$impl" = sdpa-cudnn ]; then kernel='regex:(cudnn|sdpa|fmha|fprop|bprop)'
  elif [ "$direction" = fwd ]; then kernel='regex:fwd_(ws_)?kernel|flash_fwd'
  else kernel='regex:(sm80_bwd_dkdv_kernel|sm90_bwd_kernel|dq_dk_dv)'; fi
  name="ncu_${direction}_d${d}_s${s}_${impl}${variant:+_$variant}${extra:+_causal}"
  ncu --kernel-name "$kernel" --launch-skip 1 --launch-count 1 "${sections[@]}" \
    python3 tools/profile_one.py --impl "$impl" --variant "$variant" --direction "$direction" --head-dim "$d" --seqlen "$s" $extra \
    > "$out/$name.txt" 2>&1
  echo "== $name"
  grep -E "^  [a-zA-Z_:<>, 0-9]+\(|Duration|Registers Per|Achieved Occupancy|Issue Slots Busy|Issued Ipc Active|No Eligible|Warp Cycles Per Issued|Compute \(SM\) Throughput|Memory Throughput|L1/TEX Hit|Shared Memory|Stall" \
    "$out/$name.txt" | head -n 30
  # stall reasons (cycles per issued instruction) and pipe utilisation above 1%
  grep -E "smsp__average_warps_issue_stalled|sm__pipe_|sm__inst_executed_pipe_" "$out/$name.txt" \
    | awk '{v=$NF; gsub(",","",v); if (v+0 > (index($1,"stalled") ? 0.05 : 1.0)) print "   ", $1, v}' | grep -v "_not_issued" | head -n 40
done
