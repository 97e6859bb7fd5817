"""The benchmark top (sim/bench/top.py) keeps working: short runs in Amaranth and in Verilator.

Counter consistency only, never timing: every request answered, every translation ok and as the
synthetic tables map it, reads agreeing at the memory port / the unit / the responses, 24 reads
per uncached 4K/4K walk, and the same counters from both simulators for the same run.
"""

from __future__ import annotations

import random

import pytest

from rtl.arch import Access, Outcome, PageSize
from sim.bench import BenchConfig, RunSpec, Workload, build_model, run_amaranth, run_model
from sim.bench.top import CR3, EPTP, GLA_BITS, expected_translation, synthetic_word
from tb.model.translation import Context, Memory, translate

#: Small configurations: quick to elaborate and to Verilate.
UNCACHED = BenchConfig(contexts=2, uncached=True)
CACHED = BenchConfig(contexts=2)


class SyntheticMemory(Memory):
    """The bench's synthetic tables as a reference-model memory."""

    def read(self, addr: int) -> int:
        self._check(addr)
        return synthetic_word(addr)


def check(r: dict, spec: RunSpec, *, uncached: bool) -> None:
    assert r["done"] and not r["overflow"], r
    assert r["responses"] == spec.count == r["requests"], r
    assert r["ok"] == r["responses"] and r["bad"] == 0, r
    assert r["port_reads"] == r["mem_reads"] == r["resp_reads"], r
    assert r["port_writes"] == r["mem_writes"] == 0, r
    assert 0 < r["cycles"] <= r["sim_cycles"], r
    assert r["port_busy"] <= r["cycles"], r
    if uncached:
        assert r["mem_reads"] == 24 * r["walks"], r


def test_synthetic_tables_are_architectural():
    """The reference model walks the synthetic tables to GPA = GLA, HPA = GLA | 2^38, with the
    spec's 24 reads and no accessed/dirty write (the flags are preset)."""
    ctx = Context(cr3=CR3, eptp=EPTP)
    mem = SyntheticMemory()
    rng = random.Random(7)
    glas = [0, 0x1000, (1 << GLA_BITS) - 0x1000] + [rng.randrange(1 << GLA_BITS) & ~0xFFF
                                                   for _ in range(20)]
    for gla in glas:
        r = translate(mem, ctx, gla | 0x123, Access.READ, 0)
        assert r.outcome == Outcome.OK, (hex(gla), r.reason)
        gpa, hpa = expected_translation(gla | 0x123)
        assert (r.gpa, r.hpa) == (gpa, hpa)
        assert r.page_size == PageSize.SIZE_4K
        assert r.mem_reads == 24
        assert r.writes == []


SHORT = RunSpec(kind=Workload.RANDOM, region_shift=30, count=10, warmup=3, latency=3, seed=5)


@pytest.fixture(scope="module")
def amaranth_short():
    return run_amaranth(UNCACHED, SHORT)


def test_amaranth_uncached(amaranth_short):
    check(amaranth_short, SHORT, uncached=True)
    assert amaranth_short["walks"] >= 1


def test_amaranth_cached_hits():
    spec = RunSpec(kind=Workload.HITS, hit_shift=2, count=24, warmup=8, latency=0)
    r = run_amaranth(CACHED, spec)
    check(r, spec, uncached=False)
    assert r["tlb_hits"] == 24 and r["walks"] == 0 and r["mem_reads"] == 0
    assert r["lat_sum"] == 2 * 24          # a hit answers two cycles after its request
    assert r["cycles"] == 24 + 2           # one request per cycle, plus the pipeline


def test_verilator(amaranth_short):
    binary = build_model(UNCACHED)
    # The same run gives the same counters in both simulators.
    r = run_model(binary, SHORT)
    check(r, SHORT, uncached=True)
    keys = [k for k in amaranth_short if k not in ("wall_seconds", "cpu_seconds")]
    assert {k: r[k] for k in keys} == {k: amaranth_short[k] for k in keys}

    # One uncached 4K/4K walk: exactly 24 reads, one walk.
    one = RunSpec(kind=Workload.SEQUENTIAL, count=1, warmup=0, latency=20)
    r = run_model(binary, one)
    check(r, one, uncached=True)
    assert r["walks"] == 1 and r["port_reads"] == 24
    assert r["lat_sum"] > 24 * 21          # every read waits latency + 1 cycles at least

    # Extremes of the memory model's latency, more requests than contexts, every workload.
    for spec in (RunSpec(kind=Workload.RANDOM, region_shift=26, count=40, warmup=4, latency=0),
                 RunSpec(kind=Workload.STRIDED, stride_shift=21, count=12, latency=255),
                 RunSpec(kind=Workload.SEQUENTIAL, count=30, warmup=2, latency=7),
                 RunSpec(kind=Workload.HITS, hit_shift=3, count=200, warmup=16, latency=1)):
        r = run_model(binary, spec)
        check(r, spec, uncached=True)
        if spec.kind == Workload.HITS:
            assert r["tlb_hits"] == spec.count
