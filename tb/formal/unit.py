"""Formal harness of `TranslationUnit`: the walker, its memory port and the response stream.

The unit is built unchanged from rtl/ in a small configuration (few walk contexts, tiny caches,
a narrow MAXPHYADDR and request tag) and placed in a free environment that keeps the unit's
documented protocol:

- the context (`ctx`) is an arbitrary constant (it may change only while idle; keeping it stable
  is the simplest environment that allows);
- `req`, `inval` and `mem_resp` obey the stream rules (a valid item holds, unchanged, until
  taken); invalidations are otherwise free (the unit itself waits until nothing is in flight);
- the memory answers only reads it was asked for and not yet answered, with arbitrary data,
  and its response channel is never idle for `mem_latency` cycles while a read is outstanding
  (with one walk context: every read is answered within `mem_latency` cycles);
- `resp.ready` and `mem_req.ready` are free but never low for `ready_gap` cycles in a row while
  an item waits;
- one request tag `T` is symbolic (`AnyConst`); the environment never has two requests tagged T
  outstanding at once (what holds for T holds for every tag).

Properties (`PROPERTIES`; each job asserts one or more):

    once          every response tagged T answers an accepted, unanswered request tagged T (no
                  response without a request, never two responses for one request)
    bounded       a request tagged T is answered within `bound` cycles of being accepted, and
                  while it waits the unit never goes `gap` cycles without progress (a memory
                  request or response taken, or T's response); see docs/formal.md
    mem_tags      no read is issued with the tag of a read still outstanding, tags are
                  < contexts, so at most `contexts` reads are ever outstanding
    stable        `mem_req` and `resp`: a valid item stays valid and unchanged until taken
    no_fault_writes  no accessed/dirty write (mem_req with write=1) is issued on behalf of a
                  request whose response is a fault; a write is attributed to the request held by
                  the walk context named by the write's tag, read from the walker's context
                  registers in the cycle the write appears on the port
    writes_first  every A/D write of a request has been accepted by memory (its mem_req
                  handshake) before its response is offered (`resp.valid`), and no write of a
                  request appears after its response was taken
"""

from __future__ import annotations

import contextlib

from amaranth import Array, Cat, Const, Mux, Signal
from amaranth.lib import data
from amaranth.utils import ceil_log2

from rtl.arch import Outcome
from rtl.translation import unit as unit_module
from rtl.translation.layouts import context_layout
from rtl.translation.unit import TranslationUnit
from rtl.translation.walker import Walker, WalkState, walk_context_layout

from . import AnyConst, AnySeq, Assert, Assume, Cover, FormalTop, internal_signal, past

PROPERTIES = ("once", "bounded", "mem_tags", "stable", "no_fault_writes", "writes_first")


class ObservedWalker(Walker):
    """`Walker` as in rtl/, which also drives the harness's observation signals: `obs` maps the
    name of an internal register of the walker (e.g. "w0", "w0_state", "rsp_valid") to a
    harness signal that follows it. Mutations override `mutate`."""

    obs = {}

    def elaborate(self, platform):
        m = super().elaborate(platform)
        for name, sig in self.obs.items():
            m.d.comb += sig.eq(internal_signal(m, name, "sync"))
        self.mutate(m)
        return m

    def mutate(self, m):
        """Hook for mutations: add overriding statements to `m`."""


class ObservedUnit(TranslationUnit):
    """`TranslationUnit` as in rtl/, built with `walker_cls` (an `ObservedWalker`) in place of
    `Walker`. Mutations override `mutate`."""

    walker_cls = ObservedWalker

    def elaborate(self, platform):
        with _patched(unit_module, "Walker", self.walker_cls):
            m = super().elaborate(platform)
        self.walker = m.submodules["walker"]
        self.mutate(m)
        return m

    def mutate(self, m):
        """Hook for mutations: add overriding statements to `m`."""


