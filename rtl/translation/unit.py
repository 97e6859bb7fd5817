"""The translation unit: TLB front end, walker, invalidation and performance counters.

Front end (two stages, one request per cycle):
  L0  takes a request (a replayed one from the walker first, then a new one) and compares its
      page against the three TLB arrays (4 KiB, 2 MiB, 1 GiB pages) at once.
  L1  has the TLB payload: a hit whose permissions allow the access (and whose dirty flags are
      set for a write) is answered here; so are non-canonical addresses (general protection)
      and accesses without guest paging or EPT (GPA = HPA = GLA). Anything else is a miss and
      goes to a walk context; a miss does not hold up the hits behind it (hit-under-miss) as
      long as a context is free.
A TLB hit that would fault goes to the walker, which finds the exact fault with a full walk:
caches change only how many references and cycles a request takes, never its outcome.

Responses leave from one registered output; finished walks take precedence over hits there so
that walks always finish. Invalidations wait until nothing is in flight, then start in every
cache at once: ALL clears in that cycle, the other kinds scan each cache's sets (one per cycle)
while new requests are held.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.utils import ceil_log2

from .. import arch
from ..arch import Access, Outcome, PageSize
from . import checks, keys
from .cache import MAX_WAYS, cache_of
from .layouts import COUNTERS, translation_signature
from .walker import Walker

TLB_SIZES = ((PageSize.SIZE_4K, 12), (PageSize.SIZE_2M, 21), (PageSize.SIZE_1G, 30))


def mem_tag_width(contexts):
    """Width of the memory port's tag: the walk context's number."""
    return max(1, ceil_log2(contexts))


class TranslationUnit(wiring.Component):
    """Guest IA-32e paging crossed with EPT, with a TLB, paging-structure caches and a walker.

    Parameters: `maxphyaddr`, `tag_width` (request tags), `contexts` (walks in flight),
    `tlb_entries` (4K, 2M, 1G arrays), `gpsc_entries` and `epsc_entries` (PML4E, PDPTE, PDE
    caches of the guest and of EPT), `nested_entries` (nested TLB).
    """

    def __init__(self, *, maxphyaddr=arch.MAXPHYADDR, tag_width=8, contexts=8,
                 tlb_entries=(32, 8, 4), gpsc_entries=(4, 4, 32), epsc_entries=(4, 4, 32),
                 nested_entries=16, ways=MAX_WAYS):
        self.maxphyaddr = maxphyaddr
        self.ways = ways
        self.tag_width = tag_width
        self.contexts = contexts
        self.tlb_entries = tuple(tlb_entries)
        self.gpsc_entries = tuple(gpsc_entries)
        self.epsc_entries = tuple(epsc_entries)
        self.nested_entries = nested_entries
        self.mem_tag_width = mem_tag_width(contexts)
        super().__init__(translation_signature(
            tag_width=tag_width, mem_tag_width=self.mem_tag_width, maxphyaddr=maxphyaddr))

    def elaborate(self, platform):
        m = Module()
        M = self.maxphyaddr
        ctx = self.ctx

        m.submodules.walker = walker = Walker(
            maxphyaddr=M, tag_width=self.tag_width, contexts=self.contexts,
            gpsc_entries=self.gpsc_entries, epsc_entries=self.epsc_entries,
            nested_entries=self.nested_entries, ways=self.ways)
        wiring.connect(m, walker.mem_req, wiring.flipped(self.mem_req))
        wiring.connect(m, wiring.flipped(self.mem_resp), walker.mem_resp)
        m.d.comb += [walker.ctx.eq(ctx), walker.inval.eq(self.inval.payload)]

        tag = Signal(keys.eptag_width(M))
        m.d.comb += tag.eq(keys.eptag(ctx, M))
        pg = ctx.cr0[31]

        tlb = []
        for (size, shift), entries in zip(TLB_SIZES, self.tlb_entries):
            cache = cache_of(entries, key_width=keys.tlb_key_width(shift, M),
                             data_width=keys.tlb_payload(M).size, ways=self.ways)
            m.submodules[f"tlb_{size.name[5:].lower()}"] = cache
            tlb.append(cache)

        # --- invalidation ----------------------------------------------------------------------
        l1_valid = Signal()
        inval_now = Signal()
        scanning = Signal()                # a cache scans for an invalidation: requests wait
        m.d.comb += [
            scanning.eq(Cat(c.busy for c in tlb).any() | walker.inval_busy),
            inval_now.eq(self.inval.valid & ~l1_valid & walker.idle & ~scanning),
            self.inval.ready.eq(inval_now),
            walker.inval_en.eq(inval_now),
        ]
        for cache, (size, shift) in zip(tlb, TLB_SIZES):
            en, mask, match = keys.linear_inval(self.inval.payload, True, 48 - shift, M,
                                                addr_lo=shift)
            m.d.comb += [cache.inval_en.eq(inval_now & en), cache.inval_mask.eq(mask),
                         cache.inval_match.eq(match)]

        # --- TLB fills from the walker ---------------------------------------------------------
        fill = walker.tlb_fill
        for cache, (size, shift) in zip(tlb, TLB_SIZES):
            m.d.comb += [
                cache.fill_en.eq(fill.en & (fill.size == size)),
                cache.fill_key.eq(keys.tlb_key(fill.gla, shift, tag, ctx.vpid)),
                cache.fill_data.eq(fill.data),
            ]

        # --- L0: take a request, compare tags --------------------------------------------------
        advance = Signal()                 # L1 is free, or its item leaves this cycle
        use_replay = walker.replay.valid
        l0_req = Signal(self.req.payload.shape())
        m.d.comb += [
            l0_req.eq(Mux(use_replay, walker.replay.payload.req, self.req.payload)),
            walker.replay.ready.eq(advance),
            self.req.ready.eq(advance & ~use_replay & ~self.inval.valid & ~scanning),
        ]
        l0_valid = use_replay | (self.req.valid & self.req.ready)
        for cache, (size, shift) in zip(tlb, TLB_SIZES):
            m.d.comb += [cache.lookup_key.eq(keys.tlb_key(l0_req.gla, shift, tag, ctx.vpid)),
                         cache.lookup_en.eq(advance)]

        l1_req = Signal(self.req.payload.shape())
        l1_replay = Signal()
        l1_ctx = Signal(len(walker.replay.payload.ctx))
        l1_hit = Signal(3)
        with m.If(advance):
            m.d.sync += [
                l1_valid.eq(l0_valid),
                l1_req.eq(l0_req),
                l1_replay.eq(use_replay),
                l1_ctx.eq(walker.replay.payload.ctx),
                l1_hit.eq(Cat(cache.lookup_hit for cache in tlb)),
            ]

        # --- L1: hit, immediate answer, or miss -------------------------------------------------
        gla = l1_req.gla
        payloads = [data.View(keys.tlb_payload(M), cache.lookup_data) for cache in tlb]
        hit = Signal()
        hit_size = Signal(PageSize)
        entry = Signal(keys.tlb_payload(M))
        hpa = Signal(M)
        gpa = Signal(M)
        for k in reversed(range(3)):       # the smallest page wins if two arrays hit
            size, shift = TLB_SIZES[k]
            with m.If(l1_hit[k]):
                m.d.comb += [
                    hit.eq(1), hit_size.eq(size), entry.eq(payloads[k]),
                    hpa.eq(Cat(gla[:shift], payloads[k].hpa_page[shift - 12:])),
                    gpa.eq(Cat(gla[:shift], payloads[k].gpa_page[shift - 12:])),
                ]
        user = l1_req.cpl == 3
        write = l1_req.access == Access.WRITE
        imm_gp = Signal()
        imm_flat = Signal()
        hit_ok = Signal()
        m.d.comb += [
            imm_gp.eq(Mux(pg, ~checks.canonical(gla), gla[32:].any())),
            imm_flat.eq(~pg & ~ctx.ept_enable & ~imm_gp),
            hit_ok.eq(hit & ~imm_gp & ~imm_flat
                      & ~checks.guest_permission_fault(
                          access=l1_req.access, user=user, rw=entry.rw, us=entry.us,
                          xd=entry.xd, cr0=ctx.cr0, cr4=ctx.cr4, efer=ctx.efer)
                      & checks.ept_access_allowed(l1_req.access, entry.eperm)
                      & (~write | entry.write_ok)),
        ]
        respond = imm_gp | imm_flat | hit_ok
        miss = ~respond

        # --- the response output ---------------------------------------------------------------
        slot_free = ~self.resp.valid | self.resp.ready
        l1_resp_taken = Signal()
        m.d.comb += [
            walker.done.ready.eq(slot_free),
            l1_resp_taken.eq(l1_valid & respond & slot_free & ~walker.done.valid),
        ]
        out = self.resp.payload
        with m.If(slot_free):
            with m.If(walker.done.valid):
                m.d.sync += [self.resp.valid.eq(1), out.eq(walker.done.payload)]
            with m.Elif(l1_valid & respond):
                m.d.sync += [
                    self.resp.valid.eq(1),
                    out.tag.eq(l1_req.tag),
                    out.outcome.eq(Mux(imm_gp, Outcome.GENERAL_PROTECTION, Outcome.OK)),
                    out.gla.eq(gla),
                    out.gpa.eq(Mux(imm_gp, 0, Mux(imm_flat, gla[:M], gpa))),
                    out.hpa.eq(Mux(imm_gp, 0, Mux(imm_flat, gla[:M], hpa))),
                    out.error_code.eq(0),
                    out.qualification.eq(0),
                    out.page_size.eq(Mux(hit_ok, hit_size, PageSize.SIZE_1G)),
                    out.mem_reads.eq(0),
                ]
            with m.Else():
                m.d.sync += self.resp.valid.eq(0)

        # --- misses go to the walker -----------------------------------------------------------
        m.d.comb += [
            walker.start.valid.eq(l1_valid & miss & ~l1_replay),
            walker.start.payload.eq(l1_req),
            walker.restart_valid.eq(l1_valid & miss & l1_replay),
            walker.restart_ctx.eq(l1_ctx),
            walker.release_valid.eq(l1_resp_taken & l1_replay),
            walker.release_ctx.eq(l1_ctx),
        ]
        l1_leaves = (l1_resp_taken
                     | (miss & ~l1_replay & walker.start.ready)
                     | (miss & l1_replay))
        m.d.comb += advance.eq(~l1_valid | l1_leaves)

        # --- status and counters ---------------------------------------------------------------
        m.d.comb += self.idle.eq(~l1_valid & walker.idle & ~self.resp.valid & ~scanning)
        events = {
            "requests": self.req.valid & self.req.ready,
            "tlb_hits": l1_resp_taken & hit_ok,
            "walks": walker.walk_started,
            "mem_reads": walker.read_issued,
            "mem_writes": walker.write_issued,
            "busy_cycles": ~self.idle,
        }
        assert set(events) == set(COUNTERS)
        for name, event in events.items():
            counter = getattr(self.counters, name)
            with m.If(event):
                m.d.sync += counter.eq(counter + 1)
        return m
