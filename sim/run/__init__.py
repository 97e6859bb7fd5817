"""`vtx run PROGRAM`: run an x86-64 program on the whole system (`rtl.soc.Soc`).

The program (a ``.S`` file assembled and linked with GNU binutils, or a flat binary) is loaded by
`sim.run.program` at `PROGRAM_BASE` with the boot identity map, written into the SoC's RAM
through its debug port, started with the boot state, and run until it stops: at the exit port,
HLT in root operation, a fault, ``--max-cycles`` or ``--max-instructions`` (both back ends stop
at the clock edge that retires the N-th instruction, so the state is the one after it).
docs/system.md, "vtx run", is the user's reference.

Back ends:

* ``--sim verilator`` (default): the Verilated SoC clocked by a C++ loop of its own
  (`sim.run.model`; the Verilog and the model are built once and cached under ``build/``).
  Python writes the job to the model's standard input and reads its events (console bytes,
  trace lines, VM entries/exits, progress) from its standard output as they come, so the
  console prints as the program writes it; no Python runs per cycle.
* ``--sim amaranth``: the same top in Amaranth's simulator (`run_amaranth`), in this process;
  much slower, for short programs.

Both back ends return the same raw results (`RAW_KEYS`: the SoC's ports as integers) and report
the same events to a `Printer`; `result_json` turns the raw results into the ``--json`` object.

Output: the console goes to stdout as it comes (to stderr with ``--json``, whose stdout is the
one JSON object only). ``--trace`` lines, the build notice and the final summary go to stderr
(and, when stderr is a terminal and there is no ``--trace``, a status line every
`STATUS_SECONDS`); with ``--trace`` the console is printed a line at a time, so the two do not
cut into each other on a terminal (and with ``--json --trace`` it is only in the trace lines
and the JSON). Exit status: 0 the simulation ran (how the program ended is in the summary / the
JSON: exit port code, HLT, fault, cycle or instruction limit); 1 the build or the simulation
failed; 2 bad input (a file that does not assemble, does not exist or does not fit in RAM, a
--dump range outside RAM, bad options), with one error message on stderr and nothing on stdout.

The JSON's console is exact: ``console`` is the text when the bytes are valid UTF-8, else
``console_base64`` holds the bytes (`console_fields`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import sys
import threading
import time
from pathlib import Path

from rtl.arch.system import FAULT_LAYOUT, PROGRAM_BASE, RAM_BYTES, RunStop
from rtl.arch.vmx import (
    ENTRY_FAIL_DEFAULT,
    ENTRY_FAIL_NMI_INJECTION,
    ENTRY_FAIL_PDPTE,
    ENTRY_FAIL_VMCS_LINK_POINTER,
    EXIT_REASON_ENTRY_FAILURE,
    INVALID_VMCS_POINTER,
    ExitReason,
    VmxMode,
)
from sim import flow
from sim.cli import RunError, UsageError, int_option
from sim.run import model as run_model
from sim.run.program import (
    Program,
    SystemImageError,
    boot_image,
    boot_state,
    load_program,
    parse_dump,
)

PROG = "vtx run"

#: The SoC as the Amaranth back end simulates it (the Verilator back end's top, `sim.run.top`,
#: wraps it without a reset input).
FACTORY = "rtl.soc.soc:Soc"

DEFAULT_MAX_CYCLES = 5_000_000
#: Announce the Verilator build if generating and compiling take longer than this (seconds).
BUILD_NOTICE_AFTER = 2.0
#: The summary gives the build's time when it took this long (a cached model takes ~0.1 s).
BUILT_SHOWN_FROM = 0.5
#: Seconds between status lines on a terminal.
STATUS_SECONDS = 2

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: The largest ``--ram-bytes``. Elaboration holds the RAM's initial contents as a Python list
#: (about 2 bytes of host memory and 25 ns per byte of RAM: 1 GiB takes ~2 GB and ~30 s), and
#: the Verilator model allocates the RAM itself; 32 GiB, what the debug port could address,
#: would need ~64 GB before the build even starts.
RAM_BYTES_MAX = 1 << 30

#: GPR names in x86 numbering (the order of the SoC's `gpr` port).
GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")

#: The raw results both back ends return (integers, from the SoC's ports after the run).
RAW_KEYS = ("stop", "exit_code", "fault", "gpr", "rip", "rflags", "cr0", "cr3", "cr4", "efer",
            "vmx_mode", "current_vmcs", "cycles", "instructions", "running", "cycle_limit",
            "instruction_limit", "vm_exits", "vm_entries", "vm_entry_failures", "console", "memory")


#: Exception mnemonics of the vectors a fault can report.
VECTOR_NAMES = {0: "#DE", 1: "#DB", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF",
                10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC",
                18: "#MC", 19: "#XM"}

#: What the exit qualification of a VM-entry failure on guest state says (SDM Vol. 3C 26.8).
ENTRY_FAILURE_QUALIFICATIONS = {
    ENTRY_FAIL_DEFAULT: "guest state", ENTRY_FAIL_PDPTE: "PDPTE loading",
    ENTRY_FAIL_NMI_INJECTION: "NMI injection", ENTRY_FAIL_VMCS_LINK_POINTER: "VMCS link pointer",
}

#: `vmx.mode` names of `VmxMode`.
VMX_MODE_NAMES = {VmxMode.OUTSIDE: "off", VmxMode.ROOT: "root", VmxMode.NON_ROOT: "non_root"}

#: GTKWave groups of the SoC's ports (by port-name pattern, see `sim.waves.write_gtkw`).
GTKW_PORT_GROUPS = {
    "clock/reset": ["clk", "rst"],
    "status": ["running", "stop", "exit_code", "fault", "fault__*"],
    "VMX": ["vm_entry", "vm_exit", "vm_entry_failure", "vm_exit_reason", "vm_exit_qualification",
            "vmx_mode", "current_vmcs"],
    "retirement": ["retired*"],
    "architectural state": ["rip", "rflags", "gpr", "cr0", "cr3", "cr4", "efer"],
    "console": ["console_*"],
    "counters": ["cycles", "instructions"],
    "start / boot state": ["start", "init_*"],
    "loader (debug port)": ["dbg_*"],
}

DESCRIPTION = """\
Run an x86-64 program on the system RTL (core + VMX unit + translation unit + RAM + ports).

