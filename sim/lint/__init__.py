"""`vtx lint`: Verilator's lint (``--lint-only -Wall``) over the generated Verilog of every top.

Each registered top is generated through `sim.flow.generate_verilog` (so the lint sees exactly
what the simulations build) and linted with the project's one waiver file,
``sim/lint/waivers.vlt``. To lint a new top, append to `TOPS`::

    Top("walker", "rtl.translation.walker:Walker", {"maxphyaddr": 40}),

A top whose module cannot be imported (not written yet, or renamed) is reported as an error
with the import problem, not a traceback.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim import flow


@dataclass(frozen=True)
class Top:
    """A lint target: Verilog module `name` made by ``factory(**params)``."""

    name: str
    factory: str  # "package.module:Attr"
    params: Mapping[str, Any] = field(default_factory=dict)


#: The registry of tops to lint. Add a line per top (or per interesting parameter set).
TOPS: list[Top] = [
    Top("translation_unit", "rtl.translation.unit:TranslationUnit", {}),
    Top("vm_entry_checks", "rtl.vmx.entry_checks:VmEntryChecks", {}),
    Top("core_alu", "rtl.core.alu:Alu", {}),
    Top("core_execute", "rtl.core.execute:ExecuteUnit", {}),
    Top("core_access", "rtl.core.access:AccessLanes", {}),
    Top("core_address", "rtl.core.address:AddressGen", {}),
    Top("core_destination", "rtl.core.destination:Destination", {}),
    Top("core_prefetch_policy", "rtl.core.prefetch_policy:PrefetchPolicy", {}),
    Top("core_regfile", "rtl.core.regfile:RegisterFile", {}),
    Top("core_decoder", "rtl.core.decode:Decoder", {}),
    Top("core", "rtl.core.core:Core", {}),
    Top("exit_decisions", "rtl.vmx.exit_decisions:ExitDecisions", {}),
    Top("preemption_timer", "rtl.vmx.preemption_timer:PreemptionTimer", {}),
    Top("vmx_unit", "rtl.vmx.unit:VmxUnit", {}),
    Top("vmx_working_copy", "rtl.vmx.working_copy:WorkingCopy", {}),
    Top("vmx_exit_write_back", "rtl.vmx.exit_write_back:ExitWriteBack", {}),
    Top("vmx_decision", "rtl.vmx.decision:InstructionDecision", {}),
    Top("vmx_field_decode", "rtl.vmx.field_decode:FieldDecode", {}),
    Top("vmx_host_state_load", "rtl.vmx.state_loads:HostStateLoad", {}),
    Top("vmx_guest_state_load", "rtl.vmx.state_loads:GuestStateLoad", {}),
    Top("system_unit", "rtl.soc.system_unit:SystemUnit", {"maxphyaddr": 40}),
    Top("system_values", "rtl.soc.system_values:SystemValues", {}),
    Top("vmx_operands", "rtl.soc.vmx_operands:VmxOperands", {}),
    Top("boundary_events", "rtl.soc.boundary_events:BoundaryEvents", {}),
    Top("exit_record", "rtl.soc.exit_record:ExitRecord", {}),
    Top("system_memory", "rtl.soc.memory:SystemMemory",
        {"ram_bytes": 1 << 16, "maxphyaddr": 40, "walk_tag_width": 1}),
    # The SoC as `vtx run` simulates it (sim.run.top: no reset input); with its reset, the
    # SoC is inside `system_top`.
    Top("soc_run", "sim.run.top:SocRunTop", {}),
    Top("system_memory_sparse", "rtl.soc.memory:SystemMemory",
        {"ram_bytes": 1 << 16, "maxphyaddr": 40, "walk_tag_width": 1, "pages": (3, 1, 6),
         "init": {0x1008 // 8: 0x1111}}),
    Top("system_top", "rtl.fpga.system_top:SystemTop",
        {"pages": (1, 2, 0xFF, 0x100), "image": {0x100000 // 8: 0xF4E6}, "uart_divisor": 4,
         "boot": {"init_rip": 0x100000, "init_rsp": 0x100000, "init_cr3": 0x1000},
         "heartbeat_cycles": 1000}),
]


@dataclass
class LintResult:
    name: str
    ok: bool
    output: str  # Verilator's messages (or the reason the top could not be generated)
    verilog: Path | None = None
    seconds: float = 0.0


class TopUnavailable(Exception):
    """The top's module or class cannot be imported."""


