"""cocotb tests of the translation unit (`rtl.translation.TranslationUnit()`, Verilog top
``translation_unit``) under Verilator, against the reference model `tb.model.translation`.

Counters: every test ends by checking the unit's counters against the testbench's own counts
(requests accepted, memory reads and writes seen by the memory model, the sum of the responses'
``mem_reads``, walks = responses with reads, TLB hits = ok responses without reads).

Every directed check compares the RTL's response with the model (`Result.fields()`, the
architectural fields) AND with a value written by hand for the key field (outcome, page size,
error code, qualification, addresses), so a model bug cannot hide an RTL bug; after every
request the memory the RTL wrote (accessed/dirty flags) must equal the model's.

Tests (cocotb test names):

* directed: ``page_sizes``, ``ept_accessed_dirty``, ``execute_only_ept``,
  ``violation_qualifications``, ``guest_permissions``, ``non_canonical``,
  ``guest_reserved_bits``, ``ept_misconfigurations``, ``paging_disabled``, ``walk_reads``;
* ``random_differential``: random scenarios (`tb.pagetables.random_scenario`, some with enough
  mappings to evict cache entries) with many requests in flight (24 tags, reused once
  answered), random timing per scenario, responses matched by tag to the in-order model, memory
  compared after each scenario, ``inval`` ALL and a context change between scenarios, and now
  and then an invalidation of a random kind in the middle of the traffic;
* ``memory_port_stress``: latency 0..100, out-of-order answers, back-pressure on every port and
  resets in the middle of walks;
* ``invalidation_all``, ``invalidation_vpid``, ``invalidation_eptp``,
  ``invalidation_vpid_addr``, ``invalidation_upper_levels`` (remaps of a guest PDE / EPT PDE);
* ``hit_throughput`` (one hit per cycle, hit-under-miss), ``shared_walk``.

Environment (read by the simulator process; the pytest runner passes them on):

* ``VTX_SEED`` (default 1): seed of ``random_differential`` and ``memory_port_stress``; the
  scenarios are ``random_scenario(f"{VTX_SEED}/{k}", ...)`` (``f"stress/{VTX_SEED}/{k}"``),
  k = 0, 1, ...; a failure message names the scenario and the request.
* ``VTX_REQUESTS`` (default 20000): requests of ``random_differential`` (the pytest entry
  point splits the default run into 4 items of 5000 with seeds VTX_SEED .. VTX_SEED+3).
* ``VTX_STRESS_ROUNDS`` (default 8): scenarios (one reset each) of ``memory_port_stress``.
* ``VTX_UNIT_PARAMS`` (JSON) and ``VTX_EXACT_READS=1``: set by `run_random_uncached` for the
  opt-in second build without caches (`UNCACHED_PARAMS`), where every response's ``mem_reads``
  must equal the model's uncached count.
* ``WAVES=1``: any run dumps a VCD (``build/waves/<test>/``) through `sim.flow`.

Run: ``.venv/bin/python -m pytest -n 2 tests/test_translation_rtl.py`` (the runner functions at
the bottom of this file build the model once and run the tests); a longer random run:
``VTX_SEED=7 VTX_REQUESTS=200000 .venv/bin/python -m pytest -n 2 tests/test_translation_rtl.py
-k random``.
"""

from __future__ import annotations

import collections
import json
import os
import random

import cocotb

from rtl.arch import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_SMEP,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    EPT_A,
    EPT_D,
    EPT_IPAT,
    EPT_R,
    EPT_RWX,
    EPT_W,
    EPT_X,
    EPTP_MEMTYPE_WB,
    EPTP_WALK_4LEVEL,
    PAGE_1G,
    PAGE_2M,
    PAGE_4K,
    PFEC_I,
    PFEC_P,
    PFEC_RSVD,
    PFEC_U,
    PFEC_W,
    PTE_A,
    PTE_D,
    PTE_P,
    PTE_PS,
    PTE_RW,
    PTE_US,
    PTE_XD,
    QUAL_FETCH,
    QUAL_FINAL,
    QUAL_GLA_VALID,
    QUAL_READ,
    Access,
    Invalidation,
    Outcome,
    PageSize,
    addr_mask,
)
from rtl.translation import TranslationUnit
from tb.model.translation import Memory, TranslationModel, translate
from tb.pagetables import LEAF_FLAGS, TABLE_FLAGS, PageTableBuilder, random_scenario
from tb.translation_tb import TB, TestbenchError

R, W, F = Access.READ, Access.WRITE, Access.FETCH
OK, PF, EV, EM, GP = (Outcome.OK, Outcome.PAGE_FAULT, Outcome.EPT_VIOLATION,
                      Outcome.EPT_MISCONFIG, Outcome.GENERAL_PROTECTION)
SIZE = {PAGE_4K: PageSize.SIZE_4K, PAGE_2M: PageSize.SIZE_2M, PAGE_1G: PageSize.SIZE_1G}

#: A 1 GiB-aligned guest-linear, guest-physical and host-physical base (each test maps pages
#: of any size at these), and offsets inside a page of each size.
GLA = 0x0000_7F80_4000_0000
GPA = 0x1_4000_0000
HPA = 0x23_C000_0000
OFFSET = 0x345_6ABC

DIRECTED_TIMEOUT_US = 100_000


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value, 0) if value else default


