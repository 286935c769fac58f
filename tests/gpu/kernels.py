"""Which kernels the library under test was built with (its build_info), for GPU tests of a pruned
build: a case whose kernel key is not built is skipped with a reason that names the key, so a
narrowed GPU-tier run (FLASH_SIGMOID_BWD_HEAD_DIMS, ...) shows what it did not cover."""
import re

import pytest
import torch

import flash_sigmoid

_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def built_buckets(direction, dtype):
    keys = re.findall(rf"sm\d+_{direction}_{_DTYPE[dtype]}_hdim(\d+)_mask_\w+", flash_sigmoid.build_info())
    return sorted({int(k) for k in keys})


def skip_unless_built(direction, dtype, head_dim):
    padded = (head_dim + 7) // 8 * 8
    if not any(b >= padded for b in built_buckets(direction, dtype)):
        pytest.skip(f"no {direction} kernel built for {_DTYPE[dtype]} head dim {head_dim} in this build "
                    f"(built buckets: {built_buckets(direction, dtype)})")
