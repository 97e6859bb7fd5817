"""Reference model of `rtl.soc.system_values.SystemValues`: what CPUID, RDTSC, RDMSR, WRMSR,
MOV from CR and IN/OUT read or produce, from the registers (SDM Vol. 2 for each instruction; Vol.
3C 26.3 for TSC offsetting in VMX non-root operation). The CPUID table and the MSR numbers are
the architecture's constants (`rtl.arch`), shared by the RTL, the models and the tests."""

from __future__ import annotations

from rtl.arch.system import CPUID_LEAVES, CPUID_MAX_LEAF, FEATURE_CONTROL_RESET, MSR_EFER, MSR_TSC
from rtl.arch.vmx import IA32_FEATURE_CONTROL
from rtl.core.layouts import InsnClass, OpSize

MASK64 = (1 << 64) - 1


def system_values(v: dict) -> dict:
    """The outputs for the inputs `v` (the component's port names; `tsc_offsetting` is the
    "use TSC offsetting" control, which counts only in VMX non-root operation)."""
    cpuid = CPUID_LEAVES.get(v["eax"], CPUID_LEAVES[CPUID_MAX_LEAF])
    offset = v["tsc_offset"] if v["non_root"] and v["tsc_offsetting"] else 0
    tsc = (v["tsc"] + offset) & MASK64
    ecx = v["ecx"]
    here = {MSR_TSC: tsc, IA32_FEATURE_CONTROL: FEATURE_CONTROL_RESET, MSR_EFER: v["efer"]}
    known, msr = (True, here[ecx]) if ecx in here else (bool(v["msr_valid"]), v["msr_value"])
    size = v["opsize"]
    io_bytes = {OpSize.S8: 1, OpSize.S16: 2}.get(size, 4)
    return {
        "cpuid_eax": cpuid[0], "cpuid_ebx": cpuid[1], "cpuid_ecx": cpuid[2],
        "cpuid_edx": cpuid[3], "tsc_value": tsc, "msr_addr": ecx, "msr_known": int(known),
        "msr_value_out": msr,
        "wrmsr_value": v["edx"] << 32 | v["eax"],
        "cr_value": {0: v["cr0"], 3: v["cr3"]}.get(v["reg"], v["cr4"]),
        "port": v["imm8"] if v["cls"] in (InsnClass.IN_IMM, InsnClass.OUT_IMM)
        else v["edx"] & 0xFFFF,
        "io_bytes": io_bytes,
        "io_size": OpSize.S32 if size == OpSize.S64 else size,
        "out_value": v["eax"] & ((1 << (8 * io_bytes)) - 1),
    }