def _fmt(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and not hasattr(value, "name"):
        return hex(value)
    return str(value)


# ------------------------------------------------------------------------------------------------
# helpers of the directed tests


def compare(resp: dict, res, where: str, *, exact_reads: bool = False) -> None:
    """The RTL response against the model's result: every architectural field, and caches may
    only lower the number of paging-structure reads (with `exact_reads`, for a unit without
    caches, the reads must be the uncached walk's exactly)."""
    for key, value in res.fields().items():
        got = resp[key]
        if got != value:
            raise TestbenchError(
                f"{where}: {key} = {_fmt(got)}, model says {_fmt(value)} ({res.reason}); "
                f"response {resp}")
    if resp["mem_reads"] > res.mem_reads:
        raise TestbenchError(f"{where}: {resp['mem_reads']} paging-structure reads, more than "
                             f"the uncached walk's {res.mem_reads}")
    if exact_reads and resp["mem_reads"] != res.mem_reads:
        raise TestbenchError(f"{where}: {resp['mem_reads']} paging-structure reads without "
                             f"caches, the model's uncached walk makes {res.mem_reads}")


def memory_diff(a: Memory, b: Memory) -> str:
    wa, wb = a.words(), b.words()
    lines = [f"{addr:#x}: rtl {wa.get(addr, 0):#x} model {wb.get(addr, 0):#x}"
             for addr in sorted(set(wa) | set(wb)) if wa.get(addr, 0) != wb.get(addr, 0)]
    return "; ".join(lines[:8])


async def check(tb: TB, gla: int, access=R, cpl: int = 0, /, *, what: str = "",
                max_reads: int | None = None, **expect):
    """One request: RTL vs model (in request order) vs the hand-written `expect` fields, then
    (once the unit is idle) the RTL's memory vs the model's. Returns (response, model result)."""
    access = Access(access)
    res = tb.model.translate(gla, access, cpl)
    resp = await tb.translate(gla, access, cpl)
    where = f"{what + ': ' if what else ''}gla={gla:#x} {access.name} cpl={cpl}"
    compare(resp, res, where)
    for key, value in expect.items():
        if resp[key] != value:
            raise TestbenchError(f"{where}: {key} = {_fmt(resp[key])}, expected by hand "
                                 f"{_fmt(value)} (model: {res.reason}); response {resp}")
    if max_reads is not None and resp["mem_reads"] > max_reads:
        raise TestbenchError(f"{where}: {resp['mem_reads']} reads, expected at most {max_reads}")
    await tb.wait_idle()
    if tb.mem.memory != tb.model.memory:
        raise TestbenchError(f"{where}: memory differs from the model after the request: "
                             f"{memory_diff(tb.mem.memory, tb.model.memory)}")
    return resp, res


def write_both(tb: TB, addr: int, value: int) -> None:
    """Change a word of the page tables in the RTL's memory and in the model's."""
    tb.mem.memory.write(addr, value)
    tb.model.memory.write(addr, value)


async def check_counters(tb: TB) -> dict:
    """The unit's counters against the testbench's own counts (everything since the reset)."""
    await tb.wait_idle()
    c = tb.counters()
    expected = {"requests": tb.accepted, "mem_reads": tb.mem.reads, "mem_writes": tb.mem.writes}
    for key, value in expected.items():
        if c[key] != value:
            raise TestbenchError(f"counter {key} = {c[key]}, testbench counted {value}: {c}")
    if c["mem_reads"] != tb.mem_reads_answered:
        raise TestbenchError(f"counter mem_reads = {c['mem_reads']} but the responses' mem_reads "
                             f"add up to {tb.mem_reads_answered}")
    # Every walk makes at least one read (the guest leaf entry or the EPT leaf is never cached
    # by a paging-structure cache), and a TLB hit none.
    if c["walks"] != tb.walked_answered:
        raise TestbenchError(f"counter walks = {c['walks']} but {tb.walked_answered} responses "
                             f"had mem_reads > 0: {c}")
    if c["tlb_hits"] != tb.hits_answered:
        raise TestbenchError(f"counter tlb_hits = {c['tlb_hits']} but {tb.hits_answered} ok "
                             f"responses had no reads: {c}")
    tb.log.info("counters agree with the testbench: %s", c)
    return c


def unit_from_env() -> TranslationUnit:
    """The unit the Verilog was built from: `TranslationUnit(**VTX_UNIT_PARAMS)` (JSON, set by
    the runner for non-default configurations)."""
    return TranslationUnit(**json.loads(os.environ.get("VTX_UNIT_PARAMS") or "{}"))


def builder_for(gsize=PAGE_4K, esize=PAGE_4K, *, ept=True, flags=LEAF_FLAGS,
                table_flags=TABLE_FLAGS, perms=EPT_RWX, memtype=6, extra=0):
    """Tables mapping the guest page of `gsize` at GLA to GPA, and the EPT page of `esize` that
    covers GPA + the offset to HPA (+ the same offset). Returns (builder, gla) with gla the
    address to request (GLA + OFFSET inside the guest page)."""
    b = PageTableBuilder(ept=ept)
    b.guest_map(GLA, GPA, gsize, flags=flags, table_flags=table_flags)
    off = OFFSET & (gsize - 1)
    if ept:
        epage = (GPA + off) & ~(esize - 1)
        b.ept_map(epage, HPA + (epage - GPA), esize, perms=perms, memtype=memtype, extra=extra)
    return b, GLA + off


async def start(dut, **kw) -> TB:
    tb = TB(dut, seed=env_int("VTX_SEED", 1), **kw)
    await tb.start()
    return tb


# ------------------------------------------------------------------------------------------------
# directed tests


@cocotb.test()
async def page_sizes(dut):
    """4K/2M/1G pages in both dimensions and mixed (the smaller size wins), and EPT off."""
    tb = await start(dut)

    async def body():
        for gsize in (PAGE_4K, PAGE_2M, PAGE_1G):
            for esize in (PAGE_4K, PAGE_2M, PAGE_1G, None):
                ept = esize is not None
                b, gla = builder_for(gsize, esize or PAGE_4K, ept=ept)
                await tb.load(b.memory, b.context())
                off = gla - GLA
                size = SIZE[min(gsize, esize or PAGE_1G)]
                hpa = HPA + off if ept else GPA + off
                what = f"guest {gsize:#x} / EPT {esize or 0:#x}"
                first, _ = await check(tb, gla, R, what=what, outcome=OK, gpa=GPA + off,
                                       hpa=hpa, page_size=size, max_reads=24 if ept else 4)
                if first["mem_reads"] == 0:
                    raise TestbenchError(f"{what}: the first request made no memory reads")
                await check(tb, gla, W, what=what, outcome=OK, gpa=GPA + off, hpa=hpa,
                            page_size=size)
                # Again, now a TLB hit: no reads.
                await check(tb, gla, R, what=what, outcome=OK, hpa=hpa, page_size=size,
                            mem_reads=0)
                # Another address of the same guest page and EPT page.
                span = min(gsize, esize or gsize)
                other = GLA + (off & ~(span - 1)) + ((off + 0x3008) & (span - 1))
                await check(tb, other, F, what=what, outcome=OK,
                            hpa=(HPA if ept else GPA) + (other - GLA))
        await check_counters(tb)

    await tb.run(body(), DIRECTED_TIMEOUT_US)


@cocotb.test()
async def walk_reads(dut):
    """An uncached 4K/4K walk makes at most 24 reads; the counters add up."""
    tb = await start(dut)

    async def body():
        for ad in (False, True):
            b, gla = builder_for()
            await tb.load(b.memory, b.context(ept_ad=ad))
            resp, res = await check(tb, gla, R, outcome=OK, hpa=HPA + (gla - GLA),
                                    max_reads=24)
            assert res.mem_reads == 24, res
            tb.log.info("uncached 4K/4K walk (EPT A/D %s): %d reads (model 24)", ad,
                        resp["mem_reads"])
            if resp["mem_reads"] == 0:
                raise TestbenchError("the first walk after inval ALL made no reads")
        c = await check_counters(tb)
        tb.log.info("counters %s", c)

    await tb.run(body(), DIRECTED_TIMEOUT_US)


def _ept_table_entries(b: PageTableBuilder, gpa: int) -> list[int]:
    """HPAs of the EPT entries the translation of `gpa` uses (PML4E first, leaf last)."""
    leaf = b.ept_leaf_level(gpa)
    return [b.ept_entry_addr(gpa, level) for level in range(3, leaf - 1, -1)]


@cocotb.test()
async def ept_accessed_dirty(dut):
    """EPT A/D on and off: which flags get written (only on success)."""
    tb = await start(dut)

    async def body():
        # --- EPT A/D on, a write: every EPT entry used gets A, every EPT leaf D (paging-structure
        # accesses count as writes), the guest entries A and the guest leaf D.
        b, gla = builder_for()
        await tb.load(b.memory, b.context(ept_ad=True))
        await check(tb, gla, W, outcome=OK, hpa=HPA + (gla - GLA))
        mem = tb.mem.memory
        table_gpas = [b.guest_entry_gpa(gla, lv) for lv in (3, 2, 1, 0)]
        for gpa in table_gpas + [GPA + (gla - GLA)]:
            entries = _ept_table_entries(b, gpa)
            for addr in entries[:-1]:
                assert mem.read(addr) & (EPT_A | EPT_D) == EPT_A, f"EPT non-leaf {addr:#x}"
            assert mem.read(entries[-1]) & (EPT_A | EPT_D) == EPT_A | EPT_D, \
                f"EPT leaf {entries[-1]:#x} of GPA {gpa:#x}: {mem.read(entries[-1]):#x}"
        for lv in (3, 2, 1):
            assert mem.read(b.guest_entry_addr(gla, lv)) & (PTE_A | PTE_D) == PTE_A
        assert mem.read(b.guest_entry_addr(gla, 0)) & (PTE_A | PTE_D) == PTE_A | PTE_D

        # --- EPT A/D on, a read: the data page's EPT leaf gets A only; the guest leaf no D.
        b, gla = builder_for()
        await tb.load(b.memory, b.context(ept_ad=True))
        await check(tb, gla, R, outcome=OK)
        leaf = _ept_table_entries(b, GPA + (gla - GLA))[-1]
        assert tb.mem.memory.read(leaf) & (EPT_A | EPT_D) == EPT_A
        assert tb.mem.memory.read(b.guest_entry_addr(gla, 0)) & (PTE_A | PTE_D) == PTE_A
        for gpa in table_gpas:
            assert tb.mem.memory.read(_ept_table_entries(b, gpa)[-1]) & EPT_D

        # --- EPT A/D off: no EPT flag anywhere, guest flags as usual.
        b, gla = builder_for()
        await tb.load(b.memory, b.context(ept_ad=False))
        await check(tb, gla, W, outcome=OK)
        for gpa in table_gpas + [GPA + (gla - GLA)]:
            for addr in _ept_table_entries(b, gpa):
                assert not tb.mem.memory.read(addr) & (EPT_A | EPT_D), f"EPT entry {addr:#x}"
        assert tb.mem.memory.read(b.guest_entry_addr(gla, 0)) & (PTE_A | PTE_D) == PTE_A | PTE_D

        # --- Faulting requests write nothing (EPT A/D on): a user read of a supervisor page,
        # a write the data page's EPT forbids, a guest walk ending at a not-present PTE.
        for flags, perms, access, cpl, outcome in (
                (PTE_P | PTE_RW, EPT_RWX, R, 3, PF),
                (LEAF_FLAGS, EPT_R | EPT_X, W, 0, EV),
                (0, EPT_RWX, R, 0, PF)):
            b, gla = builder_for(flags=flags, perms=perms)
            await tb.load(b.memory, b.context(ept_ad=True))
            before = tb.mem.memory.snapshot()
            await check(tb, gla, access, cpl, outcome=outcome)
            changed = tb.mem.memory.changed_since(before)
            assert not changed, f"a faulting request wrote memory: {changed}"
        # The same page then succeeds and writes.
        b, gla = builder_for()
        await tb.load(b.memory, b.context(ept_ad=True))
        before = tb.mem.memory.snapshot()
        await check(tb, gla, R, 3, outcome=OK)
        assert tb.mem.memory.changed_since(before)
        await check_counters(tb)

    await tb.run(body(), DIRECTED_TIMEOUT_US)


@cocotb.test()
async def execute_only_ept(dut):
    """An execute-only EPT page: fetches succeed, reads and writes are EPT violations."""
    tb = await start(dut)

    async def body():
        for ad in (False, True):
            b, gla = builder_for(perms=EPT_X)
            gpa = GPA + (gla - GLA)
            await tb.load(b.memory, b.context(ept_ad=ad))
            await check(tb, gla, F, outcome=OK, hpa=HPA + (gla - GLA))
            await check(tb, gla, R, outcome=EV, gpa=gpa, qualification=0x1A1)
            await check(tb, gla, W, outcome=EV, gpa=gpa, qualification=0x1A2)
            await check(tb, gla, F, outcome=OK, mem_reads=0)     # still cached
        # Execute-only at a non-leaf EPT entry (the data GPA's PDPTE) counts the same.
        b, gla = builder_for()
        b.ept_modify(GPA, 2, clear_bits=EPT_RWX, set_bits=EPT_X)
        await tb.load(b.memory, b.context())
        await check(tb, gla, R, outcome=EV, gpa=GPA + (gla - GLA), qualification=0x1A1)
        await check(tb, gla, F, outcome=OK)
        await check_counters(tb)

    await tb.run(body(), DIRECTED_TIMEOUT_US)


@cocotb.test()
async def violation_qualifications(dut):
    """The exit-qualification values of the VMX reference's 5.5 (kvm-unit-tests)."""
    tb = await start(dut)

    async def body():
        # Data page mapped by the EPT leaf with these permissions.
        for perms, access, qual in ((0, R, 0x181), (0, W, 0x182), (0, F, 0x184),
                                    (EPT_R, W, 0x18A), (EPT_R, F, 0x18C),
                                    (EPT_R | EPT_W, F, 0x19C), (EPT_X, R, 0x1A1),
                                    (EPT_R | EPT_X, W, 0x1AA)):
            for ad in (False, True):
                b, gla = builder_for(perms=perms)
                await tb.load(b.memory, b.context(ept_ad=ad))
                await check(tb, gla, access, what=f"data EPT perms {perms:03b} A/D {ad}",
                            outcome=EV, gpa=GPA + (gla - GLA), qualification=qual)
        # Bits 5:3 are the AND over the walk: a read-only upper entry (the data GPA's EPT PDE).
        b, gla = builder_for()
        b.ept_modify(GPA + (gla - GLA), 1, clear_bits=EPT_W)
        await tb.load(b.memory, b.context())
        await check(tb, gla, W, outcome=EV, qualification=0x1AA)
        await check(tb, gla, R, outcome=OK)
        # Not present at an upper EPT level: perms 0.
        b, gla = builder_for()
        b.ept_modify(GPA + (gla - GLA), 1, clear_bits=EPT_RWX)
        await tb.load(b.memory, b.context())
        await check(tb, gla, F, outcome=EV, qualification=0x184)

        # The page holding the guest PTE is EPT not present: 0x81 (0x83 with EPT A/D) for every
        # kind of access, GPA = the PTE's GPA.
        for ad, qual in ((False, 0x81), (True, 0x83)):
            for access in (R, W, F):
                b, gla = builder_for()
                pte_gpa = b.guest_entry_gpa(gla, 0)
                b.ept_modify(pte_gpa, 0, clear_bits=EPT_RWX)
                await tb.load(b.memory, b.context(ept_ad=ad))
                await check(tb, gla, access, 3, what=f"PTE page not present, A/D {ad}",
                            outcome=EV, gpa=pte_gpa, qualification=qual)
        # The same for the PML4E (the first guest access).
        b, gla = builder_for()
        pml4e_gpa = b.guest_entry_gpa(gla, 3)
        b.ept_modify(pml4e_gpa, 0, clear_bits=EPT_RWX)
        await tb.load(b.memory, b.context())
        await check(tb, gla, W, outcome=EV, gpa=pml4e_gpa, qualification=0x81)

        # The page holding the guest PTE is EPT read-only: setting A or D is a write (0x8B).
        cases = (
            # (EPT A/D, PTE flags, access, expected outcome)
            (False, LEAF_FLAGS, R, EV), (False, LEAF_FLAGS, F, EV), (False, LEAF_FLAGS, W, EV),
            (False, LEAF_FLAGS | PTE_A, R, OK), (False, LEAF_FLAGS | PTE_A, F, OK),
            (False, LEAF_FLAGS | PTE_A, W, EV),
            (False, LEAF_FLAGS | PTE_A | PTE_D, R, OK), (False, LEAF_FLAGS | PTE_A | PTE_D, W, OK),
            (False, LEAF_FLAGS | PTE_A | PTE_D, F, OK),
            (True, LEAF_FLAGS | PTE_A | PTE_D, R, EV), (True, LEAF_FLAGS, W, EV),
        )
        for ad, flags, access, outcome in cases:
            b, gla = builder_for(flags=flags)
            pte_gpa = b.guest_entry_gpa(gla, 0)
            b.ept_modify(pte_gpa, 0, clear_bits=EPT_W | EPT_X)   # R only
            await tb.load(b.memory, b.context(ept_ad=ad))
            what = f"PTE page EPT read-only, A/D {ad}, PTE flags {flags:#x}"
            if outcome == OK:
                await check(tb, gla, access, what=what, outcome=OK, hpa=HPA + (gla - GLA))
            else:
                await check(tb, gla, access, what=what, outcome=EV, gpa=pte_gpa,
                            qualification=0x8B)
        # An upper guest entry (the PDE, A=0 as built) on an EPT read-only page: 0x8B there.
        b, gla = builder_for(flags=LEAF_FLAGS | PTE_A | PTE_D)
        pde_gpa = b.guest_entry_gpa(gla, 1)
        b.ept_modify(pde_gpa, 0, clear_bits=EPT_W | EPT_X)   # R only
        await tb.load(b.memory, b.context())
        await check(tb, gla, R, outcome=EV, gpa=pde_gpa, qualification=0x8B)
        await check_counters(tb)

    await tb.run(body(), DIRECTED_TIMEOUT_US)


@cocotb.test()
async def guest_permissions(dut):
    """U/S, R/W with CR0.WP, XD with EFER.NXE (reserved without NXE), CR4.SMEP."""
    tb = await start(dut)
    base_efer = EFER_LME | EFER_LMA
    P = PFEC_P

    async def run_cases(b, gla, cases, **ctx):
        await tb.load(b.memory, b.context(**ctx))
        for access, cpl, expect in cases:
            what = f"flags ctx {ctx}"
            if expect is None:
                await check(tb, gla, access, cpl, what=what, outcome=OK, hpa=HPA + (gla - GLA))
            else:
                await check(tb, gla, access, cpl, what=what, outcome=PF, error_code=expect)

    async def body():
        # Supervisor page: user accesses fault (U/S), supervisor ones do not. The first
        # supervisor read fills the TLB, so the later faults are found from a TLB hit.
        b, gla = builder_for(flags=PTE_P | PTE_RW)
        await run_cases(b, gla, [(R, 0, None), (R, 3, P | PFEC_U), (W, 3, P | PFEC_W | PFEC_U),
                                 (F, 3, P | PFEC_U | PFEC_I), (R, 1, None), (W, 2, None),
                                 (F, 0, None)])
        # U/S=0 in an upper entry only.
        b, gla = builder_for(table_flags=PTE_P | PTE_RW)
        await run_cases(b, gla, [(R, 3, P | PFEC_U), (R, 0, None)])
        # Read-only page: supervisor writes fault only with CR0.WP=1, user writes always.
        for wp in (True, False):
            cr0 = CR0_PG | CR0_PE | (CR0_WP if wp else 0)
            b, gla = builder_for(flags=PTE_P | PTE_US)
            await run_cases(b, gla, [(R, 0, None), (W, 0, P | PFEC_W if wp else None),
                                     (W, 3, P | PFEC_W | PFEC_U), (R, 3, None)], cr0=cr0)
            # R/W=0 in an upper entry (the PDPTE's table flags apply to every level built).
            b, gla = builder_for(table_flags=PTE_P | PTE_US)
            await run_cases(b, gla, [(W, 0, P | PFEC_W if wp else None),
                                     (W, 3, P | PFEC_W | PFEC_U)], cr0=cr0)
        # XD with NXE=1: fetches fault (I/D set), reads do not.
        b, gla = builder_for(flags=LEAF_FLAGS | PTE_XD)
        await run_cases(b, gla, [(R, 0, None), (F, 0, P | PFEC_I), (F, 3, P | PFEC_U | PFEC_I)])
        b, gla = builder_for(table_flags=TABLE_FLAGS | PTE_XD)
        await run_cases(b, gla, [(F, 0, P | PFEC_I), (W, 0, None)])
        # XD without NXE: a reserved bit (RSVD), and no I/D bit unless SMEP.
        b, gla = builder_for(flags=LEAF_FLAGS | PTE_XD)
        await run_cases(b, gla, [(R, 0, P | PFEC_RSVD), (F, 0, P | PFEC_RSVD),
                                 (W, 3, P | PFEC_RSVD | PFEC_W | PFEC_U)], efer=base_efer)
        b, gla = builder_for(flags=LEAF_FLAGS | PTE_XD)
        await run_cases(b, gla, [(F, 0, P | PFEC_RSVD | PFEC_I)], efer=base_efer,
                        cr4=CR4_PAE | CR4_SMEP)
        # Without NXE nothing is execute-disable: fetches of a plain page work.
        b, gla = builder_for()
        await run_cases(b, gla, [(F, 0, None), (F, 3, None)], efer=base_efer)
        # SMEP: supervisor fetches from user pages fault; user fetches and supervisor fetches
        # from supervisor pages do not.
        b, gla = builder_for()
        await run_cases(b, gla, [(F, 3, None), (F, 0, P | PFEC_I), (R, 0, None)],
                        cr4=CR4_PAE | CR4_SMEP)
        b, gla = builder_for()
        await run_cases(b, gla, [(F, 0, P | PFEC_I)], cr4=CR4_PAE | CR4_SMEP, efer=base_efer)
        b, gla = builder_for(flags=PTE_P | PTE_RW)
        await run_cases(b, gla, [(F, 0, None)], cr4=CR4_PAE | CR4_SMEP)
        b, gla = builder_for()
        await run_cases(b, gla, [(F, 0, None)], cr4=CR4_PAE)
        # User-only at the leaf but supervisor above: SMEP needs U/S=1 at every level.
        b, gla = builder_for(table_flags=PTE_P | PTE_RW)
        await run_cases(b, gla, [(F, 0, None)], cr4=CR4_PAE | CR4_SMEP)
        await check_counters(tb)

    await tb.run(body(), DIRECTED_TIMEOUT_US)


@cocotb.test()
async def non_canonical(dut):
    """Non-canonical GLAs give general protection at once (no reads), whatever the access."""
    tb = await start(dut)

    async def body():
        b, gla = builder_for()
        await tb.load(b.memory, b.context())
        for bad in (0x0000_8000_0000_0000, 0xFFFF_7FFF_FFFF_F000, 0x8000_0000_0000_0000,
                    0x0001_0000_0000_0000, 0x7FFF_FFFF_FFFF_FFFF, gla | 1 << 47):
            for access, cpl in ((R, 0), (W, 3), (F, 0)):
                await check(tb, bad, access, cpl, outcome=GP, gla=bad, mem_reads=0)
        # Canonical upper half, not mapped: a page fault (PML4E 256 not present).
        await check(tb, 0xFFFF_8000_0000_0000, R, outcome=PF, error_code=0)
        await check(tb, gla, R, outcome=OK)
        await check_counters(tb)

    await tb.run(body(), DIRECTED_TIMEOUT_US)


@cocotb.test()
async def guest_reserved_bits(dut):
    """Not-present and reserved-bit page faults at every guest level."""
    tb = await start(dut)
    P, RSVD = PFEC_P, PFEC_RSVD

    async def one(gsize, level, set_bits=0, clear_bits=0, cases=()):
        b, gla = builder_for(gsize)
        b.guest_modify(gla, level, set_bits=set_bits, clear_bits=clear_bits)
        await tb.load(b.memory, b.context())
        what = f"guest {gsize:#x} page, level {level} +{set_bits:#x} -{clear_bits:#x}"
        for access, cpl, expect in cases:
            if expect is None:
                await check(tb, gla, access, cpl, what=what, outcome=OK, hpa=HPA + (gla - GLA))
            else:
                await check(tb, gla, access, cpl, what=what, outcome=PF, error_code=expect)

    async def body():
        for level in (3, 2, 1, 0):
            # P=0: error code without P.
            await one(PAGE_4K, level, clear_bits=PTE_P,
                      cases=[(R, 0, 0), (W, 0, PFEC_W), (R, 3, PFEC_U), (F, 0, PFEC_I)])
            # Bits 51:MAXPHYADDR.
            for bit in (40, 45, 51):
                await one(PAGE_4K, level, set_bits=1 << bit,
                          cases=[(R, 0, P | RSVD), (W, 3, P | RSVD | PFEC_W | PFEC_U)])
            # Ignored bits: no effect.
            await one(PAGE_4K, level, set_bits=1 << 52 | 1 << 9 | 1 << 11, cases=[(R, 0, None)])
        # PS in the PML4E.
        await one(PAGE_4K, 3, set_bits=PTE_PS, cases=[(R, 0, P | RSVD), (F, 0, P | RSVD | PFEC_I)])
        # 1 GiB page: bits 29:13 reserved, bit 12 (PAT) not.
        for bit in (13, 20, 29):
            await one(PAGE_1G, 2, set_bits=1 << bit, cases=[(R, 0, P | RSVD)])
        await one(PAGE_1G, 2, set_bits=1 << 12, cases=[(R, 0, None)])
        # 2 MiB page: bits 20:13 reserved, bit 12 (PAT) not.
        for bit in (13, 20):
            await one(PAGE_2M, 1, set_bits=1 << bit, cases=[(W, 0, P | RSVD | PFEC_W)])
        await one(PAGE_2M, 1, set_bits=1 << 12, cases=[(R, 0, None)])
        # A reserved bit wins over a permission fault at a later level.
        b, gla = builder_for(flags=PTE_P)
        b.guest_modify(gla, 0, set_bits=1 << 44)
        await tb.load(b.memory, b.context())
        await check(tb, gla, W, 3, outcome=PF, error_code=P | RSVD | PFEC_W | PFEC_U)
        await check_counters(tb)

    await tb.run(body(), DIRECTED_TIMEOUT_US)


@cocotb.test()
async def ept_misconfigurations(dut):
    """Every kind of EPT misconfiguration, at the data GPA and at a guest table's GPA."""
    tb = await start(dut)

    async def one(b, gla, gpa, level, set_bits=0, clear_bits=0, expect=EM, accesses=(R, W, F),
                  ad=False):
        b.ept_modify(gpa, level, set_bits=set_bits, clear_bits=clear_bits)
        await tb.load(b.memory, b.context(ept_ad=ad))
        what = f"EPT level {level} of GPA {gpa:#x} +{set_bits:#x} -{clear_bits:#x}"
        for access in accesses:
            if expect == EM:
                await check(tb, gla, access, what=what, outcome=EM, gpa=gpa)
            else:
                await check(tb, gla, access, what=what, outcome=OK, hpa=HPA + (gla - GLA))

    async def body():
        data_gpa = GPA + (OFFSET & (PAGE_4K - 1))
        for level in (3, 2, 1, 0):
            # The data GPA's EPT PML4E is shared with the guest tables' (GPAs < 512 GiB): a bad
            # PML4E is met first by the PML4E read, at the guest PML4E's GPA.
            def target(b, gla, level=level):
                return b.guest_entry_gpa(gla, 3) if level == 3 else data_gpa
            for rwx in (EPT_W, EPT_W | EPT_X):
                b, gla = builder_for()
                await one(b, gla, target(b, gla), level, set_bits=rwx, clear_bits=EPT_RWX)
            for bit in (40, 47, 51):
                b, gla = builder_for()
                await one(b, gla, target(b, gla), level, set_bits=1 << bit, accesses=(R,))
        # PML4E bits 7:3.
        for bit in (3, 5, 7):
            b, gla = builder_for()
            await one(b, gla, b.guest_entry_gpa(gla, 3), 3, set_bits=1 << bit, accesses=(F,))
        # Non-leaf PDPTE / PDE bits 6:3.
        for level in (2, 1):
            for bit in (3, 6):
                b, gla = builder_for()
                await one(b, gla, data_gpa, level, set_bits=1 << bit, accesses=(W,))
        # Large leaves: 1 GiB bits 29:12, 2 MiB bits 20:12.
        for esize, level, bits in ((PAGE_1G, 2, (12, 20, 29)), (PAGE_2M, 1, (12, 16, 20))):
            gpa = GPA + OFFSET
            for bit in bits:
                b, gla = builder_for(PAGE_1G, esize)
                await one(b, gla, gpa, level, set_bits=1 << bit, accesses=(R,))
        # Leaf memory types 2, 3, 7 are misconfigured; 0, 1, 4, 5, 6 are fine; IPAT too.
        for memtype in (2, 3, 7):
            b, gla = builder_for(memtype=memtype)
            await one(b, gla, data_gpa, 0, accesses=(R, F))
        for memtype in (0, 1, 4, 5, 6):
            b, gla = builder_for(memtype=memtype, extra=EPT_IPAT)
            await one(b, gla, data_gpa, 0, expect=OK, accesses=(R,))
        # Ignored bits of a leaf (10, 11, 52..63 without #VE) change nothing.
        b, gla = builder_for()
        await one(b, gla, data_gpa, 0, set_bits=1 << 10 | 1 << 11 | 1 << 52 | 1 << 63,
                  expect=OK, accesses=(R, W))
        # A misconfigured EPT leaf of the page holding the guest PDE (with and without A/D):
        # the walk stops there, GPA = the PDE's GPA.
        for ad in (False, True):
            b, gla = builder_for()
            pde = b.guest_entry_gpa(gla, 1)
            await one(b, gla, pde, 0, set_bits=1 << 45, accesses=(R, W), ad=ad)
        # Misconfiguration wins over a permission violation: a W-only PDPTE for a read.
        b, gla = builder_for(perms=EPT_X)
        await one(b, gla, data_gpa, 2, set_bits=EPT_W, clear_bits=EPT_RWX, accesses=(R,))
        await check_counters(tb)

    await tb.run(body(), DIRECTED_TIMEOUT_US)


@cocotb.test()
async def paging_disabled(dut):
    """CR0.PG=0: GPA = GLA (below 2^32), through EPT or not; EPT off with guest paging."""
    tb = await start(dut)
    flat = dict(cr0=CR0_PE, cr3=0, efer=EFER_LME)

    async def body():
        gla = 0x8765_4321
        for esize in (PAGE_4K, PAGE_2M, PAGE_1G):
            for ad in (False, True):
                b = PageTableBuilder()
                base = gla & ~(esize - 1)
                b.ept_map(base, HPA, esize)
                await tb.load(b.memory, b.context(ept_ad=ad, **flat))
                hpa = HPA + (gla - base)
                await check(tb, gla, W, outcome=OK, gpa=gla, hpa=hpa, page_size=SIZE[esize])
                await check(tb, gla, F, 3, outcome=OK, gpa=gla, hpa=hpa, page_size=SIZE[esize])
                if ad:
                    leaf = _ept_table_entries(b, gla)[-1]
                    assert tb.mem.memory.read(leaf) & (EPT_A | EPT_D) == EPT_A | EPT_D
                # GLA >= 2^32: general protection (project choice, see the model).
                await check(tb, 1 << 32 | gla, R, outcome=GP, gla=1 << 32 | gla, mem_reads=0)
                # A GPA EPT does not map: violation, bits 7 and 8 set.
                await check(tb, gla ^ PAGE_1G, R, outcome=EV, gpa=gla ^ PAGE_1G,
                            qualification=QUAL_READ | QUAL_GLA_VALID | QUAL_FINAL)
                await check(tb, gla ^ PAGE_1G, F, outcome=EV,
                            qualification=QUAL_FETCH | QUAL_GLA_VALID | QUAL_FINAL)
        # Read-only EPT page: the write is a violation with bit 3 (R) of the permissions.
        b = PageTableBuilder()
        b.ept_map(gla & ~0xFFF, HPA, perms=EPT_R)
        await tb.load(b.memory, b.context(**flat))
        await check(tb, gla, W, outcome=EV, gpa=gla, qualification=0x18A)
        # Without guest paging there are no guest permissions: CR0.WP, CR4.SMEP and EFER.NXE
        # change nothing (also when the translation comes from the TLB).
        b = PageTableBuilder()
        b.ept_map(gla & ~0xFFF, HPA)
        await tb.load(b.memory, b.context(cr0=CR0_PE | CR0_WP, cr3=0, cr4=CR4_PAE | CR4_SMEP,
                                          efer=EFER_LME | EFER_NXE))
        for access, cpl in ((F, 0), (F, 0), (W, 0), (W, 3), (F, 3), (F, 0)):
            await check(tb, gla, access, cpl, outcome=OK, hpa=HPA + (gla & 0xFFF))
        # Neither guest paging nor EPT: GPA = HPA = GLA, 1 GiB, no reads.
        b = PageTableBuilder(ept=False)
        await tb.load(b.memory, b.context(**flat))
        for g in (gla, 0, 0xFFFF_FFF8):
            await check(tb, g, W, 3, outcome=OK, gpa=g, hpa=g, page_size=PageSize.SIZE_1G,
                        mem_reads=0)
        await check(tb, 1 << 40, R, outcome=GP, mem_reads=0)
        # EPT off, guest paging on: GPA = HPA, guest A/D flags written at their GPAs.
        b, gla = builder_for(PAGE_2M, ept=False)
        await tb.load(b.memory, b.context())
        await check(tb, gla, W, outcome=OK, gpa=GPA + (gla - GLA), hpa=GPA + (gla - GLA),
                    page_size=PageSize.SIZE_2M, max_reads=4)
        assert tb.mem.memory.read(b.guest_entry_addr(gla, 1)) & (PTE_A | PTE_D) == PTE_A | PTE_D
        await check(tb, gla + PAGE_2M, R, outcome=PF, error_code=0)
        await check(tb, gla, R, 3, outcome=OK, mem_reads=0)
        await check_counters(tb)

    await tb.run(body(), DIRECTED_TIMEOUT_US)


# ------------------------------------------------------------------------------------------------
# random differential test


def _scoreboard(tb: TB, stats: collections.Counter):
    exact = bool(env_int("VTX_EXACT_READS", 0))

    def check_response(p):
        label, res = p.user
        resp = p.response
        try:
            compare(resp, res, f"{label} {p}", exact_reads=exact)
        except TestbenchError as e:
            tb.fail(str(e))
        stats[res.outcome.name] += 1
        if resp["mem_reads"] == 0:
            stats["no_reads"] += 1
        stats["answered"] += 1
    return check_response


async def run_scenario(tb: TB, sc, label: str, stats, *, settle: bool = True, during=None):
    """Load `sc`, issue all its requests at once, check every response (scoreboard) and the
    memory afterwards. `during`: a coroutine function run alongside the traffic."""
    model = await tb.load(sc.memory, sc.context)
    model.requests.extend(sc.requests)
    results = model.run()
    callback = _scoreboard(tb, stats)
    pendings = [tb.submit(req.gla, req.access, req.cpl, callback=callback,
                          user=(f"{label} request {i}", res))
                for i, (req, res) in enumerate(zip(sc.requests, results))]
    task = cocotb.start_soon(during()) if during is not None else None
    if settle:
        await tb.wait_idle()
        if task is not None:
            await task
            await tb.wait_idle()
        got = tb.mem.memory.changed_since(sc.memory.snapshot())
        want = model.memory_after()
        if got != want:
            raise TestbenchError(
                f"{label}: memory after the scenario differs from the model's: "
                f"{memory_diff(tb.mem.memory, model.memory)} (corruptions {sc.corruptions})")
    return model, pendings


async def _invalidate_later(tb: TB, ctx, rng: random.Random, stats) -> None:
    await tb.cycles(rng.randrange(1, 200))
    kind = rng.choice(list(Invalidation))
    gla = rng.choice([r.gla for r in tb.model.requests] or [0])
    vpid = ctx.vpid if rng.random() < 0.7 else ctx.vpid ^ 1
    await tb.invalidate(kind, vpid=vpid, eptp=ctx.eptp, gla=gla)
    stats[f"inval_{kind.name}"] += 1


@cocotb.test()
async def random_differential(dut):
    """Random scenarios, many requests in flight, against the in-order model."""
    seed = env_int("VTX_SEED", 1)
    total = env_int("VTX_REQUESTS", 20_000)
    per = env_int("VTX_SCENARIO_REQUESTS", 64)
    tb = TB(dut, unit_from_env(), seed=seed, tags=24)
    await tb.start()
    stats = collections.Counter()
    rng = random.Random(f"timing/{seed}")

    async def body():
        done = k = 0
        while done < total:
            n = min(per, total - done)
            # Timing of this scenario: memory latency range and ready/valid probabilities.
            tb.set_backpressure(latency=rng.choice([(0, 0), (0, 4), (0, 20), (5, 40)]),
                                mem_req_ready=rng.choice([1.0, 0.8, 0.5]),
                                mem_resp_valid=rng.choice([1.0, 0.8, 0.5]),
                                req_valid=rng.choice([1.0, 0.8, 0.3]),
                                resp_ready=rng.choice([1.0, 0.8, 0.3]))
            # Mostly small scenarios (2..8 mappings), some big enough to evict TLB and
            # paging-structure-cache entries.
            n_mappings = rng.choice([None, None, None, 16, 40])
            sc = random_scenario(f"{seed}/{k}", n_requests=n, n_mappings=n_mappings)
            during = None
            if rng.random() < 0.3:
                # An invalidation in the middle of the traffic: the tables do not change, so
                # it may only cost walks, never change a result.
                def during(ctx=sc.context):
                    return _invalidate_later(tb, ctx, rng, stats)
            label = f"scenario random_scenario('{seed}/{k}', n_mappings={n_mappings})"
            await run_scenario(tb, sc, label, stats, during=during)
            done += n
            k += 1
        c = await check_counters(tb)
        tb.log.info("random_differential seed %d: %d requests in %d scenarios, %d cycles; "
                    "outcomes %s; most reads outstanding %d; counters %s", seed,
                    stats["answered"], k, tb.cycle, dict(stats), tb.mem.max_seen, c)
        if stats["answered"] != total:
            raise TestbenchError(f"{stats['answered']} responses for {total} requests")

    await tb.run(body(), timeout_us=max(1, total) * 60)


# ------------------------------------------------------------------------------------------------
# memory-port stress with resets in the middle of walks


@cocotb.test()
async def memory_port_stress(dut):
    """Latency 0..100, out-of-order answers, back-pressure everywhere, resets mid-walk."""
    seed = env_int("VTX_SEED", 1)
    rounds = env_int("VTX_STRESS_ROUNDS", 8)
    tb = TB(dut, seed=seed, latency=(0, 100), mem_req_ready=0.5, mem_resp_valid=0.5,
            req_valid=0.5, resp_ready=0.5)
    await tb.start()
    rng = random.Random(f"stress/{seed}")
    stats = collections.Counter()

    async def body():
        resets_mid_walk = 0
        for k in range(rounds):
            sc = random_scenario(f"stress/{seed}/{k}", n_requests=48, ept=True, paging=True,
                                 n_mappings=rng.randrange(4, 9))
            label = f"stress scenario random_scenario('stress/{seed}/{k}')"
            model, pendings = await run_scenario(tb, sc, label, stats, settle=False)
            # Reset at a random moment while walks are in flight.
            for _ in range(rng.randrange(1, 400)):
                await tb.cycles(1)
                if not tb.busy:
                    break
            mid_walk = tb.mem.outstanding > 0
            dropped = await tb.reset(rng.randrange(1, 6))
            if mid_walk and dropped:
                resets_mid_walk += 1
            stats["dropped"] += len(dropped)
            await tb.wait_idle()
            # Every request not dropped was answered (exactly once: the monitor fails on a
            # second response); none that was dropped was.
            for p in pendings:
                if p.dropped:
                    assert p.response is None, f"{label}: dropped {p} was answered"
                elif p.response is None:
                    raise TestbenchError(f"{label}: {p} never answered")
            # Memory: at least the flags of the answered requests, at most those of all.
            answered = TranslationModel(sc.memory.copy(), sc.context,
                                        [p.request for p in pendings if p.response is not None])
            answered.run()
            low, high = answered.memory.words(), model.memory.words()
            for addr, value in tb.mem.memory.words().items():
                if value & ~high.get(addr, 0) or low.get(addr, 0) & ~value:
                    raise TestbenchError(
                        f"{label}: word {addr:#x} = {value:#x} outside the flags of the answered "
                        f"({low.get(addr, 0):#x}) and all ({high.get(addr, 0):#x}) requests")
            for addr, value in low.items():
                if value & ~tb.mem.memory.read(addr):
                    raise TestbenchError(f"{label}: word {addr:#x} lacks flags {value:#x}")
        c = await check_counters(tb)
        tb.log.info("memory_port_stress: %d rounds, %d resets mid-walk, %s, max %d reads "
                    "outstanding, counters since the last reset %s", rounds, resets_mid_walk,
                    dict(stats), tb.mem.max_seen, c)
        if resets_mid_walk < min(rounds, 5):
            raise TestbenchError(f"only {resets_mid_walk} of {rounds} resets hit walks in flight")

    await tb.run(body(), timeout_us=rounds * 20_000)


# ------------------------------------------------------------------------------------------------
# invalidation

#: Two guest pages A and B (4K, same page table) and spare GPAs / HPAs to remap them to.
INV_A = 0x0000_0000_4000_0000
INV_B = INV_A + 0x5000
INV_GPA = {INV_A: 0x1_0000_0000, INV_B: 0x1_0000_5000}
INV_HPA = {INV_A: 0x40_0000_0000, INV_B: 0x40_0000_5000}
NEW_GPA = {INV_A: 0x1_0000_8000, INV_B: 0x1_0000_9000}
NEW_HPA = {INV_A: 0x41_0000_8000, INV_B: 0x41_0000_9000}
EPT_NEW_HPA = 0x42_0000_0000


def _inval_setup():
    b = PageTableBuilder()
    for page in (INV_A, INV_B):
        b.map_page(page, INV_GPA[page], INV_HPA[page], flags=LEAF_FLAGS | PTE_A | PTE_D)
        b.ept_map(NEW_GPA[page], NEW_HPA[page])
    # A second EPT root sharing the lower EPT tables: another EPTP, same translations.
    root = b.hpa_frames.alloc()
    first = b.eptp() & addr_mask(40)
    for i in range(512):
        value = b.memory.read(first + 8 * i)
        if value:
            b.memory.write(root + 8 * i, value)
    eptp2 = root | EPTP_WALK_4LEVEL | EPTP_MEMTYPE_WB
    return b, eptp2


async def _expect_hit(tb, gla, hpa, what):
    resp = await tb.translate(gla, R)
    if resp["outcome"] != OK or resp["hpa"] != hpa + (gla & 0xFFF) or resp["mem_reads"] != 0:
        raise TestbenchError(f"{what}: expected a TLB hit (mem_reads 0) giving hpa "
                             f"{hpa + (gla & 0xFFF):#x}, got {resp}")


async def _expect_walk(tb, gla, hpa, what):
    resp, _ = await check(tb, gla, R, what=what, outcome=OK, hpa=hpa + (gla & 0xFFF))
    if resp["mem_reads"] == 0:
        raise TestbenchError(f"{what}: expected a new walk (mem_reads > 0), got {resp}")


def _remap_guest(tb, b, page):
    """Point the guest PTE of `page` at its new GPA (in both memories; nothing invalidated)."""
    addr = b.guest_entry_addr(page, 0)
    old = tb.mem.memory.read(addr)
    write_both(tb, addr, (old & ~addr_mask(40)) | NEW_GPA[page])


async def _invalidation(dut, kind: Invalidation):
    tb = await start(dut)
    b, eptp2 = _inval_setup()
    ctx1 = b.context(vpid=1)
    ctx2 = b.context(vpid=2)
    ctx3 = b.context(vpid=1, eptp=eptp2)
    a, bb = INV_A + 0x123, INV_B + 0x456

    async def warm(ctx):
        await tb.set_context(ctx, invalidate=False)
        for g in (a, bb):
            await check(tb, g, R, outcome=OK, hpa=INV_HPA[g & ~0xFFF] + (g & 0xFFF))
            await _expect_hit(tb, g, INV_HPA[g & ~0xFFF], f"warm vpid {ctx.vpid}")

    async def body():
        await tb.load(b.memory, ctx1)
        for ctx in (ctx1, ctx2, ctx3):
            await warm(ctx)
        await tb.set_context(ctx1, invalidate=False)
        if kind == Invalidation.EPTP:
            # Remap A's data GPA in the (shared) EPT leaf: both EPTPs' cached copies are stale.
            leaf = b.ept_entry_addr(INV_GPA[INV_A], 0)
            old = tb.mem.memory.read(leaf)
            write_both(tb, leaf, (old & ~addr_mask(40)) | EPT_NEW_HPA)
            new_a = EPT_NEW_HPA
        else:
            _remap_guest(tb, b, INV_A)
            new_a = NEW_HPA[INV_A]
        # Not invalidated yet: the old translation is still cached.
        await _expect_hit(tb, a, INV_HPA[INV_A], "stale before invalidation")
        if kind == Invalidation.ALL:
            await tb.invalidate(kind)
            for ctx in (ctx1, ctx2, ctx3):
                await tb.set_context(ctx, invalidate=False)
                await _expect_walk(tb, a, new_a, f"after ALL, vpid {ctx.vpid}")
        elif kind == Invalidation.VPID:
            await tb.invalidate(kind, vpid=1)
            await _expect_walk(tb, a, new_a, "after VPID 1")
            await _expect_walk(tb, bb, INV_HPA[INV_B], "after VPID 1 (B unchanged, dropped)")
            await tb.set_context(ctx2, invalidate=False)
            await _expect_hit(tb, a, INV_HPA[INV_A], "VPID 2 not invalidated")
            await _expect_hit(tb, bb, INV_HPA[INV_B], "VPID 2 not invalidated")
            await tb.invalidate(kind, vpid=2)
            await _expect_walk(tb, a, new_a, "after VPID 2")
        elif kind == Invalidation.VPID_ADDR:
            await tb.invalidate(kind, vpid=1, gla=a)
            await _expect_walk(tb, a, new_a, "after VPID_ADDR (1, A)")
            await _expect_hit(tb, bb, INV_HPA[INV_B], "other address still cached")
            await tb.set_context(ctx2, invalidate=False)
            await _expect_hit(tb, a, INV_HPA[INV_A], "VPID 2 not invalidated")
            await tb.invalidate(kind, vpid=2, gla=INV_A + 0xFF8)    # any address in the page
            await _expect_walk(tb, a, new_a, "after VPID_ADDR (2, A)")
            await _expect_hit(tb, bb, INV_HPA[INV_B], "VPID 2, other address")
            # An invalidation of another address of VPID 1 leaves A of VPID 1 alone.
            await tb.set_context(ctx1, invalidate=False)
            _remap_guest(tb, b, INV_B)
            await tb.invalidate(kind, vpid=1, gla=a)
            await _expect_hit(tb, bb, INV_HPA[INV_B], "B not invalidated")
            await tb.invalidate(kind, vpid=1, gla=bb)
            await _expect_walk(tb, bb, NEW_HPA[INV_B], "after VPID_ADDR (1, B)")
        elif kind == Invalidation.EPTP:
            await tb.set_context(ctx3, invalidate=False)
            await _expect_hit(tb, a, INV_HPA[INV_A], "EPTP 2 stale before invalidation")
            await tb.invalidate(kind, eptp=eptp2)
            await _expect_walk(tb, a, new_a, "after EPTP 2")
            await tb.set_context(ctx1, invalidate=False)
            await _expect_hit(tb, a, INV_HPA[INV_A], "EPTP 1 not invalidated (VPID 1)")
            await tb.set_context(ctx2, invalidate=False)
            await _expect_hit(tb, a, INV_HPA[INV_A], "EPTP 1 not invalidated (VPID 2)")
            await tb.invalidate(kind, eptp=b.eptp())
            await _expect_walk(tb, a, new_a, "after EPTP 1 (VPID 2)")
            await tb.set_context(ctx1, invalidate=False)
            await _expect_walk(tb, a, new_a, "after EPTP 1 (VPID 1)")
        await check_counters(tb)

    await tb.run(body(), DIRECTED_TIMEOUT_US)


@cocotb.test()
async def invalidation_all(dut):
    """inval ALL drops every cached translation."""
    await _invalidation(dut, Invalidation.ALL)


@cocotb.test()
async def invalidation_vpid(dut):
    """inval VPID drops that VPID's translations only."""
    await _invalidation(dut, Invalidation.VPID)


@cocotb.test()
async def invalidation_eptp(dut):
    """inval EPTP drops that EPTP's translations only."""
    await _invalidation(dut, Invalidation.EPTP)


@cocotb.test()
async def invalidation_vpid_addr(dut):
    """inval VPID_ADDR drops one address of one VPID only."""
    await _invalidation(dut, Invalidation.VPID_ADDR)


@cocotb.test()
async def invalidation_upper_levels(dut):
    """A remap at an upper level (a guest PDE, an EPT PDE) is seen after the invalidation: the
    paging-structure caches are invalidated too, not only the TLB. Before it, a walk of another
    page under that PDE still goes through the cached (stale) PDE."""
    tb = await start(dut)
    a = INV_A + 0x123
    c = INV_A + 0xA000             # mapped like A and B, under the same PDE, never in the TLB
    c_gpa, c_hpa = 0x1_0000_A000, 0x40_0000_A000

    def setup():
        b, _ = _inval_setup()
        b.map_page(c, c_gpa, c_hpa, flags=LEAF_FLAGS | PTE_A | PTE_D)
        return b

    async def warm():
        # A's walk sets the accessed flags of the upper entries; B's walk (same PDE) then finds
        # them set, so it fills the guest paging-structure caches (which hold only entries whose
        # flags are set); A stays in the TLB.
        await check(tb, a, R, outcome=OK, hpa=INV_HPA[INV_A] + 0x123)
        await check(tb, INV_B, R, outcome=OK, hpa=INV_HPA[INV_B])
        await _expect_hit(tb, a, INV_HPA[INV_A], "warm")

    async def stale_walk(what):
        resp = await tb.translate(c, R)
        if resp["outcome"] != OK or resp["hpa"] != c_hpa or resp["mem_reads"] == 0:
            raise TestbenchError(f"{what}: expected a walk through the cached PDE to the old "
                                 f"page table (hpa {c_hpa:#x}), got {resp}")

    async def body():
        # Guest PDE -> a new page table whose PTE maps A to NEW_GPA and has no C (kinds that
        # drop linear mappings: ALL, VPID, VPID_ADDR).
        for kind in (Invalidation.ALL, Invalidation.VPID, Invalidation.VPID_ADDR):
            b = setup()
            table_gpa = b.gpa_frames.alloc()
            table_hpa = b.hpa_frames.alloc()
            b.ept_map(table_gpa, table_hpa)
            b.write(table_hpa + 8 * ((INV_A >> 12) & 0x1FF), NEW_GPA[INV_A] | LEAF_FLAGS)
            ctx = b.context(vpid=7)
            await tb.load(b.memory, ctx)
            await warm()
            pde = b.guest_entry_addr(INV_A, 1)
            old = tb.mem.memory.read(pde)
            write_both(tb, pde, (old & ~addr_mask(40)) | table_gpa)
            await _expect_hit(tb, a, INV_HPA[INV_A], f"{kind.name}: stale before invalidation")
            await stale_walk(f"{kind.name}: guest PDE remapped, not invalidated")
            await tb.invalidate(kind, vpid=7, gla=c if kind == Invalidation.VPID_ADDR else a)
            if kind != Invalidation.VPID_ADDR:
                await _expect_walk(tb, a, NEW_HPA[INV_A], f"guest PDE remap, after {kind.name}")
            await check(tb, c, R, what=f"guest PDE remap, after {kind.name}", outcome=PF,
                        error_code=0)
        # EPT PDE of the data GPAs -> a new EPT page table mapping A's GPA to EPT_NEW_HPA and
        # not C's (kinds that drop guest-physical mappings: ALL, EPTP).
        for kind in (Invalidation.ALL, Invalidation.EPTP):
            b = setup()
            ept_table = b.hpa_frames.alloc()
            gpa = INV_GPA[INV_A]
            b.write(ept_table + 8 * ((gpa >> 12) & 0x1FF), EPT_NEW_HPA | EPT_RWX | 6 << 3)
            ctx = b.context(vpid=7)
            await tb.load(b.memory, ctx)
            await warm()
            epde = b.ept_entry_addr(gpa, 1)
            old = tb.mem.memory.read(epde)
            write_both(tb, epde, (old & ~addr_mask(40)) | ept_table)
            await _expect_hit(tb, a, INV_HPA[INV_A], f"{kind.name}: stale before invalidation")
            await stale_walk(f"{kind.name}: EPT PDE remapped, not invalidated")
            await tb.invalidate(kind, eptp=ctx.eptp)
            await _expect_walk(tb, a, EPT_NEW_HPA, f"EPT PDE remap, after {kind.name}")
            await check(tb, c, R, what=f"EPT PDE remap, after {kind.name}", outcome=EV,
                        gpa=c_gpa, qualification=0x181)
        await check_counters(tb)

    await tb.run(body(), DIRECTED_TIMEOUT_US)


# ------------------------------------------------------------------------------------------------
# throughput, hit-under-miss, shared walks

HIT_PAGES = [0x0000_0000_4000_0000 + i * 0x1000 for i in range(8)]


def _hit_setup():
    b = PageTableBuilder()
    for i, page in enumerate(HIT_PAGES):
        b.map_page(page, 0x1_0000_0000 + i * 0x1000, 0x40_0000_0000 + i * 0x1000)
    b.map_page(0x0000_0000_8000_0000, 0x2_0000_0000, 0x50_0000_0000)   # the miss
    return b


@cocotb.test()
async def hit_throughput(dut):
    """Back-to-back hits: one accepted and one answered per cycle; hits pass a miss."""
    tb = await start(dut)

    async def body():
        b = _hit_setup()
        await tb.load(b.memory, b.context())
        for page in HIT_PAGES:      # a write sets D too, so that writes hit as well
            await check(tb, page + 8, W, outcome=OK)
        tb.set_backpressure(req_valid=1.0, resp_ready=1.0)
        hits = [tb.submit(HIT_PAGES[i % 8] + 0x10 * i, (R, W, F)[i % 3], 0) for i in range(64)]
        await tb.drain()
        accepted = [p.accepted for p in hits]
        answered = [p.answered for p in hits]
        if accepted != list(range(accepted[0], accepted[0] + 64)):
            raise TestbenchError(f"hits not accepted every cycle (req.ready dropped): {accepted}")
        if answered != list(range(answered[0], answered[0] + 64)):
            raise TestbenchError(f"hits not answered every cycle: {answered}")
        for p in hits:
            res = translate(tb.model.memory, tb.ctx, p.request.gla, p.request.access)
            compare(p.response, res, f"hit {p}")
            if p.response["mem_reads"] != 0:
                raise TestbenchError(f"{p} is not a hit: {p.response}")
        tb.log.info("hit latency %d cycles, 64 hits in %d cycles", hits[0].latency,
                    answered[-1] - accepted[0] + 1)

        # Hit-under-miss: a miss with slow memory, then hits: the hits come back first.
        tb.set_backpressure(latency=(40, 40))
        miss = tb.submit(0x0000_0000_8000_0000 + 0x40, R)
        under = [tb.submit(HIT_PAGES[i % 8] + 0x20 * i, R) for i in range(16)]
        await tb.drain()
        if miss.response["mem_reads"] == 0:
            raise TestbenchError(f"the miss {miss} did not walk: {miss.response}")
        for p in under:
            if p.answered >= miss.answered or p.response["mem_reads"] != 0:
                raise TestbenchError(f"hit {p} (answered cycle {p.answered}) not answered "
                                     f"before the miss (cycle {miss.answered}): {p.response}")
        if [p.answered for p in under] != list(range(under[0].answered,
                                                      under[0].answered + 16)):
            raise TestbenchError("hits under a miss not answered one per cycle: "
                                 f"{[p.answered for p in under]}")
        for p in [miss] + under:
            res = translate(tb.model.memory, tb.ctx, p.request.gla, p.request.access)
            compare(p.response, res, f"hit-under-miss {p}")
        await check_counters(tb)

    await tb.run(body(), DIRECTED_TIMEOUT_US)


@cocotb.test()
async def shared_walk(dut):
    """Two misses to the same page share one walk: one walk counted, no reads for the second."""
    tb = await start(dut, latency=(20, 20))

    async def body():
        for gsize, access in ((PAGE_4K, R), (PAGE_2M, W), (PAGE_1G, F)):
            b, gla = builder_for(gsize, gsize, flags=LEAF_FLAGS | PTE_A | PTE_D)
            await tb.load(b.memory, b.context(ept_ad=True))
            tb.set_backpressure(req_valid=1.0)
            before = await tb.read_counters()
            first = tb.submit(gla, access)
            second = tb.submit(gla ^ 0x18, access)
            await tb.wait_idle()
            after = tb.counters()
            for p in (first, second):
                res = tb.model.translate(p.request.gla, p.request.access)
                compare(p.response, res, f"shared walk {p}")
                assert p.response["outcome"] == OK
            if tb.mem.memory != tb.model.memory:
                raise TestbenchError(f"memory: {memory_diff(tb.mem.memory, tb.model.memory)}")
            walks = after["walks"] - before["walks"]
            if walks != 1:
                raise TestbenchError(f"{gsize:#x} page: two misses to one page made {walks} "
                                     f"walks (counters {before} -> {after})")
            if first.response["mem_reads"] == 0 or second.response["mem_reads"] != 0:
                raise TestbenchError(f"{gsize:#x} page: mem_reads {first.response['mem_reads']}"
                                     f" and {second.response['mem_reads']}, expected >0 and 0")
            if second.accepted != first.accepted + 1:
                raise TestbenchError("the two misses were not back to back")
            tb.set_backpressure(req_valid=0.7)
        await check_counters(tb)

    await tb.run(body(), DIRECTED_TIMEOUT_US)


# ------------------------------------------------------------------------------------------------
# pytest runners (the pytest entry point is tests/test_translation_rtl.py)

TOPLEVEL = "translation_unit"
FACTORY = TranslationUnit
PARAMS: dict = {}

DIRECTED = ["page_sizes", "walk_reads", "ept_accessed_dirty", "execute_only_ept",
            "violation_qualifications", "guest_permissions", "non_canonical",
            "guest_reserved_bits", "ept_misconfigurations", "paging_disabled"]
INVALIDATION = ["invalidation_all", "invalidation_vpid", "invalidation_eptp",
                "invalidation_vpid_addr", "invalidation_upper_levels"]
PERFORMANCE = ["hit_throughput", "shared_walk"]


#: The unit without any cache (every lookup misses): every walk is the uncached walk, so the
#: responses' mem_reads must equal the model's exactly.
UNCACHED_PARAMS = {"tlb_entries": [0, 0, 0], "gpsc_entries": [0, 0, 0],
                   "epsc_entries": [0, 0, 0], "nested_entries": 0}


def build_model(params: dict | None = None, waves: bool | None = None):
    """Generate the Verilog and build the Verilator model once (cached by sim.flow)."""
    from sim import flow

    verilog = flow.generate_verilog(FACTORY, TOPLEVEL, PARAMS if params is None else params)
    return flow.build_verilator(verilog, TOPLEVEL, waves=waves)


def run_tests(testcase, *, extra_env=None, name=None, params: dict | None = None):
    """Run cocotb test(s) of this module against the cached model; raises on failure."""
    from sim import flow

    build_dir = build_model(params)
    env = dict(extra_env or {})
    if params:
        env["VTX_UNIT_PARAMS"] = json.dumps(params)
    return flow.run_cocotb("tb.test_translation_unit", TOPLEVEL, build_dir, testcase=testcase,
                           extra_env=env, name=name)


def run_random(part: int = 0, parts: int = 1):
    """Part `part` of `parts` of the random differential test: seed VTX_SEED + part, and
    VTX_REQUESTS / parts requests."""
    seed = env_int("VTX_SEED", 1) + part
    requests = -(-env_int("VTX_REQUESTS", 20_000) // parts)
    return run_tests("random_differential",
                     extra_env={"VTX_SEED": str(seed), "VTX_REQUESTS": str(requests)})


def run_stress():
    return run_tests("memory_port_stress",
                     extra_env={"VTX_SEED": str(env_int("VTX_SEED", 1))})


def run_random_uncached(requests: int = 5000):
    """The random differential test on a second build, `UNCACHED_PARAMS`, with exact read
    counts (a second Verilator configuration: opt-in, see tests/test_translation_rtl.py)."""
    return run_tests("random_differential", params=UNCACHED_PARAMS,
                     extra_env={"VTX_SEED": str(env_int("VTX_SEED", 1)),
                                "VTX_REQUESTS": str(requests), "VTX_EXACT_READS": "1"})
