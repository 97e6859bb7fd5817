"""The way of a write into the working copy: through the cache memory's wide copy.

Every write of the current VMCS other than a VM exit's (VMWRITE, the VMfail error number,
VMFUNC's EPTP) goes into the cache memory (`rtl.vmx.vmcs_cache`). `ReadBack` then has the row
port read that row of the current VMCS in the next cycle, and in the cycle after it the working
copy (`rtl.vmx.working_copy`) takes the written lanes from the row port's data. So the working
copy's registers have the block RAM's output at their data inputs and no multiplexer of the
values that may be written.

A read whose data the working copy takes must not meet a write of the same row (the wide copy
leaves read-during-write to the block RAM): a write into the row being read in that cycle adds
its lanes to the read, which reads the row again in the next cycle (the first read's data is
not taken).

Ports
-----
``write`` (in): a write of the current VMCS went into the cache memory in this cycle, into row
``write_row`` (a row of the wide copy), lanes ``write_lanes`` (a write enable per 32-bit half,
`lane_enables`).
``read`` (out): the row port must read row ``read_row`` of the current VMCS in this cycle;
``read_mask``: the lanes of that row the working copy will take.
``land`` (out): the working copy takes lanes ``land_mask`` of row ``land_row`` from the row
port's data in this cycle.
``pending`` (out): ``read`` or ``land``: a write is on its way into the working copy (what reads
the working copy waits).

Timing
------
``write`` in cycle t: ``read`` in t+1, ``land`` in t+2. A ``write`` of the same row in t+1
postpones both by one cycle and merges the lanes; one of another row lets the first land in
t+2 and reads its own row in t+2.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.vmx.vmcs_cache import FIELD_LANES, ROWS_PER_SLOT

__all__ = ["ReadBack"]


class ReadBack(wiring.Component):
    write: In(1)
    write_row: In(range(ROWS_PER_SLOT))
    write_lanes: In(2 * FIELD_LANES)
    read: Out(1)
    read_row: Out(range(ROWS_PER_SLOT))
    read_mask: Out(2 * FIELD_LANES)
    land: Out(1)
    land_row: Out(range(ROWS_PER_SLOT))
    land_mask: Out(2 * FIELD_LANES)
    pending: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.pending.eq(self.read | self.land)
        m.d.sync += [self.read.eq(0), self.land.eq(self.read), self.land_row.eq(self.read_row),
                     self.land_mask.eq(self.read_mask)]
        with m.If(self.write):
            m.d.sync += self.read.eq(1)
            with m.If(self.read & (self.read_row == self.write_row)):
                m.d.sync += [self.read_mask.eq(self.read_mask | self.write_lanes),
                             self.land.eq(0)]
            with m.Else():
                m.d.sync += [self.read_row.eq(self.write_row), self.read_mask.eq(self.write_lanes)]
        return m
