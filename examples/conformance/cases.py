"""The VMX conformance programs and what each must end with (tests/test_conformance.py).

Two kinds of programs:

* `SELF_CHECKING`: programs that provoke many cases and check each as software would (the
  flags after the instruction, VMREAD of the VM-instruction error field 0x4400, VMREAD of the
  exit reason 0x4402 and exit qualification after a VM exit or VM-entry failure). Each case
  prints "PASS name" or "FAIL name: got X expected Y"; the run ends at the exit port with the
  number of failures. `case_names(program)` lists the cases a program checks (read from its
  source, so a case that silently stops running is noticed).
* `FAULTS`: one tiny program per #UD / #GP case. Root operation has no IDT, so these cannot be
  caught by software: the expected end of the run is the fault itself, given as the `exit`
  object of `vtx run --json` (a subset of its keys; "rip" is a symbol of the program, resolved
  by the test; "rflags", when given, is compared with the run's `regs`).

`ERRORS_PROVOKED` is read from the sources too; `DESIGN_ERRORS` is the set of VM-instruction
errors the design can produce (docs/vmx.md: the SMM / dual-monitor errors are left out), and
`NOT_PROVOKABLE` says why the rest cannot be reached by a program on this system.
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent

SELF_CHECKING: dict[str, dict] = {
    "instructions.S": {"kind": "exit_port", "code": 0},
    "vmentry.S": {"kind": "exit_port", "code": 0},
}


def _fault(vector: int, error_code: int | None = None) -> dict:
    exit_ = {"kind": "fault", "vector": vector, "rip": "fault_here"}
    if error_code is not None:
        exit_["error_code"] = error_code
    return exit_


UD, GP = 6, 13

FAULTS: dict[str, dict] = {
    f"faults/{name}.S": _fault(UD) for name in (
        "ud_vmxon_with_cr4_vmxe_0",
        "ud_vmxoff_outside_vmx",
        "ud_vmclear_outside_vmx",
        "ud_vmptrld_outside_vmx",
        "ud_vmptrst_outside_vmx",
        "ud_vmread_outside_vmx",
        "ud_vmwrite_outside_vmx",
        "ud_vmlaunch_outside_vmx",
        "ud_vmresume_outside_vmx",
        "ud_vmcall_outside_vmx",
        "ud_invept_outside_vmx",
        "ud_invvpid_outside_vmx",
        "ud_vmfunc_in_root",
        "ud_vmxon_register_operand",
        "ud_vmptrld_register_operand",
        "ud_invept_register_operand",
    )
} | {
    f"faults/{name}.S": _fault(GP, 0) for name in (
        "gp_vmxon_with_cr0_ne_0",
        "gp_wrmsr_feature_control_locked",
        "gp_wrmsr_vmx_capability_msr",
        "gp_rdmsr_unimplemented_vmx_msr",
    )
}

#: #PF on the memory operand of VMREAD / VMWRITE: error code (W for the VMREAD store), and
#: RFLAGS unchanged ("rflags" is checked against the `regs` of the run): ZF | PF | bit 1, as
#: the XOR before the instruction left them.
FAULTS |= {
    "faults/pf_vmread_unmapped_destination.S": _fault(14, 2) | {"rflags": 0x46},
    "faults/pf_vmwrite_unmapped_source.S": _fault(14, 0) | {"rflags": 0x46},
}

#: Every program and its expected `exit` object.
PROGRAMS: dict[str, dict] = SELF_CHECKING | FAULTS

#: VM-instruction errors the design produces (docs/vmx.md; 16-25 belong to SMM and the
#: dual-monitor treatment, which the design leaves out).
DESIGN_ERRORS = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 26, 28})

#: Errors no program on this system can provoke, and why.
NOT_PROVOKABLE = {
    26: "VM entry with events blocked by MOV SS needs MOV SS / POP SS right before VMLAUNCH; "
        "neither is in the core's instruction subset (docs/core.md), so it is #UD",
}

#: Cases that cannot be written as programs here at all (no #GP for CPL > 0: the core has no
#: way to leave CPL 0; no compatibility mode or virtual-8086 mode: no far branches, no IRET).
NOT_WRITABLE = (
    "#GP(0) of the VMX instructions at CPL > 0",
    "#UD of the VMX instructions in compatibility or virtual-8086 mode, or with CR0.PE = 0",
    "VMXON #GP with IA32_FEATURE_CONTROL unlocked or without VMX (it is locked with VMX on out "
    "of reset and cannot be written)",
)

#: Macros of conf.inc / vmentry.S whose first argument is a case name.
_CASE_MACROS = ("EXPECT_FLAGS", "EXPECT_ERROR", "EXPECT_RAX", "EXPECT_ENTRY_ERROR",
                "EXPECT_EXIT", "EXPECT_FIELD", "BAD_CONTROL", "BAD_HOST", "BAD_GUEST")
_CASE_RE = re.compile(r"^\s*(?:" + "|".join(_CASE_MACROS) + r")\s+([A-Za-z0-9_]+)\s*,", re.M)
_NAME_RE = re.compile(r"^\s*NAME\s+([A-Za-z0-9_]+)\s*$", re.M)
_ERROR_RE = re.compile(r"\bVMERR_([A-Z0-9_]+)")


def source(program: str) -> str:
    return (HERE / program).read_text()


def case_names(program: str) -> list[str]:
    """The case names a self-checking program prints, in source order (macro definitions and
    the runtime's own checks excluded)."""
    text = source(program)
    text = re.sub(r"^\.macro.*?^\.endm", "", text, flags=re.M | re.S)
    found = []
    for m in sorted([*_CASE_RE.finditer(text), *_NAME_RE.finditer(text)], key=lambda m: m.start()):
        found.append(m.group(1))
    return found


def errors_provoked() -> set[int]:
    """VM-instruction error numbers some self-checking program expects."""
    from rtl.arch import VmInstructionError
    names = set()
    for program in SELF_CHECKING:
        names |= set(_ERROR_RE.findall(source(program)))
    return {VmInstructionError[n].value for n in names}
