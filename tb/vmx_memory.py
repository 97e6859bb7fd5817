"""A cocotb model of the memory behind the VMX unit's `mem_req` / `mem_resp` ports.

Backed by a `tb.model.translation.Memory` (the same class the `VmxModel` uses):

* a read samples the qword at ``addr`` when the request is accepted and is answered in request
  order after a random latency (``latency=(lo, hi)`` cycles); once offered, a response is held
  until taken;
* a write stores ``data`` at acceptance (no response);
* ``mem_req.ready`` is random (probability `req_ready`), responses are offered with probability
  `resp_valid` per cycle once due;
* protocol checks: a request offered while ready is low stays offered, unchanged; addresses are
  8-byte aligned. Violations are collected in `errors`.

Timing: outputs are driven just after a rising edge, handshakes sampled in ReadOnly.
"""

from __future__ import annotations

import random
from collections import deque

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from rtl.vmx.ports import MEM_REQ_LAYOUT, MEM_RESP_LAYOUT
from tb.model.translation import Memory
from tb.structs import pack, unpack

__all__ = ["VmxMemoryModel"]


class VmxMemoryModel:
    def __init__(self, dut, memory: Memory, *, rng: random.Random, latency=(0, 8),
                 req_ready=0.8, resp_valid=0.8):
        self.dut = dut
        self.memory = memory
        self.rng = rng
        self.latency = latency
        self.req_ready = req_ready
        self.resp_valid = resp_valid
        self.pending: deque = deque()      # (due cycle, data)
        self.errors: list[str] = []
        self.reads = 0
        self.writes = 0
        self.cycle = 0
        self._offered = None            # request offered while ready low (must stay)
        self._resp_offered = False

    def start(self):
        self.dut.mem_req__ready.value = 0
        self.dut.mem_resp__valid.value = 0
        self.dut.mem_resp__payload.value = 0
        return cocotb.start_soon(self._run())

    async def _run(self):
        dut = self.dut
        while True:
            await RisingEdge(dut.clk)
            self.cycle += 1
            dut.mem_req__ready.value = int(self.rng.random() < self.req_ready)
            if not self._resp_offered:
                if self.pending and self.pending[0][0] <= self.cycle \
                        and self.rng.random() < self.resp_valid:
                    dut.mem_resp__payload.value = pack(MEM_RESP_LAYOUT, data=self.pending[0][1])
                    dut.mem_resp__valid.value = 1
                    self._resp_offered = True
                else:
                    dut.mem_resp__valid.value = 0
            await ReadOnly()
            if int(dut.rst.value):
                self.pending.clear()
                self._offered = None
                self._resp_offered = False
                continue
            self._sample()

    def _sample(self):
        dut = self.dut
        valid = int(dut.mem_req__valid.value)
        ready = int(dut.mem_req__ready.value)
        if valid:
            word = int(dut.mem_req__payload.value)
            if self._offered is not None and self._offered != word:
                self.errors.append(f"mem_req changed while not accepted: "
                                   f"{self._offered:#x} -> {word:#x}")
            if ready:
                self._offered = None
                req = unpack(MEM_REQ_LAYOUT, word)
                if req["addr"] & 7:
                    self.errors.append(f"unaligned address {req['addr']:#x}")
                elif req["write"]:
                    self.writes += 1
                    self.memory.write(req["addr"], req["data"])
                else:
                    self.reads += 1
                    lo, hi = self.latency
                    due = max(self.cycle + self.rng.randint(lo, hi),
                              self.pending[-1][0] if self.pending else 0)
                    self.pending.append((due, self.memory.read(req["addr"])))
            else:
                self._offered = word
        elif self._offered is not None:
            self.errors.append("mem_req valid dropped before ready")
            self._offered = None
        if self._resp_offered and int(dut.mem_resp__ready.value):
            self.pending.popleft()
            self._resp_offered = False
