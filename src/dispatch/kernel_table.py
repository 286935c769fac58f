#!/usr/bin/env python3
"""The one table of compiled kernels, and the generator of their translation units.

Layer: dispatch. A key is (arch, direction, variant, dtype, head-dim bucket, mask kind). The variant
names one of several mainloops of the same (arch, direction) family, built side by side so that they
can be measured against each other: "" is the family's default (the one the registry picks), any
other variant is served only when a caller names it (Problem::kernel_variant). Build options filter
the table (CMake passes them here); the generator writes one .cu per surviving key into the build
tree, plus kernel_registry.inc that lists them for the runtime registry (src/dispatch/registry.cpp).
Nothing else in the project lists kernels.

The split-KV decode kernel of flash_attn_with_kvcache (docs/kvcache.md) has its own small key,
(dtype, head-dim bucket of DECODE_HEAD_DIMS): one kernel serves every mask at run time (decode reads
the cache, its arithmetic costs nothing), so it needs no mask column; it is mma.sync code, compiled
with the sm80 family's targets when that family is built, else as sm_90a. It is built with the
forward (--directions fwd), for the buckets that cover --head-dims unless --decode-head-dims names them.

Usage: kernel_table.py --out DIR --archs 80;90a --head-dims 64;128 --dtypes fp16;bf16
                       --directions fwd;bwd --masks none;right;band [--variants all]
                       [--decode-head-dims 64;128;256]
Prints "path|nvcc gencode flag[|more gencode flags][|extra nvcc option...]" for each generated .cu,
one per line (CMake reads them).
"""
import argparse
import itertools
import os
import sys

HEAD_DIMS = (32, 64, 96, 128, 160, 192, 224, 256)
DTYPES = {"fp16": ("cutlass::half_t", "DType::kFloat16"), "bf16": ("cutlass::bfloat16_t", "DType::kBFloat16")}
MASKS = {"none": "MaskKind::kNone", "right": "MaskKind::kRight", "band": "MaskKind::kBand"}
DIRECTIONS = ("fwd", "bwd")

# The kernel families that exist: (arch, direction, variant) -> Family. An (arch, direction) pair
# absent here has no kernel yet; the runtime reports Unsupported for it.
#   header, kernel     the host side of the kernel: kernel<Element, head_dim, mask>::run(params,
#                      stream) and ::workspace_bytes(params), the bytes of workspace run() uses
#   options            extra nvcc options of its translation units
#   head_dims          the buckets the family has (None: all of HEAD_DIMS); the registry serves a
#                      head dim from the smallest bucket >= it over every family that runs
#   deterministic      backward: whether it serves BackwardParams::deterministic (else the registry
#                      picks another family for a deterministic call)
# The sm80 backward is compiled with ptxas -O2: at -O3 ptxas pre-loads ldmatrix fragments of
# several k-steps ahead and then spills the dK/dV accumulators (255 registers, 270-390 bytes of
# spills at head dim 128 on sm_80 and sm_90), while -O2 fits in 227-239 registers with none
# (docs/sm80_backward.md). The sm90 family (wgmma) exists for head dims 64 and 128 (its forward also
# for 192 and 256), its backward for the default mode only (docs/sm90.md).
#   declines           forward: the kernel has ::declines(params) (nullptr, or why it cannot serve
#                      these tensors), so that the registry picks another family for them
#   dropout            the kernel applies attention dropout (common/dropout_fragment.hpp; its launcher
#                      passes kWithDropout to launch_score_variant); the registry picks another family
#                      for a call with dropout otherwise
class Family:
    def __init__(self, header, kernel, options=(), head_dims=None, deterministic=True, declines=False,
                 dropout=False):
        self.header, self.kernel, self.options = header, kernel, options
        self.head_dims, self.deterministic, self.declines = head_dims, deterministic, declines
        self.dropout = dropout


# CuTe offers wgmma's N = 8 .. 256 in steps of 8 only with this macro; without it a key tile of
# 80, 112 or 176 becomes several 64 x 16 instructions (fwd_ws_traits.hpp asserts it).
SM90_OPTIONS = ("-DCUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED",)