PROGRAM is a .S/.s/.asm file (assembled with GNU as --64 and linked at 0x100000; entry point
_start, else the start of the image) or a flat binary (loaded at 0x100000 and entered there).
The boot state: 64-bit mode, CPL 0, paging on over an identity map of the first 4 GiB, the stack
below the program (docs/system.md). OUT to port 0xE9 prints a byte; OUT to port 0xF4 ends the run
with the value written as exit code. The run also ends at HLT in root operation, at a fault
(root operation has no IDT), after --max-cycles and after --max-instructions.

The console is printed as the program writes it (on stdout; on stderr with --json). A summary
goes to stderr at the end."""

EPILOG = """\
--json prints one object on stdout at the end:
  {"exit": {"kind": "exit_port", "code": 0} | {"kind": "hlt"} | {"kind": "cycle_limit"}
           | {"kind": "instruction_limit"}
           | {"kind": "fault", "vector": 14, "name": "#PF", "error_code": 2 (or null),
              "rip": ..., "addr": ...},
   "regs": {"rax": ..., ..., "r15": ..., "rip": ..., "rflags": ...},
   "cr0": ..., "cr3": ..., "cr4": ..., "efer": ...,
   "vmx": {"mode": "off"|"root"|"non_root", "current_vmcs": <address> or null},
   "cycles": ..., "instructions": ..., "vm_entries": ...,
   "vm_exits": {"CPUID": 2, ...}, "console": "...", "console_base64": null | "...",
   "memory": [{"addr": ..., "length": ..., "hex": "..."}, ...]
              (with --dump)}
All numbers are JSON integers. The console's bytes are "console" encoded as UTF-8 when
"console_base64" is null; when they are not valid UTF-8, "console_base64" holds them exactly
(base64) and "console" is only a rendering for reading, with U+FFFD for each invalid sequence.

