"""Which kernels the library under test was built with (its build_info), for GPU tests of a pruned
build: a case whose kernel key is not built is skipped with a reason that names the key, so a
narrowed GPU-tier run (FLASH_SIGMOID_BWD_HEAD_DIMS, ...) shows what it did not cover."""
import re

import pytest
import torch

import flash_sigmoid

_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def built_buckets(direction, dtype):
    keys = re.findall(rf"sm\d+a?_{direction}_{_DTYPE[dtype]}_hdim(\d+)_mask_\w+", flash_sigmoid.build_info())
    return sorted({int(k) for k in keys})


def skip_unless_built(direction, dtype, head_dim):
    padded = (head_dim + 7) // 8 * 8
    if not any(b >= padded for b in built_buckets(direction, dtype)):
        pytest.skip(f"no {direction} kernel built for {_DTYPE[dtype]} head dim {head_dim} in this build "
                    f"(built buckets: {built_buckets(direction, dtype)})")


def sm90_bucket(head_dim):
    """The sm90 family's buckets are multiples of 64 (64 and 128; the forward also 192 and 256)."""
    return (head_dim + 63) // 64 * 64


def skip_unless_sm90(direction, head_dim):
    """Skips unless this GPU runs sm_90a code and the sm90 family's bf16 `direction` kernel for the
    bucket of head_dim is built."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("sm_90a kernels run on compute capability 9.0 only")
    bucket = sm90_bucket(head_dim)
    if f"sm90a_{direction}_bf16_hdim{bucket}_mask_none" not in flash_sigmoid.build_info():
        pytest.skip(f"no sm90 {direction} kernel for bf16 head dim {bucket} in this build")


def skip_unless_sm90_variant(direction, head_dim, variant):
    """As skip_unless_sm90, for the sm90 kernels of a named variant."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("sm_90a kernels run on compute capability 9.0 only")
    bucket = sm90_bucket(head_dim)
    family = f"{direction}_{variant}" if variant else direction
    if f"sm90a_{family}_bf16_hdim{bucket}_mask_none" not in flash_sigmoid.build_info():
        pytest.skip(f"no sm90 {direction} kernel of variant '{variant}' for bf16 head dim {bucket} in this build")
