"""cocotb testbench of the translation unit (`rtl.translation.TranslationUnit`, Verilog top
``translation_unit``): clock, reset, context, request driver, response monitor, invalidation,
memory model and watchdogs, in one `TB` class that every test of
``tb/test_translation_unit.py`` builds on.

Ports are the flattened Verilog vectors of the unit's layouts (``req__payload``, ``ctx``, ...);
`tb.structs` packs and unpacks them with the layouts of `rtl.translation.layouts`.

Timing convention (all components): outputs to the DUT are written just after a rising edge and
handshakes are sampled in the ReadOnly phase before the next edge, i.e. exactly as that edge
sees them, combinational ready paths included. A handshake at an edge where ``rst`` is high
does not count.

Traffic:

* `submit` queues a request and returns a `Pending`; the driver presents queued requests in
  order with random valid gaps (`req_valid` = probability of presenting in a free cycle), each
  with a free tag (tags are reused once answered), holding valid and payload until accepted.
* The monitor takes responses with random back-pressure (`resp_ready` = probability of ready),
  matches them to outstanding requests by tag and checks that the response echoes the request's
  GLA, and that a response not taken stays offered unchanged (stream rule). A response whose
  tag has no outstanding request (answered twice, or accepted before a reset) fails the test.
* Watchdog: every accepted request must be answered within `watchdog_cycles` cycles, and a
  presented request must be accepted within the same bound; otherwise the test fails naming the
  tag and the request. `run` adds a global `with_timeout`.
* `reset` drops every accepted request (`Pending.dropped`); the memory model drops its reads.
  The dropped requests' tags are not reused until `release_quarantine` (or the next `load`).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Event, ReadOnly, RisingEdge, select, with_timeout
from amaranth.lib import data

from rtl.arch import Access, Invalidation, Outcome
from rtl.translation import TranslationUnit
from rtl.translation.layouts import (COUNTER_WIDTH, COUNTERS, context_layout,
                                     invalidation_layout, request_layout, response_layout)
from tb.memory import MemoryModel
from tb.model.translation import Context, Memory, Request, TranslationModel
from tb.structs import pack, unpack

__all__ = ["TB", "Pending", "TestbenchError", "context_values"]

PERIOD_NS = 10


class TestbenchError(AssertionError):
    """A check of the testbench (watchdog, protocol, scoreboard) failed."""


def context_values(context: Context) -> dict:
    """The `ctx` port's fields from a model `Context`."""
    return {
        "cr0": context.cr0 & 0xFFFF_FFFF, "cr3": context.cr3, "cr4": context.cr4 & 0xFFFF_FFFF,
        "efer": context.efer & 0xFFFF_FFFF, "eptp": context.eptp,
        "ept_enable": int(bool(context.ept_enable)), "vpid": context.vpid,
    }


class Pending:
    """One submitted request and, once answered, its response (`response`, unpacked)."""

    __slots__ = ("index", "request", "tag", "presented", "accepted", "answered", "response",
                 "dropped", "callback", "event", "user")

    def __init__(self, index: int, request: Request, callback=None, user=None):
        self.index = index
        self.request = request
        self.tag: int | None = None
        self.presented: int | None = None   # cycle valid went up
        self.accepted: int | None = None    # cycle of the accepting edge
        self.answered: int | None = None    # cycle of the response's edge
        self.response: dict | None = None
        self.dropped = False                # accepted, then the unit was reset
        self.callback = callback
        self.event: Event | None = None
        self.user = user                    # free for the test (e.g. the model's result)

    @property
    def done(self) -> bool:
        return self.response is not None or self.dropped

    @property
    def latency(self) -> int | None:
        if self.response is None:
            return None
        return self.answered - self.accepted

    def __repr__(self) -> str:
        r = self.request
        return (f"request #{self.index} tag {self.tag} gla={r.gla:#x} {r.access.name} "
                f"cpl={r.cpl} (accepted cycle {self.accepted})")


