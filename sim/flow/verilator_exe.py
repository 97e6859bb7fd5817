"""Verilator models driven by a C++ loop of their own (``verilator --cc --exe``), built and cached.

The cocotb flow (`sim.flow.build_verilator`) makes models that Python drives cycle by cycle.
Where Python would be the bottleneck, a C++ harness clocks the model itself and Python only
starts it and reads what it prints: the translation benchmark (``sim/bench/main.cpp``) and
`vtx run` (``sim/run/model.cpp``).

`build_executable(verilog, top, harness, directory)` returns the binary
``<directory>/V<top>``, rebuilt only when its key changes: the Verilog text, the harness, the
Verilator and make arguments, tracing, the training run, the tool versions and ``$CXXFLAGS``.

With `train` the build is profile-guided (GCC's ``-fprofile-generate`` / ``-fprofile-use``): an
instrumented binary is built first, `train` runs it on a representative workload, and the model
is compiled again with the branch and call counts it recorded. On the SoC this saves about 15 %
of the time per simulated cycle (docs/system.md, "Simulation speed"), for one more compilation
and a training run of a few seconds. Verilator's run-time
library objects (the same for every model with the same tools) are compiled once into
``<build root>/exe/runtime-<hash>/`` and copied into each build, saving a minute a model. Builds
hold a file lock and publish by renaming a finished directory, so concurrent builds of one model
wait for each other and a failed build leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sim import flow

__all__ = ["VERILATOR_ARGS", "MAKE_ARGS", "PGO_GENERATE", "PGO_USE", "HEARTBEAT_SECONDS",
           "build_executable", "run_tool"]

#: Verilator arguments of every harness model. The build is `verilator --cc --exe` then `make`
#: (what `--build` does), so that the run-time library objects can be shared between models.
VERILATOR_ARGS = (
    "--cc", "--exe", "-O3", "--x-assign", "fast", "--x-initial", "fast",
    "-Wno-fatal", "-Wno-lint", "-Wno-style",
    "--timescale", f"{flow.TIMESCALE[0]}/{flow.TIMESCALE[1]}",
)
#: make variables. OPT_FAST: the C++ optimisation of the model's per-cycle code (the wheel's
#: verilated.mk defaults to -Os; on the SoC, -O3 runs 15 % fewer instructions a cycle than -O2
#: and 20-30 % less time than -Os: the per-cycle code is straight-line and executed whole);
#: CFG_CXXFLAGS_PCH_I: the wheel's verilated.mk leaves the precompiled-header include option
#: empty, which breaks builds whose model is split over several files.
MAKE_ARGS = ("OPT_FAST=-O3", "CFG_CXXFLAGS_PCH_I=-include")
#: OPT_FAST of the two compilations of a profile-guided build.
PGO_GENERATE = ("OPT_FAST=-O3 -fprofile-generate", "USER_LDFLAGS=-fprofile-generate")
PGO_USE = ("OPT_FAST=-O3 -fprofile-use -fprofile-correction -Wno-missing-profile",)
#: What a finished cache entry keeps besides the binary (the rest is hundreds of MB of
#: precompiled headers and objects): the generated sources and headers, for reading.
KEPT_SUFFIXES = (".cpp", ".h", ".json", ".log")
#: Seconds between "still building" lines while a tool runs.
HEARTBEAT_SECONDS = 15


def _quiet(message: str) -> None:
    pass


def runtime_objects(trace: bool) -> tuple[str, ...]:
    """Verilator's run-time library objects that verilated.mk links into a model."""
    return ("verilated.o", "verilated_threads.o") + (("verilated_vcd_c.o",) if trace else ())


def tools_key(trace: bool = False) -> str:
    """What the run-time objects depend on: the arguments, Verilator, $CXXFLAGS, tracing."""
    h = hashlib.sha256()
    h.update(repr((VERILATOR_ARGS, MAKE_ARGS, trace)).encode() + b"\0")
    h.update(f"verilator={flow._version('verilator')}\0".encode())
    h.update(f"cxxflags={os.environ.get('CXXFLAGS', '')}\0".encode())
    return h.hexdigest()[:16]


def model_key(verilog: Path, harness: Path, extra_args: Sequence[str], trace: bool,
              train_key: str = "") -> str:
    h = hashlib.sha256()
    h.update(f"pgo={PGO_GENERATE!r}{PGO_USE!r}{train_key}\0".encode() if train_key else b"\0")
    h.update(verilog.read_bytes() + b"\0")
    h.update(harness.read_bytes() + b"\0")
    h.update(repr(list(extra_args)).encode() + b"\0")
    for arg in extra_args:             # configuration files: their text counts, not their path
        if arg.endswith(".vlt") and Path(arg).is_file():
            h.update(Path(arg).read_bytes() + b"\0")
    h.update(tools_key(trace).encode())
    return h.hexdigest()[:16]


