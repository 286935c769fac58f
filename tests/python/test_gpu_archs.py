"""CPU tier: the default kernel architectures (cmake/gpu_archs.cmake) for each GPU a build machine
may have, with the detected compute capability simulated (FLASH_SIGMOID_GPU_CC, or a stand-in
nvidia-smi on PATH), and the explicit choices that override it."""
import os
import pathlib
import shutil
import subprocess

import pytest

_ROOT = pathlib.Path(__file__).resolve().parents[2]
_SCRIPT = _ROOT / "tests" / "cmake" / "print_gpu_archs.cmake"
pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not on PATH")


def resolve(defines=(), gpu_cc=None, path=None):
    env = {k: v for k, v in os.environ.items() if k != "FLASH_SIGMOID_GPU_CC"}
    if gpu_cc is not None:
        env["FLASH_SIGMOID_GPU_CC"] = gpu_cc
    if path is not None:
        env["PATH"] = f"{path}:{env['PATH']}"
    cmd = [shutil.which("cmake"), *(f"-D{d}" for d in defines), "-P", str(_SCRIPT)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        return {"error": run.stderr}
    return dict(line.split("=", 1) for line in run.stderr.splitlines() if "=" in line)


@pytest.mark.parametrize("cc, archs, sass", [
    ("none", "", "80;90"),       # no GPU: no kernels
    ("9.0", "80;90a", "90"),     # H100/H200: both families, the sm80 family as sm_90 code
    ("8.0", "80", "80"),         # A100
    ("8.6", "80", "86"),
    ("8.9", "80", "89"),
    ("8.7", "80", "80"),         # sm_80 code runs on every 8.x
    ("7.5", "", "80;90"),        # below 8.0: nothing runs there
    ("10.0", "80", "90"),        # later GPUs: compute_90 PTX of the sm80 family
    ("8.0, 9.0", "80;90a", "80;90"),
])
def test_auto_follows_the_gpu(cc, archs, sass):
    got = resolve(gpu_cc=cc)
    assert (got["archs"], got["sm80_sass"]) == (archs, sass), got
    assert "FLASH_SIGMOID_ARCHS" in got["why"]


def test_no_gpu_says_why():
    assert "no GPU visible" in resolve(gpu_cc="none")["why"]


def test_nvidia_smi_is_asked(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 9.0\necho 9.0\n")
    smi.chmod(0o755)
    got = resolve(path=tmp_path)
    assert (got["archs"], got["sm80_sass"]) == ("80;90a", "90"), got
    assert "nvidia-smi" in got["why"]


def test_failing_nvidia_smi_means_no_gpu(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'\nexit 9\n")
    smi.chmod(0o755)
    assert resolve(path=tmp_path)["archs"] == ""


@pytest.mark.parametrize("defines, archs, sass", [
    (["FLASH_SIGMOID_ARCHS=none"], "", "80;90"),
    (["FLASH_SIGMOID_ARCHS=all"], "80;90a", "80;90"),
    (["FLASH_SIGMOID_ARCHS=80"], "80", "80;90"),
    (["FLASH_SIGMOID_ARCHS=90a", "FLASH_SIGMOID_SM80_SASS=90"], "90a", "90"),
    (["FLASH_SIGMOID_ARCHS=80;90a", "FLASH_SIGMOID_SM80_SASS=80"], "80;90a", "80"),
])
def test_explicit_choice_wins_over_the_gpu(defines, archs, sass):
    got = resolve(defines, gpu_cc="9.0")
    assert (got["archs"], got["sm80_sass"]) == (archs, sass), got


def test_unreadable_capability_fails_loudly():
    assert "cannot read the GPU compute capability" in resolve(gpu_cc="bogus")["error"]
