"""Benchmark of the translation unit: `vtx bench translation` (part of ``make bench``).

The bench top (`sim.bench.top.TranslationBench`: the unit, a traffic generator and a synthetic
memory, all HDL) is built once per unit configuration into a Verilator model driven by a tight
C++ loop (`main.cpp`); workloads are chosen at run time through its configuration ports. The
same top also runs in Amaranth's simulator (`run_amaranth`), for the speed comparison and for
the tests, which check that both simulators give the same counters.

Library API (used by ``__main__`` and ``tests/test_bench_top.py``):

* `BenchConfig`: one unit configuration (contexts, cached or not); `.name` is ``c8``, ``u8``...
* `Workload` run parameters: `RunSpec`.
* `build_model(config)` -> path of the Verilator binary, cached in ``build/bench/obj_<name>``
  by a hash of the Verilog, ``main.cpp``, the Verilator arguments and the tool versions.
* `run_model(binary, spec)` / `run_amaranth(config, spec)` -> dict of counters (see
  `top.COUNTERS`) plus ``sim_cycles`` (cycles clocked, warm-up included), ``wall_seconds`` and
  ``cpu_seconds`` (of the clock loop only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from sim.flow.verilator_exe import build_executable, run_tool

from .. import flow
from .top import COUNTERS, MAX_LATENCY, TranslationBench, Workload

__all__ = [
    "TOP_NAME", "BenchConfig", "RunSpec", "Workload", "bench_dir",
    "build_model", "generate_verilog", "run_model", "run_amaranth", "Progress",
]

TOP_NAME = "translation_bench"
HARNESS = Path(__file__).resolve().parent / "main.cpp"


class Progress:
    """Prints ``[  12.3s] message`` lines (flushed), elapsed since the object was made."""

    def __init__(self, start: float | None = None, stream=None):
        self.start = time.monotonic() if start is None else start
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()      # builds report from several threads

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def __call__(self, message: str) -> None:
        with self._lock:
            print(f"[{self.elapsed():7.1f}s] {message}", file=self.stream, flush=True)


def _quiet(message: str) -> None:
    pass


@dataclass(frozen=True)
class BenchConfig:
    """A unit configuration: `contexts` walk contexts, with or without the walker's caches."""

    contexts: int = 8
    uncached: bool = False

    @property
    def name(self) -> str:
        return f"{'u' if self.uncached else 'c'}{self.contexts}"

    @classmethod
    def from_name(cls, name: str) -> BenchConfig:
        if len(name) < 2 or name[0] not in "cu" or not name[1:].isdigit():
            raise ValueError(f"bench configuration {name!r} is not c<contexts> or u<contexts>")
        return cls(contexts=int(name[1:]), uncached=name[0] == "u")

    def params(self) -> dict:
        return {"contexts": self.contexts, "uncached": self.uncached}

    def verilog_params(self) -> dict:
        return {**self.params(), "clock_port": True}


@dataclass(frozen=True)
class RunSpec:
    """Run-time configuration of the bench top (its input ports) and a cycle limit."""

    kind: Workload = Workload.RANDOM
    count: int = 1000
    warmup: int = 0
    latency: int = 20
    seed: int = 1
    region_shift: int = 26
    stride_shift: int = 21
    hit_shift: int = 3
    max_cycles: int = 50_000_000

    def __post_init__(self):
        if not 0 <= self.latency <= MAX_LATENCY:
            raise ValueError(f"latency {self.latency} is outside 0..{MAX_LATENCY}")
        if not 12 <= self.region_shift <= 38:
            raise ValueError("region_shift must be within 12..38")
        if not 12 <= self.stride_shift <= 37:
            raise ValueError("stride_shift must be within 12..37")

    def ports(self) -> dict[str, int]:
        d = asdict(self)
        d.pop("max_cycles")
        d["kind"] = Workload(self.kind).value
        return d

    def argv(self) -> list[str]:
        return [f"{k}={v}" for k, v in {**self.ports(), "max_cycles": self.max_cycles}.items()]


def bench_dir() -> Path:
    return flow.resolve_build_root() / "bench"


