"""Shared pytest setup: import paths, the build root, Hypothesis defaults."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = Path(__file__).resolve().parent

# The packages (rtl, sim, tb) import from the source tree even without `pip install -e .`, and
# cocotb test modules placed in tests/ are importable by the simulator (the flow hands sys.path
# to it as PYTHONPATH).
for path in (str(REPO_ROOT), str(TESTS_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover
    pass
else:
    # Simulation-backed properties are slow and their run time varies with the machine's load.
    settings.register_profile(
        "vtx", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
    )
    settings.load_profile("vtx")


@pytest.fixture(scope="session")
def build_root() -> Path:
    """The flow's build directory (``<repo>/build`` unless ``VTX_BUILD_ROOT`` is set).

    Shared by all tests and xdist workers: the flow caches Verilog and Verilator models there
    behind file locks, so tests of one configuration reuse one model.
    """
    from sim import flow

    return flow.resolve_build_root()


@pytest.fixture(scope="session")
def tests_dir() -> Path:
    """The tests/ directory (where cocotb test modules of the tests live)."""
    return TESTS_DIR