DEFAULT_VARIANT = ""
FAMILIES = {
    ("80", "fwd", DEFAULT_VARIANT): Family("sm80/fwd_launch.hpp", "sm80::Sm80Fwd", dropout=True),
    ("80", "bwd", DEFAULT_VARIANT): Family("sm80/bwd_launch.hpp", "sm80::Sm80Bwd", ("-Xptxas=-O2",),
                                           dropout=True),
    # The sm90 forward is the warp-specialized TMA kernel with ping-pong (docs/sm90.md); it won
    # the same-run A/B against the cp.async kernel, which stays by name ("cp_async") and serves
    # the tensors TMA cannot describe at D 64 and 128; above, no cp.async kernel exists and the
    # TMA kernels decline such tensors, which the sm80 family then serves.
    ("90a", "fwd", DEFAULT_VARIANT): Family("sm90/fwd_ws_launch.hpp", "sm90::Sm90FwdWs", SM90_OPTIONS,
                                            head_dims=(64, 128, 192, 256), declines=True, dropout=True),
    ("90a", "bwd", DEFAULT_VARIANT): Family("sm90/bwd_launch.hpp", "sm90::Sm90Bwd", head_dims=(64, 128),
                                            deterministic=False, dropout=True),
    # Candidates measured against the default by name (benchmarks/bench_variants.py): the lockstep
    # cp.async kernel; the TMA kernel without ping-pong ("ws_lockstep"); with FA3's wider tiles
    # (192 x 128 at D 64, 128 x 176 at D 128: "ws_wide"); with three K/V stages ("ws_deep"); one
    # block per SM looping over tiles ("ws_persistent").
    ("90a", "fwd", "cp_async"): Family("sm90/fwd_launch.hpp", "sm90::Sm90Fwd", head_dims=(64, 128)),
    ("90a", "fwd", "ws_lockstep"): Family("sm90/fwd_ws_launch.hpp", "sm90::Sm90FwdWsLockstep", SM90_OPTIONS,
                                          head_dims=(64, 128, 192, 256), declines=True),
    ("90a", "fwd", "ws_wide"): Family("sm90/fwd_ws_launch.hpp", "sm90::Sm90FwdWsWide", SM90_OPTIONS,
                                      head_dims=(64, 128), declines=True),
    ("90a", "fwd", "ws_deep"): Family("sm90/fwd_ws_launch.hpp", "sm90::Sm90FwdWsDeep", SM90_OPTIONS,
                                      head_dims=(64, 128), declines=True),
    ("90a", "fwd", "ws_persistent"): Family("sm90/fwd_ws_launch.hpp", "sm90::Sm90FwdWsPersistent", SM90_OPTIONS,
                                            head_dims=(64, 128), declines=True),
    # The default's tiles and ping-pong with the clamp-free score function (SigmoidViaExp2Relu: one
    # instruction fewer per score, P packed with cvt.rn.relu, O scaled at the end).
    ("90a", "fwd", "ws_relu"): Family("sm90/fwd_ws_launch.hpp", "sm90::Sm90FwdWsRelu", SM90_OPTIONS,
                                      head_dims=(64, 128, 192, 256), declines=True),
    # ws_relu with one reciprocal in 4 by rcp.approx instead of the FMA estimate
    # (SigmoidViaExp2ReluMix<4>): fewer instructions per score for more special-function ops.
    ("90a", "fwd", "ws_mix4"): Family("sm90/fwd_ws_launch.hpp", "sm90::Sm90FwdWsMix4", SM90_OPTIONS,
                                      head_dims=(64, 128, 192, 256), declines=True),
    # The sm90 backward with its dQ additions in a fixed order (per-tile counters in the workspace,
    # common/dq_semaphore.hpp): bitwise reproducible, for either mode; by name until measured
    # against the sm80 family's deterministic backward.
    ("90a", "bwd", "det"): Family("sm90/bwd_launch.hpp", "sm90::Sm90BwdDeterministic", head_dims=(64, 128),
                                  deterministic=True, dropout=True),
}
VARIANTS = sorted({variant for (_, _, variant) in FAMILIES if variant != DEFAULT_VARIANT})

