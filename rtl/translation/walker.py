"""The pipelined two-dimensional walker: N walk contexts sharing one memory port.

Each walk context holds one TLB miss from start to response. A context is always in exactly one
`WalkState`, and each state has one owner that may move it on, so no two parts of the walker
write the same context in the same cycle:

    FREE --start--> PROBE_GUEST            (or WAIT when a walk of the same page is in flight)
    WAIT --primary walk ended--> REPLAY --front end takes it--> FRONT --TLB hit--> FREE
                                                                      --miss----> PROBE_GUEST
    PROBE_GUEST / PROBE_EPT --engine--> ENGINE --> PROBE_EPT | MEM_ISSUE | COMMIT | DONE
    MEM_ISSUE --port--> MEM_WAIT --response--> ENGINE
    COMMIT --all accessed/dirty writes accepted by memory--> DONE --response taken--> FREE

The step engine is a two-stage pipeline shared by all contexts, one event per cycle:
  E0  picks an event: a memory response (straight from `mem_resp`, or from the skid register
      when one had to wait) or a context that wants a cache probe; presents the probe keys
      (guest PSC, EPT PSC, nested TLB) to the tag compares.
  E1  has the entry and the probe payloads; applies the spec's checks, computes the context's
      next state and the address of its next memory reference, appends accessed/dirty writes to
      the context's write list and fills caches.
Memory requests leave from a registered output: E1's read when the port is free and nothing
waits for it, else one chosen among contexts in MEM_ISSUE (and the write committer). So a memory
response reaches the next request only through E1's registers: there is no combinational path
from `mem_resp` to `mem_req`.

Accessed/dirty flags are collected per context in a write list (a `Memory`) and written only
when the request has succeeded (spec rule 6). Caches are filled only with entries whose flags
are already set in memory, so a cache hit never skips a flag write the spec requires.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .. import arch
from ..arch import Access, Outcome, PageSize
from . import checks, keys
from .cache import MAX_WAYS, cache_of
from .layouts import (context_layout, invalidation_layout, mem_request_layout,
                      mem_response_layout, request_layout, response_layout)

#: Longest write list of one request: 4 guest entries + 5 EPT walks of 4 entries.
WRITE_LIST_DEPTH = 32


class WalkState(enum.Enum, shape=4):
    FREE = 0
    WAIT = 1          # same page as a walk in flight: wait for it, then look up the TLB again
    REPLAY = 2        # wants to re-enter the front end's TLB lookup
    FRONT = 3         # in the front end's lookup pipeline
    PROBE_GUEST = 4   # start of a walk: probe the guest paging-structure caches
    PROBE_EPT = 5     # start of an EPT translation: probe the nested TLB and EPT PSCs
    ENGINE = 6        # an event of this context is in the step engine
    MEM_ISSUE = 7     # a paging-structure read waits for the memory port
    MEM_WAIT = 8      # the read is outstanding
    COMMIT = 9        # succeeded: accessed/dirty writes are being issued
    DONE = 10         # the response waits for the output


#: States of a context whose walk is under way (a miss to the same page waits for it).
WALKING = (WalkState.PROBE_GUEST, WalkState.PROBE_EPT, WalkState.ENGINE, WalkState.MEM_ISSUE,
           WalkState.MEM_WAIT, WalkState.COMMIT, WalkState.DONE)


def walk_context_layout(*, tag_width, ctx_width, maxphyaddr):
    pw = maxphyaddr - 12
    return data.StructLayout({
        # the request
        "tag": tag_width, "gla": 64, "access": Access, "cpl": 2,
        "primary": ctx_width,           # WAIT: the context walking the same page
        # guest dimension
        "glevel": 2, "gtable": pw,
        "g_rw": 1, "g_us": 1, "g_xd": 1,
        "g_clean": 1,                   # every guest entry used so far had A=1 (PSC may cache)
        "g_dirty_ok": 1,                # leaf D already 1, or this is a write (TLB write_ok)
        "gsize": PageSize,
        # EPT dimension: one translation of `target` at a time
        "purpose": 1,                   # 0: a guest paging-structure entry, 1: the final GPA
        "target": maxphyaddr,
        "elevel": 2, "etable": pw, "eperm": 3,
        "e_clean": 1,                   # no EPT accessed/dirty write needed so far
        "entry_eperm": 3, "entry_clean": 1,   # of the last guest entry's EPT translation
        # the next memory reference
        "rd_addr": maxphyaddr, "rd_ept": 1,
        # first guest A/D update that EPT does not allow (spec rule 4)
        "cand_valid": 1, "cand_gpa": maxphyaddr, "cand_perm": 3,
        "nwrites": ceil_log2(WRITE_LIST_DEPTH) + 1,
        "reads": 8,
        # the result
        "outcome": Outcome, "err": 5, "qual": 9,
        "rgpa": maxphyaddr, "hpa": maxphyaddr, "psize": PageSize,
    })


def write_entry_layout(maxphyaddr):
    return data.StructLayout({
        "addr": maxphyaddr - 3,          # word address of the entry
        "guest_a": 1, "guest_d": 1, "ept_a": 1, "ept_d": 1,
    })


def _priority(m, vec, width):
    """Lowest set bit of `vec` as an index, and whether any is set."""
    idx = Signal(width)
    for i in reversed(range(len(vec))):
        with m.If(vec[i]):
            m.d.comb += idx.eq(i)
    return idx, vec.any()


def _is_walking(state):
    result = Const(0, 1)
    for s in WALKING:
        result = result | (state == s)
    return result


class Walker(wiring.Component):
    def __init__(self, *, maxphyaddr=arch.MAXPHYADDR, tag_width=8, contexts=8,
                 gpsc_entries=(4, 4, 32), epsc_entries=(4, 4, 32), nested_entries=16,
                 ways=MAX_WAYS):
        self.maxphyaddr = maxphyaddr
        self.ways = ways
        self.tag_width = tag_width
        self.contexts = contexts
        self.gpsc_entries = gpsc_entries    # PML4E, PDPTE, PDE
        self.epsc_entries = epsc_entries
        self.nested_entries = nested_entries
        self.ctx_width = cw = max(1, ceil_log2(contexts))
        M = maxphyaddr
        super().__init__({
            "ctx": In(context_layout()),
            "start": In(stream.Signature(request_layout(tag_width))),
            "restart_valid": In(1), "restart_ctx": In(cw),
            "release_valid": In(1), "release_ctx": In(cw),
            "replay": Out(stream.Signature(data.StructLayout({
                "ctx": cw, "req": request_layout(tag_width)}))),
            "done": Out(stream.Signature(response_layout(tag_width, M))),
            "mem_req": Out(stream.Signature(mem_request_layout(cw, M))),
            "mem_resp": In(stream.Signature(mem_response_layout(cw))),
            "tlb_fill": Out(data.StructLayout({
                "en": 1, "size": PageSize, "gla": 64, "data": keys.tlb_payload(M)})),
            "inval_en": In(1),
            "inval": In(invalidation_layout()),
            "inval_busy": Out(1),      # a cache of the walker scans for an invalidation
            "idle": Out(1),
            "walk_started": Out(1), "read_issued": Out(1), "write_issued": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        M = self.maxphyaddr
        N = self.contexts
        cw = self.ctx_width
        ctx = self.ctx
        layout = walk_context_layout(tag_width=self.tag_width, ctx_width=cw, maxphyaddr=M)

        state = [Signal(WalkState, name=f"w{i}_state") for i in range(N)]
        wc = [Signal(layout, name=f"w{i}") for i in range(N)]
        state_arr = Array(state)
        wc_arr = Array(w.as_value() for w in wc)

        def select(idx, name, fields=None):
            """Context `idx`'s registers (only `fields`, when given: narrower multiplexers
            simulate faster and leave less for synthesis to prune)."""
            sel = Signal(layout, name=name)
            if fields is None:
                m.d.comb += sel.eq(wc_arr[idx])
            else:
                for f in fields:
                    m.d.comb += getattr(sel, f).eq(Array(getattr(w, f) for w in wc)[idx])
            return sel

        def in_state(*states):
            return Cat(Cat(*[(s == st) for st in states]).any() for s in state)

        pg = ctx.cr0[31]
        nxe = ctx.efer[11]
        ept_on = ctx.ept_enable
        ad = ept_on & ctx.eptp[6]
        tag = Signal(keys.eptag_width(M))
        m.d.comb += tag.eq(keys.eptag(ctx, M))

        # --- caches owned by the walker --------------------------------------------------------
        gpsc = {}
        for level, entries in zip((3, 2, 1), self.gpsc_entries):
            gpsc[level] = cache_of(entries, key_width=keys.gpsc_key_width(level, M),
                                   data_width=keys.gpsc_payload(M).size, ways=self.ways)
            m.submodules[f"gpsc_{arch.LEVEL_NAMES[level].lower()}"] = gpsc[level]
        epsc = {}
        for level, entries in zip((3, 2, 1), self.epsc_entries):
            epsc[level] = cache_of(entries, key_width=keys.epsc_key_width(level, M),
                                   data_width=keys.epsc_payload(M).size, ways=self.ways)
            m.submodules[f"epsc_{arch.LEVEL_NAMES[level].lower()}"] = epsc[level]
        m.submodules.nested_tlb = nested = cache_of(
            self.nested_entries, key_width=keys.nested_key_width(M),
            data_width=keys.nested_payload(M).size, ways=self.ways)
        caches = [*gpsc.values(), *epsc.values(), nested]
        m.d.comb += self.inval_busy.eq(Cat(c.busy for c in caches).any())

        for level, cache in gpsc.items():
            en, mask, match = keys.linear_inval(self.inval, False, 48 - arch.level_shift(level), M)
            m.d.comb += [cache.inval_en.eq(self.inval_en & en), cache.inval_mask.eq(mask),
                         cache.inval_match.eq(match)]
        for level, cache in epsc.items():
            en, mask, match = keys.physical_inval(self.inval, keys.epsc_gpa_width(level, M), M)
            m.d.comb += [cache.inval_en.eq(self.inval_en & en), cache.inval_mask.eq(mask),
                         cache.inval_match.eq(match)]
        en, mask, match = keys.physical_inval(self.inval, M - 12, M)
        m.d.comb += [nested.inval_en.eq(self.inval_en & en), nested.inval_mask.eq(mask),
                     nested.inval_match.eq(match)]

        # --- allocation of new misses ---------------------------------------------------------
        free_idx, free_any = _priority(m, in_state(WalkState.FREE), cw)
        m.d.comb += self.start.ready.eq(free_any)
        req = self.start.payload
        same_page = Cat(_is_walking(state[i]) & (wc[i].gla[12:48] == req.gla[12:48])
                        for i in range(N))
        primary, shared = _priority(m, same_page, cw)
        with m.If(self.start.valid & self.start.ready):
            for i in range(N):
                with m.If(free_idx == i):
                    m.d.sync += [
                        wc[i].tag.eq(req.tag), wc[i].gla.eq(req.gla),
                        wc[i].access.eq(req.access), wc[i].cpl.eq(req.cpl),
                        wc[i].primary.eq(primary), wc[i].reads.eq(0),
                        state[i].eq(Mux(shared, WalkState.WAIT, WalkState.PROBE_GUEST)),
                    ]

        # A waiting context replays once its primary's walk is over (whatever became of it).
        for i in range(N):
            with m.If((state[i] == WalkState.WAIT) & ~_is_walking(state_arr[wc[i].primary])):
                m.d.sync += state[i].eq(WalkState.REPLAY)

        replay_idx, replay_any = _priority(m, in_state(WalkState.REPLAY), cw)
        replay_sel = select(replay_idx, "replay_sel", ("tag", "gla", "access", "cpl"))
        m.d.comb += [
            self.replay.valid.eq(replay_any),
            self.replay.payload.ctx.eq(replay_idx),
            self.replay.payload.req.tag.eq(replay_sel.tag),
            self.replay.payload.req.gla.eq(replay_sel.gla),
            self.replay.payload.req.access.eq(replay_sel.access),
            self.replay.payload.req.cpl.eq(replay_sel.cpl),
        ]
        with m.If(self.replay.valid & self.replay.ready):
            m.d.sync += state_arr[replay_idx].eq(WalkState.FRONT)
        with m.If(self.restart_valid):
            m.d.sync += state_arr[self.restart_ctx].eq(WalkState.PROBE_GUEST)
        with m.If(self.release_valid):
            m.d.sync += state_arr[self.release_ctx].eq(WalkState.FREE)
        m.d.comb += self.walk_started.eq(
            (self.start.valid & self.start.ready & ~shared) | self.restart_valid)

        # --- E0: pick an event ----------------------------------------------------------------
        rsp_valid = Signal()
        rsp_tag = Signal(cw)
        rsp_data = Signal(64)
        probe_idx, probe_any = _priority(
            m, in_state(WalkState.PROBE_GUEST, WalkState.PROBE_EPT), cw)
        prefer_probe = Signal()
        take_skid = Signal()                # the response in the skid register
        take_direct = Signal()              # the response on `mem_resp`, skid register empty
        take_rsp = Signal()
        take_probe = Signal()
        rsp_turn = ~(probe_any & prefer_probe)
        m.d.comb += [
            take_skid.eq(rsp_valid & rsp_turn),
            take_direct.eq(~rsp_valid & self.mem_resp.valid & rsp_turn),
            take_rsp.eq(take_skid | take_direct),
            take_probe.eq(probe_any & ~take_rsp),
            # From registers only: no path from `mem_resp.valid` to `mem_resp.ready`.
            self.mem_resp.ready.eq(~rsp_valid | take_skid),
        ]
        with m.If(self.mem_resp.valid & self.mem_resp.ready & ~take_direct):
            m.d.sync += [rsp_valid.eq(1), rsp_tag.eq(self.mem_resp.payload.tag),
                         rsp_data.eq(self.mem_resp.payload.data)]
        with m.Elif(take_skid):
            m.d.sync += rsp_valid.eq(0)
        with m.If(take_rsp | take_probe):
            m.d.sync += prefer_probe.eq(take_rsp)
        ev_tag = Mux(rsp_valid, rsp_tag, self.mem_resp.payload.tag)
        ev_data = Mux(rsp_valid, rsp_data, self.mem_resp.payload.data)

        e0_ctx = Signal(cw)
        m.d.comb += e0_ctx.eq(Mux(take_rsp, ev_tag, probe_idx))
        with m.If(take_rsp | take_probe):
            m.d.sync += state_arr[e0_ctx].eq(WalkState.ENGINE)

        # Probe keys, from the registers of the context that wants a probe (E1 uses the hits
        # only for a probe event, so the keys need not wait for the choice between the two).
        # Only a probe taken counts as a use for the caches' replacement order.
        probe = select(probe_idx, "probe_sel", ("gla", "target"))
        for level, cache in gpsc.items():
            m.d.comb += [cache.lookup_key.eq(keys.gpsc_key(probe.gla, level, tag, ctx.vpid)),
                         cache.lookup_en.eq(take_probe)]
        for level, cache in epsc.items():
            m.d.comb += [cache.lookup_key.eq(keys.epsc_key(probe.target, level, tag, M)),
                         cache.lookup_en.eq(take_probe)]
        m.d.comb += [nested.lookup_key.eq(keys.nested_key(probe.target, tag, M)),
                     nested.lookup_en.eq(take_probe)]

        e1_valid = Signal()
        e1_ctx = Signal(cw)
        e1_probe = Signal()
        e1_probe_guest = Signal()
        e1_data = Signal(64)
        g_hit = {level: Signal(name=f"e1_gpsc_hit{level}") for level in gpsc}
        e_hit = {level: Signal(name=f"e1_epsc_hit{level}") for level in epsc}
        n_hit = Signal()
        m.d.sync += [
            e1_valid.eq(take_rsp | take_probe),
            e1_ctx.eq(e0_ctx),
            e1_probe.eq(take_probe),
            e1_probe_guest.eq(state_arr[probe_idx] == WalkState.PROBE_GUEST),
            e1_data.eq(ev_data),
            n_hit.eq(nested.lookup_hit),
        ]
        m.d.sync += [g_hit[lv].eq(c.lookup_hit) for lv, c in gpsc.items()]
        m.d.sync += [e_hit[lv].eq(c.lookup_hit) for lv, c in epsc.items()]
        g_pay = {lv: data.View(keys.gpsc_payload(M), c.lookup_data) for lv, c in gpsc.items()}
        e_pay = {lv: data.View(keys.epsc_payload(M), c.lookup_data) for lv, c in epsc.items()}
        n_pay = data.View(keys.nested_payload(M), nested.lookup_data)

        # --- E1: one step of one walk ---------------------------------------------------------
        cur = select(e1_ctx, "e1_cur")
        nxt = Signal(layout, name="e1_next")
        nstate = Signal(WalkState, name="e1_next_state")
        m.d.comb += [nxt.eq(cur), nstate.eq(WalkState.ENGINE)]
        # A read E1 asks for goes straight into the memory port's register when the port is free
        # and nobody waits for it (no write to commit, no context in MEM_ISSUE), so the context
        # skips MEM_ISSUE; otherwise it queues there.
        direct_issue = Signal()
        with m.If(e1_valid):
            for i in range(N):
                with m.If(e1_ctx == i):
                    m.d.sync += [wc[i].eq(nxt),
                                 state[i].eq(Mux(direct_issue, WalkState.MEM_WAIT, nstate))]

        # The write list: E1 appends, the committer reads.
        wentry = write_entry_layout(M)
        m.submodules.write_list = wlist = memory.Memory(
            shape=wentry, depth=N * WRITE_LIST_DEPTH, init=[])
        wl_wr = wlist.write_port()
        wl_rd = wlist.read_port()
        appended = Signal()
        wl_slot = ceil_log2(WRITE_LIST_DEPTH)
        m.d.comb += [
            wl_wr.addr.eq(Cat(cur.nwrites[:wl_slot], e1_ctx)),
            wl_wr.en.eq(e1_valid & appended),
        ]

        def append_write(addr, guest_a=0, guest_d=0, ept_a=0, ept_d=0):
            m.d.comb += [
                appended.eq(1),
                wl_wr.data.addr.eq(addr[3:M]),
                wl_wr.data.guest_a.eq(guest_a), wl_wr.data.guest_d.eq(guest_d),
                wl_wr.data.ept_a.eq(ept_a), wl_wr.data.ept_d.eq(ept_d),
                nxt.nwrites.eq(cur.nwrites + 1),
            ]

        tlb_fill = Signal(self.tlb_fill.shape())
        m.d.sync += self.tlb_fill.eq(tlb_fill)
        m.d.comb += tlb_fill.en.eq(0)

        def index_addr(table, addr, level):
            """Address of the entry `addr` uses at `level` (an int or a Value) in the table at
            page number `table`."""
            if isinstance(level, int):
                sh = arch.level_shift(level)
                index = addr[sh:sh + 9]       # a GPA narrower than 48 bits has zeros above
                if len(index) < 9:
                    index = Cat(index, Const(0, 9 - len(index)))
                return Cat(Const(0, 3), index, table)
            return Mux(level == 3, index_addr(table, addr, 3),
                       Mux(level == 2, index_addr(table, addr, 2),
                           Mux(level == 1, index_addr(table, addr, 1),
                               index_addr(table, addr, 0))))

        def page_addr(entry, addr, level):
            """Base of the page `entry` maps at `level`, with the offset of `addr`."""
            sh = arch.level_shift(level)
            return Cat(addr[0:sh], entry[sh:M])

        def by_level(level, fn):
            return Mux(level == 0, fn(0), Mux(level == 1, fn(1), fn(2)))

        def finish(outcome, *, err=0, qual=0, gpa=0):
            m.d.comb += [nxt.outcome.eq(outcome), nxt.err.eq(err), nxt.qual.eq(qual),
                         nxt.rgpa.eq(gpa), nxt.hpa.eq(0), nstate.eq(WalkState.DONE)]

        def page_fault(present, rsvd, user):
            finish(Outcome.PAGE_FAULT, err=checks.page_fault_code(
                present=present, rsvd=rsvd, access=cur.access, user=user,
                cr4=ctx.cr4, efer=ctx.efer))

        def violation(acc_bits, perm, final, gpa):
            finish(Outcome.EPT_VIOLATION, gpa=gpa,
                   qual=checks.violation_qualification(acc_bits, perm, final))

        # The TLB fill of a walk that succeeds, one per way of succeeding: after an EPT entry
        # (`rd_ept`) or after a guest entry with EPT off. The fill's fields are chosen by
        # `cur.rd_ept` alone, outside the conditions that decide `tlb_fill.en`, so that only
        # `en` waits for E1's decision.
        tlb_fill_sources = {}

        def succeed(*, after_ept, hpa, gpa, psize, rw, us, xd, eperm, write_ok, writes):
            m.d.comb += [
                nxt.outcome.eq(Outcome.OK), nxt.err.eq(0), nxt.qual.eq(0),
                nxt.rgpa.eq(gpa), nxt.hpa.eq(hpa), nxt.psize.as_value().eq(psize),
                nstate.eq(Mux(writes != 0, WalkState.COMMIT, WalkState.DONE)),
                tlb_fill.en.eq(1),
            ]
            assert after_ept not in tlb_fill_sources
            fields = Cat(Const(0, 1), Cat(psize)[:2], cur.gla, hpa[12:M], gpa[12:M], rw, us, xd,
                         Const(eperm, 3) if isinstance(eperm, int) else eperm, write_ok)
            assert len(fields) == len(tlb_fill.as_value())
            tlb_fill_sources[after_ept] = fields

        def issue_read(addr, ept):
            m.d.comb += [nxt.rd_addr.eq(addr), nxt.rd_ept.eq(ept), nstate.eq(WalkState.MEM_ISSUE)]

        def issue_ept_read(table, level, perm):
            m.d.comb += [nxt.etable.eq(table), nxt.elevel.eq(level), nxt.eperm.eq(perm)]
            issue_read(index_addr(table, cur.target, level), 1)

        def begin_entry_translation(entry_gpa):
            with m.If(ept_on):
                m.d.comb += [nxt.target.eq(entry_gpa), nxt.purpose.eq(0),
                             nstate.eq(WalkState.PROBE_EPT)]
            with m.Else():
                m.d.comb += [nxt.entry_eperm.eq(0b111), nxt.entry_clean.eq(1)]
                issue_read(entry_gpa, 0)

        def entry_translated(hpa, perm, clean):
            """The EPT translation of a guest entry's GPA is complete: read the entry."""
            need = Mux(ad, perm[1], perm[0])
            with m.If(~need):
                violation(Cat(Const(1, 1), ad, Const(0, 1)), perm, 0, cur.target)
            with m.Else():
                m.d.comb += [nxt.entry_eperm.eq(perm), nxt.entry_clean.eq(clean)]
                issue_read(hpa, 0)

        fill_sources = {}                   # cache -> (key, payload) of its one fill site
        write = cur.access == Access.WRITE
        user = cur.cpl == 3
        entry = e1_data

        with m.If(e1_valid & e1_probe & e1_probe_guest):
            # Start of a walk: the deepest guest paging-structure cache hit, else CR3.
            m.d.comb += [nxt.nwrites.eq(0), nxt.cand_valid.eq(0), nxt.g_clean.eq(1)]
            with m.If(~pg):
                # No guest paging: GPA = GLA, straight to the EPT translation.
                m.d.comb += [nxt.target.eq(cur.gla[:M]), nxt.purpose.eq(1),
                             nxt.gsize.eq(PageSize.SIZE_1G), nxt.g_rw.eq(1), nxt.g_us.eq(1),
                             nxt.g_xd.eq(0), nxt.g_dirty_ok.eq(1),
                             nstate.eq(WalkState.PROBE_EPT)]
            with m.Else():
                table = Signal(M - 12)
                level = Signal(2)
                m.d.comb += [table.eq(ctx.cr3[12:M]), level.eq(3), nxt.g_rw.eq(1),
                             nxt.g_us.eq(1), nxt.g_xd.eq(0)]
                for lv in (3, 2, 1):        # deepest hit last, so it wins
                    with m.If(g_hit[lv]):
                        m.d.comb += [table.eq(g_pay[lv].next), level.eq(lv - 1),
                                     nxt.g_rw.eq(g_pay[lv].rw), nxt.g_us.eq(g_pay[lv].us),
                                     nxt.g_xd.eq(g_pay[lv].xd)]
                m.d.comb += [nxt.gtable.eq(table), nxt.glevel.eq(level)]
                begin_entry_translation(index_addr(table, cur.gla, level))

        with m.Elif(e1_valid & e1_probe):
            # Start of an EPT translation of `target`.
            m.d.comb += nxt.e_clean.eq(1)
            with m.If((cur.purpose == 0) & n_hit):
                entry_translated(Cat(cur.target[:12], n_pay.hpa_page), n_pay.perm, 1)
            with m.Elif(e_hit[1]):
                issue_ept_read(e_pay[1].next, 0, e_pay[1].perm)
            with m.Elif(e_hit[2]):
                issue_ept_read(e_pay[2].next, 1, e_pay[2].perm)
            with m.Elif(e_hit[3]):
                issue_ept_read(e_pay[3].next, 2, e_pay[3].perm)
            with m.Else():
                issue_ept_read(ctx.eptp[12:M], 3, 0b111)

        with m.Elif(e1_valid & cur.rd_ept):
            # An EPT entry arrived.
            lvl = cur.elevel
            m.d.comb += nxt.reads.eq(cur.reads + 1)
            leaf = Signal()
            perm = Signal(3)
            need_a = Signal()
            need_d = Signal()
            clean = Signal()
            m.d.comb += [
                leaf.eq(checks.ept_leaf(lvl, entry)),
                perm.eq(cur.eperm & entry[0:3]),
                need_a.eq(ad & ~entry[arch.EPT_A_BIT]),
                need_d.eq(ad & leaf & ((cur.purpose == 0) | write) & ~entry[arch.EPT_D_BIT]),
                clean.eq(cur.e_clean & ~need_a & ~need_d),
            ]
            acc_bits = Mux(cur.purpose, checks.access_bits(cur.access),
                           Cat(Const(1, 1), ad, Const(0, 1)))
            with m.If(entry[0:3] == 0):
                violation(acc_bits, Const(0, 3), cur.purpose, cur.target)
            with m.Elif(checks.ept_misconfigured(lvl, leaf, entry, M)):
                finish(Outcome.EPT_MISCONFIG, gpa=cur.target)
            with m.Else():
                with m.If(need_a | need_d):
                    append_write(cur.rd_addr, ept_a=need_a, ept_d=need_d)
                writes = Mux(need_a | need_d, cur.nwrites + 1, cur.nwrites)
                hpa = Signal(M)
                m.d.comb += hpa.eq(by_level(lvl, lambda lv: page_addr(entry, cur.target, lv)))
                with m.If(leaf & (cur.purpose == 0)):
                    entry_translated(hpa, perm, clean)
                    with m.If(clean & perm[0] & (~ad | perm[1])):
                        fill_sources[nested] = (keys.nested_key(cur.target, tag, M),
                                                Cat(hpa[12:M], perm))
                        m.d.comb += nested.fill_en.eq(1)
                with m.Elif(leaf):
                    with m.If(~checks.ept_access_allowed(cur.access, perm)):
                        violation(acc_bits, perm, 1, cur.target)
                    with m.Else():
                        gsize = cur.gsize.as_value()
                        psize = Mux(lvl < gsize, lvl, gsize)
                        succeed(after_ept=True, hpa=hpa, gpa=cur.target, psize=psize,
                                rw=cur.g_rw,
                                us=cur.g_us, xd=cur.g_xd, eperm=perm,
                                write_ok=cur.g_dirty_ok & (~ad | entry[arch.EPT_D_BIT] | write),
                                writes=writes)
                with m.Else():
                    m.d.comb += nxt.e_clean.eq(clean)
                    for lv, cache in epsc.items():
                        with m.If((lvl == lv) & clean):
                            fill_sources[cache] = (keys.epsc_key(cur.target, lv, tag, M),
                                                   Cat(entry[12:M], perm))
                            m.d.comb += cache.fill_en.eq(1)
                    issue_ept_read(entry[12:M], lvl - 1, perm)

        with m.Elif(e1_valid):
            # A guest paging-structure entry arrived.
            lvl = cur.glevel
            m.d.comb += nxt.reads.eq(cur.reads + 1)
            leaf = Signal()
            rw = Signal()
            us = Signal()
            xd = Signal()
            need_a = Signal()
            need_d = Signal()
            cand_now = Signal()
            cand_valid = Signal()
            cand_gpa = Signal(M)
            cand_perm = Signal(3)
            g_clean = Signal()
            m.d.comb += [
                leaf.eq(checks.guest_leaf(lvl, entry)),
                rw.eq(cur.g_rw & entry[1]),
                us.eq(cur.g_us & entry[2]),
                xd.eq(cur.g_xd | (nxe & entry[63])),
                need_a.eq(~entry[arch.PTE_A_BIT]),
                need_d.eq(leaf & write & ~entry[arch.PTE_D_BIT]),
                # Setting a flag is a write to the entry's GPA: EPT must allow it.
                cand_now.eq((need_a | need_d) & ept_on & ~cur.entry_eperm[1] & ~cur.cand_valid),
                cand_valid.eq(cur.cand_valid | cand_now),
                cand_gpa.eq(Mux(cand_now, cur.target, cur.cand_gpa)),
                cand_perm.eq(Mux(cand_now, cur.entry_eperm, cur.cand_perm)),
                g_clean.eq(cur.g_clean & entry[arch.PTE_A_BIT] & cur.entry_clean),
            ]
            with m.If(~entry[0]):
                page_fault(0, 0, user)
            with m.Elif(checks.guest_reserved(lvl, leaf, entry, nxe, M)):
                page_fault(1, 1, user)
            with m.Else():
                m.d.comb += [nxt.g_rw.eq(rw), nxt.g_us.eq(us), nxt.g_xd.eq(xd),
                             nxt.g_clean.eq(g_clean), nxt.cand_valid.eq(cand_valid),
                             nxt.cand_gpa.eq(cand_gpa), nxt.cand_perm.eq(cand_perm)]
                with m.If(need_a | need_d):
                    append_write(cur.rd_addr, guest_a=need_a, guest_d=need_d)
                writes = Mux(need_a | need_d, cur.nwrites + 1, cur.nwrites)
                with m.If(leaf):
                    gpa = Signal(M)
                    m.d.comb += gpa.eq(by_level(lvl, lambda lv: page_addr(entry, cur.gla, lv)))
                    fault = checks.guest_permission_fault(
                        access=cur.access, user=user, rw=rw, us=us, xd=xd,
                        cr0=ctx.cr0, cr4=ctx.cr4, efer=ctx.efer)
                    with m.If(fault):
                        page_fault(1, 0, user)
                    with m.Elif(cand_valid):
                        violation(Const(0b011, 3), cand_perm, 0, cand_gpa)
                    with m.Elif(ept_on):
                        m.d.comb += [nxt.target.eq(gpa), nxt.purpose.eq(1), nxt.gsize.as_value().eq(lvl),
                                     nxt.g_dirty_ok.eq(entry[arch.PTE_D_BIT] | write),
                                     nstate.eq(WalkState.PROBE_EPT)]
                    with m.Else():
                        succeed(after_ept=False, hpa=gpa, gpa=gpa, psize=lvl, rw=rw, us=us,
                                xd=xd,
                                eperm=0b111, write_ok=entry[arch.PTE_D_BIT] | write,
                                writes=writes)
                with m.Else():
                    for lv, cache in gpsc.items():
                        with m.If((lvl == lv) & g_clean):
                            fill_sources[cache] = (keys.gpsc_key(cur.gla, lv, tag, ctx.vpid),
                                                   Cat(entry[12:M], rw, us, xd))
                            m.d.comb += cache.fill_en.eq(1)
                    m.d.comb += [nxt.gtable.eq(entry[12:M]), nxt.glevel.eq(lvl - 1)]
                    begin_entry_translation(index_addr(entry[12:M], cur.gla, lvl - 1))

        fill_fields = Mux(cur.rd_ept, tlb_fill_sources[True], tlb_fill_sources[False])
        m.d.comb += tlb_fill.as_value()[1:].eq(fill_fields[1:])
        # The caches' fill keys and payloads, outside the conditions that decide `fill_en`: the
        # fill registers then load every cycle, and only `fill_en` waits for E1's decision.
        for cache, (fill_key, fill_data) in fill_sources.items():
            m.d.comb += [cache.fill_key.eq(fill_key), cache.fill_data.eq(fill_data)]

        # --- the write committer ---------------------------------------------------------------
        commit_idx, commit_any = _priority(m, in_state(WalkState.COMMIT), cw)
        cm_busy = Signal()
        cm_ctx = Signal(cw)
        cm_next = Signal(wl_slot + 1)       # list index being read / offered
        cm_count = Signal(wl_slot + 1)
        cm_have = Signal()                  # wl_rd.data holds list entry cm_next - 1
        cm_take = Signal()                  # the port takes the offered write this cycle
        # The last write is in the mem_req register: the walk is DONE only once memory has
        # accepted it, so a response never leaves before the A/D writes it implies.
        cm_drain = Signal()
        handshake = Signal()
        commit_sel = select(commit_idx, "commit_sel", ("nwrites",))
        # The read port's enable defaults to 1: hold the offered entry unless a read is wanted.
        m.d.comb += wl_rd.en.eq(0)
        with m.If(~cm_busy):
            with m.If(commit_any):
                m.d.sync += [cm_busy.eq(1), cm_ctx.eq(commit_idx), cm_next.eq(1),
                             cm_count.eq(commit_sel.nwrites), cm_have.eq(1)]
                m.d.comb += [wl_rd.addr.eq(Cat(Const(0, wl_slot), commit_idx)), wl_rd.en.eq(1)]
        with m.Elif(cm_drain):
            with m.If(handshake):
                m.d.sync += [cm_busy.eq(0), cm_drain.eq(0),
                             state_arr[cm_ctx].eq(WalkState.DONE)]
        with m.Elif(cm_take):
            with m.If(cm_next == cm_count):
                m.d.sync += [cm_drain.eq(1), cm_have.eq(0)]
            with m.Else():
                m.d.sync += cm_next.eq(cm_next + 1)
                m.d.comb += [wl_rd.addr.eq(Cat(cm_next[:wl_slot], cm_ctx)), wl_rd.en.eq(1)]

        # --- the memory port -------------------------------------------------------------------
        issue_idx, issue_any = _priority(m, in_state(WalkState.MEM_ISSUE), cw)
        issue_sel = select(issue_idx, "issue_sel", ("rd_addr",))
        slot_free = ~self.mem_req.valid | self.mem_req.ready

        def offer_read(tag, addr):
            m.d.sync += [
                self.mem_req.valid.eq(1),
                self.mem_req.payload.tag.eq(tag),
                self.mem_req.payload.addr.eq(addr),
                self.mem_req.payload.write.eq(0),
                self.mem_req.payload.data.eq(0),
            ]
        m.d.comb += direct_issue.eq(e1_valid & (nstate == WalkState.MEM_ISSUE) & slot_free
                                    & ~(cm_busy & cm_have) & ~issue_any)
        with m.If(slot_free):
            with m.If(cm_busy & cm_have):
                m.d.comb += cm_take.eq(1)
                m.d.sync += [
                    self.mem_req.valid.eq(1),
                    self.mem_req.payload.tag.eq(cm_ctx),
                    self.mem_req.payload.addr.eq(Cat(Const(0, 3), wl_rd.data.addr)),
                    self.mem_req.payload.write.eq(1),
                    self.mem_req.payload.data.eq(
                        (wl_rd.data.guest_a << arch.PTE_A_BIT)
                        | (wl_rd.data.guest_d << arch.PTE_D_BIT)
                        | (wl_rd.data.ept_a << arch.EPT_A_BIT)
                        | (wl_rd.data.ept_d << arch.EPT_D_BIT)),
                ]
            with m.Elif(issue_any):
                offer_read(issue_idx, issue_sel.rd_addr)
                m.d.sync += state_arr[issue_idx].eq(WalkState.MEM_WAIT)
            with m.Else():
                # E1's read, if it asks for one. The payload is loaded either way, so that only
                # `valid` waits for E1's decision (the registers' enables stay off its path).
                offer_read(e1_ctx, nxt.rd_addr)
                m.d.sync += self.mem_req.valid.eq(direct_issue)
        m.d.comb += handshake.eq(self.mem_req.valid & self.mem_req.ready)
        m.d.comb += [
            self.read_issued.eq(handshake & ~self.mem_req.payload.write),
            self.write_issued.eq(handshake & self.mem_req.payload.write),
        ]

        # --- responses of finished walks ------------------------------------------------------
        done_idx, done_any = _priority(m, in_state(WalkState.DONE), cw)
        done_sel = select(done_idx, "done_sel", ("tag", "outcome", "gla", "rgpa", "hpa", "err", "qual", "psize", "reads"))
        m.d.comb += [
            self.done.valid.eq(done_any),
            self.done.payload.tag.eq(done_sel.tag),
            self.done.payload.outcome.eq(done_sel.outcome),
            self.done.payload.gla.eq(done_sel.gla),
            self.done.payload.gpa.eq(done_sel.rgpa),
            self.done.payload.hpa.eq(done_sel.hpa),
            self.done.payload.error_code.eq(done_sel.err),
            self.done.payload.qualification.eq(done_sel.qual),
            self.done.payload.page_size.eq(done_sel.psize),
            self.done.payload.mem_reads.eq(done_sel.reads),
        ]
        with m.If(self.done.valid & self.done.ready):
            m.d.sync += state_arr[done_idx].eq(WalkState.FREE)

        m.d.comb += self.idle.eq(in_state(WalkState.FREE).all() & ~rsp_valid
                                 & ~self.mem_req.valid)
        return m