exit status:
  0  the simulation ran (the program's end is in the summary / the JSON, exit code included)
  1  the build or the simulation failed
  2  bad input: PROGRAM missing, not assembling or not fitting in RAM, a --dump range outside
     RAM, bad options; one message on stderr, nothing on stdout

examples:
  vtx run examples/programs/hello.S
  vtx run --json --dump 0x100000:32 examples/programs/hello.S
  vtx run --trace --max-cycles 20000 examples/programs/fault.S
  vtx run --json --max-instructions 5 examples/programs/hello.S
  vtx run --sim amaranth --waves build/hello.vcd examples/programs/hello.S   # + build/hello.gtkw"""


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Options


def _positive(text: str) -> int:
    n = int_option(text)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return n


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "run",
        help="run an x86-64 program (.S or flat binary) on the system RTL",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("program", metavar="PROGRAM", type=Path,
                        help="a .S/.s/.asm file (GNU as syntax) or a flat binary")
    parser.add_argument("--sim", choices=("verilator", "amaranth"), default="verilator",
                        help="simulator: verilator (default; the model is built on first use "
                             "and cached under build/) or amaranth (Amaranth's Python "
                             "simulator: no build, much slower, for short programs)")
    parser.add_argument("--max-cycles", metavar="N", type=_positive, default=DEFAULT_MAX_CYCLES,
                        help=f"stop after N clock cycles (default {DEFAULT_MAX_CYCLES}); the "
                             "run then ends with exit kind cycle_limit")
    parser.add_argument("--max-instructions", metavar="N", type=_positive, default=None,
                        help="stop as the N-th instruction retires, with the registers as that "
                             "instruction left them (default: no limit); the run then ends "
                             "with exit kind instruction_limit, even if that instruction was "
                             "the program's last (its HLT or OUT to the exit port). "
                             "--max-cycles still applies")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object with the run's end, registers, counters, "
                             "console and dumps on stdout (the console streams to stderr)")
    parser.add_argument("--trace", action="store_true",
                        help="print each retired instruction (cycle, RIP, bytes, disassembly), "
                             "each console byte and each VM entry and exit on stderr; the "
                             "console is then printed a line at a time (with --json: only in "
                             "the trace and the JSON)")
    parser.add_argument("--waves", metavar="FILE.vcd", type=Path,
                        help="write a VCD of the run to FILE.vcd and a GTKWave save file "
                             "FILE.gtkw beside it (Verilator builds a tracing model for this, "
                             "cached like the other)")
    parser.add_argument("--waves-ports", action="store_true",
                        help="with --waves on Verilator: trace only the SoC's ports (registers, "
                             "RIP, CRs, retired instructions, VM entries/exits, console; not "
                             "the cycle counter, which is the time axis): ~90 bytes per cycle "
                             "instead of ~14 kB, for long runs such as the demo")
    parser.add_argument("--dump", metavar="ADDR:LEN", action="append", default=[],
                        help="after the run, read LEN bytes of RAM from physical address ADDR "
                             "(decimal or 0x hex); printed in hex (in the JSON: \"memory\"). "
                             "May be repeated")
    parser.add_argument("--ram-bytes", metavar="N", type=_positive, default=None,
                        help=f"RAM size in bytes (default {RAM_BYTES:#x}, at most "
                             f"{RAM_BYTES_MAX:#x}); another size builds another model")
    parser.set_defaults(func=run)
    return parser


# ---------------------------------------------------------------------------------------------
# Live output