# nvcc targets per arch ("|"-separated flags). The sm80 family is machine code for every GPU it is
# meant to run on (sm_80 SASS does not run on sm_90, so the H100 needs its own) plus PTX for later
# GPUs; --sm80-sass narrows the list (the GPU test tier builds only what its card runs). Its sm_90
# machine code is compiled from compute_90, so that the same mma.sync kernels may use what sm_90
# adds (__CUDA_ARCH__ >= 900: the backward's paired dQ reductions, 16-20% faster at head dim 64).
# A build of both 80-class and 90 SASS therefore runs the front end twice (compute_80, compute_90);
# a build of sm_90 alone runs it once and carries compute_90 PTX. sm_90a (not sm_90) is needed for
# wgmma and setmaxnreg.
def gencode(arch, sm80_sass):
    if arch == "80":
        ampere = [s for s in sm80_sass if s != "90"]
        if not ampere:
            return "-gencode=arch=compute_90,code=[sm_90,compute_90]"
        flags = [f"-gencode=arch=compute_80,code=[{','.join(['sm_' + s for s in ampere] + ['compute_80'])}]"]
        if "90" in sm80_sass:
            flags.append("-gencode=arch=compute_90,code=sm_90")
        return "|".join(flags)
    return "-gencode=arch=compute_90a,code=sm_90a"


# The lowest compute capability (x10) that the sm80 family's code of this build runs on: 80 with the
# compute_80 PTX, 90 for a build of sm_90 machine code alone (its PTX is compute_90). The registry
# reports Unsupported below it instead of failing at launch.
def sm80_min_device_arch(sm80_sass):
    return 90 if all(s == "90" for s in sm80_sass) else 80


# The decode kernel: buckets, host side (Sm80Decode<Element, head_dim>::run(params, stream)).
DECODE_HEAD_DIMS = (64, 128, 256)
DECODE_HEADER, DECODE_KERNEL = "sm80/decode_launch.hpp", "sm80::Sm80Decode"

ARCHS = ("80", "90a")
ARCH_NUMBER = {"80": 80, "90a": 90}

def keys(archs, head_dims, dtypes, directions, masks, bwd_head_dims=None, variants=None):
    """Every (arch, direction, variant, dtype, head_dim, mask) that survives the filters; variants
    None keeps every variant, else the default and those listed."""
    for (arch, direction, variant), family in FAMILIES.items():
        if arch not in archs or direction not in directions:
            continue
        if variant != DEFAULT_VARIANT and variants is not None and variant not in variants:
            continue
        for dtype, head_dim, mask in itertools.product(dtypes, head_dims, masks):
            if direction == "bwd" and bwd_head_dims is not None and head_dim not in bwd_head_dims:
                continue
            if family.head_dims is None or head_dim in family.head_dims:
                yield arch, direction, variant, dtype, head_dim, mask

def decode_bucket(head_dim):
    return next(b for b in DECODE_HEAD_DIMS if b >= head_dim)


def decode_keys(archs, head_dims, dtypes, directions, decode_head_dims=None):
    """Every (arch, dtype, bucket) of the decode kernel: built with the forward, as sm80-family code
    when that family is built (it runs on sm_80 and sm_90), else as sm_90a; the buckets that cover
    head_dims unless decode_head_dims lists them."""
    if "fwd" not in directions or not archs:
        return []
    arch = "80" if "80" in archs else "90a"
    buckets = sorted(set(decode_head_dims) if decode_head_dims else {decode_bucket(h) for h in head_dims})
    return [(arch, dtype, bucket) for dtype in dtypes for bucket in buckets]


def decode_key_name(arch, dtype, head_dim):
    return f"sm{arch}_decode_{dtype}_hdim{head_dim}"


