"""The benchmark top: the translation unit, a traffic generator and a synthetic memory, all HDL.

Simulation only (never synthesised). Everything a long run needs is in hardware, so that a
simulator can run millions of cycles without the Python testbench in the per-cycle loop: set the
configuration ports once, raise `start`, clock until `done`, read the counters.

Synthetic page tables
---------------------
Memory holds no table: every 64-bit word is computed from its address by bit slicing, so a
guest can span any amount of memory. MAXPHYADDR is 40. A paging-structure table is named by its
level L (3 = PML4 ... 0 = PT) and its prefix p (the address bits above the ones it translates)::

    guest table (L, p)  at GPA  TABLES | L << 32 | p << 12          (bit 38 = 0)
    EPT table   (L, p)  at HPA  TABLES | L << 32 | p << 12          (bit 38 = 0)
    EPT maps every GPA page q to HPA page q ^ (1 << 26), i.e. HPA = GPA ^ (1 << 38), so
    a guest table lives at HPA  TABLES | FLIP | L << 32 | p << 12   (bit 38 = 1)

Entry j of table (L, p), L > 0, points at table (L - 1, p * 512 + j) with flags P|R/W|U/S|A
(guest, 0x27) or R|W|X (EPT, 0x7); entry j of a guest PT (0, p) maps the guest-linear page
p * 512 + j to the same guest-physical page (GPA = GLA) with P|R/W|U/S|A|D (0x67); entry j of an
EPT PT maps GPA page p * 512 + j to HPA page (p * 512 + j) ^ (1 << 26), R|W|X, memory type WB.
So every translation is GPA = GLA and HPA = GLA | 1 << 38 (GLA below 2^38), which the bench
checks on every response (`bad`). Guest and EPT use 4 KiB pages only. Accessed and dirty flags
are preset in the guest entries and EPT accessed/dirty flags are OFF (EPTP bit 6 = 0), so a
successful read walk writes nothing. Workload addresses are kept below 2^38 (`GLA_BITS`) so no two
linear pages share a table.

Memory model
------------
`mem_req` is always ready (one request per cycle). A read accepted in cycle t is written into a
256-slot circular delay buffer (a `Memory`) at slot t + latency, stamped with its due cycle; it
leaves the buffer in that cycle into the `mem_resp` output register, so its response is
presented from cycle t + latency + 1 (latency 0 behaves like a synchronous RAM). When the unit holds off a response
(`mem_resp.ready` = 0), later ones queue in a FIFO behind the output register; since a walk
context has at most one read outstanding the FIFO never fills (`overflow` says if it did).
Writes (atomic OR) are counted and dropped: the synthetic tables are read-only.

Traffic generator and counters
------------------------------
After `start`, the generator issues `warmup` requests, waits until every one has been answered
and the unit is idle, then issues `count` requests (the measurement window) as fast as the unit
takes them, and raises `done` when all are answered and the unit is idle. Every counter output
covers the measurement window only: from its first cycle to the cycle of the last response.
"""

from __future__ import annotations

from amaranth import Cat, ClockDomain, Const, Module, Mux, Signal
from amaranth.lib import enum, fifo, memory, wiring
from amaranth.lib.wiring import In, Out

from rtl import arch
from rtl.arch import Access
from rtl.translation import TranslationUnit

#: Memory map of the synthetic tables (MAXPHYADDR 40, see the module docstring).
MAXPHYADDR = 40
TABLES = 1 << 39
FLIP = 1 << 38
LEVEL_SHIFT = 32
#: Workload linear addresses stay below 2^GLA_BITS (so GPA = GLA, HPA = GLA | FLIP).
GLA_BITS = 38
GUEST_TABLE_FLAGS = arch.PTE_P | arch.PTE_RW | arch.PTE_US | arch.PTE_A
GUEST_LEAF_FLAGS = GUEST_TABLE_FLAGS | arch.PTE_D
EPT_TABLE_FLAGS = arch.EPT_RWX
EPT_LEAF_FLAGS = arch.EPT_RWX | (arch.EPTP_MEMTYPE_WB << arch.EPT_MEMTYPE_SHIFT)