class Printer:
    """Prints the events of a run as they come: console bytes, trace lines, VM entries/exits.

    Console bytes go to `console` (a binary stream, or None: not printed), flushed per byte so a
    program's output shows as it is written, or per line with `line_buffered` (used with
    ``--trace``, so console lines and trace lines do not cut into each other on a terminal).
    With `trace`, trace lines go to `trace_out`, a console byte making one too. With `status`
    (a terminal), progress events show as one status line there, rewritten in place, erased
    before any other output and at the end. It counts the VM entries and exits it is told of.
    Thread-safe.
    """

    def __init__(self, console, trace_out, *, trace: bool, disassembly: dict[int, str],
                 line_buffered: bool = False, status=None):
        self.console = console
        self.trace_out = trace_out
        self.trace = trace
        self.disassembly = disassembly
        self.line_buffered = line_buffered
        self.status = status
        self.status_shown = False
        self.last_progress: tuple[int, float] | None = None
        self.console_bytes = bytearray()
        self.pending = bytearray()          # the unfinished console line (line_buffered)
        self.vm_entries = 0
        self.vm_exits: dict[int, int] = {}
        self.vm_entry_failures: dict[int, int] = {}    # basic exit reason -> count
        self.lock = threading.Lock()

    def _clear_status(self) -> None:
        if self.status_shown:
            with contextlib.suppress(BrokenPipeError, ValueError):
                self.status.write("\r\x1b[K")
                self.status.flush()
            self.status_shown = False

    def _write_console(self, data: bytes) -> None:
        if self.console is None:
            return
        self._clear_status()
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.console.write(data)
            self.console.flush()

    def _line(self, text: str) -> None:
        if self.trace_out is None:
            return
        self._clear_status()
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.trace_out.write(text + "\n")
            self.trace_out.flush()

    def progress(self, cycles: int, instructions: int, vm_exits: int, seconds: float) -> None:
        """A status line: cycles and instructions so far, the speed since the last one, VM
        exits. Shown only on a terminal (`status`), and only while the console is at the start
        of a line (a status line would overwrite a prompt the program has printed)."""
        if self.status is None:
            return
        with self.lock:
            last_cycles, last_seconds = self.last_progress or (0, 0.0)
            self.last_progress = (cycles, seconds)
            if self.console_bytes and not self.console_bytes.endswith(b"\n"):
                return
            rate = (cycles - last_cycles) / max(seconds - last_seconds, 1e-9)
            text = (f"{PROG}: {cycles:,} cycles, {instructions:,} instructions, "
                    f"{rate / 1000:,.0f} k cycles/s, {vm_exits:,} VM exits ({seconds:.0f} s)")
            with contextlib.suppress(BrokenPipeError, ValueError):
                self.status.write("\r\x1b[K" + text)
                self.status.flush()
            self.status_shown = True

    def console_byte(self, byte: int, cycle: int | None = None) -> None:
        with self.lock:
            self.console_bytes.append(byte)
            if self.trace:
                shown = repr(chr(byte)) if 0x20 <= byte < 0x7F or byte == 0x0A else ""
                self._line(f"trace {cycle if cycle is not None else '':>10}  console "
                           f"{byte:#04x} {shown}".rstrip())
            if self.line_buffered:
                self.pending.append(byte)
                if byte == 0x0A:
                    self._write_console(bytes(self.pending))
                    self.pending.clear()
            else:
                self._write_console(bytes([byte]))

    def finish(self) -> None:
        """Erase the status line; print an unfinished console line (line_buffered)."""
        with self.lock:
            self._clear_status()
            if self.pending:
                self._write_console(bytes(self.pending))
                self.pending.clear()

    def retired(self, cycle: int, rip: int, raw: bytes) -> None:
        if not self.trace:
            return
        with self.lock:
            text = self.disassembly.get(rip, "")
            self._line(f"trace {cycle:>10}  {rip:<#14x}  {raw.hex(' '):<44} {text}".rstrip())

    def vm_entry(self, cycle: int) -> None:
        with self.lock:
            self.vm_entries += 1
            if self.trace:
                self._line(f"trace {cycle:>10}  VM entry")

    def vm_exit(self, cycle: int, reason: int) -> None:
        with self.lock:
            self.vm_exits[reason] = self.vm_exits.get(reason, 0) + 1
            if self.trace:
                self._line(f"trace {cycle:>10}  VM exit: {exit_reason_name(reason)} ({reason})")

    def vm_entry_failure(self, cycle: int, reason: int, qualification: int) -> None:
        """A VM entry that failed on guest state or MSR loading: a VM exit with bit 31 of the
        exit reason set (SDM Vol. 3C 26.8); `reason` is the basic reason."""
        with self.lock:
            self.vm_entry_failures[reason] = self.vm_entry_failures.get(reason, 0) + 1
            if self.trace:
                full = EXIT_REASON_ENTRY_FAILURE | reason
                what = ENTRY_FAILURE_QUALIFICATIONS.get(qualification, "") \
                    if reason == ExitReason.INVALID_GUEST_STATE.value else ""
                self._line(f"trace {cycle:>10}  VM-entry failure: {exit_reason_name(reason)} "
                           f"({full:#x}), qualification {qualification}"
                           + (f" ({what})" if what else ""))

    def event_line(self, line: str) -> None:
        """One line of the Verilator model's event stream (`sim.run.model`)."""
        parts = line.split()
        if not parts:
            return
        tag = parts[0]
        if tag == "C":
            self.console_byte(int(parts[1], 16), int(parts[2]) if len(parts) > 2 else None)
        elif tag == "T":
            self.retired(int(parts[1]), int(parts[2], 16), bytes.fromhex(parts[4]))
        elif tag == "E":
            self.vm_entry(int(parts[1]))
        elif tag == "X":
            self.vm_exit(int(parts[1]), int(parts[2]))
        elif tag == "F":
            self.vm_entry_failure(int(parts[1]), int(parts[2]), int(parts[3], 16))
        elif tag == "P":
            self.progress(int(parts[1]), int(parts[2]), int(parts[3]), float(parts[4]))


