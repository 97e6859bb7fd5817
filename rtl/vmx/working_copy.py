"""The working copy: the current VMCS in registers, for the blocks that read fields in parallel.

The VM-entry checks, the exit decisions, the state a VM entry loads and a VM exit hands back all
read fields of the current VMCS together, every cycle; the VMX unit keeps them here, one
register per field (`VMCS_LAYOUT`), and keeps the cache memory's rows of the same VMCS equal
(write-through, `rtl.vmx.unit`).

Every register has exactly two ways in, so that each bit costs at most one LUT on the FPGA:

* the indexed port (``wr_en``, ``wr_field``, ``wr_data``): one field per cycle, each 32-bit half
  with its own enable (``wr_en`` bit 0: bits 31:0, bit 1: bits 63:32), the value taken from
  ``wr_data`` as wide as the field. VMWRITE, a VMPTRLD's copy and region load, the VMfail error
  number and VMFUNC's EPTP all come this way (the unit never needs two of them in one cycle).
* the parallel port (``par_en``, ``par_data``): the fields a VM exit writes all at once
  (`PARALLEL_FIELDS`: the exit-information fields, the guest state the core changes, the
  VM-entry interruption information and VM-entry controls), each with its own enable (a VM exit
  saves some of them only under exit controls); a VM-entry failure writes the exit reason and
  qualification this way too.

A field written on both ports in one cycle takes the parallel port's value.

Ports
-----
``wr_en`` (in, 2), ``wr_field`` (in, field slot), ``wr_data`` (in, 64): the indexed write.
``par_en`` (in, one bit per member of `PARALLEL_LAYOUT`), ``par_data`` (in, `PARALLEL_LAYOUT`):
the parallel write.
``vmcs`` (out, `VMCS_LAYOUT`): the registers.

Timing
------
A write shows on ``vmcs`` in the next cycle. There is no reset: nothing reads the working copy
before a VMPTRLD has filled it (the unit's ``wc_live``), and a reset would turn every register's
enable into logic in front of its data input.
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.vmx import EXIT_SAVED_GUEST_FIELDS, FIELD_BY_NAME, FIELDS
from rtl.vmx.layouts import VMCS_LAYOUT, member_name

__all__ = ["WorkingCopy", "PARALLEL_FIELDS", "PARALLEL_LAYOUT"]

#: The fields a VM exit writes in one cycle (`rtl.vmx.unit`: the exit-information fields first,
#: in the order its background copy to the cache memory takes them, then the saved guest state).
PARALLEL_FIELDS = (
    "VM_EXIT_REASON", "EXIT_QUALIFICATION", "GUEST_LINEAR_ADDRESS", "GUEST_PHYSICAL_ADDRESS",
    "VM_EXIT_INSTRUCTION_LEN", "VMX_INSTRUCTION_INFO", "VM_EXIT_INTR_INFO",
    "VM_EXIT_INTR_ERROR_CODE", "IDT_VECTORING_INFO_FIELD", "IDT_VECTORING_ERROR_CODE",
    "VM_ENTRY_INTR_INFO_FIELD", "VM_ENTRY_CONTROLS",
    *EXIT_SAVED_GUEST_FIELDS,
)

PARALLEL_LAYOUT = data.StructLayout(
    {member_name(n): unsigned(FIELD_BY_NAME[n].bits) for n in PARALLEL_FIELDS})


class WorkingCopy(wiring.Component):
    wr_en: In(2)
    wr_field: In(range(len(FIELDS)))
    wr_data: In(64)
    par_en: In(len(PARALLEL_FIELDS))
    par_data: In(PARALLEL_LAYOUT)
    vmcs: Out(VMCS_LAYOUT)
    pending: Out(1)

    def elaborate(self, platform):
        m = Module()
        par = {member_name(n): i for i, n in enumerate(PARALLEL_FIELDS)}
        wc = Signal(VMCS_LAYOUT, reset_less=True)
        m.d.comb += self.vmcs.eq(wc)
        # The indexed write, registered: the registers' data inputs see only these flip-flops
        # and the parallel port.
        wr_en = Signal(2)
        wr_field = Signal(range(len(FIELDS)), reset_less=True)
        wr_data = Signal(64, reset_less=True)
        m.d.sync += [wr_en.eq(self.wr_en), wr_field.eq(self.wr_field), wr_data.eq(self.wr_data)]
        m.d.comb += self.pending.eq(wr_en.any())
        # One decoded select per field: the indexed port's address decoder.
        hit = Signal(len(FIELDS))
        for f in FIELDS:
            m.d.comb += hit[f.slot].eq(wr_field == f.slot)
        for f in FIELDS:
            n = member_name(f)
            reg = wc[n]
            halves = [(0, min(32, f.bits))] + ([(32, f.bits)] if f.bits > 32 else [])
            for h, (lo, hi) in enumerate(halves):
                indexed = Signal(name=f"{n}_we{h}")
                m.d.comb += indexed.eq(hit[f.slot] & wr_en[h])
                if n in par:
                    sel = self.par_en[par[n]]
                    with m.If(sel | indexed):
                        m.d.sync += reg[lo:hi].eq(
                            Mux(sel, self.par_data[n][lo:hi], wr_data[lo:hi]))
                else:
                    with m.If(indexed):
                        m.d.sync += reg[lo:hi].eq(wr_data[lo:hi])
        return m
