"""CPU tier: the parts of the benchmark harness (benchmarks/bench.py) that need no GPU — FLOP counts
against a dense mask and hand counts, the sweep's arguments, the timed steps on CPU tensors, one row
with a stand-in timer, the markdown tables, the plots and what the environment records."""
import dataclasses
import importlib.util
import json
import pathlib
import re
import subprocess
import types

import pytest
import torch

from reference import visible_mask

_ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("flash_sigmoid_bench", _ROOT / "benchmarks" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

PROVIDER = {p.key: p for p in bench.PROVIDERS}


# FLOPs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sq, sk, causal, window, pairs", [
    (4, 4, False, (-1, -1), 16),
    (4, 4, True, (-1, -1), 10),   # 1 + 2 + 3 + 4
    (2, 4, True, (-1, -1), 7),    # bottom-right: row 0 sees keys 0..2, row 1 all 4 (top-left would give 3)
    (4, 2, True, (-1, -1), 3),    # bottom-right: rows 0, 1 see nothing, row 2 key 0, row 3 keys 0..1
    (4, 4, False, (1, 1), 10),    # 2 + 3 + 3 + 2
    (3, 5, False, (0, 0), 3),     # the diagonal q_idx + 2 only
    (4, 4, True, (1, -1), 7),     # 1 + 2 + 2 + 2
    (5, 3, False, (0, 0), 3),     # rows 0, 1 have their diagonal left of key 0
])
def test_visible_pairs_by_hand(sq, sk, causal, window, pairs):
    assert bench.visible_pairs(sq, sk, causal, window) == pairs


@pytest.mark.parametrize("sq, sk", [(1, 1), (7, 7), (5, 13), (13, 5), (16, 33), (33, 16)])
@pytest.mark.parametrize("causal, window", [(False, (-1, -1)), (True, (-1, -1)), (False, (3, 2)), (False, (0, -1)),
                                            (False, (-1, 4)), (True, (5, -1)), (False, (40, 40))])
def test_visible_pairs_match_the_dense_mask(sq, sk, causal, window):
    dense = int(visible_mask(sq, sk, causal, window, "cpu").sum())
    assert bench.visible_pairs(sq, sk, causal, window) == dense


def test_square_causal_is_about_half():
    s = 16384
    assert bench.visible_pairs(s, s, True) == s * (s + 1) // 2
    assert bench.attention_flops(1, 1, s, s, 1, causal=True) / bench.attention_flops(1, 1, s, s, 1) == \
        pytest.approx(0.5, abs=1e-4)


def test_attention_flops_directions():
    b, h, s, d = 2, 16, 1024, 128
    fwd = bench.attention_flops(b, h, s, s, d)
    assert fwd == 4 * b * h * s * s * d
    assert bench.attention_flops(b, h, s, s, d, direction="bwd") == 2.5 * fwd
    assert bench.attention_flops(b, h, s, s, d, direction="fwdbwd") == 3.5 * fwd
    assert bench.attention_flops(b, h, 2, 4, d, causal=True) == 4 * b * h * d * 7


@pytest.mark.parametrize("d, s, shape", [(64, 512, (32, 32)), (128, 8192, (2, 16)), (256, 16384, (1, 8)),
                                         (64, 32768, (1, 32))])
def test_case_shape_is_16k_tokens_and_hidden_2048(d, s, shape):
    assert bench.case_shape(d, s) == shape


# Arguments -----------------------------------------------------------------------------------------

def test_default_sweep_is_design_section_6():
    a = bench.parse_args([])
    assert a.head_dims == [64, 128, 256]
    assert a.seqlens == [512, 1024, 2048, 4096, 8192, 16384]
    assert a.causal == [False, True]
    assert len(bench.cases(a)) == 36
    assert not a.dry_run and a.json is None and a.markdown is None and a.plot is None