def key_name(arch, direction, variant, dtype, head_dim, mask):
    family = f"{direction}_{variant}" if variant else direction
    return f"sm{arch}_{family}_{dtype}_hdim{head_dim}_mask_{mask}"

def write_if_changed(path, text):
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return
    with open(path, "w") as f:
        f.write(text)

def generate(out_dir, selected, sm80_sass, decode=()):
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    decls, entries, decode_entries = [], [], []
    for arch, dtype, head_dim in decode:
        name = decode_key_name(arch, dtype, head_dim)
        text = (
            f"// Generated by src/dispatch/kernel_table.py: decode kernel {name}. Do not edit.\n"
            f'#include "{DECODE_HEADER}"\n\n'
            f"namespace flash_sigmoid::dispatch {{\n"
            f"cudaError_t launch_{name}(const DecodeParams& params, cudaStream_t stream) {{\n"
            f"  return {DECODE_KERNEL}<{DTYPES[dtype][0]}, {head_dim}>::run(params, stream);\n"
            f"}}\n"
            f"cudaError_t append_{name}(const AppendParams& params, cudaStream_t stream) {{\n"
            f"  return {DECODE_KERNEL}<{DTYPES[dtype][0]}, {head_dim}>::append(params, stream);\n"
            f"}}\n"
            f"}}  // namespace flash_sigmoid::dispatch\n"
        )
        path = os.path.join(out_dir, f"{name}.cu")
        write_if_changed(path, text)
        paths.append((path, arch, ()))
        decls.append(f"cudaError_t launch_{name}(const DecodeParams&, cudaStream_t);")
        decls.append(f"cudaError_t append_{name}(const AppendParams&, cudaStream_t);")
        decode_entries.append(f'    {{"{name}", {ARCH_NUMBER[arch]}, {DTYPES[dtype][1]}, {head_dim}, &launch_{name}, '
                              f'&append_{name}}},')
    for key in selected:
        arch, direction, variant, dtype, head_dim, mask = key
        family = FAMILIES[(arch, direction, variant)]
        params = "ForwardParams" if direction == "fwd" else "BackwardParams"
        name = key_name(*key)
        kernel = f"{family.kernel}<{DTYPES[dtype][0]}, {head_dim}, {MASKS[mask]}>"
        # The unit sees the kernel's headers and nothing of the public API (whose names, such as
        # flash_sigmoid::Tensor, would otherwise reach the kernels' namespaces).
        text = (
            f"// Generated by src/dispatch/kernel_table.py: kernel {name}. Do not edit.\n"
            f'#include "{family.header}"\n\n'
            f"namespace flash_sigmoid::dispatch {{\n"
            f"cudaError_t launch_{name}(const {params}& params, cudaStream_t stream) {{\n"
            f"  return {kernel}::run(params, stream);\n"
            f"}}\n"
            f"size_t workspace_{name}(const {params}& params) {{ return {kernel}::workspace_bytes(params); }}\n"
            + (f"const char* declines_{name}(const ForwardParams& params) {{ return {kernel}::declines(params); }}\n"
               if family.declines else "")
            + f"}}  // namespace flash_sigmoid::dispatch\n"
        )
        path = os.path.join(out_dir, f"{name}.cu")
        write_if_changed(path, text)
        paths.append((path, arch, family.options))

        decls.append(f"cudaError_t launch_{name}(const {params}&, cudaStream_t);")
        decls.append(f"size_t workspace_{name}(const {params}&);")
        if family.declines:
            decls.append(f"const char* declines_{name}(const ForwardParams&);")
        declines = f"&declines_{name}" if family.declines else "nullptr"
        fwd = f"&launch_{name}" if direction == "fwd" else "nullptr"
        bwd = f"&launch_{name}" if direction == "bwd" else "nullptr"
        fwd_ws = f"&workspace_{name}" if direction == "fwd" else "nullptr"
        bwd_ws = f"&workspace_{name}" if direction == "bwd" else "nullptr"
        deterministic = "true" if family.deterministic else "false"
        dropout = "true" if family.dropout else "false"
        entries.append(
            f'    {{"{name}", {ARCH_NUMBER[arch]}, Direction::k{direction.capitalize()}, "{variant}", '
            f"{DTYPES[dtype][1]}, {head_dim}, {MASKS[mask]}, {fwd}, {bwd}, {fwd_ws}, {bwd_ws}, {deterministic}, {declines}, "
            f"{dropout}}},"
        )
    registry = (
        "// Generated by src/dispatch/kernel_table.py: the compiled kernels. Do not edit.\n"
        + "\n".join(decls)
        + "\n\ninline constexpr KernelEntry kCompiledKernels[] = {\n"
        + "\n".join(entries)
        + ("\n" if entries else "")
        + '    {nullptr, 0, Direction::kFwd, "", DType::kFloat16, 0, MaskKind::kNone, nullptr, nullptr, nullptr, nullptr, '
          'false, nullptr, false},  // end\n'
        + "};\n\n"
        + "inline constexpr DecodeKernelEntry kCompiledDecodeKernels[] = {\n"
        + "\n".join(decode_entries)
        + ("\n" if decode_entries else "")
        + "    {nullptr, 0, DType::kFloat16, 0, nullptr, nullptr},  // end\n"
        + "};\n\n"
        + f"inline constexpr int kSm80FamilyMinDeviceArch = {sm80_min_device_arch(sm80_sass)};\n"
    )
    write_if_changed(os.path.join(out_dir, "kernel_registry.inc"), registry)
    return paths

