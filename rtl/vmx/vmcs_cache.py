"""The VMCS cache: on-chip copies of `slots` VMCSs, their tags, launch states and LRU order.

Data: one Amaranth `Memory` of 64-bit rows, row ``slot * 256 + field slot`` (the field slot of
`rtl.arch.vmx.FIELDS`, zero-extended), with one synchronous read port (data of the address
presented in the previous cycle while ``rd_en``; with ``rd_en`` low the data holds) and one
write port with a write enable per 32-bit half (``wr_en`` bit 0: bits 31:0, bit 1: bits 63:32;
a VMWRITE of a field's high half writes only bits 63:32). The VMX unit keeps every slot's rows
up to date (the current VMCS's too: write-through) and reads VMREAD results and region
write-backs from here.

Rows: a second copy of the same data, `FIELD_LANES` fields to a row (field slot ``f`` in row
``f // FIELD_LANES``, lane ``f % FIELD_LANES``, row ``slot * ROWS_PER_SLOT + f // FIELD_LANES``
of a `64 * FIELD_LANES`-bit memory), written by the same write port (the field's lane only) and
read by its own synchronous port (``row_slot``, ``row_index``, ``row_en``, ``row_data``: the whole
row, one cycle after its address; holds while ``row_en`` is low). The working copy takes whole
rows from here: a VMPTRLD copies a VMCS in `FIELD_ROW_COUNT` cycles, and every write into the
working copy comes from this port (the unit reads the written row back), so the working copy's
registers need no multiplexer in front of their data inputs. The two copies cost block RAM only:
each port reads its own copy, a narrow one (no lane multiplexer on VMREAD's path) and a wide one.
What either read port returns for an address written in the same cycle is undefined (the
block RAM's behaviour: both memories are marked `no_rw_check`); the user must not rely on such
a read (the VMX unit does not: its formal harness proves it).

Metadata per slot (registers, so that all slots are looked up in one cycle):

* ``tag``: bits MAXPHYADDR-1:12 of the VMCS region address, ``valid``;
* ``launched``: the launch state, ``lbv``: launched before a VMXOFF (VMRESUME gives error 6);
* ``dirty``: the cached copy differs from the region (written back before eviction);
* ``age``: LRU order, a permutation of 0..slots-1 (0 = most recently used).

Commands (one cycle each, several may be given in one cycle on different slots except where
noted): ``touch`` (make `touch_slot` most recently used), ``fill`` (slot `fill_slot` now holds
the VMCS of `fill_tag`, clean, with the given launch state), ``free`` (invalidate `free_slot`),
``mark_dirty``, ``set_launched`` (launch state of `launch_slot`; marks it dirty), ``vmxoff``
(every launched VMCS becomes "launched before VMXOFF").
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.vmx import FIELDS, MAXPHYADDR

__all__ = ["VmcsCache", "FIELD_ROWS", "FIELD_LANES", "FIELD_ROW_COUNT", "ROWS_PER_SLOT",
           "field_row", "field_lane", "lane_enables"]

#: Rows reserved per slot in the narrow data memory (a power of two >= len(FIELDS)).
FIELD_ROWS = 256
assert len(FIELDS) <= FIELD_ROWS
#: Fields per row of the wide copy (a power of two), rows that hold a VMCS, rows reserved per slot.
FIELD_LANES = 16
FIELD_ROW_COUNT = -(-len(FIELDS) // FIELD_LANES)
ROWS_PER_SLOT = 1 << (FIELD_ROW_COUNT - 1).bit_length()
LANE_BITS = (FIELD_LANES - 1).bit_length()
ROW_BITS = (ROWS_PER_SLOT - 1).bit_length()
assert FIELD_LANES == 1 << LANE_BITS


def field_row(slot):
    """Row of the wide copy that holds field slot `slot` (an int, or an Amaranth value of at
    least `LANE_BITS` + `ROW_BITS` bits: then a `ROW_BITS`-bit value)."""
    if isinstance(slot, int):
        return slot >> LANE_BITS
    return slot[LANE_BITS:LANE_BITS + ROW_BITS]


def field_lane(slot):
    """Lane (64-bit position in the row) of field slot `slot` (an int, or an Amaranth value:
    then its low `LANE_BITS` bits)."""
    if isinstance(slot, int):
        return slot & (FIELD_LANES - 1)
    return slot[0:LANE_BITS]


def lane_enables(field, halves):
    """The 2 x `FIELD_LANES` write enables of a row that writes the 32-bit halves `halves` (2
    bits) of field slot `field` (an Amaranth value) and nothing else."""
    lane = field_lane(field)
    return Cat(*(Mux(lane == i, halves, 0) for i in range(FIELD_LANES)))


class VmcsCache(wiring.Component):
    def __init__(self, *, slots: int = 4, maxphyaddr: int = MAXPHYADDR):
        assert slots >= 2
        self.slots = slots
        self.tag_bits = maxphyaddr - 12
        s = range(slots)
        f = range(FIELD_ROWS)
        super().__init__({
            # Lookup (combinational).
            "lookup_tag": In(self.tag_bits),
            "hit": Out(1),
            "hit_slot": Out(s),
            # The slot a miss replaces: a free slot, else the least recently used one.
            "victim": Out(s),
            # Metadata of two slots (two query ports: the current VMCS's and the victim's).
            "a_slot": In(s), "a_launched": Out(1), "a_lbv": Out(1),
            "b_slot": In(s), "b_valid": Out(1), "b_dirty": Out(1), "b_launched": Out(1),
            "b_lbv": Out(1), "b_tag": Out(self.tag_bits),
            # Data.
            "rd_slot": In(s), "rd_field": In(f), "rd_en": In(1, init=1), "rd_data": Out(64),
            "wr_en": In(2), "wr_slot": In(s), "wr_field": In(f), "wr_data": In(64),
            # Rows of the wide copy.
            "row_slot": In(s), "row_index": In(range(ROWS_PER_SLOT)), "row_en": In(1, init=1),
            "row_data": Out(64 * FIELD_LANES),
            # Commands.
            "touch": In(1), "touch_slot": In(s),
            "fill": In(1), "fill_slot": In(s), "fill_tag": In(self.tag_bits),
            "fill_launched": In(1), "fill_lbv": In(1),
            "free": In(1), "free_slot": In(s),
            "mark_dirty": In(1), "dirty_slot": In(s),
            "set_launched": In(1), "launch_slot": In(s), "launch_value": In(1),
            "vmxoff": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        k = self.slots
        # `no_rw_check` on both memories: a read of an address being written in the same cycle
        # returns what the block RAM gives (no emulation of the old data, which costs a
        # register and a multiplexer a bit); the VMX unit never uses such a read (module doc).
        m.submodules.data = data = memory.Memory(shape=64, depth=k * FIELD_ROWS, init=[],
                                                 attrs={"no_rw_check": 1})
        rd = data.read_port()
        wr = data.write_port(granularity=32)
        m.d.comb += [
            rd.addr.eq(Cat(self.rd_field, self.rd_slot)),
            rd.en.eq(self.rd_en),
            self.rd_data.eq(rd.data),
            wr.addr.eq(Cat(self.wr_field, self.wr_slot)),
            wr.data.eq(self.wr_data),
            wr.en.eq(self.wr_en),
        ]
        m.submodules.rows = rows = memory.Memory(shape=64 * FIELD_LANES, depth=k * ROWS_PER_SLOT,
                                                 init=[], attrs={"no_rw_check": 1})
        row_rd = rows.read_port()
        row_wr = rows.write_port(granularity=32)
        m.d.comb += [
            row_rd.addr.eq(Cat(self.row_index, self.row_slot)),
            row_rd.en.eq(self.row_en),
            self.row_data.eq(row_rd.data),
            row_wr.addr.eq(Cat(field_row(self.wr_field), self.wr_slot)),
            row_wr.data.eq(self.wr_data.replicate(FIELD_LANES)),
            row_wr.en.eq(lane_enables(self.wr_field, self.wr_en)),
        ]

        tags = [Signal(self.tag_bits, name=f"tag{i}") for i in range(k)]
        valid = [Signal(name=f"valid{i}") for i in range(k)]
        launched = [Signal(name=f"launched{i}") for i in range(k)]
        lbv = [Signal(name=f"lbv{i}") for i in range(k)]
        dirty = [Signal(name=f"dirty{i}") for i in range(k)]
        age_w = max(1, (k - 1).bit_length())
        ages = [Signal(age_w, name=f"age{i}", init=i) for i in range(k)]

        # Queries.
        for i in range(k):
            with m.If(self.a_slot == i):
                m.d.comb += [self.a_launched.eq(launched[i]), self.a_lbv.eq(lbv[i])]
            with m.If(self.b_slot == i):
                m.d.comb += [self.b_valid.eq(valid[i]), self.b_dirty.eq(dirty[i]),
                             self.b_launched.eq(launched[i]), self.b_lbv.eq(lbv[i]),
                             self.b_tag.eq(tags[i])]

        # Lookup.
        for i in reversed(range(k)):
            with m.If(valid[i] & (tags[i] == self.lookup_tag)):
                m.d.comb += [self.hit.eq(1), self.hit_slot.eq(i)]
        # Victim: a free slot (lowest), else the one with the oldest age.
        oldest = Signal(range(k))
        for i in reversed(range(k)):
            with m.If(ages[i] == k - 1):
                m.d.comb += oldest.eq(i)
        free_any = Signal()
        free_slot = Signal(range(k))
        for i in reversed(range(k)):
            with m.If(~valid[i]):
                m.d.comb += [free_any.eq(1), free_slot.eq(i)]
        m.d.comb += self.victim.eq(Mux(free_any, free_slot, oldest))

        # LRU update.
        with m.If(self.touch):
            cur = Signal(age_w)
            for i in range(k):
                with m.If(self.touch_slot == i):
                    m.d.comb += cur.eq(ages[i])
            for i in range(k):
                with m.If(self.touch_slot == i):
                    m.d.sync += ages[i].eq(0)
                with m.Elif(ages[i] < cur):
                    m.d.sync += ages[i].eq(ages[i] + 1)

        # Metadata commands (later statements win for the same slot).
        for i in range(k):
            with m.If(self.vmxoff & launched[i]):
                m.d.sync += lbv[i].eq(1)
            with m.If(self.mark_dirty & (self.dirty_slot == i)):
                m.d.sync += dirty[i].eq(1)
            with m.If(self.set_launched & (self.launch_slot == i)):
                m.d.sync += [launched[i].eq(self.launch_value), dirty[i].eq(1)]
            with m.If(self.fill & (self.fill_slot == i)):
                m.d.sync += [valid[i].eq(1), dirty[i].eq(0), launched[i].eq(self.fill_launched),
                             lbv[i].eq(self.fill_lbv), tags[i].eq(self.fill_tag)]
            with m.If(self.free & (self.free_slot == i)):
                m.d.sync += [valid[i].eq(0), dirty[i].eq(0), launched[i].eq(0), lbv[i].eq(0)]
        return m

