"""The copy of a cached VMCS into the working copy, row by row, in the background.

A VMPTRLD that makes another cache slot's VMCS current (and a miss, once its region is in the
slot's rows) answers as soon as its revision dword is checked; `RowCopy` then reads the slot's
rows of the cache memory's wide copy (`rtl.vmx.vmcs_cache`), one per cycle, and the working copy
(`rtl.vmx.working_copy`) takes each whole row from the row port's data in the cycle after. The
sequencer does not wait for it: VMREAD reads the field memory, and a VMWRITE's read-back
(`rtl.vmx.read_back`) lands in the working copy after the copy took the row the write went into
(its read comes after the write, the copy's before or never in the same cycle). Only what reads
the working copy (VM entry) waits for ``busy`` to fall.

The copy reads a row only when the row port is free (``port_free``: the read-back has priority)
and no write goes into the same row of the same slot in that cycle (the wide copy leaves
read-during-write to the block RAM: that data would be undefined); it reads that row again in a
later cycle. A ``start`` while a copy runs begins the new one: every row is copied again.

Ports
-----
``start`` (in): begin copying slot ``slot`` (from row 0, which may be read in this cycle).
``port_free`` (in): the row port is the copy's in this cycle.
``wr_en``, ``wr_slot``, ``wr_row`` (in): the cache memory's write in this cycle (its row of the
wide copy).
``row_read`` (out): the row port reads row ``row_index`` of slot ``row_slot`` for the copy in this
cycle (the address is driven in every cycle; only ``row_read`` says it is the copy's read).
``take``, ``take_row`` (out): the working copy takes row ``take_row`` (every lane) from the row
port's data in this cycle.
``busy`` (out): rows are left to read or a read is still to be taken.

Timing
------
``start`` in cycle t: row 0 read in t (if the port is free), taken in t+1, the last of the
`FIELD_ROW_COUNT` rows taken in t + `FIELD_ROW_COUNT` and ``busy`` low from t +
`FIELD_ROW_COUNT` + 1, one cycle later for every cycle the port is not free or a write meets
the row to be read.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.vmx.vmcs_cache import FIELD_ROW_COUNT, ROWS_PER_SLOT

__all__ = ["RowCopy"]


class RowCopy(wiring.Component):
    def __init__(self, *, slots: int):
        self.slots = slots
        super().__init__({
            "start": In(1),
            "slot": In(range(slots)),
            "port_free": In(1),
            "wr_en": In(1),
            "wr_slot": In(range(slots)),
            "wr_row": In(range(ROWS_PER_SLOT)),
            "row_read": Out(1),
            "row_slot": Out(range(slots)),
            "row_index": Out(range(ROWS_PER_SLOT)),
            "take": Out(1),
            "take_row": Out(range(ROWS_PER_SLOT)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        active = Signal()                           # rows are left to read
        source = Signal(range(self.slots))          # the slot being copied
        next_row = Signal(range(ROWS_PER_SLOT))     # the next row to read
        m.d.comb += [self.row_slot.eq(Mux(self.start, self.slot, source)),
                     self.row_index.eq(Mux(self.start, 0, next_row))]
        meets_write = (self.wr_en & (self.wr_slot == self.row_slot)
                       & (self.wr_row == self.row_index))
        m.d.comb += [self.row_read.eq((self.start | active) & self.port_free & ~meets_write),
                     self.busy.eq(active | self.take)]
        m.d.sync += [self.take.eq(self.row_read), self.take_row.eq(self.row_index)]
        with m.If(self.start):
            m.d.sync += [source.eq(self.slot), next_row.eq(0), active.eq(1)]
        with m.If(self.row_read):
            m.d.sync += [next_row.eq(self.row_index + 1),
                         active.eq(self.row_index != FIELD_ROW_COUNT - 1)]
        return m
