"""pytest setup: use the in-tree package (python/) unless an installed one is importable."""
import pathlib
import sys

_root = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_root / "tests" / "gpu"))
try:
    import flash_sigmoid  # noqa: F401  (installed)
except ImportError:
    sys.path.insert(0, str(_root / "python"))