def generate_verilog(config: BenchConfig) -> Path:
    """The (cached) Verilog of `config`'s bench top, with the `clk` port."""
    return flow.generate_verilog(TranslationBench, TOP_NAME, config.verilog_params())


def _generate_verilog(config: BenchConfig, progress: Callable[[str], None],
                      env: dict[str, str]) -> Path:
    """`generate_verilog` in a child process (``python -m sim.bench.translation --verilog NAME``):
    Yosys
    runs inside Python and would hold this process's interpreter lock for its whole run,
    silencing the progress lines of concurrent builds."""
    root = bench_dir()
    root.mkdir(parents=True, exist_ok=True)
    fd, log_name = tempfile.mkstemp(prefix=f".verilog-{config.name}-", suffix=".log", dir=root)
    os.close(fd)
    log = Path(log_name)
    try:
        run_tool([sys.executable, "-m", "sim.bench.translation", "--verilog", config.name], log,
                 f"{config.name} Verilog generation", progress, env, flow.REPO_ROOT)
        path = Path(log.read_text().strip().splitlines()[-1])
    finally:
        log.unlink(missing_ok=True)
    if not path.is_file():
        raise flow.FlowError(f"Verilog generation of {config.name} gave no file ({path})")
    return path


def build_model(config: BenchConfig, *, progress: Callable[[str], None] = _quiet,
                jobs: int = flow.BUILD_JOBS) -> Path:
    """Generate the Verilog of `config` and Verilate it (cached in ``build/bench/obj_<name>``,
    `sim.flow.verilator_exe`); return the binary's path."""
    progress(f"{config.name}: Verilog (contexts={config.contexts}, "
             f"{'uncached' if config.uncached else 'cached'})")
    env = flow.verilator_env()
    verilog = _generate_verilog(config, progress, env)
    final = bench_dir() / f"obj_{config.name}"
    binary = build_executable(verilog, TOP_NAME, HARNESS, final, label=config.name,
                              progress=progress, jobs=jobs)
    progress(f"{config.name}: model ready ({final.relative_to(flow.REPO_ROOT)})")
    return binary


def run_model(binary: Path, spec: RunSpec) -> dict:
    """Run the Verilator model once; returns its JSON line as a dict."""
    proc = subprocess.run([str(binary), *spec.argv()], capture_output=True, text=True)
    if proc.returncode not in (0, 3):
        raise flow.FlowError(f"{binary} {' '.join(spec.argv())} exited with {proc.returncode}:\n"
                             f"{proc.stdout}{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result["done"]:
        raise flow.FlowError(f"{binary} {' '.join(spec.argv())}: not done after "
                             f"{result['sim_cycles']} cycles (the unit hung?): {result}")
    return result


def run_amaranth(config: BenchConfig, spec: RunSpec, *, require_done: bool = True) -> dict:
    """Run the bench top in Amaranth's simulator; same result keys as `run_model`.

    ``wall_seconds`` covers `Simulator.run` only (not elaboration). With
    `require_done=False` a run stopped by ``spec.max_cycles`` returns its partial counters.
    """
    from amaranth.sim import Simulator

    dut = TranslationBench(**config.params())
    result: dict = {}

    async def testbench(ctx):
        for name, value in spec.ports().items():
            ctx.set(getattr(dut, name), value)
        ctx.set(dut.start, 1)
        cycles = 0
        while not ctx.get(dut.done) and cycles < spec.max_cycles:
            await ctx.tick()
            cycles += 1
        result["done"] = ctx.get(dut.done)
        result["overflow"] = ctx.get(dut.overflow)
        result["sim_cycles"] = cycles
        for name in COUNTERS:
            result[name] = ctx.get(getattr(dut, name))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    t0 = time.perf_counter()
    c0 = time.process_time()
    sim.run()
    result["wall_seconds"] = time.perf_counter() - t0
    result["cpu_seconds"] = time.process_time() - c0
    if require_done and not result["done"]:
        raise RuntimeError(f"Amaranth run of {config.name} {spec}: not done after "
                           f"{result['sim_cycles']} cycles: {result}")
    return result