# ---------------------------------------------------------------------------------------------
# The SoC


def soc_factory():
    """The SoC class (`FACTORY`)."""
    try:
        return flow.resolve_factory(FACTORY)
    except (ImportError, AttributeError) as e:
        raise RunError(f"cannot load the SoC RTL {FACTORY}: {e}") from e


def run_stop_names() -> dict[int, str]:
    """`stop` port value -> exit kind (from `RunStop`)."""
    names = {"EXIT_PORT": "exit_port", "HLT": "hlt", "FAULT": "fault", "SHUTDOWN": "shutdown"}
    return {m.value: names.get(m.name, m.name.lower()) for m in RunStop if m is not RunStop.NONE}


def unpack_fault(packed: int) -> dict[str, int]:
    """The ``fault`` port's fields from its packed value (`FAULT_LAYOUT`)."""
    return {name: (packed >> fld.offset) & ((1 << fld.width) - 1)
            for name, fld in FAULT_LAYOUT}


def exit_reason_name(reason: int) -> str:
    try:
        return ExitReason(reason).name
    except ValueError:
        return f"UNKNOWN_{reason}"


# ---------------------------------------------------------------------------------------------
# Back ends


def run_verilator(program: Program, ram_bytes: int, max_cycles: int, dumps, trace: bool,
                  waves: Path | None, printer: Printer, waves_ports: bool = False,
                  progress_ms: int = 0, max_instructions: int | None = None,
                  ) -> tuple[dict, Path, float]:
    """The run on the Verilated SoC, clocked by its C++ harness (`sim.run.model`): (raw results,
    the Verilog the model was built from, seconds spent building it).

    `waves_ports`: trace only the top's ports (`run_model.ports_only_tracing`; another model).
    `progress_ms`: a progress event this often (0: none). `max_instructions`: the harness stops
    at the edge that retires that many instructions (None: no limit)."""
    def heartbeat(message: str) -> None:
        if message.lstrip().startswith("..."):
            _say(message.strip())

    started = time.monotonic()
    try:
        with flow.notice_if_slow(_say, f"building the Verilator model of the SoC"
                                 f"{' with tracing' if waves is not None else ''} (minutes; "
                                 "cached under build/ until the RTL changes)", BUILD_NOTICE_AFTER):
            model = run_model.build(ram_bytes, waves=waves is not None, waves_ports=waves_ports,
                                    progress=heartbeat)
        built = time.monotonic() - started
        raw = run_model.run(model, program, ram_bytes, max_cycles, dumps, trace=trace,
                            waves=waves, on_event=printer.event_line, progress_ms=progress_ms,
                            max_instructions=max_instructions or 0)
    except run_model.ModelError as e:
        raise RunError(str(e)) from e
    packed = raw["gpr"]
    raw["gpr"] = [(packed >> (64 * i)) & ((1 << 64) - 1) for i in range(16)]
    raw["fault"] = unpack_fault(raw["fault"])
    raw["vm_exits"] = dict(printer.vm_exits)
    raw["vm_entry_failures"] = dict(printer.vm_entry_failures)
    raw["vm_entries"] = printer.vm_entries
    raw["console"] = bytes(printer.console_bytes).hex()
    return raw, model.verilog, built