COUNTER_WIDTH = 48
DELAY_SLOTS = 256
MAX_LATENCY = DELAY_SLOTS - 1

#: Counter outputs of the bench, in the order main.cpp prints them.
COUNTERS = (
    "cycles",          # measurement window: first cycle .. cycle of the last response
    "responses",       # responses received
    "ok",              # of which outcome ok
    "bad",             # not ok, or ok with a GPA/HPA other than the synthetic map gives
    "lat_sum",         # sum over responses of (response cycle - request cycle)
    "lat_max",
    "port_busy",       # cycles with at least one read outstanding at the memory port
    "port_reads",      # reads accepted by the memory
    "port_writes",     # writes (accessed/dirty bit-sets) accepted by the memory
    "resp_reads",      # sum of the responses' mem_reads fields
    "requests",        # unit counters, window deltas
    "tlb_hits",
    "walks",
    "mem_reads",
    "mem_writes",
    "busy_cycles",
)
CONFIG_PORTS = ("start", "kind", "count", "warmup", "latency", "seed", "region_shift",
                "stride_shift", "hit_shift")
UNIT_COUNTERS = ("requests", "tlb_hits", "walks", "mem_reads", "mem_writes", "busy_cycles")


class Workload(enum.Enum, shape=2):
    HITS = 0          # pages 0 .. 2^hit_shift - 1 in turn (all TLB hits once warm)
    RANDOM = 1        # a random 4 KiB page of the first 2^region_shift bytes
    SEQUENTIAL = 2    # every 4 KiB page in turn
    STRIDED = 3       # one page every 2^stride_shift bytes


class Phase(enum.Enum, shape=3):
    IDLE = 0
    WARM = 1
    DRAIN = 2
    MEASURE = 3
    FINISH = 4
    DONE = 5


#: Guest context the bench runs: IA-32e paging with EPT, WP and NXE on.
CR0 = arch.CR0_PE | arch.CR0_WP | arch.CR0_PG
CR4 = arch.CR4_PAE
EFER = arch.EFER_LME | arch.EFER_LMA | arch.EFER_NXE
VPID = 1


def table_addr(level, prefix):
    """GPA of guest table / HPA of EPT table (level, prefix)."""
    return TABLES | level << LEVEL_SHIFT | prefix << 12


CR3 = table_addr(3, 0)
EPTP = table_addr(3, 0) | arch.EPTP_WALK_4LEVEL | arch.EPTP_MEMTYPE_WB


def expected_translation(gla):
    """(GPA, HPA) that the synthetic tables give for a workload GLA (Python side)."""
    gpa = gla & ((1 << GLA_BITS) - 1)
    return gpa, gpa | FLIP


def synthetic_word(addr):
    """The memory word at HPA `addr`, as a Python int (reference for the HDL and the tests)."""
    if not addr >> 39 & 1:
        return 0
    guest = addr >> 38 & 1
    level = addr >> LEVEL_SHIFT & 3
    prefix = addr >> 12 & ((1 << 20) - 1)
    j = addr >> 3 & 0x1FF
    nxt = prefix << 9 | j
    if level:
        flags = GUEST_TABLE_FLAGS if guest else EPT_TABLE_FLAGS
        return table_addr(level - 1, nxt & ((1 << 20) - 1)) | flags
    page = nxt & ((1 << (MAXPHYADDR - 12)) - 1)
    if guest:
        return page << 12 | GUEST_LEAF_FLAGS
    return (page ^ (FLIP >> 12)) << 12 | EPT_LEAF_FLAGS


