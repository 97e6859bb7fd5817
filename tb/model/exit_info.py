"""Reference model of `rtl.soc.exit_info.VmxInstructionInformation`: the VM-exit
instruction-information field of a VMX instruction, bit positions from the SDM (Vol. 3C
28.2.5, tables 28-13 to 28-15), not from the RTL's layout."""

from __future__ import annotations

from rtl.core.layouts import InsnClass

#: Classes whose exit reports the field; those with Reg2.
WITH_INFO = {InsnClass.VMCLEAR, InsnClass.VMPTRLD, InsnClass.VMPTRST, InsnClass.VMXON,
             InsnClass.VMREAD, InsnClass.VMWRITE, InsnClass.INVEPT, InsnClass.INVVPID}
WITH_REG2 = {InsnClass.VMREAD, InsnClass.VMWRITE, InsnClass.INVEPT, InsnClass.INVVPID}


def instruction_information(v: dict) -> int:
    """The field for a request `v` (cls, mem, scale, index, index_valid, base, base_valid, seg,
    rm, reg); undefined bits 0."""
    if v["cls"] not in WITH_INFO:
        return 0
    info = 0
    if v["mem"]:
        info |= (v["scale"] if v["index_valid"] else 0) << 0      # bits 1:0 scaling
        info |= 2 << 7                                             # bits 9:7 address size: 64
        info |= v["seg"] << 15                                     # bits 17:15 segment
        info |= (v["index"] if v["index_valid"] else 0) << 18      # bits 21:18 index
        info |= (0 if v["index_valid"] else 1) << 22               # bit 22 index invalid
        info |= (v["base"] if v["base_valid"] else 0) << 23        # bits 26:23 base
        info |= (0 if v["base_valid"] else 1) << 27                # bit 27 base invalid
    else:
        info |= 1 << 10                                            # bit 10: register operand
        info |= v["rm"] << 3                                       # bits 6:3 Reg1
    if v["cls"] in WITH_REG2:
        info |= v["reg"] << 28                                     # bits 31:28 Reg2
    return info