def run_amaranth(program: Program, ram_bytes: int, max_cycles: int, dumps, trace: bool,
                 waves: Path | None, printer: Printer,
                 max_instructions: int | None = None) -> dict:
    """The same run in Amaranth's simulator (per-cycle Python: for short programs), stopped
    like the Verilator harness's: after `max_cycles`, or at the edge that retires the
    `max_instructions`-th instruction (None: no limit)."""
    from amaranth.sim import Simulator

    factory = soc_factory()
    dut = factory(ram_bytes=ram_bytes)
    words = boot_image(program, ram_bytes)
    boot = boot_state(program)
    raw: dict = {}

    def as_int(value) -> int:
        """An integer from what `ctx.get` returns (an int, or an enum member)."""
        return int(getattr(value, "value", value))

    async def testbench(ctx):
        for index, value in sorted(words.items()):
            if value:
                ctx.set(dut.dbg_addr, index)
                ctx.set(dut.dbg_wdata, value)
                ctx.set(dut.dbg_we, 1)
                await ctx.tick()
        ctx.set(dut.dbg_we, 0)
        for name, value in boot.items():
            ctx.set(getattr(dut, name), value)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycle_limit = True
        instruction_limit = False
        for _ in range(max_cycles):
            await ctx.tick()
            if ctx.get(dut.console_valid):
                printer.console_byte(ctx.get(dut.console_data), ctx.get(dut.cycles))
            if trace and ctx.get(dut.retired):
                n = ctx.get(dut.retired_len)
                raw_bytes = ctx.get(dut.retired_bytes).to_bytes(15, "little")[:n]
                printer.retired(ctx.get(dut.cycles), ctx.get(dut.retired_rip), raw_bytes)
            if ctx.get(dut.vm_entry):
                printer.vm_entry(ctx.get(dut.cycles))
            if ctx.get(dut.vm_exit):
                printer.vm_exit(ctx.get(dut.cycles), ctx.get(dut.vm_exit_reason))
            if ctx.get(dut.vm_entry_failure):
                printer.vm_entry_failure(ctx.get(dut.cycles), ctx.get(dut.vm_exit_reason),
                                         ctx.get(dut.vm_exit_qualification))
            if not ctx.get(dut.running):
                cycle_limit = False
                break
            # At the edge that retires the N-th instruction the state ports hold the state
            # after it; the next instruction retires one edge later at the earliest.
            if max_instructions and ctx.get(dut.instructions) >= max_instructions:
                cycle_limit, instruction_limit = False, True
                break
        for name in ("rip", "rflags", "cr0", "cr3", "cr4", "efer", "current_vmcs", "exit_code",
                     "cycles", "instructions", "running"):
            raw[name] = ctx.get(getattr(dut, name))
        raw["stop"] = as_int(ctx.get(dut.stop))
        raw["vmx_mode"] = as_int(ctx.get(dut.vmx_mode))
        gpr = ctx.get(dut.gpr)
        raw["gpr"] = [int(gpr[i]) for i in range(16)]
        fault = ctx.get(dut.fault)
        raw["fault"] = {name: as_int(getattr(fault, name)) for name, _ in FAULT_LAYOUT}
        memory = []
        # Still running (a limit ended the run): pause, so RAM is the debug port's.
        if (cycle_limit or instruction_limit) and dumps:
            ctx.set(dut.pause, 1)
            for _ in range(16):
                await ctx.tick()
                if ctx.get(dut.paused):
                    break
            else:
                raise RunError("the SoC did not pause for the dump within 16 cycles")
        for addr, length in dumps:
            first, last = addr // 8, (addr + length - 1) // 8
            blob = b""
            for q in range(first, last + 1):
                ctx.set(dut.dbg_addr, q)
                await ctx.tick()
                blob += ctx.get(dut.dbg_rdata).to_bytes(8, "little")
            start = addr - first * 8
            memory.append([addr, length, blob[start:start + length].hex()])
        raw.update(cycle_limit=cycle_limit, instruction_limit=instruction_limit,
                   vm_exits=dict(printer.vm_exits),
                   vm_entry_failures=dict(printer.vm_entry_failures),
                   vm_entries=printer.vm_entries, memory=memory)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if waves is not None:
        with sim.write_vcd(str(waves)):
            sim.run()
    else:
        sim.run()
    raw["console"] = bytes(printer.console_bytes).hex()
    return raw


# ---------------------------------------------------------------------------------------------
# Results


def exit_info(raw: dict) -> dict:
    """The ``exit`` object of the JSON."""
    stop = raw["stop"]
    kind = run_stop_names().get(stop)
    if kind is None:
        kind = ("instruction_limit" if raw.get("instruction_limit")
                else "cycle_limit" if raw.get("cycle_limit") else "unknown")
    info: dict = {"kind": kind}
    if kind == "exit_port":
        info["code"] = raw["exit_code"]
    elif kind == "fault":
        f = raw["fault"]
        info.update(vector=f["vector"], name=VECTOR_NAMES.get(f["vector"], f"#{f['vector']}"),
                    error_code=f["error_code"] if f["has_error_code"] else None,
                    rip=f["rip"], addr=f["addr"])
    return info


