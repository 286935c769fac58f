"""CPU tier: examples/train_lm.py's tiny configuration as a smoke test (issue 20): it runs, writes
the plot and the JSON, and FlashSigmoid's attention trains exactly like eager sigmoid attention from
the same initialisation and data (fp32 on CPU: the loss curves agree to rounding), while softmax
attention gives a different curve (so the comparison can tell implementations apart)."""
import importlib.util
import json
import pathlib

_ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("train_lm", _ROOT / "examples" / "train_lm.py")
train_lm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_lm)


def test_tiny_run_matches_eager_sigmoid(tmp_path):
    results = train_lm.main(["--tiny", "--out", str(tmp_path)])
    assert (tmp_path / "train_lm.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "train_lm.json").read_text())
    assert saved["settings"]["steps"] == 12 and set(saved["results"]) == {"flash_sigmoid", "eager_sigmoid",
                                                                         "sdpa_softmax"}
    ours, eager, softmax = (results[k]["loss"] for k in ("flash_sigmoid", "eager_sigmoid", "sdpa_softmax"))
    assert len(ours) == 12
    assert max(abs(a - b) for a, b in zip(ours, eager)) <= 1e-4
    assert max(abs(a - b) for a, b in zip(ours, softmax)) > 1e-3
