"""FlashSigmoid benchmark harness (DESIGN §6).

TFLOP/s of FlashSigmoid and the baselines, measured in the same run on the same GPU: PyTorch SDPA with
the FLASH_ATTENTION backend (FA2, softmax), SDPA with the CUDNN_ATTENTION backend (softmax), flash-attn
(softmax, when it is installed) and eager PyTorch sigmoid attention. Three directions: the forward,
the backward alone (the backward of a retained graph) and one forward + backward step. FLOPs are
4·B·H·Sq·Sk·D times the visible fraction of (i, j) pairs, 2.5× that for the backward and 3.5× for
forward + backward. Every time is the median of triton.testing.do_bench (cold L2), and every
provider is timed through the same helper (`timed_step`, `bench_ms`). The exp2 forward of each
configuration is checked against the fp64 reference on a slice before it is timed (the GPU tests
check the rest).

    python benchmarks/bench.py [--quick] [--head-dims 64 128] [--seqlens 1024 8192] [--causal yes]
                               [--json out.json] [--markdown out.md] [--plot out/bench] [--dry-run]

The default sweep is DESIGN §6's: S 512 … 16k, D 64/128/256, causal and not. --dry-run lists the
cases and the providers without a GPU. What needs no GPU (FLOPs, tables, plots, arguments) is tested
in tests/python/test_bench_cpu.py.
"""
import argparse
import dataclasses
import importlib
import json
import math
import os
import subprocess
import sys
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "gpu"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
from reference import attention_reference, visible_mask  # noqa: E402

TOTAL_TOKENS, HIDDEN = 16384, 2048  # DESIGN §6: batch·seqlen = 16k, H = 2048 / D
DEFAULT_HEAD_DIMS, DEFAULT_SEQLENS = [64, 128, 256], [512, 1024, 2048, 4096, 8192, 16384]
QUICK_HEAD_DIMS, QUICK_SEQLENS = [64, 128], [1024, 8192]


# ---------------------------------------------------------------------------------------------------
# FLOPs

@dataclasses.dataclass(frozen=True)
class Direction:
    name: str           # "fwd", "bwd", "fwdbwd"
    suffix: str         # of the row keys: "flash_sigmoid" + suffix
    flop_factor: float  # FLOPs relative to the forward's (DESIGN §6: backward 2.5×)
    title: str          # plot panels
    heading: str        # markdown sections


DIRECTIONS = (Direction("fwd", "", 1.0, "forward", "Forward TFLOP/s"),
              Direction("bwd", "_bwd", 2.5, "backward",
                        "Backward TFLOP/s (the backward of a retained graph; 2.5× the forward's FLOPs)"),
              Direction("fwdbwd", "_fwdbwd", 3.5, "forward + backward",
                        "Forward + backward TFLOP/s (one training step; 3.5× the forward's FLOPs)"))
DIRECTION = {d.name: d for d in DIRECTIONS}


def visible_pairs(sq, sk, causal=False, window=(-1, -1)):
    """Visible (q_idx, k_idx) pairs of DESIGN §1's bottom-right aligned band: key k_idx is visible from
    query q_idx when q_idx + Sk − Sq − left ≤ k_idx ≤ q_idx + Sk − Sq + right (−1: unbounded; causal
    is right = 0)."""
    left, right = window
    if causal:
        right = 0
    pairs = 0
    for q_idx in range(sq):
        diag = q_idx + sk - sq
        lo = max(0, diag - left) if left >= 0 else 0
        hi = min(sk - 1, diag + right) if right >= 0 else sk - 1
        pairs += max(0, hi - lo + 1)
    return pairs


def attention_flops(batch, heads, sq, sk, head_dim, causal=False, window=(-1, -1), direction="fwd"):
    """4·B·H·D per visible pair (two matmuls), times the direction's factor."""
    return 4 * batch * heads * head_dim * visible_pairs(sq, sk, causal, window) * DIRECTION[direction].flop_factor


