"""A cocotb model of the memory side of the translation unit's `mem_req` / `mem_resp` ports.

`MemoryModel` answers the walker's paging-structure reads from a backing
`tb.model.translation.Memory` and applies its accessed/dirty writes:

* a read (``write=0``) samples the 64-bit word at ``addr`` when the request is accepted and is
  answered later, after a random latency (``latency=(lo, hi)`` cycles, default 0..100), in any
  order: each cycle one of the due reads is picked at random;
* a write (``write=1``) is an atomic OR of ``data`` into the word, applied at acceptance; writes
  get no response;
* ``mem_req.ready`` is random (probability `req_ready`), and the model leaves random gaps before
  offering a response (probability `resp_valid` per cycle); once offered, a response is held
  until taken (stream rule: valid does not drop before ready);
* a handshake at an edge where ``rst`` is high does not count, and while ``rst`` is high every
  outstanding read is dropped and the counters restart (`reset` does the same by hand);
* checks of the port protocol: a request offered while ready is low stays offered, unchanged;
  at most `max_outstanding` reads outstanding (the unit's number of walk contexts), no two
  outstanding reads with the same tag, 8-byte-aligned addresses, writes that set only
  accessed/dirty flags (`write_bits`). A failure is recorded in `errors`, reported to
  `on_error` and raised from the model's task.

Timing: every cycle the model drives its outputs just after the rising edge and samples the
handshakes in the ReadOnly phase before the next edge, so combinational ready/valid paths of the
DUT are seen exactly as the edge sees them.

Counters (`reads`, `writes`, since the last reset) let tests check the unit's own counters.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from rtl.arch import EPT_A, EPT_D, PTE_A, PTE_D
from rtl.translation.layouts import mem_request_layout, mem_response_layout
from tb.model.translation import Memory
from tb.structs import pack, unpack

__all__ = ["MemoryModel", "MemoryProtocolError"]

#: Bits an accessed/dirty write may set.
AD_BITS = PTE_A | PTE_D | EPT_A | EPT_D


class MemoryProtocolError(AssertionError):
    """The DUT broke a rule of the memory port."""


class MemoryModel:
    """Memory behind `dut.<prefix>_req` / `dut.<prefix>_resp` (flattened stream ports).

    `tag_width`, `maxphyaddr`: the unit's memory-tag width and MAXPHYADDR (for the layouts).
    `memory`: the backing store (a new empty `Memory` by default); it may be replaced
    (`memory` attribute) while no read is outstanding.
    """

    def __init__(self, dut, clk, *, tag_width: int, maxphyaddr: int,
                 memory: Memory | None = None, prefix: str = "mem",
                 latency: tuple[int, int] = (0, 100), req_ready: float = 0.7,
                 resp_valid: float = 0.7, max_outstanding: int = 8, rst=None,
                 rng: random.Random | None = None, write_bits: int = AD_BITS, log=None,
                 on_error=None):
        self.dut = dut
        self.clk = clk
        self.rst = rst
        self.memory = memory if memory is not None else Memory()
        self.req_valid = getattr(dut, f"{prefix}_req__valid")
        self.req_ready = getattr(dut, f"{prefix}_req__ready")
        self.req_payload = getattr(dut, f"{prefix}_req__payload")
        self.resp_valid = getattr(dut, f"{prefix}_resp__valid")
        self.resp_ready = getattr(dut, f"{prefix}_resp__ready")
        self.resp_payload = getattr(dut, f"{prefix}_resp__payload")
        self.req_layout = mem_request_layout(tag_width, maxphyaddr)
        self.resp_layout = mem_response_layout(tag_width)
        for handle, layout in ((self.req_payload, self.req_layout),
                               (self.resp_payload, self.resp_layout)):
            if len(handle) != layout.size:
                raise ValueError(f"{handle._name}: {len(handle)} bits, layout has {layout.size}")
        self.latency = latency
        self.p_req_ready = req_ready
        self.p_resp_valid = resp_valid
        self.max_outstanding = max_outstanding
        self.write_bits = write_bits
        self.rng = rng if rng is not None else random.Random()
        self.log = log if log is not None else getattr(dut, "_log", None)

        self.cycle = 0
        self.pending: list[list] = []     # [due cycle, tag, data] of accepted reads
        self.tags: set[int] = set()       # tags of the outstanding reads
        self.offered: list | None = None  # the pending entry driven on mem_resp
        self.reads = 0
        self.writes = 0
        self.max_seen = 0                 # most reads outstanding at once
        self.errors: list[str] = []
        self.on_error = on_error          # called with the message before the task raises
        self._resp_valid_driven = 0
        self._req_ready_driven = 0
        self._task = None

    # -- configuration

    def set_backpressure(self, *, latency=None, req_ready=None, resp_valid=None) -> None:
        """Change the random timing: latency range, ready and valid probabilities."""
        if latency is not None:
            self.latency = latency
        if req_ready is not None:
            self.p_req_ready = req_ready
        if resp_valid is not None:
            self.p_resp_valid = resp_valid

    @property
    def outstanding(self) -> int:
        return len(self.pending)

    def start(self):
        """Start the model's task (drives the ports from the next rising edge)."""
        self.req_ready.value = 0
        self.resp_valid.value = 0
        self.resp_payload.value = 0
        self._task = cocotb.start_soon(self._run())
        return self._task

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def reset(self) -> None:
        """Forget every outstanding read (the DUT was reset); counters restart at 0."""
        self.pending.clear()
        self.tags.clear()
        self.offered = None
        self.reads = 0
        self.writes = 0

    # -- the port

    def _fail(self, msg: str) -> None:
        msg = f"memory port, cycle {self.cycle}: {msg}"
        self.errors.append(msg)
        if self.log is not None:
            self.log.error(msg)
        if self.on_error is not None:
            self.on_error(msg)
        raise MemoryProtocolError(msg)

    def _accept(self, word: int) -> None:
        req = unpack(self.req_layout, word)
        addr = req["addr"]
        if addr & 7:
            self._fail(f"address {addr:#x} is not 8-byte aligned ({req})")
        if req["write"]:
            bits = req["data"]
            if bits & ~self.write_bits:
                self._fail(f"write to {addr:#x} sets bits {bits:#x} outside {self.write_bits:#x}")
            self.memory.set_bits(addr, bits)
            self.writes += 1
            return
        tag = req["tag"]
        if tag in self.tags:
            self._fail(f"read of {addr:#x} with tag {tag}, which has a read outstanding")
        if len(self.pending) >= self.max_outstanding:
            self._fail(f"read of {addr:#x} (tag {tag}) exceeds {self.max_outstanding} "
                       "outstanding reads")
        lo, hi = self.latency
        due = self.cycle + (lo if lo == hi else self.rng.randint(lo, hi))
        self.pending.append([due, tag, self.memory.read(addr)])
        self.tags.add(tag)
        self.reads += 1
        if len(self.pending) > self.max_seen:
            self.max_seen = len(self.pending)

    async def _run(self) -> None:
        rng = self.rng
        edge = RisingEdge(self.clk)
        readonly = ReadOnly()
        rst = self.rst
        held = None                       # a request offered but not accepted: must stay
        while True:
            await edge
            self.cycle += 1
            # Drive for the coming edge.
            ready = 1 if rng.random() < self.p_req_ready else 0
            if ready != self._req_ready_driven:
                self.req_ready.value = ready
                self._req_ready_driven = ready
            if self.offered is None and self.pending and rng.random() < self.p_resp_valid:
                cycle = self.cycle
                due = [p for p in self.pending if p[0] <= cycle]
                if due:
                    self.offered = p = due[rng.randrange(len(due))] if len(due) > 1 else due[0]
                    self.resp_payload.value = pack(self.resp_layout, tag=p[1], data=p[2])
            valid = 1 if self.offered is not None else 0
            if valid != self._resp_valid_driven:
                self.resp_valid.value = valid
                self._resp_valid_driven = valid
            # Sample what the edge will see.
            await readonly
            if rst is not None and rst.value == 1:
                self.reset()
                held = None
                continue
            if held is not None and (self.req_valid.value != 1
                                     or int(self.req_payload.value) != held):
                self._fail("mem_req.valid dropped or mem_req.payload changed before ready "
                           f"(offered {unpack(self.req_layout, held)})")
            held = None
            if valid and self.resp_ready.value == 1:
                p = self.offered
                self.pending.remove(p)
                self.tags.discard(p[1])
                self.offered = None
            if self.req_valid.value == 1:
                if ready:
                    self._accept(int(self.req_payload.value))
                else:
                    held = int(self.req_payload.value)
