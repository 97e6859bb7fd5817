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

Sparse RAM (``pages``, for the FPGA board): a tuple of physical 4 KiB page numbers. Only those
pages are backed, by consecutive pages of the one `Memory` in the order given (a constant page map,
a comparator per page on the registered address); an access to any other page inside
``ram_bytes`` reads as `OPEN_BUS` and a write to it is dropped, as outside RAM, and it raises the
sticky ``unmapped`` output (``unmapped_addr`` keeps the first such address). The debug port maps
its qword index the same way (unbacked words read `OPEN_BUS`, writes are dropped, without the
flag). ``init`` ({physical qword index: value}) is the RAM's initial contents (block RAM
initialised by the bitstream), on flat or sparse RAM. Without ``pages`` the RAM is the flat
0 .. ``ram_bytes`` - 1 and the ports are exactly those of the table above.

Timing: an access takes 3 cycles from acceptance to response (accept, read, capture), an
atomic bit-set 3 cycles; simple over fast (docs/system.md, "Simplifications of the system").
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..arch.system import OPEN_BUS, RAM_BYTES
from ..translation.layouts import mem_request_layout, mem_response_layout

__all__ = ["SystemMemory", "DATA_REQ_LAYOUT", "DATA_RESP_LAYOUT", "MemOwner", "PAGE_WORDS",
           "check_pages"]

#: Qwords per 4 KiB page (the unit of a sparse RAM's page map).
PAGE_WORDS = 4096 // 8


def check_pages(pages, ram_bytes=RAM_BYTES):
    """`pages` as a tuple of distinct page numbers inside RAM (ValueError otherwise)."""
    pages = tuple(int(p) for p in pages)
    if not pages:
        raise ValueError("the page set is empty")
    if len(set(pages)) != len(pages):
        raise ValueError("the page set names a page twice")
    bad = [p for p in pages if not 0 <= p < ram_bytes // 4096]
    if bad:
        raise ValueError(f"page {bad[0]:#x} lies outside RAM (0 .. {ram_bytes - 1:#x})")
    return pages


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
    def __init__(self, *, ram_bytes=RAM_BYTES, maxphyaddr, walk_tag_width, pages=None,
                 init=None):
        assert ram_bytes % 8 == 0 and ram_bytes > 0
        self.ram_bytes = ram_bytes
        self.maxphyaddr = maxphyaddr
        try:
            self.pages = None if pages is None else check_pages(pages, ram_bytes)
            if self.pages is None:
                self.words = ram_bytes // 8
            else:
                self.words = len(self.pages) * PAGE_WORDS
                self._slot = {p: i for i, p in enumerate(self.pages)}
            self.init = self._init_list(init)
        except ValueError:
            self._MustUse__silence = True       # never built: no "unused" warning on top
            raise
        extra = {}
        if self.pages is not None:
            extra = {"unmapped": Out(1), "unmapped_addr": Out(maxphyaddr)}
        from ..vmx.exit_decisions import MEM_REQUEST_LAYOUT, MEM_RESPONSE_LAYOUT
        from ..vmx.ports import MEM_REQ_LAYOUT as VMX_REQ
        from ..vmx.ports import MEM_RESP_LAYOUT as VMX_RESP
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
            "idle": Out(1),         # no access in flight (with `dbg_active`: the debug port's)
            "dbg_addr": In(32),
            "dbg_we": In(1),
            "dbg_wdata": In(64),
            "dbg_rdata": Out(64),
            **extra,
        })

    def ram_index(self, qword):
        """The RAM word that holds physical qword `qword`, None if it is not backed."""
        if self.pages is None:
            return qword if 0 <= qword < self.words else None
        slot = self._slot.get(qword // PAGE_WORDS)
        return None if slot is None else slot * PAGE_WORDS + qword % PAGE_WORDS

    def _init_list(self, init):
        if not init:
            return []
        out = [0] * self.words
        for qword, value in init.items():
            index = self.ram_index(qword)
            if index is None:
                if value:
                    raise ValueError(f"initial word at {8 * qword:#x} lies outside the "
                                     f"backed RAM")
                continue
            out[index] = value
        while out and not out[-1]:
            out.pop()
        return out

    def _lookup(self, m, page, name):
        """(hit, slot) of the physical page number `page` in the page map (comb)."""
        hit = Signal(name=f"{name}_hit")
        slot = Signal(range(len(self.pages)), name=f"{name}_slot")
        with m.Switch(page):
            for i, p in enumerate(self.pages):
                with m.Case(p):
                    m.d.comb += [hit.eq(1), slot.eq(i)]
        return hit, slot

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = Memory(shape=64, depth=self.words, init=self.init)
        rd = ram.read_port()
        wr = ram.write_port(granularity=8)
        aw = max(1, (self.words - 1).bit_length())
        sparse = self.pages is not None

        state = Signal(_State)
        owner = Signal(MemOwner)
        addr = Signal(self.maxphyaddr)
        write = Signal()
        mask = Signal(8)
        wdata = Signal(64)
        tag = Signal(len(self.walk_req.payload.tag))
        rdata = Signal(64)
        in_ram = Signal()
        ram_addr = Signal(aw)
        dbg_in_ram = Signal()
        dbg_ram_addr = Signal(aw)
        if not sparse:
            m.d.comb += [in_ram.eq(addr[3:] < self.words), ram_addr.eq(addr[3:3 + aw]),
                         dbg_in_ram.eq(self.dbg_addr < self.words),
                         dbg_ram_addr.eq(self.dbg_addr)]
            m.d.comb += self.dbg_rdata.eq(rd.data)
        else:
            hit, slot = self._lookup(m, addr[12:], "page")
            m.d.comb += [in_ram.eq(hit), ram_addr.eq(Cat(addr[3:12], slot))]
            dbg_hit, dbg_slot = self._lookup(m, self.dbg_addr[9:], "dbg_page")
            m.d.comb += [dbg_in_ram.eq(dbg_hit),
                         dbg_ram_addr.eq(Cat(self.dbg_addr[:9], dbg_slot))]
            dbg_read_hit = Signal()
            m.d.sync += dbg_read_hit.eq(dbg_hit)
            m.d.comb += self.dbg_rdata.eq(Mux(dbg_read_hit, rd.data, OPEN_BUS))
            # An access to a page of RAM that is not backed: the program left the page set.
            with m.If((state == _State.ACCESS) & ~hit & (addr[3:] < self.ram_bytes // 8)
                      & ~self.unmapped):
                m.d.sync += [self.unmapped.eq(1), self.unmapped_addr.eq(addr)]

        m.d.comb += [rd.addr.eq(ram_addr), wr.addr.eq(ram_addr), wr.data.eq(wdata)]

        reqs = ((MemOwner.WALK, self.walk_req), (MemOwner.VMX, self.vmx_req),
                (MemOwner.BITMAP, self.bitmap_req), (MemOwner.DATA, self.data_req))

        m.d.comb += self.idle.eq(state == _State.IDLE)
        with m.Switch(state):
            with m.Case(_State.IDLE):
                with m.If(self.dbg_active):
                    m.d.comb += [rd.addr.eq(dbg_ram_addr), wr.addr.eq(dbg_ram_addr),
                                 wr.data.eq(self.dbg_wdata),
                                 wr.en.eq(Mux(self.dbg_we & dbg_in_ram, 0xFF, 0))]
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