def case_shape(head_dim, seqlen):
    """(batch, heads) of DESIGN §6's shapes: batch·seqlen = 16k tokens, hidden 2048."""
    return max(TOTAL_TOKENS // seqlen, 1), HIDDEN // head_dim


# ---------------------------------------------------------------------------------------------------
# Providers: each is attention(q, k, v [B, S, H, D], bias, causal) -> out, differentiable where it
# has a backward. FlashSigmoid and flash-attn are imported on first use, so the parts of this harness
# that need no GPU need no build either.

def flash_sigmoid_attention(score_function, kernel_arch=0, kernel_variant=""):
    def attention(q, k, v, bias, causal):
        import flash_sigmoid
        return flash_sigmoid.forward(q, k, v, sigmoid_bias=bias, causal=causal, score_function=score_function,
                                     kernel_arch=kernel_arch, kernel_variant=kernel_variant)
    return attention


def sdpa_attention(backend):
    def attention(q, k, v, bias, causal):  # softmax: a scalar bias changes nothing
        with sdpa_kernel(backend):  # SDPA takes [B, H, S, D]: transposed views, no copies
            out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), is_causal=causal)
        return out.transpose(1, 2)
    return attention


def flash_attn_attention(q, k, v, bias, causal):  # softmax: a scalar bias changes nothing
    from flash_attn import flash_attn_func
    return flash_attn_func(q, k, v, causal=causal)


def eager_sigmoid_attention(q, k, v, bias, causal):
    """Eager PyTorch sigmoid attention in the inputs' dtype, in [B, H, S, D] like SDPA."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    p = torch.sigmoid(torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5) + bias)
    if causal:
        p = p.masked_fill(~visible_mask(q.shape[-2], k.shape[-2], True, (-1, -1), q.device), 0)
    return torch.matmul(p, v).transpose(1, 2)


@dataclasses.dataclass(frozen=True)
class Provider:
    key: str                    # row keys: key + direction suffix
    label: str                  # table column and plot legend
    attention: Callable         # (q, k, v [B, S, H, D], bias, causal) -> out [B, S, H, D]
    directions: tuple = ("fwd", "bwd", "fwdbwd")
    color: Optional[str] = None  # None: not plotted
    max_seqlen: Optional[int] = None  # longer sequences are skipped (eager: S×S score matrices)
    module: Optional[str] = None      # Python module it needs; skipped and reported when not importable


PROVIDERS = (
    Provider("flash_sigmoid", "FlashSigmoid (exp2)", flash_sigmoid_attention("exp2"), color="tab:blue"),
    Provider("flash_sigmoid_tanh", "FlashSigmoid (tanh)", flash_sigmoid_attention("tanh"), ("fwd",),
             color="tab:cyan"),
    # The sm80 (mma.sync) kernels by name: on an H100 the first column is the sm90 (wgmma) family
    # where one is built, and this one keeps the Ampere path measured next to it.
    Provider("flash_sigmoid_sm80", "FlashSigmoid sm80 (exp2)", flash_sigmoid_attention("exp2", 80), ("fwd", "bwd"),
             color="tab:green"),
    # The sm90 cp.async forward (the default before the TMA kernel) by name, on sm_90 only.
    Provider("flash_sigmoid_cp_async", "FlashSigmoid sm90 cp.async (exp2)", flash_sigmoid_attention("exp2", 90, "cp_async"),
             ("fwd",), color="tab:olive"),
    Provider("sdpa_flash", "SDPA flash (FA2, softmax)", sdpa_attention(SDPBackend.FLASH_ATTENTION), color="tab:red"),
    Provider("sdpa_cudnn", "SDPA cuDNN (softmax)", sdpa_attention(SDPBackend.CUDNN_ATTENTION), color="tab:purple"),
    Provider("flash_attn", "flash-attn (softmax)", flash_attn_attention, color="tab:orange", module="flash_attn"),
    Provider("eager_sigmoid", "eager sigmoid", eager_sigmoid_attention, max_seqlen=8192),
)
BASELINE = "sdpa_flash"  # the "vs" columns: FlashSigmoid (exp2) over this


def unavailable_providers():
    """{key: reason} for the providers whose module cannot be imported here ("not installed")."""
    skipped = {}
    for p in PROVIDERS:
        if p.module:
            try:
                importlib.import_module(p.module)
            except ModuleNotFoundError as e:
                skipped[p.key] = "not installed" if e.name == p.module else f"not importable: {e}"
            except ImportError as e:  # installed, but built against another torch or CUDA
                skipped[p.key] = f"not importable: {str(e).splitlines()[0][:120]}"
    return skipped


# ---------------------------------------------------------------------------------------------------
# Timing (GPU)

def bench_ms(fn):
    """Median milliseconds of fn, L2 flushed before each call: the one timing method of this harness."""
    from triton.testing import do_bench
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def timed_step(attention, q, k, v, bias, causal, direction):
    """The callable timed for one direction: the forward; the backward of a graph kept by the closure;
    or a whole forward + backward step. Every provider goes through here, so all are timed alike."""
    if direction == "fwd":
        return lambda: attention(q, k, v, bias, causal)
    inputs = tuple(t.detach().requires_grad_() for t in (q, k, v))
    out = attention(*inputs, bias, causal)
    dout = torch.randn_like(out)  # the memory layout of the provider's own output
    if direction == "bwd":
        return lambda: torch.autograd.grad(out, inputs, dout, retain_graph=True)
    # This closure does not hold `out`: that graph is freed on return, the step builds its own.
    return lambda: torch.autograd.grad(attention(*inputs, bias, causal), inputs, dout)


def peak_memory_mb(fn):
    """MiB that fn allocates above what is allocated before it, at its peak."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def first_line(error, width=160):
    return (str(error).splitlines() or [type(error).__name__])[0][:width]


