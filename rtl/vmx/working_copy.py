"""The working copy: the current VMCS in registers, for the blocks that read fields in parallel.

The VM-entry checks, the exit decisions, the state a VM entry loads and a VM exit hands back all
read fields of the current VMCS together, every cycle; the VMX unit keeps them here, one
register per field (`WORKING_LAYOUT`: every field but those no block reads in parallel,
`rtl.vmx.layouts.NOT_IN_WORKING_COPY`, which only the cache memory holds), and keeps the cache
memory's rows of the same VMCS equal (write-through, `rtl.vmx.unit`).

Every register has at most two ways in, so that each bit costs at most one LUT on the FPGA:

* the row port (``row_en``, ``row_index``, ``row_data``): a row of the cache memory's wide copy
  (`rtl.vmx.vmcs_cache`, `FIELD_LANES` fields to a row) straight from its read port, each field's
  32-bit halves with their own enables (``row_en`` bit ``2 * lane``: bits 31:0 of the field in
  that lane, bit ``2 * lane + 1``: bits 63:32). Every other write reaches the working copy this
  way: the unit writes the cache memory (VMWRITE, a region load, VMFUNC's EPTP) and reads the
  row back; a VMPTRLD copies whole rows. The data input of a register that only this port
  writes is the memory's output bit itself.
* the parallel port (``par_en``, ``par_data``): the fields of the working copy a VM exit writes
  all at once (`PARALLEL_FIELDS`: the guest state the core changes, the VM-entry interruption
  information and VM-entry controls), each with its own enable (a VM exit saves some of them only
  under exit controls). The exit-information fields a VM exit writes are not here: the exit
  write-back holds them until they are in the cache memory (`rtl.vmx.exit_write_back`).

A field written on both ports in one cycle takes the parallel port's value.

Ports
-----
``row_en`` (in, 2 x `FIELD_LANES`), ``row_index`` (in, row of a slot), ``row_data`` (in,
64 x `FIELD_LANES`): the row write.
``par_en`` (in, one bit per member of `PARALLEL_LAYOUT`), ``par_data`` (in, `PARALLEL_LAYOUT`):
the parallel write.
``vmcs`` (out, `WORKING_LAYOUT`): the registers.

Timing
------
A write shows on ``vmcs`` in the next cycle. There is no reset: nothing reads the working copy
before a VMPTRLD has filled it (the unit's ``wc_live``), and a reset would turn every register's
enable into logic in front of its data input.
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.vmx import EXIT_SAVED_GUEST_FIELDS, FIELD_BY_NAME
from rtl.vmx.layouts import WORKING_FIELDS, WORKING_LAYOUT, member_name
from rtl.vmx.vmcs_cache import FIELD_LANES, FIELD_ROW_COUNT, ROWS_PER_SLOT, field_lane, field_row

__all__ = ["WorkingCopy", "PARALLEL_FIELDS", "PARALLEL_LAYOUT"]

#: The fields of the working copy a VM exit writes in one cycle (`rtl.vmx.exit_fields`).
PARALLEL_FIELDS = (
    "VM_ENTRY_INTR_INFO_FIELD", "VM_ENTRY_CONTROLS",
    *EXIT_SAVED_GUEST_FIELDS,
)
assert set(PARALLEL_FIELDS) <= {f.name for f in WORKING_FIELDS}

PARALLEL_LAYOUT = data.StructLayout(
    {member_name(n): unsigned(FIELD_BY_NAME[n].bits) for n in PARALLEL_FIELDS})


class WorkingCopy(wiring.Component):
    row_en: In(2 * FIELD_LANES)
    row_index: In(range(ROWS_PER_SLOT))
    row_data: In(64 * FIELD_LANES)
    par_en: In(len(PARALLEL_FIELDS))
    par_data: In(PARALLEL_LAYOUT)
    vmcs: Out(WORKING_LAYOUT)

    def elaborate(self, platform):
        m = Module()
        par = {member_name(n): i for i, n in enumerate(PARALLEL_FIELDS)}
        wc = Signal(WORKING_LAYOUT, reset_less=True)
        m.d.comb += self.vmcs.eq(wc)
        # One decoded select per row: the row port's address decoder.
        at_row = Signal(FIELD_ROW_COUNT)
        for r in range(FIELD_ROW_COUNT):
            m.d.comb += at_row[r].eq(self.row_index == r)
        for f in WORKING_FIELDS:
            n = member_name(f)
            reg = wc[n]
            lane = field_lane(f.slot)
            lane_data = self.row_data[64 * lane:64 * (lane + 1)]
            halves = [(0, min(32, f.bits))] + ([(32, f.bits)] if f.bits > 32 else [])
            for h, (lo, hi) in enumerate(halves):
                from_row = Signal(name=f"{n}_we{h}")
                m.d.comb += from_row.eq(at_row[field_row(f.slot)] & self.row_en[2 * lane + h])
                if n in par:
                    sel = self.par_en[par[n]]
                    with m.If(sel | from_row):
                        m.d.sync += reg[lo:hi].eq(
                            Mux(sel, self.par_data[n][lo:hi], lane_data[lo:hi]))
                else:
                    with m.If(from_row):
                        m.d.sync += reg[lo:hi].eq(lane_data[lo:hi])
        return m