def _synthetic_word_hdl(m, addr):
    """HDL of `synthetic_word` (pure bit slicing and muxes)."""
    word = Signal(64)
    guest = addr[38]
    level = addr[LEVEL_SHIFT:LEVEL_SHIFT + 2]
    nxt = Cat(addr[3:12], addr[12:32])                   # prefix * 512 + j, 29 bits
    table_ptr = Cat(Const(0, 12), nxt[:20], (level - 1)[:2], Const(0, 5), Const(1, 1))   # 40 bits
    assert len(table_ptr) == MAXPHYADDR
    guest_page = nxt[:MAXPHYADDR - 12]
    ept_page = guest_page ^ (FLIP >> 12)
    with m.If(addr[39]):
        with m.If(level != 0):
            m.d.comb += word.eq(table_ptr | Mux(guest, GUEST_TABLE_FLAGS, EPT_TABLE_FLAGS))
        with m.Elif(guest):
            m.d.comb += word.eq(Cat(Const(GUEST_LEAF_FLAGS, 12), guest_page))
        with m.Else():
            m.d.comb += word.eq(Cat(Const(EPT_LEAF_FLAGS, 12), ept_page))
    return word


class TranslationBench(wiring.Component):
    """`TranslationUnit(contexts=...)` with a traffic generator and a synthetic memory.

    `uncached=True` removes the paging-structure caches and the nested TLB (the TLB stays).
    `clock_port=True` (for Verilog) makes the top's own reset-less `sync` domain clocked by a
    `clk` input; otherwise (Amaranth's simulator) the top uses the implicit `sync` domain, whose
    reset is never asserted, so both behave alike: registers start from their initial values.
    """

    def __init__(self, contexts=8, uncached=False, tag_width=8, clock_port=False):
        self.contexts = contexts
        self.clock_port = clock_port
        self.uncached = uncached
        self.tag_width = tag_width
        params = dict(maxphyaddr=MAXPHYADDR, tag_width=tag_width, contexts=contexts)
        if uncached:
            params.update(gpsc_entries=(0, 0, 0), epsc_entries=(0, 0, 0), nested_entries=0)
        self.unit_params = params
        ports = {"clk": In(1)} if clock_port else {}
        ports |= {
            "start": In(1),
            "kind": In(Workload),
            "count": In(32),
            "warmup": In(32),
            "latency": In(8),
            "seed": In(32),
            "region_shift": In(6),
            "stride_shift": In(6),
            "hit_shift": In(4),
            "done": Out(1),
            "overflow": Out(1),
        }
        for name in COUNTERS:
            ports[name] = Out(COUNTER_WIDTH)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        if self.clock_port:
            # A reset-less clock domain: registers start from their initial values. A reset
            # input would put every register's next-state logic on a combinational path from a
            # top-level input, which Verilator re-evaluates on every eval() call.
            m.domains.sync = cd = ClockDomain("sync", reset_less=True)
            m.d.comb += cd.clk.eq(self.clk)
        m.submodules.unit = unit = TranslationUnit(**self.unit_params)
        mtw = unit.mem_tag_width

        # The configuration inputs are registered for the same reason (set once, before start).
        cfg = {}
        for name in CONFIG_PORTS:
            port = getattr(self, name)
            reg = Signal.like(port, name=f"cfg_{name}")
            m.d.sync += reg.eq(port)
            cfg[name] = reg

        # --- the guest context ---------------------------------------------------------------
        m.d.comb += [
            unit.ctx.cr0.eq(CR0), unit.ctx.cr3.eq(CR3), unit.ctx.cr4.eq(CR4),
            unit.ctx.efer.eq(EFER), unit.ctx.eptp.eq(EPTP), unit.ctx.ept_enable.eq(1),
            unit.ctx.vpid.eq(VPID),
            unit.inval.valid.eq(0),
            unit.resp.ready.eq(1),
        ]

        now = Signal(32, init=DELAY_SLOTS)     # free-running cycle counter
        m.d.sync += now.eq(now + 1)

        # --- phases --------------------------------------------------------------------------
        phase = Signal(Phase)
        measuring = (phase == Phase.MEASURE) | (phase == Phase.FINISH)
        issued = Signal(32)                    # requests issued in this phase
        gidx = Signal(32)                      # requests issued since start
        inflight = Signal(16)
        lfsr = Signal(32, init=1)
        acc = Signal(GLA_BITS)                 # sequential / strided address

        req = unit.req
        issue_phase = (phase == Phase.WARM) | (phase == Phase.MEASURE)
        target = Mux(phase == Phase.WARM, cfg["warmup"], cfg["count"])
        m.d.comb += req.valid.eq(issue_phase & (issued < target))
        issuing = req.valid & req.ready
        responding = unit.resp.valid       # ready is 1
        m.d.sync += inflight.eq(inflight + issuing - responding)
        quiet = (inflight == 0) & unit.idle & ~issuing

        with m.Switch(phase):
            with m.Case(Phase.IDLE):
                with m.If(cfg["start"]):
                    m.d.sync += [phase.eq(Phase.WARM), issued.eq(0),
                                 lfsr.eq(Mux(cfg["seed"] == 0, 0x2545F491, cfg["seed"]))]
            with m.Case(Phase.WARM):
                with m.If(~req.valid):
                    m.d.sync += phase.eq(Phase.DRAIN)
            with m.Case(Phase.DRAIN):
                with m.If(quiet):
                    m.d.sync += [phase.eq(Phase.MEASURE), issued.eq(0)]
            with m.Case(Phase.MEASURE):
                with m.If(~req.valid):
                    m.d.sync += phase.eq(Phase.FINISH)
            with m.Case(Phase.FINISH):
                with m.If(quiet):
                    m.d.sync += phase.eq(Phase.DONE)
        m.d.comb += self.done.eq(phase == Phase.DONE)

        # --- request addresses ---------------------------------------------------------------
        page_bits = GLA_BITS - 12
        hit_mask = Signal(16)
        region_mask = Signal(page_bits)
        m.d.comb += [
            hit_mask.eq((Const(1, 17) << cfg["hit_shift"]) - 1),
            region_mask.eq((Const(1, page_bits + 1) << (cfg["region_shift"] - 12)[:6]) - 1),
        ]
        gla = Signal(GLA_BITS)
        with m.Switch(cfg["kind"]):
            with m.Case(Workload.HITS):
                m.d.comb += gla.eq(Cat(Const(0, 12), gidx[:16] & hit_mask))
            with m.Case(Workload.RANDOM):
                m.d.comb += gla.eq(Cat(Const(0, 12), lfsr[:page_bits] & region_mask))
            with m.Default():
                m.d.comb += gla.eq(acc)
        stride = Mux(cfg["kind"] == Workload.STRIDED,
                     Const(1, GLA_BITS) << cfg["stride_shift"], Const(1 << 12, GLA_BITS))
        x1 = lfsr ^ (lfsr << 13)[:32]
        x2 = x1 ^ (x1 >> 17)
        x3 = x2 ^ (x2 << 5)[:32]
        m.d.comb += [
            req.payload.tag.eq(gidx[:self.tag_width]),
            req.payload.gla.eq(gla),
            req.payload.access.eq(Access.READ),
            req.payload.cpl.eq(0),
        ]
        with m.If(issuing):
            m.d.sync += [issued.eq(issued + 1), gidx.eq(gidx + 1), lfsr.eq(x3),
                         acc.eq(acc + stride)]

        # --- the memory model ----------------------------------------------------------------
        mreq = unit.mem_req
        mresp = unit.mem_resp
        m.d.comb += mreq.ready.eq(1)
        rd_accept = mreq.valid & ~mreq.payload.write
        wr_accept = mreq.valid & mreq.payload.write
        word = _synthetic_word_hdl(m, mreq.payload.addr)

        # Delay line: slot (t + latency) mod 256 holds the read accepted in cycle t, with its due
        # cycle; a slot is live in the cycle its due stamp equals `now` (which starts at
        # DELAY_SLOTS, above every initial stamp of 0, and would wrap only after 2^32 cycles).
        item_width = mtw + 64
        m.submodules.delay = delay = memory.Memory(
            shape=32 + item_width, depth=DELAY_SLOTS, init=[])
        dwr = delay.write_port()
        drd = delay.read_port(domain="comb")
        slot_now = now[:8]
        due = Signal(32)
        item_in = Cat(mreq.payload.tag, word)
        zero_lat = cfg["latency"] == 0
        m.d.comb += [
            due.eq(now + cfg["latency"]),
            dwr.addr.eq(due[:8]),
            dwr.data.eq(Cat(due, item_in)),
            dwr.en.eq(rd_accept & ~zero_lat),
            drd.addr.eq(slot_now),
        ]
        # The item leaving the delay line this cycle (latency 0: the read accepted now).
        d_valid = Signal()
        d_item = Signal(item_width)
        m.d.comb += [
            d_valid.eq(Mux(zero_lat, rd_accept, drd.data[:32] == now)),
            d_item.eq(Mux(zero_lat, item_in, drd.data[32:])),
        ]

        # Output register with a FIFO behind it for responses the unit holds off.
        m.submodules.queue = queue = fifo.SyncFIFO(width=item_width, depth=self.contexts + 2)
        taken = mresp.valid & mresp.ready
        can_load = ~mresp.valid | taken
        m.d.comb += [
            queue.r_en.eq(can_load & queue.r_rdy),
            queue.w_data.eq(d_item),
            queue.w_en.eq(d_valid & ~(can_load & ~queue.r_rdy)),
        ]
        with m.If(can_load):
            with m.If(queue.r_rdy):
                m.d.sync += [mresp.valid.eq(1), mresp.payload.eq(queue.r_data)]
            with m.Elif(d_valid):
                m.d.sync += [mresp.valid.eq(1), mresp.payload.eq(d_item)]
            with m.Else():
                m.d.sync += mresp.valid.eq(0)
        with m.If(queue.w_en & ~queue.w_rdy):
            m.d.sync += self.overflow.eq(1)

        outstanding = Signal(16)
        m.d.sync += outstanding.eq(outstanding + rd_accept - taken)

        # --- latency stamps ------------------------------------------------------------------
        m.submodules.stamps = stamps = memory.Memory(
            shape=32, depth=1 << self.tag_width, init=[])
        swr = stamps.write_port()
        srd = stamps.read_port(domain="comb")
        resp = unit.resp.payload
        m.d.comb += [
            swr.addr.eq(req.payload.tag), swr.data.eq(now), swr.en.eq(issuing),
            srd.addr.eq(resp.tag),
        ]
        lat = Signal(32)
        m.d.comb += lat.eq(now - srd.data)

        # --- counters ------------------------------------------------------------------------
        exp_gpa = resp.gla[:GLA_BITS]
        exp_hpa = exp_gpa | FLIP
        resp_ok = resp.outcome == arch.Outcome.OK
        good = resp_ok & (resp.gpa == exp_gpa) & (resp.hpa == exp_hpa)
        window = Signal(COUNTER_WIDTH)
        with m.If(measuring):
            m.d.sync += window.eq(window + 1)
            with m.If(responding):
                m.d.sync += [
                    self.cycles.eq(window + 1),
                    self.responses.eq(self.responses + 1),
                    self.ok.eq(self.ok + resp_ok),
                    self.bad.eq(self.bad + ~good),
                    self.lat_sum.eq(self.lat_sum + lat),
                    self.resp_reads.eq(self.resp_reads + resp.mem_reads),
                ]
                with m.If(lat > self.lat_max):
                    m.d.sync += self.lat_max.eq(lat)
            m.d.sync += [
                self.port_busy.eq(self.port_busy + (outstanding != 0)),
                self.port_reads.eq(self.port_reads + rd_accept),
                self.port_writes.eq(self.port_writes + wr_accept),
            ]

        # Unit counters: deltas from a snapshot taken when the window opens.
        for name in UNIT_COUNTERS:
            base = Signal(COUNTER_WIDTH, name=f"base_{name}")
            value = getattr(unit.counters, name)
            with m.If((phase == Phase.DRAIN) & quiet):
                m.d.sync += base.eq(value)
            m.d.comb += getattr(self, name).eq(value - base)
        return m