def console_fields(data: bytes) -> dict:
    """The JSON's ``console`` and ``console_base64`` for the console's bytes `data`.

    Valid UTF-8 is the text itself, and ``console_base64`` is null. Anything else has its exact
    bytes in ``console_base64``; ``console`` is then only for reading, U+FFFD in place of each
    invalid sequence (an escape such as ``\\x84`` would read like a program that printed it)."""
    try:
        return {"console": data.decode("utf-8"), "console_base64": None}
    except UnicodeDecodeError:
        return {"console": data.decode("utf-8", errors="replace"),
                "console_base64": base64.b64encode(data).decode("ascii")}


def result_json(raw: dict) -> dict:
    """The ``--json`` object from a back end's raw results."""
    regs = {name: raw["gpr"][i] for i, name in enumerate(GPR_NAMES)}
    regs.update(rip=raw["rip"], rflags=raw["rflags"])
    try:
        mode = VMX_MODE_NAMES[VmxMode(raw["vmx_mode"])]
    except ValueError:
        mode = f"unknown_{raw['vmx_mode']}"
    current = raw["current_vmcs"]
    out = {
        "exit": exit_info(raw),
        "regs": regs,
        "cr0": raw["cr0"], "cr3": raw["cr3"], "cr4": raw["cr4"], "efer": raw["efer"],
        "vmx": {"mode": mode, "current_vmcs": None if current == INVALID_VMCS_POINTER else current},
        "cycles": raw["cycles"],
        "instructions": raw["instructions"],
        "vm_entries": raw["vm_entries"],
        "vm_exits": {exit_reason_name(r): n for r, n in sorted(raw["vm_exits"].items())},
        "vm_entry_failures": {exit_reason_name(r): n
                              for r, n in sorted(raw["vm_entry_failures"].items())},
        **console_fields(bytes.fromhex(raw["console"])),
    }
    if raw.get("memory"):
        out["memory"] = [{"addr": a, "length": n, "hex": h} for a, n, h in raw["memory"]]
    return out


def summary(result: dict, elapsed: float, built: float = 0.0) -> str:
    """The last line of a run: how it ended, its counts, and the time taken by the run and, if
    the model was built first (`built` seconds), by the build."""
    e = result["exit"]
    if e["kind"] == "exit_port":
        how = f"exit port, code {e['code']}"
    elif e["kind"] == "hlt":
        how = "HLT in root operation"
    elif e["kind"] == "fault":
        ec = "" if e["error_code"] is None else f" error code {e['error_code']:#x}"
        how = f"fault {e['name']} (vector {e['vector']}){ec} at rip {e['rip']:#x}" + \
            (f", address {e['addr']:#x}" if e["vector"] == 14 else "")
    elif e["kind"] == "cycle_limit":
        how = "cycle limit reached (--max-cycles)"
    elif e["kind"] == "instruction_limit":
        how = "instruction limit reached (--max-instructions)"
    else:
        how = e["kind"]
    exits = sum(result["vm_exits"].values())
    failures = sum(result["vm_entry_failures"].values())
    extra = f", {result['vm_entries']} VM entries, {exits} VM exits" if exits or \
        result["vm_entries"] or failures else ""
    if failures:
        extra += f", {failures} VM-entry failure{'' if failures == 1 else 's'}"
    n = result["instructions"]
    times = f"run {elapsed:.1f} s"
    if built >= BUILT_SHOWN_FROM:
        times = f"model build {built:.1f} s, {times}"
    return (f"stopped: {how}; {n} instruction{'' if n == 1 else 's'}, {result['cycles']} "
            f"cycles{extra} ({times})")


def register_lines(result: dict) -> list[str]:
    regs = result["regs"]
    names = [*GPR_NAMES, "rip", "rflags"]
    lines = []
    for i in range(0, len(names), 4):
        lines.append("  ".join(f"{n:>6}={regs[n]:016x}" for n in names[i:i + 4]))
    lines.append("  ".join(f"{n:>6}={result[n]:016x}" for n in ("cr0", "cr3", "cr4", "efer")))
    cur = result["vmx"]["current_vmcs"]
    lines.append(f"   vmx={result['vmx']['mode']}  current_vmcs="
                 f"{'none' if cur is None else f'{cur:#x}'}")
    return lines


def dump_lines(memory: list[dict]) -> list[str]:
    lines = []
    for m in memory:
        span = f"{m['addr']:#x}..{m['addr'] + m['length'] - 1:#x}"
        data = bytes.fromhex(m["hex"])
        lines.append(f"memory {span}:")
        for off in range(0, len(data), 16):
            chunk = data[off:off + 16]
            lines.append(f"  {m['addr'] + off:#012x}  {chunk.hex(' ')}")
    return lines


