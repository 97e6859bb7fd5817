"""Shared pytest setup: import paths, the build root, Hypothesis defaults."""

from __future__ import annotations

import os
import sys
import tempfile
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

# `vtx run --waves` records its VCD for `make waves` (sim.waves.record_last): the suite's runs
# record theirs in a file of their own, so the user's build/waves/LAST keeps naming the user's run.
# Set at import, before any test or xdist worker starts a subprocess.
if not os.environ.get("VTX_WAVES_LAST"):
    os.environ["VTX_WAVES_LAST"] = str(Path(tempfile.mkdtemp(prefix="vtx-tests-")) / "LAST")

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


@pytest.fixture
def private_build_root(tmp_path) -> Path:
    """A build root that shares the real one's caches (its entries are links to them: models
    are not built again) but has ``waves/`` and ``run/`` of its own, for a test whose outputs
    would otherwise land where a user's runs leave theirs."""
    return make_private_build_root(tmp_path)


def make_private_build_root(directory: Path) -> Path:
    """`private_build_root` in `directory` (for fixtures of a wider scope)."""
    from sim import flow

    real = flow.resolve_build_root()
    root = directory / "build"
    root.mkdir()
    for name in ("exe", "verilog", "sim", "locks"):
        (real / name).mkdir(parents=True, exist_ok=True)
    for entry in real.iterdir():
        if entry.name not in ("waves", "run"):
            (root / entry.name).symlink_to(entry)
    (root / "waves").mkdir()
    (root / "run").mkdir()
    return root


# ---------------------------------------------------------------------------------------------
# What a user's runs left under build/ stays as it was

#: The build/ entries that hold what users' commands write (`make demo`/`make waves`, `make bench`,
#: `make synth`), as opposed to caches: files there must come out of the session unchanged.
#: name -> (recursive, the suffixes of the outputs or None for all): build/bench's reports sit
#: beside the bench's model caches (obj_*/, their build logs and locks).
USER_OUTPUTS = {"waves": (True, None), "bench": (False, (".json", ".md", ".png", ".S")),
                "synth": (True, None)}


def _user_outputs(root: Path) -> dict[str, tuple[int, int]]:
    files = {}
    for name, (recursive, suffixes) in USER_OUTPUTS.items():
        base = root / name
        if not base.is_dir():
            continue
        for path in base.rglob("*") if recursive else base.iterdir():
            if suffixes is not None and path.suffix not in suffixes:
                continue
            if path.is_file() and not path.is_symlink():
                stat = path.stat()
                files[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return files


def pytest_sessionstart(session):
    if hasattr(session.config, "workerinput"):
        return                              # xdist worker: the controller checks
    from sim import flow

    session.config._vtx_user_outputs = (flow.resolve_build_root(),
                                        _user_outputs(flow.resolve_build_root()))


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_vtx_user_outputs", None)
    if before is None:
        return
    root, files = before
    after = _user_outputs(root)
    changed = sorted(p for p in files if after.get(p) != files[p])
    # With WAVES=1 the tests are asked to dump into build/waves/<test>/ (README).
    added = sorted(p for p in after if p not in files
                   and not (os.environ.get("WAVES") and p.startswith("waves/")
                            and not p.endswith("/LAST")))
    if changed or added:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"the tests changed what users' runs left under {root}:",
                 *(f"  changed: {p}" for p in changed), *(f"  added: {p}" for p in added)]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True)
        else:
            print("\n".join(lines), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