def lint_command(verilog: Sequence[Path], *, waivers: Path = flow.WAIVERS,
                 top_module: str | None = None) -> list[str]:
    """The Verilator command line that lints `verilog` with the waiver file."""
    cmd = ["verilator", "--lint-only", "-Wall", "--quiet", str(waivers)]
    if top_module:
        cmd += ["--top-module", top_module]
    return cmd + [str(v) for v in verilog]


def lint_verilog(verilog: Path | Sequence[Path], *, top_module: str | None = None,
                 waivers: Path = flow.WAIVERS) -> tuple[bool, str]:
    """Lint Verilog file(s); returns (clean, Verilator's output)."""
    files = [Path(verilog)] if isinstance(verilog, (str, Path)) else [Path(v) for v in verilog]
    env = flow.verilator_env()
    proc = subprocess.run(
        lint_command(files, waivers=waivers, top_module=top_module),
        env=env, capture_output=True, text=True, check=False,
    )
    output = (proc.stdout + proc.stderr).strip()
    return proc.returncode == 0 and "%Warning" not in output and "%Error" not in output, output


def resolve_top(top: Top):
    """Import the factory of `top`, turning import problems into `TopUnavailable`."""
    try:
        return flow.resolve_factory(top.factory)
    except ModuleNotFoundError as e:
        raise TopUnavailable(f"cannot import {top.factory}: {e}") from e
    except (ImportError, AttributeError) as e:
        raise TopUnavailable(f"cannot load {top.factory}: {type(e).__name__}: {e}") from e


def lint_top(top: Top, *, build_root: str | Path | None = None) -> LintResult:
    """Generate `top`'s Verilog (cached) and lint it."""
    start = time.monotonic()
    try:
        resolve_top(top)
        verilog = flow.generate_verilog(top.factory, top.name, top.params, build_root=build_root)
    except TopUnavailable as e:
        return LintResult(top.name, False, str(e), seconds=time.monotonic() - start)
    except flow.FlowError as e:
        return LintResult(top.name, False, str(e), seconds=time.monotonic() - start)
    ok, output = lint_verilog(verilog, top_module=top.name)
    return LintResult(top.name, ok, output, verilog, time.monotonic() - start)


def run(names: Sequence[str] = (), *, build_root: str | Path | None = None,
        out=sys.stdout) -> int:
    """Lint the named tops (all if none); print a report; return a process exit status."""
    tops = TOPS
    if names:
        known = {t.name: t for t in TOPS}
        unknown = [n for n in names if n not in known]
        if unknown:
            print(f"vtx lint: unknown top(s): {', '.join(unknown)}; "
                  f"known: {', '.join(known)}", file=sys.stderr)
            return 2
        tops = [known[n] for n in names]
    failures = 0
    for top in tops:
        result = lint_top(top, build_root=build_root)
        status = "clean" if result.ok else ("FAILED" if result.verilog else "ERROR")
        where = f" ({result.verilog})" if result.verilog else ""
        print(f"lint {result.name}: {status} in {result.seconds:.1f} s{where}", file=out)
        if result.output:
            print("\n".join("    " + line for line in result.output.splitlines()), file=out)
        failures += not result.ok
    print(f"vtx lint: {len(tops) - failures} clean, {failures} failed", file=out)
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------
# `vtx lint`


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "lint",
        help="Verilator lint (-Wall) of the generated Verilog of every top",
        description="Generate the Verilog of each registered top (sim.lint.TOPS) and run "
                    "`verilator --lint-only -Wall` on it with the waivers in "
                    "sim/lint/waivers.vlt. Exits 1 if any top has warnings or cannot be "
                    "generated.",
    )
    parser.add_argument("tops", nargs="*", metavar="TOP",
                        help="names of the tops to lint (default: all)")
    parser.add_argument("--list", action="store_true", help="list the registered tops and exit")
    parser.set_defaults(func=_main)
    return parser


def _main(args: argparse.Namespace) -> int:
    if args.list:
        for top in TOPS:
            print(f"{top.name}\t{top.factory}\t{dict(top.params)}")
        return 0
    return run(args.tops)
