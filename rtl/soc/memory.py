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
``data``    the core's accesses after translation: a      reads only
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

Timing: a two-stage pipeline that accepts one access per cycle. Cycle t accepts (the arbiter's
choice is registered); t+1 (stage 1) presents the address to the RAM's read port; t+2 (stage 2)
has the word: a read answers from the RAM's output in that cycle, a write (plain or the bit-set,
OR-ed into the word just read) writes the RAM. Reads are transparent to the write of the access
ahead, so every access sees every access accepted before it, whichever port it came from. A
response its requester does not take holds the whole pipeline (the RAM's read enable too), so no
access is lost or repeated: on the FPGA the read port is a block RAM port and the write port the
other one.
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

    def _ram_address(self, m, addr, name):
        """(backed, RAM word index) of the physical byte address `addr` (comb)."""
        aw = max(1, (self.words - 1).bit_length())
        backed = Signal(name=f"{name}_backed")
        index = Signal(aw, name=f"{name}_index")
        if self.pages is None:
            m.d.comb += [backed.eq(addr[3:] < self.words), index.eq(addr[3:3 + aw])]
        else:
            hit, slot = self._lookup(m, addr[12:], name)
            m.d.comb += [backed.eq(hit), index.eq(Cat(addr[3:12], slot))]
        return backed, index

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = Memory(shape=64, depth=self.words, init=self.init)
        wr = ram.write_port(granularity=8)
        # Transparent: stage 1 reads the word stage 2 writes in the same cycle (the access
        # accepted just before it) and gets the new value.
        rd = ram.read_port(transparent_for=(wr,))
        aw = max(1, (self.words - 1).bit_length())
        sparse = self.pages is not None
        tag_width = len(self.walk_req.payload.tag)

        def stage(name):
            return {
                "valid": Signal(name=f"{name}_valid"),
                "owner": Signal(MemOwner, name=f"{name}_owner"),
                "write": Signal(name=f"{name}_write"),     # a write (plain or bit-set)
                "setbits": Signal(name=f"{name}_setbits"),  # the walker's atomic bit-set
                "respond": Signal(name=f"{name}_respond"),  # the requester gets a response
                "mask": Signal(8, name=f"{name}_mask"),
                "wdata": Signal(64, name=f"{name}_wdata"),
                "tag": Signal(tag_width, name=f"{name}_tag"),
            }

        s1 = stage("s1")
        s1_addr = Signal(self.maxphyaddr)
        s2 = stage("s2")
        s2_backed = Signal()
        s2_index = Signal(aw)

        resps = {MemOwner.WALK: self.walk_resp, MemOwner.VMX: self.vmx_resp,
                 MemOwner.BITMAP: self.bitmap_resp, MemOwner.DATA: self.data_resp}
        reqs = ((MemOwner.WALK, self.walk_req), (MemOwner.VMX, self.vmx_req),
                (MemOwner.BITMAP, self.bitmap_req), (MemOwner.DATA, self.data_req))

        # --- stage 2: the word is on the read port; answer, or write ----------------------------
        s2_taken = Signal()
        with m.Switch(s2["owner"]):
            for who, resp in resps.items():
                with m.Case(who):
                    m.d.comb += s2_taken.eq(resp.ready)
        stall = Signal()
        m.d.comb += stall.eq(s2["valid"] & s2["respond"] & ~s2_taken)
        word = Mux(s2_backed, rd.data, OPEN_BUS)
        for who, resp in resps.items():
            m.d.comb += [resp.valid.eq(s2["valid"] & s2["respond"] & (s2["owner"] == who)),
                         resp.payload.data.eq(word)]
        m.d.comb += self.walk_resp.payload.tag.eq(s2["tag"])
        # Writes never respond, so never hold the pipeline themselves; one held behind a
        # response writes the same value again (the read port holds its word too).
        m.d.comb += [wr.addr.eq(s2_index),
                     wr.data.eq(Mux(s2["setbits"], rd.data | s2["wdata"], s2["wdata"])),
                     wr.en.eq(Mux(s2["valid"] & s2["write"] & s2_backed, s2["mask"], 0))]

        # --- stage 1: the address goes to the RAM's read port ----------------------------------
        s1_backed, s1_index = self._ram_address(m, s1_addr, "s1")
        m.d.comb += [rd.addr.eq(s1_index), rd.en.eq(~stall)]
        with m.If(~stall):
            m.d.sync += [s2[k].eq(s1[k]) for k in s1]
            m.d.sync += [s2_backed.eq(s1_backed), s2_index.eq(s1_index)]
        if sparse:
            # An access to a page of RAM that is not backed: the program left the page set.
            with m.If(s1["valid"] & ~s1_backed & (s1_addr[3:] < self.ram_bytes // 8)
                      & ~self.unmapped):
                m.d.sync += [self.unmapped.eq(1), self.unmapped_addr.eq(s1_addr)]

        # --- acceptance: the fixed-priority arbiter -------------------------------------------
        accept = Signal()
        m.d.comb += accept.eq(~stall & ~self.dbg_active)
        with m.If(~stall):
            m.d.sync += s1["valid"].eq(0)
        with m.If(accept):
            first = True
            for who, req in reqs:
                with (m.If if first else m.Elif)(req.valid):
                    p = req.payload
                    m.d.comb += req.ready.eq(1)
                    m.d.sync += [s1["valid"].eq(1), s1["owner"].eq(who), s1_addr.eq(p.addr)]
                    if who is MemOwner.WALK:
                        m.d.sync += [s1["write"].eq(p.write), s1["setbits"].eq(p.write),
                                     s1["respond"].eq(~p.write), s1["mask"].eq(0xFF),
                                     s1["wdata"].eq(p.data), s1["tag"].eq(p.tag)]
                    elif who is MemOwner.VMX:
                        m.d.sync += [s1["write"].eq(p.write), s1["setbits"].eq(0),
                                     s1["respond"].eq(~p.write), s1["mask"].eq(0xFF),
                                     s1["wdata"].eq(p.data)]
                    elif who is MemOwner.BITMAP:
                        m.d.sync += [s1["write"].eq(0), s1["setbits"].eq(0),
                                     s1["respond"].eq(1)]
                    else:
                        m.d.sync += [s1["write"].eq(p.write), s1["setbits"].eq(0),
                                     s1["respond"].eq(~p.write), s1["mask"].eq(p.mask),
                                     s1["wdata"].eq(p.data)]
                first = False

        m.d.comb += self.idle.eq(~s1["valid"] & ~s2["valid"])
        with m.If(~stall):
            m.d.sync += s2["valid"].eq(s1["valid"])

        # --- the debug port: owns both RAM ports once the pipeline is empty --------------------
        dbg_backed, dbg_index = Signal(), Signal(aw)
        if not sparse:
            m.d.comb += [dbg_backed.eq(self.dbg_addr < self.words), dbg_index.eq(self.dbg_addr)]
            m.d.comb += self.dbg_rdata.eq(rd.data)
        else:
            dbg_hit, dbg_slot = self._lookup(m, self.dbg_addr[9:], "dbg_page")
            m.d.comb += [dbg_backed.eq(dbg_hit), dbg_index.eq(Cat(self.dbg_addr[:9], dbg_slot))]
            dbg_read_hit = Signal()
            m.d.sync += dbg_read_hit.eq(dbg_hit)
            m.d.comb += self.dbg_rdata.eq(Mux(dbg_read_hit, rd.data, OPEN_BUS))
        with m.If(self.dbg_active & self.idle):
            m.d.comb += [rd.addr.eq(dbg_index), rd.en.eq(1), wr.addr.eq(dbg_index),
                         wr.data.eq(self.dbg_wdata),
                         wr.en.eq(Mux(self.dbg_we & dbg_backed, 0xFF, 0))]
        return m