def test_quick_and_explicit_options():
    a = bench.parse_args(["--quick"])
    assert (a.head_dims, a.seqlens) == ([64, 128], [1024, 8192])
    a = bench.parse_args(["--quick", "--head-dims", "256", "--causal", "yes"])
    assert (a.head_dims, a.seqlens, a.causal) == ([256], [1024, 8192], [True])
    a = bench.parse_args(["--seqlens", "512", "--causal", "no", "--json", "x.json", "--markdown", "x.md",
                          "--plot", "p", "--dry-run"])
    assert (a.head_dims, a.seqlens, a.causal) == ([64, 128, 256], [512], [False])
    assert (a.json, a.markdown, a.plot, a.dry_run) == ("x.json", "x.md", "p", True)
    assert bench.cases(a) == [(64, 512, False), (128, 512, False), (256, 512, False)]


@pytest.mark.parametrize("argv", [["--causal", "maybe"], ["--head-dims", "x"], ["--no-such-option"]])
def test_bad_arguments_exit(argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_dry_run_needs_no_gpu(capsys):
    assert bench.main(["--dry-run", "--quick", "--causal", "yes"]) == []
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("bench: 4 cases") and "flash_sigmoid" in lines[0]
    if importlib.util.find_spec("flash_attn") is None:
        assert lines[0].endswith("; flash_attn: not installed")
    assert lines[1] == "D= 64 S= 1024 causal=1: B=16 H=32, forward 68.8 GFLOP"
    assert len(lines) == 5


# Timed steps and one row, on CPU tensors -------------------------------------------------------------

def test_timed_steps_compute_the_gradients():
    """What is timed is the real work: the forward's output, and the gradients of the forward for the
    output gradient each step draws (the bwd step twice, from its retained graph)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 9, 3, 8, generator=g, dtype=torch.float64) for _ in range(3))
    attention = PROVIDER["eager_sigmoid"].attention
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    out = attention(qg, kg, vg, -1.0, True)
    assert torch.equal(bench.timed_step(attention, q, k, v, -1.0, True, "fwd")(), out.detach())
    for name in ("bwd", "fwdbwd"):
        torch.manual_seed(1)
        step = bench.timed_step(attention, q, k, v, -1.0, True, name)
        torch.manual_seed(1)
        expected = torch.autograd.grad(out, (qg, kg, vg), torch.randn_like(out), retain_graph=True)
        for _ in range(2):
            for got, want in zip(step(), expected):
                torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not q.requires_grad and q.grad is None  # the caller's tensors are left alone


def test_run_case_with_a_stand_in_timer(monkeypatch):
    """A row from CPU tensors and a timer that runs each step once and says 1 ms: its keys, the FLOPs
    of each direction, a provider that fails (SDPA cuDNN on CPU) and one skipped by max_seqlen."""
    monkeypatch.setattr(bench, "TOTAL_TOKENS", 64)
    monkeypatch.setattr(bench, "HIDDEN", 128)
    monkeypatch.setattr(bench, "check", lambda *args: 2.5e-3)
    calls = []
    monkeypatch.setattr(bench, "bench_ms", lambda fn: (calls.append(fn()), 1.0)[1])
    monkeypatch.setattr(bench, "peak_memory_mb", lambda fn: (fn(), 12.0)[1])
    short = dataclasses.replace(PROVIDER["eager_sigmoid"], key="eager_short", max_seqlen=16)
    providers = [PROVIDER["eager_sigmoid"], PROVIDER["sdpa_cudnn"], short]
    row = bench.run_case(providers, 64, 32, True, dtype=torch.float32, device="cpu")
    b, h = 2, 2
    assert (row["batch"], row["heads"], row["dtype"], row["rel_err_exp2"]) == (b, h, "float32", 2.5e-3)
    fwd_tflops = bench.attention_flops(b, h, 32, 32, 64, causal=True) / 1e9
    assert row["eager_sigmoid"] == pytest.approx(fwd_tflops)
    assert row["eager_sigmoid_bwd"] == pytest.approx(2.5 * fwd_tflops)
    assert row["eager_sigmoid_fwdbwd"] == pytest.approx(3.5 * fwd_tflops)
    assert row["peak_mb_eager_sigmoid"] == 12.0
    for name in ("sdpa_cudnn", "sdpa_cudnn_bwd", "sdpa_cudnn_fwdbwd"):
        assert row[name] is None and row[name + "_error"]
    assert "peak_mb_sdpa_cudnn" not in row
    for name in ("eager_short", "eager_short_bwd", "eager_short_fwdbwd"):
        assert row[name] is None and row[name + "_error"] == "skipped above S = 16"
    assert row["speedup_vs_sdpa_flash"] is None and row["speedup_vs_sdpa_flash_fwdbwd"] is None
    assert len(calls) == 3  # eager: fwd, bwd, fwdbwd
    json.dumps(row)  # a row goes into the JSON as it is


# Reports -------------------------------------------------------------------------------------------

ENV = dict(gpu="NVIDIA H100 80GB HBM3", sms=132, clocks=dict(sm_mhz=1755, sm_max_mhz=1980, mem_mhz=2619),
           clocks_after_run=dict(sm_mhz=1980, sm_max_mhz=1980, mem_mhz=2619), torch="2.11.0+cu130", cuda="13.0",
           cudnn=91900, triton="3.6.0", commit="abc1234", skipped={"flash_attn": "not installed"},
           date="2026-11-25 15:34 UTC")


def synthetic_row(d, s, causal, **values):
    row = dict(head_dim=d, seqlen=s, batch=16384 // s, heads=2048 // d, causal=causal, dtype="bfloat16",
               rel_err_exp2=2.3e-3)
    for p in bench.PROVIDERS:
        for direction in bench.DIRECTIONS:
            if direction.name in p.directions:
                row[p.key + direction.suffix] = 100.0
    row.update(values)
    return row


def parse_tables(text):
    """{heading line: [header cells, rows of cells...]} of the markdown tables in text."""
    tables, heading = {}, None
    for line in text.splitlines():
        if line.startswith("|"):
            if not line.startswith("|---"):
                tables.setdefault(heading, []).append([c.strip() for c in line.strip("|").split("|")])
        elif line.strip():
            heading = line
    return tables


def test_markdown_header_tables_and_cells():
    rows = [synthetic_row(64, 1024, False, flash_sigmoid=200.0, sdpa_flash=250.0, speedup_vs_sdpa_flash=0.8,
                          flash_sigmoid_fwdbwd=175.0, speedup_vs_sdpa_flash_fwdbwd=0.7, peak_mb_flash_sigmoid=384.0),
            synthetic_row(128, 16384, True, eager_sigmoid=None, eager_sigmoid_error="skipped above S = 8192",
                          sdpa_cudnn_bwd=None, sdpa_cudnn_bwd_error="No available kernel")]
    text = bench.markdown(rows, ENV)
    header = text.splitlines()[0]
    for fact in ("NVIDIA H100 80GB HBM3", "132 SMs", "max 1980 MHz", "1755 MHz at the start",
                 "1980 MHz right after the run", "torch 2.11.0+cu130", "CUDA 13.0", "commit abc1234",
                 "2026-11-25 15:34 UTC"):
        assert fact in header
    assert "Not timed: flash-attn (softmax): not installed." in text
    tables = parse_tables(text)
    fwd, bwd, fwdbwd, peak = (next(t for h, t in tables.items() if h.startswith(start)) for start in
                              ("Forward TFLOP/s", "Backward TFLOP/s", "Forward + backward TFLOP/s", "Peak MiB"))
    assert len(tables) == 4
    for t in (fwd, bwd, fwdbwd, peak):
        assert len(t) == 3 and all(len(r) == len(t[0]) for r in t)  # header + 2 rows, every row full
        assert t[0][:3] == ["D", "S", "causal"] and "flash-attn (softmax)" not in t[0]
    assert "FlashSigmoid (tanh)" in fwd[0] and "FlashSigmoid (tanh)" not in bwd[0]
    assert "eager sigmoid" in fwdbwd[0] and "rel. err" in fwd[0] and "rel. err" not in bwd[0]
    cell = lambda t, r, col: t[r][t[0].index(col)]  # noqa: E731
    assert cell(fwd, 1, "FlashSigmoid (exp2)") == "200" and cell(fwd, 1, "SDPA flash (FA2, softmax)") == "250"
    assert cell(fwd, 1, "FlashSigmoid vs SDPA flash") == "0.80×" and cell(fwd, 1, "rel. err") == "2.3e-03"
    assert cell(fwdbwd, 1, "FlashSigmoid (exp2)") == "175" and cell(fwdbwd, 1, "FlashSigmoid vs SDPA flash") == "0.70×"
    assert cell(bwd, 1, "FlashSigmoid vs SDPA flash") == "—"
    assert cell(fwd, 2, "eager sigmoid") == "—" and cell(bwd, 2, "SDPA cuDNN (softmax)") == "—"
    assert cell(fwd, 2, "causal") == "yes" and cell(fwd, 2, "S") == "16384"
    assert cell(peak, 1, "FlashSigmoid (exp2)") == "384" and cell(peak, 2, "FlashSigmoid (exp2)") == "—"
    assert "- eager_sigmoid (1 case, e.g. D=128 S=16384): skipped above S = 8192" in text
    assert "- sdpa_cudnn_bwd (1 case, e.g. D=128 S=16384): No available kernel" in text


def test_markdown_shows_flash_attn_when_it_ran():
    env = dict(ENV, skipped={}, flash_attn="2.8.3")
    text = bench.markdown([synthetic_row(64, 512, False, flash_attn_fwdbwd=321.0)], env)
    assert "flash-attn 2.8.3" in text.splitlines()[0] and "Not timed" not in text
    tables = parse_tables(text)
    fwdbwd = next(t for h, t in tables.items() if h.startswith("Forward + backward"))
    assert fwdbwd[1][fwdbwd[0].index("flash-attn (softmax)")] == "321"


def test_plot_writes_one_png_per_head_dim(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [synthetic_row(d, s, c) for d in (64, 256) for s in (512, 1024) for c in (False, True)]
    paths = bench.plot(rows, ENV, str(tmp_path / "bench"))
    assert paths == [str(tmp_path / "bench_d64.png"), str(tmp_path / "bench_d256.png")]
    assert all(pathlib.Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


# Environment ---------------------------------------------------------------------------------------

def test_commit_prefers_the_environment_variable(monkeypatch):
    monkeypatch.setenv("FLASH_SIGMOID_COMMIT", "deadbeef")
    assert bench.commit() == "deadbeef"
    monkeypatch.delenv("FLASH_SIGMOID_COMMIT")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        assert bench.commit().startswith("unknown")
    else:
        assert re.fullmatch(re.escape(head.stdout.strip()) + r"(-dirty)?", bench.commit())


def test_nvidia_smi_clocks_are_parsed():
    assert bench.parse_nvidia_smi_clocks("1755, 1980, 2619\n") == dict(sm_mhz=1755, sm_max_mhz=1980, mem_mhz=2619,
                                                                        source="nvidia-smi")
    assert bench.parse_nvidia_smi_clocks("") is None
    assert bench.parse_nvidia_smi_clocks("[N/A], 1980, 2619") is None


def test_flash_attn_is_reported_when_missing():
    skipped = bench.unavailable_providers()
    if importlib.util.find_spec("flash_attn") is None:
        assert skipped == {"flash_attn": "not installed"}
    else:
        assert set(skipped) <= {"flash_attn"}


def test_gpu_clocks_asks_nvidia_smi_about_this_device_then_falls_back(monkeypatch):
    props = types.SimpleNamespace(pci_domain_id=0, pci_bus_id=0x18, pci_device_id=0, clock_rate=1980000)
    monkeypatch.setattr(bench.torch.cuda, "get_device_properties", lambda device: props)
    commands = []

    def nvidia_smi(argv, **kwargs):
        commands.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout="1755, 1980, 2619\n", stderr="")
    monkeypatch.setattr(bench.subprocess, "run", nvidia_smi)
    assert bench.gpu_clocks(0) == dict(sm_mhz=1755, sm_max_mhz=1980, mem_mhz=2619, source="nvidia-smi")
    assert commands[0][0] == "nvidia-smi" and "--id=00000000:18:00.0" in commands[0]

    def missing(argv, **kwargs):
        raise FileNotFoundError(argv[0])

    def no_pynvml(device=None):
        raise ModuleNotFoundError("pynvml")
    monkeypatch.setattr(bench.subprocess, "run", missing)
    monkeypatch.setattr(bench.torch.cuda, "clock_rate", no_pynvml)
    assert bench.gpu_clocks(0) == dict(sm_mhz=None, sm_max_mhz=1980, mem_mhz=None, source="torch")
