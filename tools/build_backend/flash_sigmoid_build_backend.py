"""The package's PEP 517 build backend: scikit-build-core's, plus one decision about torch.

Layer: packaging (pyproject.toml names this module, `backend-path = ["tools/build_backend"]`). The op
library compiles against torch's stable-ABI headers and links its libtorch_cpu (and libtorch_cuda),
so the build needs a torch. With build isolation (a plain `pip install .` or `pip wheel .`), pip
would install one into the temporary build environment: the newest torch with its CUDA libraries,
about 3 GB, although the environment being installed into usually has one already, the very one the
package will run with. So, before pip sets up the build environment, this backend asks the
interpreter that pip runs under (sys.executable, outside the isolation) for its torch:

- a torch >= 2.11 with the stable-ABI headers is there: nothing more is required, and CMake is
  pointed at it (cmake.define.Torch_ROOT), so the op library is linked against the torch it runs with;
- none is there: torch>=2.11 is required, the same requirement as the package's dependency, so pip
  resolves one version for both and the second install comes from pip's cache.

`-C cmake.define.Torch_ROOT=<.../site-packages/torch>` names a torch explicitly;
FLASH_SIGMOID_BUILD_TORCH_FROM_ENV=0 turns the look-up off (torch is then always required).
With --no-build-isolation none of this matters: CMake finds the environment's torch itself.
"""
import os
import subprocess
import sys

from scikit_build_core import build as _backend
from scikit_build_core.build import (  # noqa: F401  (the hooks this module does not change)
    build_sdist, get_requires_for_build_sdist, prepare_metadata_for_build_editable, prepare_metadata_for_build_wheel)

TORCH_REQUIREMENT = "torch>=2.11"
_MIN_TORCH = (2, 11)
_PROBE = r"""
import os, torch
root = os.path.dirname(torch.__file__)
print(root)
print(torch.__version__)
print(int(os.path.isfile(os.path.join(root, "include", "torch", "csrc", "stable", "library.h"))))
"""
_ISOLATION_VARIABLES = ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME", "PYTHONSAFEPATH")


def _environment_torch():
    """Directory of the torch that the installing interpreter imports outside pip's isolation, or None."""
    if os.environ.get("FLASH_SIGMOID_BUILD_TORCH_FROM_ENV", "1") == "0":
        return None
    env = {k: v for k, v in os.environ.items() if k not in _ISOLATION_VARIABLES}
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                               timeout=300, cwd=os.path.expanduser("~"))
    except (OSError, subprocess.SubprocessError):
        return None
    lines = probe.stdout.split()
    if probe.returncode != 0 or len(lines) != 3 or lines[2] != "1":
        return None
    root, version = lines[0], lines[1]
    try:
        major, minor = (int(x) for x in version.split("+")[0].split(".")[:2])
    except ValueError:
        return None
    return root if (major, minor) >= _MIN_TORCH else None


def _torch_root(config_settings):
    given = (config_settings or {}).get("cmake.define.Torch_ROOT")
    return given if given else _environment_torch()


def _with_torch_root(config_settings):
    settings = dict(config_settings or {})
    if not settings.get("cmake.define.Torch_ROOT"):
        root = _environment_torch()
        if root:
            print(f"flash_sigmoid build: compiling against the installed torch in {root}", flush=True)
            settings["cmake.define.Torch_ROOT"] = root
    return settings


def _requires(base, config_settings):
    return list(base) + ([] if _torch_root(config_settings) else [TORCH_REQUIREMENT])


def get_requires_for_build_wheel(config_settings=None):
    return _requires(_backend.get_requires_for_build_wheel(config_settings), config_settings)


def get_requires_for_build_editable(config_settings=None):
    return _requires(_backend.get_requires_for_build_editable(config_settings), config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _backend.build_wheel(wheel_directory, _with_torch_root(config_settings), metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _backend.build_editable(wheel_directory, _with_torch_root(config_settings), metadata_directory)
