"""Region transfers: a VMCS between its cache slot and its region in memory.

The region format (docs/vmx.md, "VMCS region layout"; `rtl.arch.vmx`): the launch-state qword at
`VMCS_LAUNCH_STATE_OFFSET`, each field as a zero-extended qword at its `offset`. Two transfers,
one at a time:

* **write-back** (``load`` = 0): the launch-state qword ``launch_qword``, then every field of
  cache slot ``slot`` read from the cache memory's narrow read port, written to the region at
  page ``region``: one qword a cycle while the memory port accepts (the read port's address is
  the next qword's, presented a cycle ahead). Nothing may write the slot meanwhile (the memory
  is marked `no_rw_check`).
* **load** (``load`` = 1): reads of the launch-state qword and every field, pipelined (a request
  a cycle while the port accepts; responses in order); each field's response goes into cache
  slot ``slot`` cut to the field's width; the launch-state qword is kept (``launch``).

Ports
-----
``start`` (in), ``load``, ``slot``, ``region`` (the region's page number), ``launch_qword`` (in,
`LaunchStateQwordLayout`):
begin a transfer (from the next cycle; also in the cycle ``done`` is high).
``busy`` (out): a transfer runs. ``done`` (out): it ends in this cycle (the last write accepted,
or the last response taken).
``launch`` (out, `LaunchStateQwordLayout`): the launch-state qword of the last load (valid from
the cycle after its response, so in ``done``'s cycle).
``mem_req``, ``mem_resp``: the VMX unit's memory port (`MEM_REQ_LAYOUT`, `MEM_RESP_LAYOUT`), used
only while ``busy``.
``rd_slot``, ``rd_field``, ``rd_data``: the narrow read port of `VmcsCache` (address of the next
cycle's data; the VMX unit connects it while ``busy``).
``wr_valid``, ``wr_slot``, ``wr_field``, ``wr_data`` (out): a load's write of a field into the
cache memory.

Timing
------
``start`` in cycle t: the first request in t+1. A write-back of N fields takes N+1 accepted
requests (``done`` with the last); a load N+1 requests and ``done`` with the (N+1)th response.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.vmx import (
    FIELDS,
    MAXPHYADDR,
    VMCS_FIELDS_OFFSET,
    VMCS_LAUNCH_STATE_OFFSET,
    VMCS_SLOT_BYTES,
    FieldWidth,
    LaunchStateQwordLayout,
)
from rtl.vmx.layouts import cut_to_width
from rtl.vmx.ports import MEM_REQ_LAYOUT, MEM_RESP_LAYOUT
from rtl.vmx.vmcs_cache import FIELD_ROWS

__all__ = ["RegionTransfer"]

NF = len(FIELDS)
# Request n of a transfer (0: the launch-state qword, 1 + i: field slot i) is at byte offset
# VMCS_LAUNCH_STATE_OFFSET + 8 n.
assert VMCS_SLOT_BYTES == 8 and VMCS_FIELDS_OFFSET == VMCS_LAUNCH_STATE_OFFSET + 8


class RegionTransfer(wiring.Component):
    def __init__(self, *, slots: int = 4, maxphyaddr: int = MAXPHYADDR):
        self.slots = slots
        self.maxphyaddr = maxphyaddr
        super().__init__({
            "start": In(1),
            "load": In(1),
            "slot": In(range(slots)),
            "region": In(maxphyaddr - 12),
            "launch_qword": In(LaunchStateQwordLayout),
            "busy": Out(1),
            "done": Out(1),
            "launch": Out(LaunchStateQwordLayout),
            "mem_req": Out(stream.Signature(MEM_REQ_LAYOUT)),
            "mem_resp": In(stream.Signature(MEM_RESP_LAYOUT)),
            "rd_slot": Out(range(slots)),
            "rd_field": Out(range(FIELD_ROWS)),
            "rd_data": In(64),
            "wr_valid": Out(1),
            "wr_slot": Out(range(slots)),
            "wr_field": Out(range(NF)),
            "wr_data": Out(64),
        })

    def elaborate(self, platform):
        m = Module()
        loading = Signal()
        slot = Signal(range(self.slots))
        region = Signal(self.maxphyaddr - 12)
        launch_qword = Signal(LaunchStateQwordLayout)
        cnt = Signal(range(NF + 2))     # requests: 0 the launch-state qword, 1+i field i
        cnt_nxt = Signal(range(NF + 2))
        rcnt = Signal(range(NF + 2))    # responses of a load, the same numbering
        m.d.comb += cnt_nxt.eq(cnt)
        m.d.sync += cnt.eq(cnt_nxt)

        # Byte offset of request `cnt` (regions are 4 KiB aligned and a VMCS takes less than
        # 4 KiB: the offset goes below the page number).
        offset = Signal(12)
        m.d.comb += offset.eq(Cat(Const(0, 3), cnt) + VMCS_LAUNCH_STATE_OFFSET)
        req = self.mem_req
        m.d.comb += [req.payload.addr.eq(Cat(offset, region)),
                     req.payload.write.eq(~loading),
                     req.payload.data.eq(Mux(cnt == 0, launch_qword, self.rd_data)),
                     self.rd_slot.eq(slot), self.rd_field.eq(cnt_nxt - 1),
                     self.wr_slot.eq(slot)]

        # Width of the field a load's response belongs to: the memory gets it zero-extended.
        width = Signal(FieldWidth)
        with m.Switch(rcnt - 1):
            for f in FIELDS:
                with m.Case(f.slot):
                    m.d.comb += width.eq(f.width)
        data = self.mem_resp.payload.data
        m.d.comb += [self.wr_field.eq(rcnt - 1),
                     self.wr_data.eq(cut_to_width(data, width))]

        with m.If(self.busy & ~loading):
            m.d.comb += req.valid.eq(1)
            with m.If(req.ready):
                with m.If(cnt == NF):
                    m.d.comb += self.done.eq(1)
                    m.d.sync += self.busy.eq(0)
                with m.Else():
                    m.d.comb += cnt_nxt.eq(cnt + 1)
        with m.If(self.busy & loading):
            with m.If(cnt <= NF):
                m.d.comb += req.valid.eq(1)
                with m.If(req.ready):
                    m.d.comb += cnt_nxt.eq(cnt + 1)
            m.d.comb += self.mem_resp.ready.eq(1)
            with m.If(self.mem_resp.valid):
                m.d.sync += rcnt.eq(rcnt + 1)
                with m.If(rcnt == 0):
                    m.d.sync += self.launch.eq(data)
                with m.Else():
                    m.d.comb += self.wr_valid.eq(1)
                with m.If(rcnt == NF):
                    m.d.comb += self.done.eq(1)
                    m.d.sync += self.busy.eq(0)

        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), loading.eq(self.load), slot.eq(self.slot),
                         region.eq(self.region), launch_qword.eq(self.launch_qword),
                         rcnt.eq(0)]
            m.d.comb += cnt_nxt.eq(0)
        return m
