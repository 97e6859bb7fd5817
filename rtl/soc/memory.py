"""The system's RAM and the arbiter in front of it (`SystemMemory`).

One `amaranth.lib.memory.Memory` of 64-bit words (byte-granular writes) serves four requesters,
one access at a time, in fixed priority order (the walker first: it holds the core's access):

==========  =============================================  ===================================
port        requests                                       responses
==========  =============================================  ===================================
``walk``    the translation unit's walker: a read, or an   reads only, with the request's tag
            atomic bit-set (``write`` = 1: ``data`` is
            OR-ed into the word: the A/D flag update)
``vmx``     the VMX unit: qword read or write               reads only
``bitmap``  the exit-decision block's bitmap reads          every request
``data``    the core's accesses after translation: a      every request (writes answer 0)
            read, or a write of the bytes in ``mask``
==========  =============================================  ===================================

Addresses are host-physical byte addresses of 8-byte-aligned qwords (bits 2:0 ignored). RAM
covers 0 .. ``ram_bytes`` - 1; a read outside answers all ones (`OPEN_BUS`), a write outside
is dropped (docs/system.md).

The debug port (``dbg_*``) owns the RAM while ``dbg_active`` = 1 (the loader before a run, the
dump after it): a write in the cycle ``dbg_we`` is set, a read answered on ``dbg_rdata`` one
cycle after ``dbg_addr``.

Timing: an access takes 3 cycles from acceptance to response (accept, read, capture), an
atomic bit-set 3 cycles; simple over fast (docs/system.md, "Performance").
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..arch.system import OPEN_BUS, RAM_BYTES
from ..translation.layouts import mem_request_layout, mem_response_layout

__all__ = ["SystemMemory", "DATA_REQ_LAYOUT", "DATA_RESP_LAYOUT", "MemOwner"]


def DATA_REQ_LAYOUT(maxphyaddr):  # noqa: N802
    return data.StructLayout({"addr": maxphyaddr, "write": 1, "mask": 8, "data": 64})


DATA_RESP_LAYOUT = data.StructLayout({"data": 64})


class MemOwner(enum.Enum, shape=2):
    """The requester whose access is in progress (a waveform names it)."""
    WALK = 0
    VMX = 1
    BITMAP = 2
    DATA = 3


class _State(enum.Enum, shape=2):
    IDLE = 0
    ACCESS = 1      # the RAM read port has the address (or the write happens)
    CAPTURE = 2     # the read data is there: register it (or finish the bit-set)
    RESPOND = 3     # the response waits for its requester's ready


class SystemMemory(wiring.Component):
    def __init__(self, *, ram_bytes=RAM_BYTES, maxphyaddr, walk_tag_width):
        assert ram_bytes % 8 == 0 and ram_bytes > 0
        self.ram_bytes = ram_bytes
        self.words = ram_bytes // 8
        self.maxphyaddr = maxphyaddr
        from ..vmx.exit_decisions import MEM_REQUEST_LAYOUT, MEM_RESPONSE_LAYOUT
        from ..vmx.ports import MEM_REQ_LAYOUT as VMX_REQ, MEM_RESP_LAYOUT as VMX_RESP
        super().__init__({
            "walk_req": In(stream.Signature(mem_request_layout(walk_tag_width, maxphyaddr))),
            "walk_resp": Out(stream.Signature(mem_response_layout(walk_tag_width))),
            "vmx_req": In(stream.Signature(VMX_REQ)),
            "vmx_resp": Out(stream.Signature(VMX_RESP)),
            "bitmap_req": In(stream.Signature(MEM_REQUEST_LAYOUT(maxphyaddr))),
            "bitmap_resp": Out(stream.Signature(MEM_RESPONSE_LAYOUT)),
            "data_req": In(stream.Signature(DATA_REQ_LAYOUT(maxphyaddr))),
            "data_resp": Out(stream.Signature(DATA_RESP_LAYOUT)),
            "dbg_active": In(1),
            "dbg_addr": In(32),
            "dbg_we": In(1),
            "dbg_wdata": In(64),
            "dbg_rdata": Out(64),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = Memory(shape=64, depth=self.words, init=[])
        rd = ram.read_port()
        wr = ram.write_port(granularity=8)
        aw = max(1, (self.words - 1).bit_length())

        state = Signal(_State)
        owner = Signal(MemOwner)
        addr = Signal(self.maxphyaddr)
        write = Signal()
        mask = Signal(8)
        wdata = Signal(64)
        tag = Signal(len(self.walk_req.payload.tag))
        rdata = Signal(64)
        in_ram = Signal()
        m.d.comb += in_ram.eq(addr[3:] < self.words)

        m.d.comb += [rd.addr.eq(addr[3:3 + aw]), wr.addr.eq(addr[3:3 + aw]), wr.data.eq(wdata)]
        m.d.comb += self.dbg_rdata.eq(rd.data)

        reqs = ((MemOwner.WALK, self.walk_req), (MemOwner.VMX, self.vmx_req),
                (MemOwner.BITMAP, self.bitmap_req), (MemOwner.DATA, self.data_req))

        with m.Switch(state):
            with m.Case(_State.IDLE):
                with m.If(self.dbg_active):
                    m.d.comb += [rd.addr.eq(self.dbg_addr), wr.addr.eq(self.dbg_addr),
                                 wr.data.eq(self.dbg_wdata),
                                 wr.en.eq(Mux(self.dbg_we & (self.dbg_addr < self.words),
                                              0xFF, 0))]
                with m.Else():
                    first = True
                    for who, req in reqs:
                        with (m.If if first else m.Elif)(req.valid):
                            p = req.payload
                            m.d.comb += req.ready.eq(1)
                            m.d.sync += [owner.eq(who), addr.eq(p.addr), state.eq(_State.ACCESS)]
                            if who is MemOwner.WALK:
                                m.d.sync += [write.eq(p.write), wdata.eq(p.data), tag.eq(p.tag),
                                             mask.eq(0)]
                            elif who is MemOwner.VMX:
                                m.d.sync += [write.eq(p.write), wdata.eq(p.data),
                                             mask.eq(Mux(p.write, 0xFF, 0))]
                            elif who is MemOwner.BITMAP:
                                m.d.sync += [write.eq(0), mask.eq(0)]
                            else:
                                m.d.sync += [write.eq(p.write), wdata.eq(p.data),
                                             mask.eq(Mux(p.write, p.mask, 0))]
                        first = False

            with m.Case(_State.ACCESS):
                # Plain writes happen here; reads and bit-sets present the address.
                m.d.comb += wr.en.eq(Mux(in_ram, mask, 0))
                with m.If(write & (mask != 0)):
                    m.d.sync += rdata.eq(0)
                    with m.If(owner == MemOwner.DATA):
                        m.d.sync += state.eq(_State.RESPOND)
                    with m.Else():
                        m.d.sync += state.eq(_State.IDLE)
                with m.Else():
                    m.d.sync += state.eq(_State.CAPTURE)

            with m.Case(_State.CAPTURE):
                value = Mux(in_ram, rd.data, OPEN_BUS)
                with m.If(write):
                    # The walker's atomic bit-set: OR into the word, no response.
                    m.d.comb += [wr.data.eq(rd.data | wdata), wr.en.eq(Mux(in_ram, 0xFF, 0))]
                    m.d.sync += state.eq(_State.IDLE)
                with m.Else():
                    m.d.sync += [rdata.eq(value), state.eq(_State.RESPOND)]

            with m.Case(_State.RESPOND):
                resps = ((MemOwner.WALK, self.walk_resp), (MemOwner.VMX, self.vmx_resp),
                         (MemOwner.BITMAP, self.bitmap_resp), (MemOwner.DATA, self.data_resp))
                with m.Switch(owner):
                    for who, resp in resps:
                        with m.Case(who):
                            m.d.comb += [resp.valid.eq(1), resp.payload.data.eq(rdata)]
                            if who is MemOwner.WALK:
                                m.d.comb += resp.payload.tag.eq(tag)
                            with m.If(resp.ready):
                                m.d.sync += state.eq(_State.IDLE)
        return m
