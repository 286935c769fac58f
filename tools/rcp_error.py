"""Exhaustive relative error of the FMA-pipe reciprocal (src/base/math.hpp, rcp_fma_f32): the
bit-trick estimate r = 0x7EF311C3 - bits(d) and its cubic (one third-order step, error e^3) and
quartic (two Newton steps, e^4) refinements, over every float mantissa of one binade (the error of
the estimate is the same in every binade). Exact arithmetic after the estimate, so this is the
refinements' error bound; rounding adds about one ulp of fp32.

    python tools/rcp_error.py
"""
import numpy as np

mantissas = np.arange(0, 1 << 23, dtype=np.uint32)
bits = (np.uint32(127) << 23) | mantissas  # d in [1, 2)
d = bits.view(np.float32).astype(np.float64)
r = (np.uint32(0x7EF311C3) - bits).view(np.float32).astype(np.float64)
e = np.abs(1 - d * r)
print(f"estimate: max relative error {e.max():.4e}")
print(f"cubic   (e^3): {(e ** 3).max():.4e}")
print(f"quartic (e^4): {(e ** 4).max():.4e}")
