"""VMX conformance programs (examples/conformance/, expectations in examples/conformance/cases.py).

Self-checking programs (instructions.S, vmentry.S) provoke each case and check it as software
would (flags, VMREAD of the VM-instruction error, exit reason and qualification), printing
"PASS name" / "FAIL name: ..." and ending with exit code = failures; the test also requires
every case of the source to have printed PASS, in order (a case that stops running is a
failure too). Fault programs (faults/*.S) end in the #UD / #GP they provoke, with that vector
at `fault_here`.

Each program runs on the reference models (examples/hypervisor/emulate.py: Unicorn +
`VmxModel` + the translation model) and, once rtl/soc and `vtx run` exist, on the system RTL
(`vtx run --json`, the default Soc configuration, so one Verilator model serves every run).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "examples" / "conformance"
HV = ROOT / "examples" / "hypervisor"
for p in (str(ROOT), str(CONF), str(HV)):
    if p not in sys.path:
        sys.path.insert(0, p)

import cases  # noqa: E402
import emulate  # noqa: E402
import system_run  # noqa: E402

from rtl.arch import VmInstructionError  # noqa: E402


def check_run(program: str, exit_: dict, console: str, symbols: dict[str, int],
              regs: dict[str, int]) -> None:
    expected = cases.PROGRAMS[program]
    for key, value in expected.items():
        if key == "rflags":
            got = regs["rflags"]
        elif key == "code":
            got = system_run.exit_code(exit_)
        else:
            got = exit_.get(key)
        if key == "rip":
            value = symbols[value]
        assert got == value, f"{program}: exit {key} = {got!r}, expected {value!r} " \
                             f"(exit {exit_}, console:\n{console})"
    if program in cases.SELF_CHECKING:
        lines = console.splitlines()
        failed = [line for line in lines if line.startswith("FAIL")]
        assert not failed, "\n".join(failed)
        passed = [line.split()[1] for line in lines if line.startswith("PASS ")]
        assert passed == cases.case_names(program)


def test_case_tables_cover_every_program_and_error():
    on_disk = {str(p.relative_to(CONF)) for p in CONF.rglob("*.S")}
    assert on_disk == set(cases.PROGRAMS)
    for program in cases.SELF_CHECKING:
        names = cases.case_names(program)
        assert len(names) == len(set(names)) > 20, program
    # Every VM-instruction error the design produces is provoked, or said to be unreachable.
    assert cases.DESIGN_ERRORS <= {e.value for e in VmInstructionError}
    provoked = cases.errors_provoked()
    assert provoked | set(cases.NOT_PROVOKABLE) == cases.DESIGN_ERRORS
    assert not provoked & set(cases.NOT_PROVOKABLE)
    # Each fault program names its case and expected vector in its header.
    for program, exit_ in cases.FAULTS.items():
        text = cases.source(program)
        assert f'"vector": {exit_["vector"]}}}' in text and "fault_here:" in text, program


def test_vmentry_resets_every_field_a_case_changes():
    """valid_vmcs rewrites the fields listed in valid_fields (plus control registers and RIPs
    at run time); every field a case writes must be among them, or cases would leak."""
    text = cases.source("vmentry.S")
    table = text[text.index("valid_fields:"):]
    reset = set(re.findall(r"\.quad (VMCS_[A-Z0-9_]+),", table))
    for seg in ("ES", "SS", "DS", "FS", "GS"):
        reset |= {f"VMCS_GUEST_{seg}_{part}" for part in ("SELECTOR", "LIMIT", "AR_BYTES")}
    at_run_time = {f"VMCS_{w}_{r}" for w in ("HOST", "GUEST") for r in ("CR0", "CR3", "CR4", "RIP")}
    at_run_time.add("VMCS_HOST_RSP")
    written = set(re.findall(r"(?:WRITE|BAD_CONTROL|BAD_HOST|BAD_GUEST)\s+(?:[a-z0-9_]+,\s*)?"
                             r"(VMCS_[A-Z0-9_]+)", text))
    written |= set(re.findall(r"mov \$(VMCS_[A-Z0-9_]+), %r11d\n\s+vmwrite", text))
    assert written - reset - at_run_time == set()


@pytest.mark.parametrize("program", sorted(cases.PROGRAMS))
def test_on_the_model(program):
    image, symbols = emulate.build(CONF / program)
    result = emulate.Emulator(image).run()
    check_run(program, result.exit, result.console, symbols, result.regs)


@pytest.mark.parametrize("program", sorted(cases.PROGRAMS))
def test_on_the_system(program):
    _, symbols = emulate.build(CONF / program)
    out = system_run.run(CONF / program)
    check_run(program, out["exit"], out["console"], symbols, out["regs"])


def entry_failure_qualifications(text: str) -> list[int]:
    """The exit qualification each VM-entry failure of a conformance source must report, in
    program order: every `BAD_GUEST` case and every explicit `EXPECT_EXIT ...,
    EXIT_REASON_INVALID_GUEST_STATE`. SDM Vol. 3C 26.8: 4 when the VMCS link pointer failed its
    checks, 0 for the other guest-state checks."""
    from rtl.arch.vmx import ENTRY_FAIL_DEFAULT, ENTRY_FAIL_VMCS_LINK_POINTER

    quals, in_macro = [], False
    for line in text.splitlines():
        words = line.replace(",", " ").split()
        if not words:
            continue
        if words[0] == ".macro":
            in_macro = True
        elif words[0] == ".endm":
            in_macro = False
        elif in_macro:
            continue
        elif words[0] == "BAD_GUEST":
            link = words[2] == "VMCS_VMCS_LINK_POINTER"
            quals.append(ENTRY_FAIL_VMCS_LINK_POINTER if link else ENTRY_FAIL_DEFAULT)
        elif words[0] == "EXPECT_EXIT" and words[2] == "EXIT_REASON_INVALID_GUEST_STATE":
            quals.append(ENTRY_FAIL_DEFAULT)
    return quals


def test_entry_failures_are_traced_and_counted():
    """`vtx run --trace` shows each VM-entry failure of vmentry.S with its full exit reason and
    qualification; `--json` counts them apart from the VM exits."""
    import json
    import subprocess

    from rtl.arch.vmx import EXIT_REASON_INVALID_GUEST_STATE

    expected = entry_failure_qualifications(cases.source("vmentry.S"))
    assert len(expected) >= 20 and expected.count(4) == 3
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", "--json", "--trace",
                           str(CONF / "vmentry.S")], cwd=ROOT, capture_output=True,
                          text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["exit"]["kind"] == "exit_port" and system_run.exit_code(out["exit"]) == 0
    failures = re.findall(r"VM-entry failure: (\w+) \((0x[0-9a-f]+)\), qualification (\d+)",
                          proc.stderr)
    assert [(name, int(full, 16)) for name, full, _ in failures] == \
        [("INVALID_GUEST_STATE", EXIT_REASON_INVALID_GUEST_STATE)] * len(expected)
    assert [int(q) for _, _, q in failures] == expected
    assert out["vm_entry_failures"] == {"INVALID_GUEST_STATE": len(expected)}
    assert "INVALID_GUEST_STATE" not in out["vm_exits"]
