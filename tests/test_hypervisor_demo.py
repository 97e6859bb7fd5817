"""The hypervisor demo (examples/hypervisor/hypervisor.S).

* The constants include is generated from rtl/arch and up to date.
* The program assembles, is position-independent, and its guest fits in its slot.
* It runs to the end on the reference models (examples/hypervisor/emulate.py: Unicorn for the
  ordinary instructions, `VmxModel` for the VMX instructions, VM entries and exits, the
  translation model for the guest's paging x EPT): console exactly as documented in
  examples/hypervisor/README.md, exit code 0, and the table of exits it prints equal to the
  exits that happened.
* The VMCS it built, replayed through a fresh `VmxModel` (VMXON, VMCLEAR, VMPTRLD, VMWRITE of
  every field, VMLAUNCH), passes every VM-entry check; its controls are the ones intended.
* On the system RTL (`vtx run --json`): the same console,
  exit code and exit table, and the `vm_exits` counts the system reports equal the table.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HV = ROOT / "examples" / "hypervisor"
for p in (str(ROOT), str(HV)):
    if p not in sys.path:
        sys.path.insert(0, p)

import emulate  # noqa: E402
import gen_consts  # noqa: E402
import system_run  # noqa: E402

from rtl.arch import (  # noqa: E402
    CR4_PAE,
    CR4_VMXE,
    ENTRY_CTL_IA32E_MODE_GUEST,
    ENTRY_CTL_LOAD_EFER,
    ENTRY_CTL_TRUE_DEFAULT1,
    EXIT_CTL_HOST_ADDRESS_SPACE_SIZE,
    EXIT_CTL_LOAD_EFER,
    EXIT_CTL_TRUE_DEFAULT1,
    FIELDS,
    PIN_DEFAULT1,
    PROC2_ENABLE_EPT,
    PROC2_ENABLE_VM_FUNCTIONS,
    PROC2_ENABLE_VPID,
    PROC_ACTIVATE_SECONDARY,
    PROC_HLT_EXITING,
    PROC_TRUE_DEFAULT1,
    PROC_UNCONDITIONAL_IO_EXITING,
    QUAL_FINAL,
    QUAL_GLA_VALID,
    QUAL_READ,
    VMCS_REVISION_ID,
    ExitReason,
    FieldType,
    VmxResult,
)
from tb.model.translation import Memory  # noqa: E402
from tb.model.vmx import CpuState, Vmcs, VmxModel, example_vmcs_fields  # noqa: E402

SOURCE = HV / "hypervisor.S"
VMCS_HPA = 0x181000             # the hypervisor's memory map (hypervisor.S, README.md)
VMXON_HPA = 0x180000
EPT0_HPA = 0x182000

#: The console of a run, exactly (README.md shows the same). The EPT-violation qualification is
#: the one kvm-unit-tests expects on real hardware for a read of a page EPT does not map
#: (reference 5.5): read | GLA valid | access to the final translation.
EXPECTED_CONSOLE = f"""\
[hv] vtx hypervisor demo
[hv] VMX supported, VMCS revision id {VMCS_REVISION_ID:#x}
[hv] VMXON done, VMCS loaded
[hv] EPT views, EPTP list and guest memory ready
[hv] launching the guest
[guest] hello from a 64-bit guest with its own page tables, under EPT
[guest] CPUID vendor: VTXHyperVis!
[guest] reading a page EPT does not map yet
[hv] EPT violation at GPA 0x40000, exit qualification {QUAL_READ | QUAL_GLA_VALID | QUAL_FINAL:#x}
[hv] mapped GPA 0x40000 to host page 0x240000, resuming the guest at the same instruction
[guest] it reads: this page was mapped on demand by the hypervisor
[guest] EPT view 0 reads: the guest's own page (EPT view 0)
[guest] after VMFUNC to view 1: a page of the hypervisor (EPT view 1)
[guest] HLT: waiting for the preemption timer
[hv] guest HLT: arming the VMX-preemption timer
[hv] preemption timer tick 1: re-armed
[hv] preemption timer tick 2: re-armed
[hv] preemption timer tick 3: timer off
[guest] preemption-timer ticks seen: 3
[guest] done, VMCALL
[hv] guest VMCALL: the guest is done
[hv] VM exits handled:
[hv]   CPUID (10): 1
[hv]   HLT (12): 1
[hv]   VMCALL (18): 1
[hv]   IO_INSTRUCTION (30): 452
[hv]   EPT_VIOLATION (48): 1
[hv]   PREEMPTION_TIMER (52): 3
[hv]   total: 459
[hv] VMXOFF done, bye
"""

_TABLE_LINE = re.compile(r"^\[hv\]   ([A-Z_0-9]+) \((\d+)\): (\d+)$")


def exit_table(console: str) -> dict[str, int]:
    """The exit table the hypervisor printed: reason name -> count (numbers checked)."""
    table = {}
    for line in console.splitlines():
        m = _TABLE_LINE.match(line)
        if m:
            name, number, count = m.group(1), int(m.group(2)), int(m.group(3))
            assert ExitReason[name].value == number, line
            table[name] = count
    total = re.search(r"^\[hv\]   total: (\d+)$", console, re.M)
    assert total and int(total.group(1)) == sum(table.values())
    return table


def check_demo(console: str, exit_: dict, vm_exits: dict[str, int]) -> None:
    assert exit_["kind"] == "exit_port" and system_run.exit_code(exit_) == 0, (exit_, console)
    assert console == EXPECTED_CONSOLE
    table = exit_table(console)
    # The table the hypervisor printed is what happened.
    assert table == {k: v for k, v in vm_exits.items() if v}
    # Every byte the guest printed was one OUT, one I/O exit.
    guest_bytes = sum(len(line) + 1 for line in console.splitlines() if line.startswith("[guest]"))
    assert table["IO_INSTRUCTION"] == guest_bytes


def test_constants_include_is_up_to_date():
    assert gen_consts.main(["--check"]) == 0, "run examples/hypervisor/gen_consts.py"
    text = (HV / "vmx_consts.inc").read_text()
    # Spot checks against hand-written values (SDM encodings / exit reasons).
    for line in (".set VMCS_GUEST_RIP, 0x681e", ".set VMCS_VM_INSTRUCTION_ERROR, 0x4400",
                 ".set EXIT_EPT_VIOLATION, 0x30", ".set VMERR_VMPTRLD_VMXON_POINTER, 0xa",
                 ".set PROC2_ENABLE_VM_FUNCTIONS, 0x2000",
                 ".set IA32_VMX_TRUE_PINBASED_CTLS, 0x48d"):
        assert line in text.splitlines(), line


def test_demo_assembles_position_independent():
    image, symbols = emulate.build(SOURCE)
    image2, _ = emulate.build(SOURCE, base=0x200000)
    assert image == image2, "the image depends on where it is linked (absolute relocations)"
    assert symbols["_start"] == 0x100000
    guest_size = symbols["guest_image_end"] - symbols["guest_image"]
    assert 0 < guest_size <= 0x30000 - 0x10000      # SHARED_GPA - GUEST_CODE_GPA
    assert len(image) < 0x80000                      # below the hypervisor's data pages


@pytest.fixture(scope="module")
def model_run():
    image, _ = emulate.build(SOURCE)
    emu = emulate.Emulator(image)
    return emu, emu.run()


def test_demo_on_the_model(model_run):
    _, result = model_run
    check_demo(result.console, result.exit, result.vm_exits)


def test_demo_vmcs_passes_the_entry_checks(model_run):
    """Replay the VMCS the hypervisor built (VMCLEARed to memory at its end) through a fresh
    model, field by field with VMWRITE, and VMLAUNCH it."""
    emu, _ = model_run
    built = Vmcs.load(emu.mem, VMCS_HPA)
    f = built.fields
    # The controls intended: the TRUE capability MSRs' minimum plus the features used (the
    # preemption timer is off again at the end).
    assert f["PIN_BASED_VM_EXEC_CONTROL"] == PIN_DEFAULT1
    assert f["CPU_BASED_VM_EXEC_CONTROL"] == (PROC_TRUE_DEFAULT1 | PROC_HLT_EXITING
                                              | PROC_UNCONDITIONAL_IO_EXITING
                                              | PROC_ACTIVATE_SECONDARY)
    assert f["SECONDARY_VM_EXEC_CONTROL"] == (PROC2_ENABLE_EPT | PROC2_ENABLE_VPID
                                              | PROC2_ENABLE_VM_FUNCTIONS)
    assert f["VM_EXIT_CONTROLS"] == (EXIT_CTL_TRUE_DEFAULT1 | EXIT_CTL_HOST_ADDRESS_SPACE_SIZE
                                     | EXIT_CTL_LOAD_EFER)
    assert f["VM_ENTRY_CONTROLS"] == (ENTRY_CTL_TRUE_DEFAULT1 | ENTRY_CTL_IA32E_MODE_GUEST
                                      | ENTRY_CTL_LOAD_EFER)
    assert f["EPT_POINTER"] == EPT0_HPA | 0x1E          # WB, 4-level walk
    assert f["VM_FUNCTION_CONTROL"] == 1
    # Guest segments as the model's known-good VMCS has them.
    good = example_vmcs_fields()
    for name in good:
        if name.startswith("GUEST_") and any(s in name for s in ("_SELECTOR", "_AR_BYTES",
                                                                 "_LIMIT")):
            if name in ("GUEST_IDTR_LIMIT",):
                continue
            assert f[name] == good[name], name
    # Replay.
    mem = Memory()
    model = VmxModel(mem)
    cpu = CpuState(cr4=CR4_PAE | CR4_VMXE)
    model.write_region_header(VMXON_HPA)
    model.write_region_header(VMCS_HPA)
    assert model.vmxon(cpu, VMXON_HPA).kind is VmxResult.SUCCEED
    assert model.vmclear(cpu, VMCS_HPA).kind is VmxResult.SUCCEED
    assert model.vmptrld(cpu, VMCS_HPA).kind is VmxResult.SUCCEED
    for field in FIELDS:
        if field.type is not FieldType.EXIT_INFO:
            r = model.vmwrite(cpu, field.encoding, f[field.name])
            assert r.kind is VmxResult.SUCCEED, (field.name, r)
    r = model.vmlaunch(cpu)
    assert r.kind is VmxResult.VM_ENTRY, r
    assert r.entry.ept_enabled and r.entry.vpid == 1


def test_demo_on_the_system():
    out = system_run.run(SOURCE)
    check_demo(out["console"], out["exit"], out["vm_exits"])
    assert out["vmx"]["mode"] == "off"