class TB:
    """Testbench of one `TranslationUnit` instance.

    `unit` is the (unelaborated) component the Verilog was made from, for its parameters;
    by default `TranslationUnit()`. `seed` seeds every random choice of the testbench.
    `tags`: use only this many (random) tag values, so that tags are reused sooner.
    """

    def __init__(self, dut, unit: TranslationUnit | None = None, *, seed=None,
                 latency=(0, 100), mem_req_ready=0.7, mem_resp_valid=0.7,
                 req_valid=0.7, resp_ready=0.7, watchdog_cycles=20_000,
                 tags: int | None = None):
        self.dut = dut
        self.log = dut._log
        self.unit = unit = unit if unit is not None else TranslationUnit()
        self.maxphyaddr = unit.maxphyaddr
        self.tag_width = unit.tag_width
        self.contexts = unit.contexts
        self.req_layout = request_layout(unit.tag_width)
        self.resp_layout = response_layout(unit.tag_width, unit.maxphyaddr)
        self.ctx_layout = context_layout()
        self.inval_layout = invalidation_layout()
        self.counters_layout = data.StructLayout({n: COUNTER_WIDTH for n in COUNTERS})
        for handle, layout in ((dut.req__payload, self.req_layout),
                               (dut.resp__payload, self.resp_layout),
                               (dut.ctx, self.ctx_layout),
                               (dut.inval__payload, self.inval_layout),
                               (dut.counters, self.counters_layout)):
            if len(handle) != layout.size:
                raise ValueError(f"port {handle._name} has {len(handle)} bits but its layout "
                                 f"{layout.size}: the Verilog and `unit` do not match")

        self.seed = seed
        self.rng = random.Random(seed)
        self.mem = MemoryModel(dut, dut.clk, tag_width=unit.mem_tag_width,
                               maxphyaddr=unit.maxphyaddr, latency=latency,
                               req_ready=mem_req_ready, resp_valid=mem_resp_valid,
                               max_outstanding=unit.contexts, rst=dut.rst,
                               rng=random.Random(self.rng.getrandbits(64)), log=self.log,
                               on_error=self._memory_error)
        self.p_req_valid = req_valid
        self.p_resp_ready = resp_ready
        self.watchdog_cycles = watchdog_cycles

        self.cycle = 0
        self.ctx: Context | None = None
        self.model: TranslationModel | None = None
        self.queue: deque[Pending] = deque()
        ntags = tags
        tags = list(range(1 << unit.tag_width))
        self.rng.shuffle(tags)
        if ntags is not None:
            tags = tags[:ntags]
        self.free_tags: deque[int] = deque(tags)
        self.quarantine: list[int] = []           # tags of requests dropped by a reset
        self.outstanding: dict[int, Pending] = {}    # tag -> accepted request, oldest first
        self.presented: Pending | None = None
        self.dropped: list[Pending] = []
        self.submitted = 0
        self.accepted = 0
        self.answered = 0
        self.mem_reads_answered = 0               # sum of the responses' mem_reads
        self.walked_answered = 0                  # responses with mem_reads > 0
        self.hits_answered = 0                    # ok without reads, guest paging or EPT on
        self.errors: list[str] = []
        self.on_response: Callable[[Pending], None] | None = None
        self._req_valid_driven = 0
        self._resp_ready_driven = 0
        self._task = None
        self._clock = None
        self._error_event = Event()
        self._flat = False

    # ------------------------------------------------------------------------------------------
    # set-up

    async def start(self, reset_cycles: int = 4) -> None:
        """Start the clock, drive every input to 0, reset, start the port tasks."""
        dut = self.dut
        self._clock = Clock(dut.clk, PERIOD_NS, unit="ns")
        self._clock.start()
        dut.rst.value = 1
        for handle in (dut.req__valid, dut.req__payload, dut.resp__ready, dut.ctx,
                       dut.inval__valid, dut.inval__payload):
            handle.value = 0
        self.mem.start()
        self._task = cocotb.start_soon(self._run())
        await self.reset(reset_cycles)

    def set_backpressure(self, *, req_valid=None, resp_ready=None, latency=None,
                         mem_req_ready=None, mem_resp_valid=None) -> None:
        """Change traffic probabilities (None keeps a setting)."""
        if req_valid is not None:
            self.p_req_valid = req_valid
        if resp_ready is not None:
            self.p_resp_ready = resp_ready
        self.mem.set_backpressure(latency=latency, req_ready=mem_req_ready,
                                  resp_valid=mem_resp_valid)

    def fail(self, msg: str) -> None:
        """Record a failure (also seen by `run` and `check_errors`) and raise it."""
        msg = f"cycle {self.cycle}: {msg}"
        self.errors.append(msg)
        self.log.error(msg)
        self._error_event.set()
        raise TestbenchError(msg)

    def _memory_error(self, msg: str) -> None:
        self.errors.append(msg)
        self._error_event.set()

    def check_errors(self) -> None:
        errors = self.errors
        if errors:
            raise TestbenchError("; ".join(errors[:5]))

    async def run(self, body, timeout_us: float):
        """Await the coroutine `body` under a global `with_timeout` of `timeout_us`.

        A failure of the testbench's own tasks (watchdog, scoreboard callbacks, memory-port
        checks) ends `body` at once and fails the test with that message.
        """
        try:
            index, result = await with_timeout(select(body, self._error_event.wait()),
                                               timeout_us, "us")
        finally:
            self.mem.stop()
            if self._task is not None:
                self._task.cancel()
        self.check_errors()
        return result

    # ------------------------------------------------------------------------------------------
    # the per-cycle task: request driver, response monitor, watchdog

    async def _run(self) -> None:
        dut = self.dut
        rng = self.rng
        edge = RisingEdge(dut.clk)
        readonly = ReadOnly()
        req_valid, req_ready, req_payload = dut.req__valid, dut.req__ready, dut.req__payload
        resp_valid, resp_ready, resp_payload = dut.resp__valid, dut.resp__ready, dut.resp__payload
        rst = dut.rst
        req_layout, resp_layout = self.req_layout, self.resp_layout
        held = None                       # a response offered but not taken: must stay
        while True:
            await edge
            self.cycle = cycle = self.cycle + 1
            # --- drive requests
            p = self.presented
            if p is None and self.queue and self.free_tags and rng.random() < self.p_req_valid:
                p = self.presented = self.queue.popleft()
                p.tag = self.free_tags.popleft()
                p.presented = cycle
                r = p.request
                req_payload.value = pack(req_layout, tag=p.tag, gla=r.gla, access=r.access,
                                         cpl=r.cpl)
            valid = 0 if p is None else 1
            if valid != self._req_valid_driven:
                req_valid.value = valid
                self._req_valid_driven = valid
            # --- response back-pressure
            ready = 1 if rng.random() < self.p_resp_ready else 0
            if ready != self._resp_ready_driven:
                resp_ready.value = ready
                self._resp_ready_driven = ready
            # --- watchdog, every 64 cycles
            if not cycle & 63:
                self._watchdog(cycle)
            # --- sample the coming edge
            await readonly
            if rst.value == 1:
                held = None
                continue
            if held is not None and (resp_valid.value != 1 or int(resp_payload.value) != held):
                self.fail("resp.valid dropped or resp.payload changed before resp.ready")
            held = None
            if resp_valid.value == 1:
                if ready:
                    self._response(unpack(resp_layout, int(resp_payload.value)), cycle + 1)
                else:
                    held = int(resp_payload.value)
            if valid and req_ready.value == 1:
                p.accepted = cycle + 1
                self.outstanding[p.tag] = p
                self.presented = None
                self.accepted += 1

    def _watchdog(self, cycle: int) -> None:
        bound = self.watchdog_cycles
        if self.outstanding:
            oldest = next(iter(self.outstanding.values()))
            if cycle - oldest.accepted > bound:
                self.fail(f"watchdog: {oldest} not answered within {bound} cycles "
                          f"({len(self.outstanding)} outstanding)")
        p = self.presented
        if p is not None and cycle - p.presented > bound:
            self.fail(f"watchdog: {p} presented at cycle {p.presented} not accepted within "
                      f"{bound} cycles")

    def _response(self, resp: dict, cycle: int) -> None:
        tag = resp["tag"]
        p = self.outstanding.pop(tag, None)
        if p is None:
            self.fail(f"response with tag {tag} but no request with that tag is outstanding "
                      f"(answered twice, or accepted before a reset): {resp}")
        if resp["gla"] != p.request.gla:
            self.fail(f"response for tag {tag} has gla {resp['gla']:#x}, but {p}")
        p.response = resp
        p.answered = cycle
        self.free_tags.append(tag)
        self.answered += 1
        reads = resp["mem_reads"]
        self.mem_reads_answered += reads
        if reads:
            self.walked_answered += 1
        elif resp["outcome"] == Outcome.OK and not self._flat:
            self.hits_answered += 1
        try:
            if p.callback is not None:
                p.callback(p)
            if self.on_response is not None:
                self.on_response(p)
        except TestbenchError:
            raise
        except Exception as e:            # a scoreboard bug or check: fail the test with it
            self.fail(f"response callback for {p}: {type(e).__name__}: {e}")
        if p.event is not None:
            p.event.set()

    # ------------------------------------------------------------------------------------------
    # requests

    def submit(self, gla: int, access: Access = Access.READ, cpl: int = 0, *,
               callback=None, user=None) -> Pending:
        """Queue a request; returns its `Pending` (filled in when answered)."""
        p = Pending(self.submitted, Request(gla, Access(access), cpl), callback, user)
        self.submitted += 1
        self.queue.append(p)
        return p

    async def wait(self, p: Pending) -> dict | None:
        """Wait until `p` is answered (returns the response) or dropped by a reset (None).

        Returns just after the rising edge that took the response (or right away if `p` is
        done already), so the caller may drive inputs.
        """
        if not p.done:
            if p.event is None:
                p.event = Event()
            await p.event.wait()          # set by the monitor in the ReadOnly phase
            await RisingEdge(self.dut.clk)
        return p.response

    async def translate(self, gla: int, access: Access = Access.READ, cpl: int = 0) -> dict:
        """Submit one request and wait for its response."""
        p = self.submit(gla, access, cpl)
        resp = await self.wait(p)
        if resp is None:
            raise TestbenchError(f"{p} was dropped by a reset")
        return resp

    @property
    def busy(self) -> bool:
        """Requests queued, presented or outstanding."""
        return bool(self.queue or self.presented is not None or self.outstanding)

    async def drain(self) -> None:
        """Wait until every submitted request has been answered."""
        edge = RisingEdge(self.dut.clk)
        while self.busy:
            await edge

    async def wait_idle(self) -> None:
        """Drain, then wait until the unit reports `idle` (A/D writes done, caches quiet).

        Returns just after a rising edge, so the caller may drive inputs right away.
        """
        await self.drain()
        edge = RisingEdge(self.dut.clk)
        while True:
            await ReadOnly()
            if self.dut.idle.value == 1 and not self.busy:
                break
            await edge
        await edge

    # ------------------------------------------------------------------------------------------
    # context, invalidation, reset, counters

    async def set_context(self, ctx: Context, *, invalidate: bool = True) -> None:
        """Wait for `idle`, change the context, then (by default) invalidate everything."""
        await self.wait_idle()
        self.dut.ctx.value = pack(self.ctx_layout, context_values(ctx))
        self.ctx = ctx
        self._flat = not ctx.paging and not ctx.ept_enable    # answered without the TLB
        if self.model is not None:
            self.model.context = ctx
        if invalidate:
            await self.invalidate(Invalidation.ALL)

    async def load(self, memory: Memory, ctx: Context, *, invalidate: bool = True
                   ) -> TranslationModel:
        """New memory and context: the DUT's memory becomes a copy of `memory`, the context is
        set and everything invalidated. Returns (and keeps as `model`) a `TranslationModel` of
        its own copy, to be driven in request order."""
        await self.wait_idle()
        self.release_quarantine()
        self.mem.memory = memory.copy()
        self.model = TranslationModel(memory.copy(), ctx)
        await self.set_context(ctx, invalidate=invalidate)
        return self.model

    async def invalidate(self, kind: Invalidation, *, vpid: int = 0, eptp: int = 0,
                         gla: int = 0) -> int:
        """Present one invalidation and wait for `inval.ready`; returns the cycles it took.

        Must be called from just after a rising edge (as every coroutine of this class returns).
        """
        dut = self.dut
        edge = RisingEdge(dut.clk)
        dut.inval__payload.value = pack(self.inval_layout, kind=kind, vpid=vpid, eptp=eptp,
                                        gla=gla)
        dut.inval__valid.value = 1
        start = self.cycle
        while True:
            await ReadOnly()
            if dut.inval__ready.value == 1 and dut.rst.value == 0:
                break
            await edge
            if self.cycle - start > self.watchdog_cycles:
                self.fail(f"invalidation {kind.name} not accepted within "
                          f"{self.watchdog_cycles} cycles")
        await edge
        dut.inval__valid.value = 0
        return self.cycle - start

    async def reset(self, cycles: int = 4) -> list[Pending]:
        """Assert `rst` for `cycles` edges. Every accepted, unanswered request is dropped (and
        returned); a presented but not yet accepted request stays presented."""
        dut = self.dut
        edge = RisingEdge(dut.clk)
        await edge
        dut.rst.value = 1
        dropped = list(self.outstanding.values())
        for p in dropped:
            p.dropped = True
            self.quarantine.append(p.tag)
            if p.event is not None:
                p.event.set()
        self.outstanding.clear()
        self.dropped.extend(dropped)
        self.accepted = self.answered = self.mem_reads_answered = 0
        self.walked_answered = self.hits_answered = 0
        for _ in range(cycles):
            await edge
        dut.rst.value = 0
        return dropped

    def release_quarantine(self) -> None:
        """Make the tags of requests dropped by a reset usable again. Until then they are not
        reused, so that a response to a dropped request cannot pass for a new request's."""
        self.free_tags.extend(self.quarantine)
        self.quarantine.clear()

    def counters(self) -> dict:
        """The unit's performance counters (read them after `wait_idle` for stable values)."""
        return unpack(self.counters_layout, int(self.dut.counters.value))

    async def read_counters(self) -> dict:
        """The counters as the coming edge sees them; returns just after that edge."""
        await ReadOnly()
        value = self.counters()
        await RisingEdge(self.dut.clk)
        return value

    async def cycles(self, n: int) -> None:
        edge = RisingEdge(self.dut.clk)
        for _ in range(n):
            await edge