def check(q, k, v, bias, causal):
    """Relative Frobenius error of FlashSigmoid (exp2) vs fp64 on the last 256 query rows of batch 0."""
    qs, ks, vs = q[:1, -256:], k[:1], v[:1]
    out = flash_sigmoid_attention("exp2")(qs, ks, vs, bias, causal)
    ref = attention_reference(qs, ks, vs, sigmoid_bias=bias, causal=causal)
    return ((out.double() - ref).norm() / ref.norm()).item()


def run_case(providers, d, s, causal, dtype=torch.bfloat16, device="cuda"):
    """One row: shapes, the FlashSigmoid error, TFLOP/s per provider and direction (None, with a
    `<key>_error`, where it could not run) and the peak memory of one forward + backward."""
    b, h = case_shape(d, s)
    gen = torch.Generator(device=device).manual_seed(s * 1000 + d)
    q, k, v = (torch.randn(b, s, h, d, device=device, dtype=dtype, generator=gen) for _ in range(3))
    bias = -math.log(s)
    row = dict(head_dim=d, seqlen=s, batch=b, heads=h, causal=causal, dtype=str(dtype).removeprefix("torch."))
    try:
        row["rel_err_exp2"] = check(q, k, v, bias, causal)
    except RuntimeError as e:
        row["rel_err_exp2"], row["rel_err_exp2_error"] = None, first_line(e)
    for p in providers:
        for name in p.directions:
            key = p.key + DIRECTION[name].suffix
            row[key] = None
            if p.max_seqlen and s > p.max_seqlen:
                row[key + "_error"] = f"skipped above S = {p.max_seqlen}"
                continue
            try:
                ms = bench_ms(timed_step(p.attention, q, k, v, bias, causal, name))
                row[key] = attention_flops(b, h, s, s, d, causal, direction=name) / ms / 1e9
            except RuntimeError as e:  # not built, not supported for this shape, or out of memory
                row[key + "_error"] = first_line(e)
        if row.get(p.key + "_fwdbwd"):
            row["peak_mb_" + p.key] = peak_memory_mb(timed_step(p.attention, q, k, v, bias, causal, "fwdbwd"))
    for direction in DIRECTIONS:
        ours, theirs = row.get("flash_sigmoid" + direction.suffix), row.get(BASELINE + direction.suffix)
        row[f"speedup_vs_{BASELINE}{direction.suffix}"] = ours / theirs if ours and theirs else None
    return row


