"""CPU tier: the kernel table's nvcc targets (src/dispatch/kernel_table.py) for each choice of sm80-family
machine code, the lowest device the registry lets that code run on, and the variant column (a second
mainloop of a family built beside the default, served only by name)."""
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
        selected = [("80", "fwd", "", "bf16", 64, "none")]
        kernel_table.generate(str(tmp_path), selected, sass)
        text = (tmp_path / "kernel_registry.inc").read_text()
        assert f"inline constexpr int kSm80FamilyMinDeviceArch = {min_arch};" in text


def test_generated_units_see_no_public_header(tmp_path):
    selected = [("80", "fwd", "", "bf16", 64, "none"), ("90a", "bwd", "", "fp16", 128, "band")]
    for path, _, _ in kernel_table.generate(str(tmp_path), selected, ["80", "90"]):
        text = pathlib.Path(path).read_text()
        assert "flash_sigmoid.h" not in text and "registry.hpp" not in text
        assert "::run(params, stream)" in text and "::workspace_bytes(params)" in text


@pytest.fixture
def with_variant(monkeypatch):
    """The table with a second sm90 forward mainloop, "ws", beside the default (for its own keys)."""
    families = dict(kernel_table.FAMILIES)
    families[("90a", "fwd", "ws")] = kernel_table.Family("sm90/fwd_launch.hpp", "sm90::Sm90Fwd", head_dims=(128,))
    monkeypatch.setattr(kernel_table, "FAMILIES", families)


def test_variant_keys_are_built_beside_the_default(with_variant):
    keys = list(kernel_table.keys(["90a"], [64, 128], ["bf16"], ["fwd"], ["none"]))
    assert ("90a", "fwd", "", "bf16", 64, "none") in keys
    assert ("90a", "fwd", "", "bf16", 128, "none") in keys
    assert ("90a", "fwd", "ws", "bf16", 128, "none") in keys
    assert ("90a", "fwd", "ws", "bf16", 64, "none") not in keys  # not one of its head dims
    # Asked for no variants: the defaults alone.
    assert all(k[2] == "" for k in kernel_table.keys(["90a"], [128], ["bf16"], ["fwd"], ["none"], variants=[]))


def test_variant_names_and_registry_entries(with_variant, tmp_path):
    default = ("90a", "fwd", "", "bf16", 128, "none")
    variant = ("90a", "fwd", "ws", "bf16", 128, "none")
    assert kernel_table.key_name(*default) == "sm90a_fwd_bf16_hdim128_mask_none"
    assert kernel_table.key_name(*variant) == "sm90a_fwd_ws_bf16_hdim128_mask_none"
    kernel_table.generate(str(tmp_path), [default, variant], ["90"])
    text = (tmp_path / "kernel_registry.inc").read_text()
    assert '{"sm90a_fwd_bf16_hdim128_mask_none", 90, Direction::kFwd, "",' in text
    assert '{"sm90a_fwd_ws_bf16_hdim128_mask_none", 90, Direction::kFwd, "ws",' in text


def test_sm90_tma_forward_declines_and_extended_wgmma_shapes(tmp_path):
    # The TMA forward covers D 192 and 256 (no cp.async kernel there), so its entries carry a
    # declines() hook that lets the registry pass over tensors TMA cannot describe; its units get
    # CuTe's extended wgmma shapes (N = 80, 112, 176), without which the traits do not compile.
    tma = ("90a", "fwd", "", "bf16", 256, "none")
    sm80 = ("80", "fwd", "", "bf16", 256, "none")
    assert tma in set(kernel_table.keys(["80", "90a"], [256], ["bf16"], ["fwd"], ["none"]))
    paths = kernel_table.generate(str(tmp_path), [tma, sm80], ["90"])
    options = {pathlib.Path(p).name: opts for p, _, opts in paths}
    assert "-DCUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED" in options["sm90a_fwd_bf16_hdim256_mask_none.cu"]
    assert "-DCUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED" not in options["sm80_fwd_bf16_hdim256_mask_none.cu"]
    unit = (tmp_path / "sm90a_fwd_bf16_hdim256_mask_none.cu").read_text()
    assert "declines_sm90a_fwd_bf16_hdim256_mask_none(const ForwardParams& params)" in unit
    assert "::declines(params)" in unit
    assert "declines" not in (tmp_path / "sm80_fwd_bf16_hdim256_mask_none.cu").read_text()
    text = (tmp_path / "kernel_registry.inc").read_text()
    # ..., deterministic, declines, dropout}: both families apply dropout (kernel_table.py).
    assert "false, &declines_sm90a_fwd_bf16_hdim256_mask_none, true}," in text or \
        "true, &declines_sm90a_fwd_bf16_hdim256_mask_none, true}," in text
    assert "true, nullptr, true}," in text  # the sm80 entry declines nothing