@contextlib.contextmanager
def _patched(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


#: With `narrow=True` only these bits of the free 64-bit inputs may be 1 (every other bit is 0):
#: a restriction of the environment (fewer distinct addresses and entries) that lets constant
#: propagation shrink the unit's 64-bit datapaths. Every flag bit of guest and EPT entries is
#: free, so are a reserved bit (51), XD (63) and a few address bits at every level's position.
NARROW_ENTRY_BITS = tuple(range(10)) + (12, 13, 21, 30, 51, 63)
NARROW_GLA_BITS = (12, 21, 30, 39, 47)          # bits 48..63 copy one more free bit
NARROW_CTX_BITS = {"cr0": (16, 31), "cr3": (12, 13), "cr4": (20,), "efer": (11,),
                   "eptp": (6, 12, 13), "vpid": (0,)}


def sparse(width, bits, free=AnySeq):
    """A `width`-bit value whose `bits` are free (`AnySeq` or `AnyConst`) and other bits 0."""
    vals = free(len(bits))
    parts = []
    pos = 0
    for k, b in enumerate(sorted(bits)):
        if b > pos:
            parts.append(Const(0, b - pos))
        parts.append(vals[k])
        pos = b + 1
    if width > pos:
        parts.append(Const(0, width - pos))
    return Cat(*parts)


def narrow_gla(free=AnySeq):
    low = sparse(48, NARROW_GLA_BITS, free)
    high = free(1)
    return Cat(low, high.replicate(16))


def _count_up(m, name, cond, clear, width=8):
    """A saturating counter of the cycles `cond` held since the last `clear`."""
    cnt = Signal(width, name=name)
    with m.If(clear):
        m.d.sync += cnt.eq(0)
    with m.Elif(cond & (cnt != (1 << width) - 1)):
        m.d.sync += cnt.eq(cnt + 1)
    return cnt


class UnitHarness(FormalTop):
    """`TranslationUnit` in the protocol-keeping environment of the module doc."""

    def __init__(self, *, contexts=2, maxphyaddr=32, tag_width=2, tlb_entries=(1, 1, 1),
                 gpsc_entries=(1, 1, 1), epsc_entries=(1, 1, 1), nested_entries=1,
                 mem_latency=2, ready_gap=2, gap=None, bound=None, props=PROPERTIES,
                 covers=False, unit_cls=ObservedUnit, ept=None, paging=None, narrow=True,
                 invalidations=True, lemmas=False):
        super().__init__()
        self.params = dict(maxphyaddr=maxphyaddr, tag_width=tag_width, contexts=contexts,
                           tlb_entries=tlb_entries, gpsc_entries=gpsc_entries,
                           epsc_entries=epsc_entries, nested_entries=nested_entries)
        self.contexts = contexts
        self.tag_width = tag_width
        self.mem_latency = mem_latency
        self.ready_gap = ready_gap
        self.gap = gap
        self.bound = bound
        self.props = set(props)
        assert self.props <= set(PROPERTIES), self.props
        self.covers = covers
        self.unit_cls = unit_cls
        self.ept = ept          # None: free; else EPT enable is assumed to be this
        self.paging = paging    # None: free; else CR0.PG is assumed to be this
        self.narrow = narrow
        self.invalidations = invalidations
        self.lemmas = lemmas

    def elaborate(self, platform):
        m = self.formal_module()
        N = self.contexts
        unit = self.unit_cls(**self.params)
        cw_ctx = max(1, ceil_log2(N))
        layout = walk_context_layout(tag_width=self.tag_width, ctx_width=cw_ctx,
                                     maxphyaddr=self.params["maxphyaddr"])
        wraw = [Signal(layout.size, name=f"obs_w{i}") for i in range(N)]
        wst = [Signal(WalkState, name=f"obs_w{i}_state") for i in range(N)]
        obs = {f"w{i}": wraw[i] for i in range(N)}
        obs.update({f"w{i}_state": wst[i] for i in range(N)})
        wk = {name: Signal(width, name=f"obs_{name}")
              for name, width in (("rsp_valid", 1), ("rsp_tag", cw_ctx),
                                  ("e1_valid", 1), ("e1_ctx", cw_ctx),
                                  ("cm_busy", 1), ("cm_drain", 1), ("cm_ctx", cw_ctx))}
        obs.update(wk)
        wc = [data.View(layout, w) for w in wraw]
        obs_tag = [w.tag for w in wc]
        walker_cls = type("Walker", (unit.walker_cls,), {"obs": obs})
        unit.walker_cls = walker_cls
        m.submodules.unit = um = unit.elaborate(platform)
        unit._MustUse__silence = True
        l1_valid = internal_signal(um, "l1_valid", "sync")
        l1_replay = internal_signal(um, "l1_replay", "sync")
        l1_ctx = internal_signal(um, "l1_ctx", "sync")
        l1_req = data.View(unit.req.payload.shape(), internal_signal(um, "l1_req", "sync"))
        cw = unit.mem_tag_width

        req, resp, mreq, mresp, inval = unit.req, unit.resp, unit.mem_req, unit.mem_resp, \
            unit.inval

        # --- environment ----------------------------------------------------------------------
        ctx = Signal(context_layout(), name="ctx_const")
        if self.narrow:
            for fname, bits in NARROW_CTX_BITS.items():
                m.d.comb += getattr(ctx, fname).eq(
                    sparse(len(getattr(ctx, fname)), bits, AnyConst))
            m.d.comb += ctx.ept_enable.eq(AnyConst(1))
        else:
            m.d.comb += ctx.eq(AnyConst(len(ctx.as_value())))
        m.d.comb += unit.ctx.eq(ctx)
        if self.ept is not None:
            m.d.comb += Assume(ctx.ept_enable == int(self.ept))
        if self.paging is not None:
            m.d.comb += Assume(ctx.cr0[31] == int(self.paging))

        def stream_in(stream, name, fields=None):
            """Free valid/payload that keep the stream rules (`fields`: narrow payload)."""
            m.d.comb += stream.valid.eq(AnySeq(1))
            if fields is None:
                m.d.comb += stream.payload.eq(AnySeq(len(stream.payload.as_value())))
            else:
                for fname, value in fields.items():
                    m.d.comb += getattr(stream.payload, fname).eq(value)
            stalled = past(m, stream.valid & ~stream.ready, f"{name}_stalled")
            held = past(m, stream.payload.as_value(), f"{name}_held")
            m.d.comb += Assume(~stalled | (stream.valid & (stream.payload.as_value() == held)))

        if self.narrow:
            stream_in(req, "req", {"tag": AnySeq(self.tag_width), "gla": narrow_gla(),
                                   "access": AnySeq(2), "cpl": AnySeq(2)})
            stream_in(inval, "inval", {
                "kind": AnySeq(2), "vpid": sparse(16, NARROW_CTX_BITS["vpid"]),
                "eptp": sparse(64, NARROW_CTX_BITS["eptp"]), "gla": narrow_gla()})
            stream_in(mresp, "mem_resp", {"tag": AnySeq(cw),
                                          "data": sparse(64, NARROW_ENTRY_BITS)})
        else:
            stream_in(req, "req")
            stream_in(inval, "inval")
            stream_in(mresp, "mem_resp")
        m.d.comb += Assume(~req.valid | (req.payload.access.as_value() != 3))
        if not self.invalidations:
            m.d.comb += Assume(~inval.valid)

        def fair_ready(stream, name):
            m.d.comb += stream.ready.eq(AnySeq(1))
            waited = _count_up(m, f"{name}_waited", stream.valid & ~stream.ready,
                               ~stream.valid | stream.ready, 4)
            m.d.comb += Assume(~(stream.valid & (waited >= self.ready_gap - 1)) | stream.ready)

        fair_ready(resp, "resp")
        fair_ready(mreq, "mem_req")

        # The memory: which reads are outstanding, and for how long.
        mreq_ok = mreq.valid & mreq.ready
        read_ok = mreq_ok & ~mreq.payload.write
        mresp_ok = mresp.valid & mresp.ready
        pending = Signal(1 << cw, name="pending")
        pending_next = Signal(1 << cw)
        m.d.comb += pending_next.eq(pending)
        with m.If(mresp_ok):
            m.d.comb += pending_next.bit_select(mresp.payload.tag, 1).eq(0)
        with m.If(read_ok):
            m.d.comb += pending_next.bit_select(mreq.payload.tag, 1).eq(1)
        m.d.sync += pending.eq(pending_next)
        m.d.comb += Assume(~mresp.valid | pending.bit_select(mresp.payload.tag, 1))
        # Latency: the response channel is never idle for `mem_latency` cycles while a read
        # is outstanding (with one context: every read is answered within that bound).
        for c in range(1 << cw):
            age = _count_up(m, f"mem_age{c}", pending[c] & ~mresp.valid,
                            ~pending[c] | mresp.valid, 5)
            m.d.comb += Assume(~(pending[c] & (age >= self.mem_latency)) | mresp.valid)

        # --- the tracked request T ------------------------------------------------------------
        T = Signal(self.tag_width, name="T")
        m.d.comb += T.eq(AnyConst(self.tag_width))
        accept_t = req.valid & req.ready & (req.payload.tag == T)
        resp_ok = resp.valid & resp.ready
        resp_t = resp.valid & (resp.payload.tag == T)
        out_t = Signal(name="out_t")          # T accepted and not yet answered
        with m.If(accept_t):
            m.d.sync += out_t.eq(1)
        with m.Elif(resp_ok & resp_t):
            m.d.sync += out_t.eq(0)
        m.d.comb += Assume(~(req.valid & (req.payload.tag == T) & out_t))
        age_t = _count_up(m, "age_t", out_t, accept_t, 8)

        # Writes: a new item on mem_req is one whose previous cycle was not a stall.
        mreq_stalled = past(m, mreq.valid & ~mreq.ready, "mem_req_stalled")
        new_write = mreq.valid & ~mreq_stalled & mreq.payload.write
        writer_tag = Signal(self.tag_width, name="writer_tag")
        for i in range(N):
            with m.If(mreq.payload.tag == i):
                m.d.comb += writer_tag.eq(obs_tag[i])
        write_for_t = new_write & out_t & (writer_tag == T)
        wrote_t = Signal(name="wrote_t")       # a write was issued on behalf of T
        with m.If(accept_t):
            m.d.sync += wrote_t.eq(0)
        with m.Elif(write_for_t):
            m.d.sync += wrote_t.eq(1)
        # Is the item on mem_req (while valid) a write of T? Decided when the item appears.
        item_t = Signal(name="mem_req_item_is_t")
        item_t_reg = past(m, item_t, "mem_req_item_was_t")
        m.d.comb += item_t.eq(Mux(mreq.valid & ~mreq_stalled, write_for_t, item_t_reg))

        progress = Signal(name="progress")
        m.d.comb += progress.eq(mreq_ok | mresp_ok | (resp_ok & resp_t))
        idle_t = _count_up(m, "idle_t", out_t & ~progress, ~out_t | progress, 6)

        if self.covers:
            self._covers(m, unit, req, resp, mreq, mresp, inval, out_t, resp_t, resp_ok,
                         wrote_t, pending, age_t)
            return m

        if self.lemmas:
            self._lemmas(m, N, cw, wst, wc, wk, l1_valid, l1_replay, l1_ctx, l1_req, T, out_t,
                         resp, mreq, pending, wrote_t, mreq_stalled, item_t)

        # --- properties -----------------------------------------------------------------------
        if "once" in self.props:
            m.d.comb += Assert(~(resp_ok & resp_t) | out_t, "once")
        if "bounded" in self.props:
            if self.bound is not None:
                m.d.comb += Assert(~out_t | (age_t <= self.bound), "bounded: response")
            if self.gap is not None:
                m.d.comb += Assert(idle_t <= self.gap, "bounded: progress gap")
        if "mem_tags" in self.props:
            m.d.comb += Assert(~read_ok | ~pending.bit_select(mreq.payload.tag, 1),
                               "mem_tags: tag reuse")
            if N < (1 << cw):
                m.d.comb += Assert(~mreq.valid | (mreq.payload.tag < N), "mem_tags: range")
            popcount = sum(pending[c] for c in range(1 << cw))
            m.d.comb += Assert(popcount <= N, "mem_tags: outstanding <= contexts")
        if "stable" in self.props:
            for stream, name in ((mreq, "mem_req"), (resp, "resp")):
                stalled = past(m, stream.valid & ~stream.ready, f"{name}_was_stalled")
                held = past(m, stream.payload.as_value(), f"{name}_was")
                m.d.comb += Assert(~stalled | (stream.valid
                                               & (stream.payload.as_value() == held)),
                                   f"stable: {name}")
        if "no_fault_writes" in self.props:
            fault = resp.payload.outcome != Outcome.OK
            m.d.comb += Assert(~(resp_ok & resp_t & out_t & fault) | ~wrote_t,
                               "no_fault_writes")
        if "writes_first" in self.props:
            # While T's response is offered, no write of T waits on the port (a write is
            # accepted at its handshake; the response may be offered only after that), and no
            # write of T appears once T has been answered (all of its writes came first).
            m.d.comb += Assert(~(resp.valid & resp_t & out_t) | ~(mreq.valid & item_t),
                               "writes_first: response while a write waits")
            m.d.comb += Assert(~(new_write & ~out_t & (writer_tag == T)),
                               "writes_first: write after the response")
        return m

    def _lemmas(self, m, N, cw, wst, wc, wk, l1_valid, l1_replay, l1_ctx, l1_req, T, out_t,
                resp, mreq, pending, wrote_t, mreq_stalled, item_t):
        """Auxiliary assertions (proven with the properties) that make k-induction close: where
        a request and a memory read can be, in terms of the unit's and walker's registers."""
        S = WalkState
        ok = Outcome.OK
        # A request tagged T is in exactly one place while outstanding, and nowhere otherwise.
        in_l1 = l1_valid & ~l1_replay & (l1_req.tag == T)
        in_ctx = [(wst[i] != S.FREE) & (wc[i].tag == T) for i in range(N)]
        in_resp = resp.valid & (resp.payload.tag == T)
        places = Signal(range(N + 3), name="t_places")
        m.d.comb += places.eq(in_l1 + sum(in_ctx) + in_resp)
        m.d.comb += Assert(places == out_t, "aux: T in one place")
        for i in range(N):
            m.d.comb += [
                Assert((wst[i] == S.FRONT) == (l1_valid & l1_replay & (l1_ctx == i)),
                       f"aux: ctx {i} FRONT iff replay in L1"),
                Assert(~((wst[i] == S.FRONT) & (l1_ctx == i)) | (l1_req.tag == wc[i].tag),
                       f"aux: ctx {i} replays its own request"),
                Assert((wst[i] == S.ENGINE) == (wk["e1_valid"] & (wk["e1_ctx"] == i)),
                       f"aux: ctx {i} ENGINE iff in E1"),
                Assert((wst[i] != S.COMMIT) | (wc[i].outcome == ok),
                       f"aux: ctx {i} commits only a success"),
                Assert(wst[i].as_value() <= S.DONE.value, f"aux: ctx {i} state valid"),
            ]
        m.d.comb += Assert(~wk["cm_busy"] | (Array(wst)[wk["cm_ctx"]] == S.COMMIT),
                           "aux: committer serves a COMMIT context")
        # A write on the port is the committer's, for the context it serves, until accepted;
        # while it drains, the port holds its last write.
        m.d.comb += Assert(~(mreq.valid & mreq.payload.write)
                           | (wk["cm_busy"] & (wk["cm_ctx"] == mreq.payload.tag)),
                           "aux: a write on the port is the committer's")
        m.d.comb += Assert(~wk["cm_drain"] | (wk["cm_busy"] & mreq.valid & mreq.payload.write),
                           "aux: draining holds the last write")
        m.d.comb += Assert(~(mreq.valid & mreq.payload.write)
                           | (item_t == (out_t & (Array(wc)[mreq.payload.tag].tag == T))),
                           "aux: a write of T is marked as T's")
        for c in range(1 << cw):
            item = mreq.valid & ~mreq.payload.write & (mreq.payload.tag == c)
            skid = wk["rsp_valid"] & (wk["rsp_tag"] == c)
            where = Cat(item, pending[c], skid)
            if c < N:
                waiting = wst[c] == S.MEM_WAIT
                m.d.comb += Assert(Mux(waiting, (where == 1) | (where == 2) | (where == 4),
                                       where == 0), f"aux: ctx {c} read in one place")
            else:
                m.d.comb += Assert(where == 0, f"aux: no read tagged {c}")
        # A write of T appears only while T's walk succeeded; T's writes mean T succeeded.
        new_write = mreq.valid & ~mreq_stalled & mreq.payload.write
        wctx = Array(wst)[mreq.payload.tag]
        wview = Array(wc)[mreq.payload.tag]
        m.d.comb += Assert(~new_write | (((wctx == S.COMMIT) | (wctx == S.DONE))
                                         & (wview.outcome == ok)), "aux: new write of a success")
        t_ok = Cat(*[in_ctx[i] & ((wst[i] == S.COMMIT) | (wst[i] == S.DONE))
                     & (wc[i].outcome == ok) for i in range(N)]).any() \
            | (in_resp & (resp.payload.outcome == ok))
        m.d.comb += Assert(~(wrote_t & out_t) | t_ok, "aux: T wrote, so T succeeded")

    def _covers(self, m, unit, req, resp, mreq, mresp, inval, out_t, resp_t, resp_ok, wrote_t,
                pending, age_t):
        resp_t_ok = resp_ok & resp_t & out_t
        walked = resp.payload.mem_reads != 0
        ok = resp.payload.outcome == Outcome.OK
        if self.covers == "contexts":
            self._covers_contexts(m, pending)
            return
        if self.covers == "hit":
            # Needs a completed walk whose TLB fill then answers T without memory.
            m.d.comb += Cover(resp_t_ok & ~walked & ok & unit.ctx.cr0[31],
                              "a TLB hit answers T")
            return
        m.d.comb += [
            Cover(resp_t_ok & walked, "a walk completes with a response"),
            Cover(resp_t_ok & walked & ok & wrote_t, "a successful walk that wrote A/D flags"),
            Cover(resp_t_ok & walked & ~ok, "a walk ends in a fault"),
            Cover(mreq.valid & mreq.ready & mreq.payload.write, "an A/D write is issued"),
            Cover(inval.valid & inval.ready & past(m, ~unit.idle), "an invalidation after work"),
            Cover(mreq.valid & ~mreq.ready, "mem_req stalled"),
            Cover(resp.valid & ~resp.ready, "resp stalled"),
        ]

    def _covers_contexts(self, m, pending):
        m.d.comb += Cover(sum(pending[c] for c in range(len(pending))) == self.contexts,
                          "every context has a read outstanding")
