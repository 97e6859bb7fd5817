"""`vtx run`'s default back end: the Verilated SoC clocked by a C++ loop (``run_model.cpp``).

The model is `sim.run.top.SocRunTop` (the SoC without a reset input) built with the harness
``sim/run/model.cpp`` by `sim.flow.verilator_exe.build_executable`, cached under
``build/exe/soc_run[-ram<bytes>][-trace|-trace-ports]/``. Python takes no part in the per-cycle
loop: it writes the job on the child's standard input, then reads the events the child prints
(console bytes, retired instructions with ``--trace``, VM entries and exits, progress) as they
come, and the results at the end. The line formats are in the harness's header comment.

* `build(ram_bytes, waves, waves_ports)` -> `Model` (the binary and the Verilog it came from);
* `run(model, program, ..., on_event=...)` -> the raw results (`sim.run.RAW_KEYS`); each event
  line goes to `on_event` as it comes (`sim.run.Printer.event_line`).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rtl.arch.system import RAM_BYTES
from sim import flow
from sim.flow.verilator_exe import build_executable
from sim.run.program import Program, boot_image, boot_state

__all__ = ["TOPLEVEL", "HARNESS", "UNTRACED_PORTS", "Model", "ModelError", "model_dir",
           "ports_only_tracing", "verilog", "build", "job_text", "run"]

#: The Verilog module (and the Verilator class ``V<TOPLEVEL>``) of the model.
TOPLEVEL = "soc_run"
HARNESS = Path(__file__).with_name("model.cpp")
#: The top's factory, by name: a cached `verilog` imports no RTL.
FACTORY = "sim.run.top:SocRunTop"

#: Ports left out of a ports-only trace: the cycle counter (the VCD's time axis already; ~70
#: bytes every cycle) and the loader's read port (it follows RAM while the program runs).
UNTRACED_PORTS = ("cycles", "dbg_rdata")

#: The training workload of the profile-guided build: the demo exercises root operation, VM
#: entries and exits, EPT and the guest's paging, which is what people run.
TRAINING_PROGRAM = flow.REPO_ROOT / "examples" / "hypervisor" / "hypervisor.S"
#: The training run's cycle limit (the demo takes 0.33 M).
TRAINING_CYCLES = 2_000_000

#: The state ports the harness prints at the end (``S <name> <hex>``), as integers.
STATE_PORTS = ("rip", "rflags", "cr0", "cr3", "cr4", "efer", "vmx_mode", "current_vmcs", "stop",
               "exit_code", "cycles", "instructions", "running", "gpr", "fault")
#: The results the harness prints in decimal (the state ports are hex).
DECIMAL_RESULTS = ("cycle_limit", "instruction_limit", "vm_entries", "run_cycles")


class ModelError(RuntimeError):
    """The model could not be built, or the simulation failed (``vtx run`` exit status 1)."""


@dataclass(frozen=True)
class Model:
    binary: Path
    verilog: Path
    trace: bool


def _params(ram_bytes: int) -> dict:
    """{} for the default RAM size, so the default model has one Verilog cache entry."""
    return {} if ram_bytes == RAM_BYTES else {"ram_bytes": ram_bytes}


def verilog(ram_bytes: int = RAM_BYTES) -> Path:
    """The (cached) Verilog of the model's top for `ram_bytes` of RAM."""
    return flow.generate_verilog(FACTORY, TOPLEVEL, _params(ram_bytes))


def model_dir(ram_bytes: int = RAM_BYTES, trace: str | None = None) -> Path:
    """The cache entry of one model: `trace` is None, ``"all"`` or ``"ports"``."""
    name = TOPLEVEL
    if ram_bytes != RAM_BYTES:
        name += f"-ram{ram_bytes:#x}"
    if trace is not None:
        name += "-trace" if trace == "all" else "-trace-ports"
    return flow.resolve_build_root() / "exe" / name


def ports_only_tracing(verilog_path: Path, toplevel: str = TOPLEVEL) -> Path:
    """A Verilator configuration file, beside `verilog_path`, that traces only the top's ports
    except `UNTRACED_PORTS`: the top module's scope is off (Verilator traces the ports again in
    its own TOP scope), and so are those ports' declaration lines. Its name carries a hash of
    its text, which keys the model it builds."""
    verilog_path = Path(verilog_path).resolve()
    wanted = "|".join(map(re.escape, UNTRACED_PORTS))
    decl = re.compile(rf"\s*(?:input|output|wire|reg)\b[^;]*?\b(?:{wanted})\b\s*(?:=[^;]*)?;")
    text = "`verilator_config\n" + f'tracing_off -scope "{toplevel}"\n'
    in_top = False
    for number, line in enumerate(verilog_path.read_text().splitlines(), 1):
        if line.startswith("module "):
            in_top = line.startswith(f"module {toplevel}(")
        elif in_top and decl.fullmatch(line):
            text += f'tracing_off -file "{verilog_path}" -lines {number}\n'
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = verilog_path.with_name(f"trace-ports-{digest}.vlt")
    if not path.is_file():
        path.write_text(text)
    return path


