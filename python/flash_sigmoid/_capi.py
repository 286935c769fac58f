"""ctypes mirror of include/flash_sigmoid/flash_sigmoid.h and the loader of libflash_sigmoid.

Layer: Python package (low level). Knows the C structs and how to find the shared library; knows
nothing of torch. The field order here must match the C header exactly (tests/python check sizes).
"""
import ctypes
import os
import pathlib

FLOAT16, BFLOAT16, FLOAT32 = 0, 1, 2
SIGMOID_VIA_EXP2, SIGMOID_VIA_TANH = 0, 1
STATUS_NAMES = {0: "success", 1: "invalid argument", 2: "unsupported", 3: "workspace too small",
                4: "CUDA error", 5: "internal error"}


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("stride_batch", ctypes.c_int64), ("stride_seq", ctypes.c_int64),
                ("stride_head", ctypes.c_int64), ("stride_dim", ctypes.c_int64)]


class Problem(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("batch", ctypes.c_int64), ("seqlen_q", ctypes.c_int64),
                ("seqlen_k", ctypes.c_int64), ("heads_q", ctypes.c_int64), ("heads_kv", ctypes.c_int64),
                ("head_dim", ctypes.c_int64), ("scale", ctypes.c_float), ("sigmoid_bias", ctypes.c_float),
                ("causal", ctypes.c_int32), ("window_left", ctypes.c_int64), ("window_right", ctypes.c_int64),
                ("alibi_slopes", ctypes.c_void_p), ("alibi_stride_batch", ctypes.c_int64),
                ("score_function", ctypes.c_int), ("kernel_arch", ctypes.c_int32)]


class ForwardArgs(ctypes.Structure):
    _fields_ = [("problem", Problem), ("q", Tensor), ("k", Tensor), ("v", Tensor), ("out", Tensor)]


class BackwardArgs(ctypes.Structure):
    _fields_ = [("problem", Problem), ("q", Tensor), ("k", Tensor), ("v", Tensor), ("dout", Tensor),
                ("dq", Tensor), ("dk", Tensor), ("dv", Tensor), ("deterministic", ctypes.c_int32)]


class FlashSigmoidError(RuntimeError):
    """A FlashSigmoid call failed; .status is the C status code, the message names the argument."""

    def __init__(self, status, message):
        super().__init__(f"{message} [{STATUS_NAMES.get(status, status)}]")
        self.status = status


def _candidates():
    env = os.environ.get("FLASH_SIGMOID_LIBRARY")
    if env:
        yield pathlib.Path(env)
    here = pathlib.Path(__file__).resolve().parent
    yield here / "lib" / "libflash_sigmoid.so"
    root = here.parent.parent
    for build in ("build", "build-gpu", "build-ci"):
        yield root / build / "libflash_sigmoid.so"


def _load():
    tried = []
    for path in _candidates():
        tried.append(str(path))
        if path.is_file():
            lib = ctypes.CDLL(str(path))
            break
    else:
        raise ImportError("libflash_sigmoid.so not found; build it (see README) or set FLASH_SIGMOID_LIBRARY. "
                          "Tried: " + ", ".join(tried))
    st = ctypes.c_int
    sig = {
        "flash_sigmoid_forward": (st, [ctypes.POINTER(ForwardArgs), ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]),
        "flash_sigmoid_backward": (st, [ctypes.POINTER(BackwardArgs), ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]),
        "flash_sigmoid_cpu_forward": (st, [ctypes.POINTER(ForwardArgs), ctypes.c_int]),
        "flash_sigmoid_cpu_backward": (st, [ctypes.POINTER(BackwardArgs), ctypes.c_int]),
        "flash_sigmoid_backward_workspace_size": (st, [ctypes.POINTER(BackwardArgs), ctypes.POINTER(ctypes.c_size_t)]),
        "flash_sigmoid_can_implement_forward": (st, [ctypes.POINTER(ForwardArgs)]),
        "flash_sigmoid_problem_init": (Problem, [ctypes.c_int64]),
        "flash_sigmoid_last_error": (ctypes.c_char_p, []),
        "flash_sigmoid_build_info": (ctypes.c_char_p, []),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


_lib = None


def lib():
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib


def check(status):
    if status != 0:
        raise FlashSigmoidError(status, lib().flash_sigmoid_last_error().decode())


def build_info():
    return lib().flash_sigmoid_build_info().decode()
