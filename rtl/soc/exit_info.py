"""The VM-exit instruction-information field of a VMX instruction's VM exit (SDM Vol. 3C
28.2.5, tables 28-13 to 28-15: "Format of the VM-Exit Instruction-Information Field as Used for
VMCLEAR, VMPTRLD, VMPTRST, VMXON ...", "... for VMREAD and VMWRITE", "... for INVEPT, INVPCID,
INVVPID ..."), as a pure function that builds the value (`vmx_instruction_information`).

For a memory operand: the scaling (0 without an index), the address size (64-bit: the core runs
in 64-bit mode only), the segment register, the index and base registers with their "invalid"
bits. For VMREAD's and VMWRITE's register operand: bit 10 set and the register in Reg1 (bits
6:3), the memory-operand fields undefined. Reg2 (bits 31:28) is ModRM.reg for VMREAD, VMWRITE,
INVEPT and INVVPID. Other instructions' exits (VMCALL, VMLAUNCH, VMRESUME, VMXOFF, VMFUNC) leave
the field 0. Bits the tables leave undefined are 0.
"""

from amaranth.hdl import C, Cat, Mux, Shape, Value

from ..arch.vmx import VmxInstrInfoLayout
from ..core.layouts import InsnClass, is_one_of

__all__ = ["vmx_instruction_information", "ADDRESS_SIZE_64", "WITH_INFO", "WITH_REG2"]

#: The VMX instructions whose VM exit reports instruction information, and those of them with a
#: Reg2 (ModRM.reg).
WITH_INFO = (InsnClass.VMCLEAR, InsnClass.VMPTRLD, InsnClass.VMPTRST, InsnClass.VMXON,
             InsnClass.VMREAD, InsnClass.VMWRITE, InsnClass.INVEPT, InsnClass.INVVPID)
WITH_REG2 = (InsnClass.VMREAD, InsnClass.VMWRITE, InsnClass.INVEPT, InsnClass.INVVPID)
#: The address-size encoding: 0 16-bit, 1 32-bit, 2 64-bit.
ADDRESS_SIZE_64 = 2


def _pack(layout, fields):
    """A value of `layout` with `fields` {name: value} (the other fields 0)."""
    parts = []
    for name, field in sorted(layout, key=lambda item: item[1].offset):
        width = Shape.cast(field.shape).width
        v = Value.cast(fields.get(name, C(0, width)))
        parts.append(v[:width] if len(v) >= width else Cat(v, C(0, width - len(v))))
    return Cat(*parts)


def vmx_instruction_information(cls, mem, scale, index, index_valid, base, base_valid, seg,
                                rm, reg):
    """The 32-bit field for an exit of instruction class `cls` with the request's operand
    fields (`mem`: the r/m operand is memory; `rm`, `reg`: ModRM's register numbers)."""
    info = is_one_of(cls, *WITH_INFO)
    on_mem = info & mem
    on_reg = info & ~mem
    zero = C(0, 4)
    return _pack(VmxInstrInfoLayout, {
        "scaling": Mux(on_mem & index_valid, scale, 0),
        "reg1": Mux(on_reg, rm, zero),
        "address_size": Mux(on_mem, ADDRESS_SIZE_64, 0),
        "register_operand": on_reg,
        "segment": Mux(on_mem, seg, 0),
        "index": Mux(on_mem & index_valid, index, zero),
        "index_invalid": on_mem & ~index_valid,
        "base": Mux(on_mem & base_valid, base, zero),
        "base_invalid": on_mem & ~base_valid,
        "reg2": Mux(is_one_of(cls, *WITH_REG2), reg, zero),
    })