def build(ram_bytes: int = RAM_BYTES, *, waves: bool = False, waves_ports: bool = False,
          progress: Callable[[str], None] = lambda message: None) -> Model:
    """Generate the Verilog and build the model (both cached). With `waves` the model writes
    VCDs: of every signal, or of the top's ports only with `waves_ports`."""
    try:
        source = verilog(ram_bytes)
        extra: tuple[str, ...] = ()
        trace = None
        if waves:
            trace = "ports" if waves_ports else "all"
            if waves_ports:
                extra = (str(ports_only_tracing(source)),)
        train = None
        train_key = ""
        if not waves and TRAINING_PROGRAM.is_file():
            # Tracing models write hundreds of bytes a cycle: the dump, not the model's code,
            # is their cost, so they are not worth a second compilation.
            train_key = hashlib.sha256(TRAINING_PROGRAM.read_bytes()).hexdigest()[:16]

            def train(binary: Path) -> None:
                _train(binary, ram_bytes, progress)

        binary = build_executable(source, TOPLEVEL, HARNESS, model_dir(ram_bytes, trace),
                                  trace=waves, extra_args=extra, train=train,
                                  train_key=train_key, label="the SoC model", progress=progress)
    except flow.FlowError as e:
        raise ModelError(str(e)) from e
    return Model(binary=binary, verilog=source, trace=waves)


def _train(binary: Path, ram_bytes: int, progress: Callable[[str], None]) -> None:
    """The training run of the profile-guided build: the demo on the instrumented `binary`.
    A failure costs only speed (the profile covers less), so it is reported, not raised."""
    from sim.run.program import SystemImageError, load_program

    try:
        program = load_program(TRAINING_PROGRAM, ram_bytes, disassemble=False)
        job = job_text(program, ram_bytes, TRAINING_CYCLES, [], trace=False, waves=None)
        proc = subprocess.run([str(binary)], input=job.encode(), capture_output=True,
                              check=False, timeout=600)
        if proc.returncode:
            progress(f"training run: exit status {proc.returncode} "
                     f"({proc.stderr.decode(errors='replace').strip()}); building on")
    except (SystemImageError, OSError, subprocess.TimeoutExpired) as e:
        progress(f"training run failed ({e}); building on")


def job_text(program: Program, ram_bytes: int, max_cycles: int, dumps, *, trace: bool,
             waves: Path | None, progress_ms: int = 0, max_instructions: int = 0) -> str:
    """The job the harness reads on its standard input (`max_instructions` 0: no limit)."""
    lines = [f"max_cycles {max_cycles}", f"trace {int(trace)}", f"progress_ms {progress_ms}",
             f"max_instructions {max_instructions}"]
    if waves is not None:
        lines.append(f"waves {Path(waves).resolve()}")
    lines += [f"boot {name} {value:#x}" for name, value in boot_state(program).items()]
    lines += [f"word {index} {value:#x}"
              for index, value in sorted(boot_image(program, ram_bytes).items()) if value]
    lines += [f"dump {addr} {length}" for addr, length in dumps]
    return "\n".join(lines) + "\n"


def run(model: Model, program: Program, ram_bytes: int, max_cycles: int, dumps, *,
        trace: bool, waves: Path | None, on_event: Callable[[str], None],
        progress_ms: int = 0, max_instructions: int = 0) -> dict:
    """Run `program` on `model`: each event line goes to `on_event` as it comes (console bytes
    within a few milliseconds of the cycle that wrote them); returns the raw results
    (`sim.run.RAW_KEYS` but ``console``, ``vm_exits`` and ``vm_entry_failures``, which the
    caller collects from the events) plus ``run_seconds``, the wall time of the clock loop alone."""
    if waves is not None and not model.trace:
        raise ModelError("a VCD was asked of a model built without tracing")
    job = job_text(program, ram_bytes, max_cycles, dumps, trace=trace, waves=waves,
                   progress_ms=progress_ms, max_instructions=max_instructions)
    raw: dict = {"memory": []}
    ended = False
    try:
        proc = subprocess.Popen([str(model.binary)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise ModelError(f"cannot start the SoC model {model.binary}: {e}") from e
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    reader.start()
    try:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(job.encode())
            proc.stdin.close()
        for data in proc.stdout:
            line = data.decode("ascii", "replace").rstrip("\n")
            tag = line[:1]
            if tag == "S":
                _, name, value = line.split()
                raw[name] = float(value) if name == "run_seconds" else \
                    int(value, 10 if name in DECIMAL_RESULTS else 16)
            elif tag == "M":
                _, addr, length, text = line.split()
                raw["memory"].append([int(addr), int(length), text])
            elif line == "END":
                ended = True
            else:
                on_event(line)
        status = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join()
    if status or not ended:
        message = b"".join(errors).decode(errors="replace").strip()
        how = f"exit status {status}" if status >= 0 else f"signal {-status}"
        raise ModelError(f"the SoC model ({model.binary.name}) failed ({how})"
                         + (f": {message}" if message else ""))
    missing = [name for name in STATE_PORTS if name not in raw]
    if missing:
        raise ModelError(f"the SoC model reported no {', '.join(missing)}")
    raw["cycle_limit"] = bool(raw["cycle_limit"])
    raw["instruction_limit"] = bool(raw["instruction_limit"])
    return raw
