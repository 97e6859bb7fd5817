"""Reference model of `rtl.soc.vmx_operands.VmxOperands`: the operands of a VMX instruction as
the VMX unit takes them, written out from the instructions' operand forms (SDM Vol. 3C chapter
31: VMREAD/VMWRITE name the field in their register operand, INVEPT/INVVPID the type; VMFUNC
takes EAX and ECX; VMXON, VMCLEAR, VMPTRLD read an m64, INVEPT/INVVPID a 128-bit descriptor,
VMWRITE an r/m64) and the exit qualification of 28.2.1 (the displacement; RIP-relative: the
effective address)."""

from __future__ import annotations

from rtl.arch.system import FEATURE_CONTROL_RESET
from rtl.core.layouts import VMX_OP_OF_CLASS, InsnClass

MASK64 = (1 << 64) - 1
#: The memory source operands' bytes.
SOURCE_BYTES = {InsnClass.VMXON: 8, InsnClass.VMCLEAR: 8, InsnClass.VMPTRLD: 8,
                InsnClass.VMWRITE: 8, InsnClass.INVEPT: 16, InsnClass.INVVPID: 16}


def vmx_operands(v: dict) -> dict:
    """The outputs for the inputs `v` (the component's port names); `instr` flattened as
    `op`, `precheck`, ..., `cpu.<field>`."""
    cls = v["cls"]
    vmfunc = cls == InsnClass.VMFUNC
    precheck = bool(v["mem"] and cls in SOURCE_BYTES and not v["loaded"]
                    and not v["precheck_final"])
    disp = v["disp"] - (1 << 32) if v["disp"] >> 31 else v["disp"]
    return {
        "op": VMX_OP_OF_CLASS[cls],
        "precheck": int(precheck),
        "register_operand": int(not v["mem"]),
        "mem": v["mem_val"],
        "reg": v["rax"] if vmfunc else v["reg_val"],
        "value": v["rcx"] if vmfunc else (v["mem_val"] & MASK64 if v["mem"] else v["rm_val"]),
        "qualification": ((v["ea"] if v["rip_rel"] else disp & MASK64) if v["mem"] else 0),
        "cpu.cpl": 0, "cpu.cr0": v["cr0"], "cpu.cr4": v["cr4"], "cpu.efer": v["efer"],
        "cpu.cs_l": 1, "cpu.rflags": v["rflags"], "cpu.feature_control": FEATURE_CONTROL_RESET,
        "cpu.mov_ss_blocking": 0,
        "mem_bytes": SOURCE_BYTES.get(cls, 0),
    }
