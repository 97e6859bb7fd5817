"""`rtl.core.prefetch_policy.PrefetchPolicy` in Amaranth's simulator: every FSM state with
random flags, hits and addresses (page boundaries among them) against the rules of docs/core.md,
"Prefetcher", written out in Python. Directed: hand-written cases. Verilator lint."""

from __future__ import annotations

import os
import random

import pytest

from rtl.core.core_layouts import CoreState
from rtl.core.prefetch_policy import PrefetchPolicy
from tb.comb import run_combinational, set_ports

SEED = int(os.environ.get("VTX_SEED", "1"))
VECTORS = int(os.environ.get("VTX_PREFETCH_POLICY_VECTORS", "3000"))

PAGE = 4096
INPUTS = ("state", "advanced", "no_access", "waiting", "fetch_next", "fetch_next_hit", "qword",
          "qword_hit", "flush")


def reference(v):
    """(start, addr) of vector `v`; addr is None when nothing is started (free)."""
    if v["waiting"]:
        addr = v["fetch_next"] * 8
        ok = addr % PAGE != 0 and not v["fetch_next_hit"]
    elif v["state"] == CoreState.FETCH_WAIT:
        fetching = v["qword"] & ~7
        addr = (fetching + 8) % 2**64
        ok = addr // PAGE == fetching // PAGE
    else:
        addr = v["qword"]
        quiet = (v["state"] == CoreState.DEC_WAIT
                 or (v["state"] == CoreState.RETIRE and v["advanced"])
                 or (v["state"] == CoreState.DECODE and v["no_access"]))
        ok = quiet and addr // 8 % (PAGE // 8) != 0 and not v["qword_hit"] and not v["flush"]
    return ok, addr if ok else None


def _qword_addr(rng):
    """A qword address (61 bits): often at a page's first or last qword."""
    page = rng.getrandbits(52)
    return page * 512 + rng.choice([0, 1, 511, 510, rng.randrange(512)])


def random_vector(rng):
    return {"state": rng.choice(list(CoreState)), "advanced": rng.getrandbits(1),
            "no_access": rng.getrandbits(1), "waiting": rng.random() < 0.3,
            "fetch_next": _qword_addr(rng), "fetch_next_hit": rng.random() < 0.3,
            "qword": _qword_addr(rng) * 8 + rng.choice([0, 0, 0, rng.randrange(8)]),
            "qword_hit": rng.random() < 0.3, "flush": rng.random() < 0.2}


def run_unit(vectors):
    dut = PrefetchPolicy()
    return run_combinational(dut, vectors, lambda ctx, v: set_ports(ctx, dut, v, INPUTS),
                             lambda ctx: (bool(ctx.get(dut.start)), ctx.get(dut.addr)))


def _check(v, got):
    ok, addr = reference(v)
    start, got_addr = got
    assert start == ok, f"{v}: start {start}, expected {ok}"
    if ok:
        assert got_addr == addr, f"{v}: addr {got_addr:#x}, expected {addr:#x}"


def test_prefetch_policy_random_vs_reference():
    rng = random.Random(SEED * 43)
    vectors = [random_vector(rng) for _ in range(VECTORS)]
    starts = 0
    for v, got in zip(vectors, run_unit(vectors), strict=True):
        _check(v, got)
        starts += got[0]
    assert 0 < starts < VECTORS


def _vec(state, **kw):
    v = {"state": state, "advanced": 0, "no_access": 0, "waiting": 0, "fetch_next": 0,
         "fetch_next_hit": 0, "qword": 0, "qword_hit": 0, "flush": 0}
    v.update(kw)
    return v


#: (vector, start, addr when started): written by hand.
DIRECTED = [
    # LOAD_WAIT: the qword after the buffer, 0x1238 >> 3
    (_vec(CoreState.LOAD_WAIT, waiting=1, fetch_next=0x247, qword=0x5000), True, 0x1238),
    # ... not when the lines have it, nor at a page's start
    (_vec(CoreState.LOAD_WAIT, waiting=1, fetch_next=0x247, fetch_next_hit=1), False, None),
    (_vec(CoreState.STORE_WAIT, waiting=1, fetch_next=0x2000 >> 3), False, None),
    # FETCH_WAIT of 0x4ff0: 0x4ff8; of 0x4ff8: not 0x5000 (next page)
    (_vec(CoreState.FETCH_WAIT, qword=0x4FF0, qword_hit=1, flush=1), True, 0x4FF8),
    (_vec(CoreState.FETCH_WAIT, qword=0x4FF8), False, None),
    # DEC_WAIT: the qword at the access address, unless the lines have it or are flushed
    (_vec(CoreState.DEC_WAIT, qword=0x1010), True, 0x1010),
    (_vec(CoreState.DEC_WAIT, qword=0x1010, qword_hit=1), False, None),
    (_vec(CoreState.DEC_WAIT, qword=0x1010, flush=1), False, None),
    (_vec(CoreState.DEC_WAIT, qword=0x3000), False, None),
    # RETIRE only after a fall-through; DECODE only without an access
    (_vec(CoreState.RETIRE, advanced=1, qword=0x1010), True, 0x1010),
    (_vec(CoreState.RETIRE, qword=0x1010), False, None),
    (_vec(CoreState.DECODE, no_access=1, qword=0x1010), True, 0x1010),
    (_vec(CoreState.DECODE, qword=0x1010), False, None),
    # EXEC, FETCH: never
    (_vec(CoreState.EXEC, advanced=1, no_access=1, qword=0x1010), False, None),
    (_vec(CoreState.FETCH, qword=0x1010), False, None),
]


@pytest.mark.parametrize("k", range(len(DIRECTED)))
def test_prefetch_policy_directed(k):
    v, start, addr = DIRECTED[k]
    got = run_unit([v])[0]
    assert got[0] == start, f"{v}: {got}"
    if start:
        assert got[1] == addr, f"{v}: addr {got[1]:#x}"


def test_lint_prefetch_policy():
    from sim import flow, lint

    verilog = flow.generate_verilog(PrefetchPolicy, "prefetch_policy", {})
    ok, output = lint.lint_verilog(verilog, top_module="prefetch_policy")
    assert ok, output
