"""CPU tier: the kernel table's nvcc targets (src/dispatch/kernel_table.py) for each choice of sm80-family
machine code, and the lowest device the registry lets that code run on."""
import importlib.util
import pathlib

import pytest

_ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("flash_sigmoid_kernel_table", _ROOT / "src" / "dispatch" / "kernel_table.py")
kernel_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kernel_table)


@pytest.mark.parametrize("sass, flags, min_arch", [
    # sm_90 alone: one front-end pass, compute_90 PTX, so nothing below 9.0 can run it.
    (["90"], ["-gencode=arch=compute_90,code=[sm_90,compute_90]"], 90),
    # Ampere SASS plus sm_90 SASS from compute_90 (its paired dQ reductions); compute_80 PTX.
    (["80", "90"], ["-gencode=arch=compute_80,code=[sm_80,compute_80]", "-gencode=arch=compute_90,code=sm_90"], 80),
    (["90", "80"], ["-gencode=arch=compute_80,code=[sm_80,compute_80]", "-gencode=arch=compute_90,code=sm_90"], 80),
    (["80"], ["-gencode=arch=compute_80,code=[sm_80,compute_80]"], 80),
    (["86", "89"], ["-gencode=arch=compute_80,code=[sm_86,sm_89,compute_80]"], 80),
])
def test_sm80_family_targets(sass, flags, min_arch):
    assert kernel_table.gencode("80", sass).split("|") == flags
    assert kernel_table.sm80_min_device_arch(sass) == min_arch


def test_sm90a_family_target_ignores_the_sm80_choice():
    assert kernel_table.gencode("90a", ["80"]) == "-gencode=arch=compute_90a,code=sm_90a"


def test_registry_records_the_lowest_device(tmp_path):
    for sass, min_arch in ((["90"], 90), (["80", "90"], 80)):
        selected = [("80", "fwd", "bf16", 64, "none")]
        kernel_table.generate(str(tmp_path), selected, sass)
        text = (tmp_path / "kernel_registry.inc").read_text()
        assert f"inline constexpr int kSm80FamilyMinDeviceArch = {min_arch};" in text