# ---------------------------------------------------------------------------------------------
# The command


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (UsageError, SystemImageError) as e:
        _say(f"error: {e}")
        return EXIT_USAGE
    except (RunError, OSError) as e:
        _say(f"error: {e}")
        return EXIT_FAILED


def _check_options(args: argparse.Namespace) -> tuple[int, list[tuple[int, int]], Path | None]:
    ram_bytes = RAM_BYTES if args.ram_bytes is None else args.ram_bytes
    if ram_bytes % 8 or ram_bytes <= PROGRAM_BASE:
        raise UsageError(f"--ram-bytes {ram_bytes}: must be a multiple of 8 above the program "
                         f"base {PROGRAM_BASE:#x}")
    if ram_bytes > RAM_BYTES_MAX:
        raise UsageError(f"--ram-bytes {ram_bytes:#x}: at most {RAM_BYTES_MAX:#x} (1 GiB): "
                         "a larger RAM does not fit in the host memory elaboration needs "
                         "(about 2 bytes per byte of RAM)")
    dumps = [parse_dump(text, ram_bytes) for text in args.dump]
    waves = args.waves
    if args.waves_ports and (waves is None or args.sim != "verilator"):
        raise UsageError("--waves-ports: needs --waves and the Verilator back end (the "
                         "Amaranth simulator writes every signal)")
    if waves is not None:
        if waves.suffix == ".gtkw":
            raise UsageError(f"--waves: {waves} would be overwritten by the GTKWave save file; "
                             "name the VCD (FILE.vcd)")
        try:
            waves.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--waves: cannot create the directory of {waves}: {e}") from None
    return ram_bytes, dumps, waves


def _run(args: argparse.Namespace) -> int:
    ram_bytes, dumps, waves = _check_options(args)
    program = load_program(args.program, ram_bytes, disassemble=args.trace)
    stdout_bin = sys.stdout.buffer
    # The console: on stdout, or on stderr with --json (stdout is the JSON's); with --trace it is
    # line-buffered (trace lines show each byte), and with both it is only in the trace and JSON.
    if args.json:
        console = None if args.trace else sys.stderr.buffer
    else:
        console = stdout_bin
    # A status line on a terminal (not with --trace, whose lines stream anyway).
    status = sys.stderr if sys.stderr.isatty() and not args.trace else None
    printer = Printer(console, sys.stderr, trace=args.trace, disassembly=program.disassembly,
                      line_buffered=args.trace, status=status)

    started = time.monotonic()
    verilog = None
    built = 0.0
    if args.sim == "amaranth":
        raw = run_amaranth(program, ram_bytes, args.max_cycles, dumps, args.trace, waves,
                           printer, max_instructions=args.max_instructions)
    else:
        raw, verilog, built = run_verilator(
            program, ram_bytes, args.max_cycles, dumps, args.trace, waves, printer,
            waves_ports=args.waves_ports, progress_ms=STATUS_SECONDS * 1000 if status else 0,
            max_instructions=args.max_instructions)
    elapsed = time.monotonic() - started - built
    printer.finish()
    result = result_json(raw)

    # On a terminal, the summary starts on a fresh line (piped output stays byte for byte).
    if (printer.console_bytes and not printer.console_bytes.endswith(b"\n") and not args.json
            and sys.stdout.isatty()):
        with contextlib.suppress(BrokenPipeError, ValueError):
            stdout_bin.write(b"\n")
            stdout_bin.flush()
    if waves is not None:
        from sim.waves import record_last, write_gtkw

        # The Verilog's enum attributes pick GTKWave translate filters for the Verilator dump
        # (Amaranth's own VCD already shows enums by name).
        gtkw = write_gtkw(waves, waves.with_suffix(".gtkw"), GTKW_PORT_GROUPS,
                          toplevel=run_model.TOPLEVEL if args.sim == "verilator" else None,
                          verilog=verilog)
        record_last(waves)      # `make waves` opens it
        _say(f"waves: {waves} (GTKWave: gtkwave {gtkw})")
    _say(summary(result, elapsed, built))
    if args.json:
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
    else:
        for line in register_lines(result):
            print(line, file=sys.stderr)
        if dumps:
            with contextlib.suppress(BrokenPipeError):
                sys.stdout.write("\n".join(dump_lines(result["memory"])) + "\n")
                sys.stdout.flush()
    return EXIT_OK