def run_tool(cmd: list[str], log: Path, what: str, progress: Callable[[str], None],
             env: dict[str, str], cwd: Path) -> None:
    """Run `cmd` with output to `log`, calling `progress` every HEARTBEAT_SECONDS; raise
    `flow.FlowError` with the log's tail if it fails."""
    start = time.monotonic()
    next_beat = start + HEARTBEAT_SECONDS
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            while proc.poll() is None:
                time.sleep(0.2)
                now = time.monotonic()
                if now >= next_beat:
                    progress(f"  ... {what}: {now - start:.0f}s")
                    next_beat = now + HEARTBEAT_SECONDS
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if proc.returncode != 0:
        raise flow.FlowError(f"{what} failed (status {proc.returncode}); log {log}:\n"
                             f"{flow._tail(log)}")


def build_executable(verilog: Path, top: str, harness: Path, directory: Path, *,
                     trace: bool = False, extra_args: Sequence[str] = (),
                     train: Callable[[Path], None] | None = None, train_key: str = "",
                     label: str | None = None, progress: Callable[[str], None] = _quiet,
                     jobs: int = flow.BUILD_JOBS) -> Path:
    """Verilate `verilog` (top module `top`) with the C++ `harness` into `directory` (cached);
    returns the binary ``directory / f"V{top}"``.

    `trace` builds with ``--trace`` (VCD); `extra_args` are more Verilator arguments
    (configuration files included). `train(binary)` makes the build profile-guided: it runs the
    instrumented binary (its failures are the caller's to report or ignore); `train_key` names
    the training workload in the cache key. `label` names the model in `progress` lines.
    """
    label = label or top
    env = flow.verilator_env()
    verilog, harness, directory = Path(verilog), Path(harness), Path(directory)
    key = model_key(verilog, harness, extra_args, trace, train_key if train else "")
    binary = directory / f"V{top}"
    stamp = directory / "stamp.json"

    def fresh() -> bool:
        try:
            return json.loads(stamp.read_text()).get("hash") == key and binary.is_file()
        except (OSError, ValueError):
            return False

    if fresh():
        return binary
    root = directory.parent
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{directory.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if fresh():
            return binary
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-", dir=root))
        runtime_root = flow.resolve_build_root() / "exe"
        runtime = runtime_root / f"runtime-{tools_key(trace)}"
        objects = runtime_objects(trace)
        make = ["make", "-C", str(tmp), "-f", f"V{top}.mk", "-j", str(jobs), *MAKE_ARGS]

        def log(step: str) -> Path:     # beside the cache entry: still there if a step fails
            return root / f"{directory.name}.{step}.log"

        try:
            progress(f"{label}: Verilator build into {directory}")
            t0 = time.monotonic()
            run_tool(["verilator", *VERILATOR_ARGS, *(["--trace"] if trace else []),
                      *extra_args, "--top-module", top, "-Mdir", str(tmp), str(harness),
                      str(verilog)],
                     log("verilate"), f"{label} verilation", progress, env, root)
            runtime_root.mkdir(parents=True, exist_ok=True)
            with open(runtime_root / f".runtime-{tools_key(trace)}.lock", "a+") as rlock:
                fcntl.flock(rlock, fcntl.LOCK_EX)
                if not all((runtime / o).is_file() for o in objects):
                    progress(f"{label}: compiling Verilator's run-time library (once)")
                    run_tool([*make, *objects], log("runtime"), "run-time library",
                             progress, env, root)
                    staging = Path(tempfile.mkdtemp(prefix=".tmp-runtime-", dir=runtime_root))
                    for o in objects:
                        shutil.copy2(tmp / o, staging / o)
                    if runtime.exists():
                        shutil.rmtree(runtime)
                    os.rename(staging, runtime)
            for o in objects:
                # newer than the generated makefile, which they depend on: make keeps them
                shutil.copy2(runtime / o, tmp / o)
                os.utime(tmp / o)
            if train is not None:
                run_tool([*make, *PGO_GENERATE], log("build-instrumented"),
                         f"{label} C++ build (instrumented)", progress, env, root)
                progress(f"{label}: training run for the profile-guided build")
                train(tmp / binary.name)
                # Everything compiled with the instrumentation goes; the profiles (.gcda) stay.
                for path in tmp.iterdir():
                    if path.is_file() and (path.suffix in (".o", ".a", ".gch")
                                           and path.name not in objects
                                           or path.name == binary.name):
                        path.unlink()
                run_tool([*make, *PGO_USE], log("build"), f"{label} C++ build (with the profile)",
                         progress, env, root)
            else:
                run_tool(make, log("build"), f"{label} C++ build", progress, env, root)
            if not (tmp / binary.name).is_file():
                raise flow.FlowError(f"Verilator build of {label} produced no binary; log "
                                     f"{log('build')}")
            for path in tmp.iterdir():
                if path.is_file() and path.name != binary.name and \
                        path.suffix not in KEPT_SUFFIXES:
                    path.unlink()
            (tmp / "stamp.json").write_text(json.dumps(
                {"hash": key, "verilog": str(verilog), "harness": str(harness), "trace": trace,
                 "extra_args": list(extra_args), "verilator_args": list(VERILATOR_ARGS),
                 "make_args": list(MAKE_ARGS)}, indent=2) + "\n")
            if directory.exists():
                shutil.rmtree(directory)
            os.rename(tmp, directory)
            progress(f"{label}: built in {time.monotonic() - t0:.0f}s")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return binary
