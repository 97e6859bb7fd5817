"""The VMREAD/VMWRITE field decode: which supported VMCS field an encoding names.

An encoding (SDM Vol. 3C 25.11.2, `rtl.arch.vmx.field_by_encoding`) has the access type in
bit 0 (1: the high 32 bits of a 64-bit field), the index in bits 9:1, the type in bits 11:10,
bit 12 reserved and the width in bits 14:13; bits 31:15 are reserved, and in 64-bit mode the
operand's bits 63:32 must be 0 too. Every supported field's index is below 32, so width, type
and the index's low five bits (9 bits) tell the fields apart: `FieldDecode` looks those 9 bits
up in a table of the supported fields (its slot, whether it is read-only, whether it has a high
access) and requires every other bit of the encoding to be 0. (Compared with a case per
supported encoding over all 15 bits, the table is about half the LUT4s: 235 against 441, Yosys
`synth_ecp5`, each alone.)

Ports
-----
``encoding`` (in, 64): the VMREAD/VMWRITE encoding operand (the caller masks it to the operand
size).
``supported`` (out): it names a supported field (else VMfailValid 12, unsupported component);
``field`` (out, slot in `FIELDS`), ``high`` (out: the high access of a 64-bit field),
``read_only`` (out: VMWRITE gives error 13), all 0 unless ``supported``.

Timing
------
Combinational.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.vmx import FIELDS

__all__ = ["FieldDecode", "table_address"]

#: What the table holds per 9-bit address.
_ENTRY = data.StructLayout({"valid": 1, "field": range(len(FIELDS)), "read_only": 1,
                            "has_high": 1})


def table_address(encoding: int) -> int:
    """The table address of a field's encoding: width, type and the index's low 5 bits."""
    return ((encoding >> 13 & 3) << 7) | ((encoding >> 10 & 3) << 5) | (encoding >> 1 & 0x1F)


_TABLE = {table_address(f.encoding): f for f in FIELDS}
assert len(_TABLE) == len(FIELDS) and all(f.encoding >> 1 & 0x1FF < 32 for f in FIELDS), \
    "two supported fields share a table address, or an index is beyond the table"


class FieldDecode(wiring.Component):
    encoding: In(64)
    supported: Out(1)
    field: Out(range(len(FIELDS)))
    high: Out(1)
    read_only: Out(1)

    def elaborate(self, platform):
        m = Module()
        enc = self.encoding
        entry = Signal(_ENTRY)
        with m.Switch(Cat(enc[1:6], enc[10:12], enc[13:15])):
            for address, f in _TABLE.items():
                with m.Case(address):
                    m.d.comb += [entry.valid.eq(1), entry.field.eq(f.slot),
                                 entry.read_only.eq(f.read_only), entry.has_high.eq(f.has_high)]
        # Index bits 9:5, bit 12 and bits 63:15 are 0 for every supported field.
        others_zero = (enc[6:10] == 0) & ~enc[12] & (enc[15:64] == 0)
        access_high = enc[0]
        ok = Signal()
        m.d.comb += [
            ok.eq(others_zero & entry.valid & (~access_high | entry.has_high)),
            self.supported.eq(ok),
            self.field.eq(Mux(ok, entry.field, 0)),
            self.high.eq(ok & access_high),
            self.read_only.eq(ok & entry.read_only),
        ]
        return m