def split(value):
    return [v for v in value.replace(",", ";").split(";") if v]

def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--archs", default="80;90a")
    p.add_argument("--head-dims", default=";".join(map(str, HEAD_DIMS)))
    p.add_argument("--dtypes", default=";".join(DTYPES))
    p.add_argument("--directions", default=";".join(DIRECTIONS))
    p.add_argument("--masks", default=";".join(MASKS))
    p.add_argument("--bwd-head-dims", default="", help="narrow the backward's buckets (default: --head-dims)")
    p.add_argument("--sm80-sass", default="80;90", help="SASS targets of the sm80 family (80, 86, 89, 90)")
    p.add_argument("--decode-head-dims", default="",
                   help="the decode kernel's buckets (64, 128, 256; default: those covering --head-dims)")
    p.add_argument("--variants", default="all",
                   help="non-default mainloop variants to build beside the defaults ('all', or a list; '' for none)")
    a = p.parse_args(argv)

    def check(values, allowed, what):
        for v in values:
            if v not in allowed:
                sys.exit(f"kernel_table.py: unknown {what} '{v}'; expected one of {', '.join(map(str, allowed))}")
        return values

    archs = check(split(a.archs), ARCHS, "arch")
    sm80_sass = check(split(a.sm80_sass), ["80", "86", "89", "90"], "sm80 SASS target")
    head_dims = [int(h) for h in check(split(a.head_dims), [str(h) for h in HEAD_DIMS], "head dim")]
    bwd_head_dims = [int(h) for h in check(split(a.bwd_head_dims), [str(h) for h in HEAD_DIMS], "head dim")] or None
    dtypes = check(split(a.dtypes), DTYPES, "dtype")
    directions = check(split(a.directions), DIRECTIONS, "direction")
    masks = check(split(a.masks), MASKS, "mask")
    variants = None if a.variants == "all" else check(split(a.variants), VARIANTS, "variant")
    decode_head_dims = [int(h) for h in check(split(a.decode_head_dims), [str(h) for h in DECODE_HEAD_DIMS],
                                              "decode head dim")]
    selected = list(keys(archs, head_dims, dtypes, directions, masks, bwd_head_dims, variants))
    decode = decode_keys(archs, head_dims, dtypes, directions, decode_head_dims)
    for path, arch, options in generate(a.out, selected, sm80_sass, decode):
        print("|".join([path, gencode(arch, sm80_sass), *options]))

if __name__ == "__main__":
    main(sys.argv[1:])