# ---------------------------------------------------------------------------------------------------
# Environment

def commit():
    """FLASH_SIGMOID_COMMIT if set, else `git rev-parse --short HEAD` (+ "-dirty" with local changes)."""
    if os.environ.get("FLASH_SIGMOID_COMMIT"):
        return os.environ["FLASH_SIGMOID_COMMIT"]

    def git(*args):
        return subprocess.run(["git", *args], cwd=os.path.dirname(os.path.abspath(__file__)), capture_output=True,
                              text=True)
    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return "unknown (no git checkout; set FLASH_SIGMOID_COMMIT)"
        dirty = git("diff", "--quiet", "HEAD", "--").returncode != 0
    except OSError:
        return "unknown (no git; set FLASH_SIGMOID_COMMIT)"
    return head.stdout.strip() + ("-dirty" if dirty else "")


def parse_nvidia_smi_clocks(text):
    """'1755, 1980, 2619' (clocks.sm, clocks.max.sm, clocks.mem in MHz) -> dict; None if unparseable."""
    try:
        sm, sm_max, mem = (int(float(x)) for x in text.strip().splitlines()[0].split(","))
    except (ValueError, IndexError):
        return None
    return dict(sm_mhz=sm, sm_max_mhz=sm_max, mem_mhz=mem, source="nvidia-smi")


def gpu_clocks(device=0):
    """SM clocks now and at most, in MHz: from nvidia-smi for this device; else the maximum from the
    device properties and the current one from torch.cuda.clock_rate (needs pynvml)."""
    props = torch.cuda.get_device_properties(device)
    bus = (getattr(props, "pci_domain_id", 0), getattr(props, "pci_bus_id", None), getattr(props, "pci_device_id", 0))
    query = ["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,clocks.mem", "--format=csv,noheader,nounits"]
    if bus[1] is not None:
        query.append("--id={:08X}:{:02X}:{:02X}.0".format(*bus))
    try:
        clocks = parse_nvidia_smi_clocks(subprocess.run(query, capture_output=True, text=True, timeout=30).stdout)
    except (OSError, subprocess.TimeoutExpired):
        clocks = None
    if clocks:
        return clocks
    try:
        sm = torch.cuda.clock_rate(device)
    except Exception:  # pynvml missing or failing: the current clock stays unknown
        sm = None
    rate = getattr(props, "clock_rate", 0)  # kHz
    return dict(sm_mhz=sm, sm_max_mhz=rate // 1000 if rate else None, mem_mhz=None, source="torch")


def environment(skipped):
    """What a result needs beside it (DESIGN §6): GPU, clocks, versions, commit; `skipped` as given by
    unavailable_providers(). The clocks right after the run are added by main()."""
    import triton
    props = torch.cuda.get_device_properties(0)
    optional = {p.module: getattr(importlib.import_module(p.module), "__version__", "?")
                for p in PROVIDERS if p.module and p.key not in skipped}
    return dict(gpu=props.name, sms=props.multi_processor_count, clocks=gpu_clocks(0), torch=torch.__version__,
                cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), triton=triton.__version__,
                **optional, commit=commit(), skipped=skipped, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


# ---------------------------------------------------------------------------------------------------
# Reports: markdown and plots (no GPU needed)

def fmt(x, spec="{:.0f}"):
    return "—" if x is None else spec.format(x)


def clocks_text(env):
    start, end = env.get("clocks") or {}, env.get("clocks_after_run") or {}
    return (f"SM clock max {fmt(start.get('sm_max_mhz'))} MHz, {fmt(start.get('sm_mhz'))} MHz at the start, "
            f"{fmt(end.get('sm_mhz'))} MHz right after the run")


def shown_providers(env, direction):
    return [p for p in PROVIDERS if direction in p.directions and p.key not in env.get("skipped", {})]


def table(rows, columns):
    """A markdown table; columns are (header, row -> cell text)."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]


def markdown(rows, env):
    shape = [("D", lambda r: str(r["head_dim"])), ("S", lambda r: str(r["seqlen"])),
             ("causal", lambda r: "yes" if r["causal"] else "no")]
    def value(key, spec="{:.0f}"):
        return lambda r: fmt(r.get(key), spec)
    labels = {p.key: p.label for p in PROVIDERS}
    flash_attn = f", flash-attn {env['flash_attn']}" if env.get("flash_attn") else ""
    lines = [f"GPU {env['gpu']} ({env['sms']} SMs; {clocks_text(env)}), torch {env['torch']}, CUDA {env['cuda']}, "
             f"cuDNN {env.get('cudnn')}, triton {env.get('triton')}{flash_attn}, commit {env['commit']}, "
             f"{env['date']}.",
             "",
             f"{rows[0]['dtype'] if rows else 'bfloat16'}, bias = −log(S), B·S = {TOTAL_TOKENS}, H = {HIDDEN}/D; "
             "median of do_bench (cold L2). FLOPs = 4·B·H·S²·D × the visible fraction of (i, j) pairs."]
    lines += [f"Not timed: {labels[key]}: {why}." for key, why in env.get("skipped", {}).items()]
    for direction in DIRECTIONS:
        columns = shape + [(p.label, value(p.key + direction.suffix)) for p in shown_providers(env, direction.name)]
        columns.append(("FlashSigmoid vs SDPA flash", value(f"speedup_vs_{BASELINE}{direction.suffix}", "{:.2f}×")))
        if direction.name == "fwd":
            columns.append(("rel. err", value("rel_err_exp2", "{:.1e}")))
        lines += ["", direction.heading + ":", ""] + table(rows, columns)
    lines += ["", "Peak MiB allocated by one forward + backward:", ""]
    lines += table(rows, shape + [(p.label, value("peak_mb_" + p.key)) for p in shown_providers(env, "fwdbwd")])
    notes = {}
    for r in rows:
        for key, error in r.items():
            if key.endswith("_error"):
                notes.setdefault((key.removesuffix("_error"), error), []).append(r)
    if notes:
        lines += ["", "Not measured:", ""]
        lines += [f"- {key} ({len(rs)} case{'s' if len(rs) > 1 else ''}, e.g. D={rs[0]['head_dim']} "
                  f"S={rs[0]['seqlen']}): {error}" for (key, error), rs in notes.items()]
    return "\n".join(lines)


def plot(rows, env, path_prefix):
    """One PNG per head dim: a panel per direction, TFLOP/s against seqlen, causal dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    for d in sorted({r["head_dim"] for r in rows}):
        fig, axes = plt.subplots(1, len(DIRECTIONS), figsize=(6 * len(DIRECTIONS), 4.5), sharey=True)
        for ax, direction in zip(axes, DIRECTIONS):
            for p in shown_providers(env, direction.name):
                if p.color is None:
                    continue
                for causal, style in ((False, "-o"), (True, "--s")):
                    pts = [(r["seqlen"], r.get(p.key + direction.suffix)) for r in rows
                           if r["head_dim"] == d and r["causal"] == causal]
                    pts = [(x, y) for x, y in pts if y]
                    if pts:
                        ax.plot(*zip(*pts), style, color=p.color, label=f"{p.label}{' causal' if causal else ''}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("seqlen")
            ax.set_title(f"{direction.title}, D={d}")
            ax.grid(alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=7)
        axes[0].set_ylabel("TFLOP/s")
        fig.suptitle(f"{env['gpu']}, bf16, bias=-log(S), commit {env['commit']}", fontsize=9)
        path = f"{path_prefix}_d{d}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------
# Command line

def parse_args(argv=None):
    """Arguments, with the sweep resolved: head_dims, seqlens and causal (a list of bools)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head-dims", type=int, nargs="+", help=f"default {DEFAULT_HEAD_DIMS}")
    ap.add_argument("--seqlens", type=int, nargs="+", help=f"default {DEFAULT_SEQLENS}")
    ap.add_argument("--causal", choices=["both", "yes", "no"], default="both")
    ap.add_argument("--quick", action="store_true",
                    help=f"a smoke run: D {QUICK_HEAD_DIMS}, S {QUICK_SEQLENS} (--head-dims/--seqlens still win)")
    ap.add_argument("--json", help="write rows and environment here")
    ap.add_argument("--markdown", help="write the markdown tables here")
    ap.add_argument("--plot", help="write one PNG per head dim, named PREFIX_d<D>.png")
    ap.add_argument("--dry-run", action="store_true", help="list the cases and providers; needs no GPU")
    a = ap.parse_args(argv)
    a.head_dims = a.head_dims or (QUICK_HEAD_DIMS if a.quick else DEFAULT_HEAD_DIMS)
    a.seqlens = a.seqlens or (QUICK_SEQLENS if a.quick else DEFAULT_SEQLENS)
    a.causal = {"both": [False, True], "yes": [True], "no": [False]}[a.causal]
    return a


def cases(a):
    return [(d, s, c) for d in a.head_dims for s in a.seqlens for c in a.causal]


def progress(i, n, row, seconds):
    def speeds(key):
        return " / ".join(fmt(row.get(key + d.suffix)) for d in DIRECTIONS)
    return (f"[{i}/{n}] D={row['head_dim']:3d} S={row['seqlen']:5d} causal={int(row['causal'])} "
            f"(B={row['batch']} H={row['heads']}, {seconds:.0f} s): fwd / bwd / fwd+bwd TFLOP/s "
            f"FlashSigmoid {speeds('flash_sigmoid')}, SDPA flash {speeds(BASELINE)}, vs SDPA flash "
            + " / ".join(fmt(row.get(f"speedup_vs_{BASELINE}{d.suffix}"), "{:.2f}×") for d in DIRECTIONS))


def main(argv=None):
    a = parse_args(argv)
    skipped = unavailable_providers()
    providers = [p for p in PROVIDERS if p.key not in skipped]
    todo = cases(a)
    print(f"bench: {len(todo)} cases (D {a.head_dims}, S {a.seqlens}, causal {a.causal}); providers "
          + ", ".join(p.key for p in providers) + "".join(f"; {key}: {why}" for key, why in skipped.items()),
          flush=True)
    if a.dry_run:
        for d, s, c in todo:
            b, h = case_shape(d, s)
            print(f"D={d:3d} S={s:5d} causal={int(c)}: B={b} H={h}, forward "
                  f"{attention_flops(b, h, s, s, d, c) / 1e9:.1f} GFLOP")
        return []
    if not torch.cuda.is_available():
        sys.exit("bench.py times CUDA kernels and needs a GPU (--dry-run lists the cases without one)")
    importlib.import_module("flash_sigmoid")  # fails here, with the package's own message, when it is not built
    torch.manual_seed(0)
    env = environment(skipped)
    print(f"{env['gpu']}, SM clock max {fmt(env['clocks']['sm_max_mhz'])} MHz, torch {env['torch']}, "
          f"CUDA {env['cuda']}, commit {env['commit']}", flush=True)
    rows, t0 = [], time.perf_counter()
    for d, s, c in todo:
        t = time.perf_counter()
        rows.append(run_case(providers, d, s, c))
        print(progress(len(rows), len(todo), rows[-1], time.perf_counter() - t), flush=True)
    env["clocks_after_run"] = gpu_clocks(0)
    env["seconds"] = round(time.perf_counter() - t0)
    text = markdown(rows, env)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(environment=env, rows=rows), f, indent=1)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text + "\n")
    if a.plot:
        print("plots:", ", ".join(plot(rows, env, a.plot)))
    return rows


if __name__ == "__main__":
    main()
