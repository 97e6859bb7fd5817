"""Directed tests of the translation reference model (tb/model/translation.py), the page-table
builder (tb/pagetables.py), the scenario parser (sim/translate/scenario.py) and the examples.

Each test names the rule of docs/translation-contract.md (or the row of the VMX reference's 5.5)
it checks.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rtl.arch import (  # noqa: E402
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    CR4_SMEP,
    EFER_LMA,
    EFER_LME,
    EPT_A,
    EPT_D,
    EPT_IPAT,
    EPT_MEMTYPE_MASK,
    EPT_PS,
    EPT_R,
    EPT_RWX,
    EPT_W,
    EPT_X,
    PAGE_1G,
    PAGE_2M,
    PAGE_4K,
    PTE_A,
    PTE_D,
    PTE_P,
    PTE_PS,
    PTE_RW,
    PTE_US,
    PTE_XD,
    Access,
    Outcome,
    PageSize,
    mask,
)
from sim.translate.scenario import (  # noqa: E402
    ScenarioError,
    dump_scenario,
    format_output_lines,
    load_scenario,
    parse_scenario,
    run_reference,
    scenario_to_json,
)
from tb.model.translation import (  # noqa: E402
    Memory,
    Request,
    Result,
    TranslationModel,
    translate,
)
from tb.pagetables import PageTableBuilder, random_scenario  # noqa: E402

R, W, F = Access.READ, Access.WRITE, Access.FETCH
OK, PF, EV, EM, GP = (Outcome.OK, Outcome.PAGE_FAULT, Outcome.EPT_VIOLATION,
                      Outcome.EPT_MISCONFIG, Outcome.GENERAL_PROTECTION)

GLA = 0x0000_5A5A_4000_0000      # 1 GiB aligned, lower half
GPA = 0x00C0_0000_0000           # 1 GiB aligned, < 2^40, not in the tables' EPT PML4 slot
HPA = 0x0080_4000_0000
OFFSET = {PAGE_4K: 0x678, PAGE_2M: 0x1A_5678, PAGE_1G: 0x1234_5678}
LEVELS = {PAGE_4K: 4, PAGE_2M: 3, PAGE_1G: 2}     # guest levels walked
EPT_READS = {PAGE_4K: 4, PAGE_2M: 3, PAGE_1G: 2}  # EPT entries read per translation
SIZE = {PAGE_4K: PageSize.SIZE_4K, PAGE_2M: PageSize.SIZE_2M, PAGE_1G: PageSize.SIZE_1G}
LEAF_LEVEL = {PAGE_4K: 0, PAGE_2M: 1, PAGE_1G: 2}


def setup(guest_size=PAGE_4K, ept_size=PAGE_4K, *, flags=PTE_P | PTE_RW | PTE_US,
          perms=EPT_RWX, memtype=6, ept=True, gla=GLA, table_flags=PTE_P | PTE_RW | PTE_US):
    """A builder with one guest page of `guest_size` at `gla`, and the EPT page of `ept_size`
    that covers gla + OFFSET[guest_size]. Returns (builder, target gla, its gpa, its hpa)."""
    b = PageTableBuilder(ept=ept)
    off = OFFSET[guest_size]
    b.guest_map(gla, GPA, guest_size, flags=flags, table_flags=table_flags)
    if ept:
        base = (GPA + off) & ~(ept_size - 1)
        b.ept_map(base, HPA + (base - GPA), ept_size, perms=perms, memtype=memtype)
    return b, gla + off, GPA + off, (HPA + off) if ept else GPA + off


def run(b, gla, access=R, cpl=0, **ctx):
    return translate(b.memory, b.context(**ctx), gla, access, cpl)


# --- Page sizes and the 24-reference walk ---------------------------------------------------

@pytest.mark.parametrize("guest_size", [PAGE_4K, PAGE_2M, PAGE_1G])
@pytest.mark.parametrize("ept_size", [PAGE_4K, PAGE_2M, PAGE_1G])
def test_page_sizes_both_dimensions(guest_size, ept_size):
    b, gla, gpa, hpa = setup(guest_size, ept_size)
    r = run(b, gla)
    assert r.outcome == OK, r.reason
    assert (r.gpa, r.hpa) == (gpa, hpa)
    # guest tables sit on 4K EPT pages: each guest level costs 4 EPT reads + 1.
    assert r.mem_reads == LEVELS[guest_size] * 5 + EPT_READS[ept_size]
    assert r.page_size == SIZE[min(guest_size, ept_size)]


def test_uncached_4k_4k_walk_is_24_references():
    b, gla, gpa, hpa = setup()
    r = run(b, gla, W)
    assert r.outcome == OK and r.mem_reads == 24
    assert r.to_json(0)["mem_refs"] == 24


@pytest.mark.parametrize("table_page, reads", [(PAGE_2M, 4 * 4 + 4), (PAGE_1G, 4 * 3 + 4)])
def test_guest_tables_on_large_ept_pages(table_page, reads):
    b = PageTableBuilder()
    if table_page == PAGE_2M:
        b.ept_map(0x20_0000, 0x4000_0000, PAGE_2M)
    else:
        b.ept_map(0, 0x4000_0000, PAGE_1G)
    b.map_page(GLA, GPA, HPA)
    r = run(b, GLA + 8)
    assert r.outcome == OK and r.mem_reads == reads and r.hpa == HPA + 8
    # the tables really live in the large page
    assert b.gpa_to_hpa(b.cr3()) == 0x4000_0000 + b.cr3() - (0x20_0000 if table_page ==
                                                                 PAGE_2M else 0)


def test_large_page_offsets_use_the_gla_bits():
    b, gla, gpa, hpa = setup(PAGE_1G, PAGE_4K)
    assert gpa == GPA + 0x1234_5678
    r = run(b, gla)
    assert (r.gpa, r.hpa, r.page_size) == (gpa, hpa, PageSize.SIZE_4K)


@pytest.mark.parametrize("guest_size", [PAGE_4K, PAGE_2M, PAGE_1G])
def test_ept_disabled_guest_paging_alone(guest_size):
    b, gla, gpa, hpa = setup(guest_size, ept=False)
    ctx = b.context()
    assert ctx.ept_enable is False
    r = translate(b.memory, ctx, gla, W)
    assert r.outcome == OK and r.gpa == r.hpa == GPA + OFFSET[guest_size]
    assert r.mem_reads == LEVELS[guest_size]
    assert r.page_size == SIZE[guest_size]
    # guest A in every level, D in the leaf only; no EPT flags
    leaf = LEAF_LEVEL[guest_size]
    expect = {b.guest_entry_addr(gla, lv): PTE_A | (PTE_D if lv == leaf else 0)
              for lv in range(leaf, 4)}
    assert dict(r.writes) == expect


def test_ept_disabled_ignores_eptp():
    b, gla, gpa, hpa = setup(ept=False)
    ctx = b.context(eptp=0x1234)          # invalid EPTP, ignored without EPT
    assert translate(b.memory, ctx, gla, R).outcome == OK


# --- CR0.PG = 0 -------------------------------------------------------------------------------

PG0 = dict(cr0=CR0_PE, cr4=0, efer=0)


def test_pg0_with_ept():
    b = PageTableBuilder()
    b.ept_map(0x1234_5000, 0x9_8765_4000)
    r = run(b, 0x1234_5678, W, **PG0)
    assert r.outcome == OK and (r.gpa, r.hpa) == (0x1234_5678, 0x9_8765_4678)
    assert r.mem_reads == 4 and r.page_size == PageSize.SIZE_4K
    assert r.writes == []          # no guest A/D, EPT A/D off


def test_pg0_with_ept_2m_and_ad():
    b = PageTableBuilder()
    leaf = b.ept_map(0x1220_0000, 0x9_8760_0000, PAGE_2M)
    r = run(b, 0x1234_5678, W, ept_ad=True, **PG0)
    assert r.outcome == OK and r.hpa == 0x9_8774_5678 and r.mem_reads == 3
    assert r.page_size == PageSize.SIZE_2M
    assert dict(r.writes)[leaf] == EPT_A | EPT_D


def test_pg0_without_ept():
    b = PageTableBuilder(ept=False)
    r = run(b, 0xFFFF_FFF8, F, cpl=3, **PG0)
    assert r.outcome == OK and r.gpa == r.hpa == 0xFFFF_FFF8
    assert r.mem_reads == 0 and r.writes == [] and r.page_size == PageSize.SIZE_1G


@pytest.mark.parametrize("ept", [True, False])
def test_pg0_gla_at_or_above_4g_is_general_protection(ept):
    b = PageTableBuilder(ept=ept)
    for gla in (1 << 32, 0xFFFF_FFFF_FFFF_F000):
        r = run(b, gla, **PG0)
        assert r.outcome == GP and r.gla == gla and r.mem_reads == 0


@pytest.mark.parametrize("access, qual", [(R, 0x181), (W, 0x182), (F, 0x184)])
def test_pg0_ept_violation_has_bits_7_and_8(access, qual):
    b = PageTableBuilder()
    r = run(b, 0x1000, access, **PG0)
    assert r.outcome == EV and r.gpa == 0x1000 and r.qualification == qual


# --- Rule 1: canonical check ------------------------------------------------------------------

@pytest.mark.parametrize("ept", [True, False])
@pytest.mark.parametrize("gla", [0x0000_8000_0000_0000, 0xFFFE_FFFF_FFFF_F000,
                                 0x8000_0000_0000_0000, 0x0001_0000_0000_0000])
def test_non_canonical_is_general_protection(gla, ept):
    b, *_ = setup(ept=ept)
    r = run(b, gla, W, cpl=3)
    assert r.outcome == GP and r.gla == gla and r.mem_reads == 0 and r.writes == []
    assert r.to_json(4) == {"index": 4, "outcome": "general_protection", "gla": hex(gla)}


def test_upper_half_canonical_address_translates():
    b, gla, gpa, hpa = setup(gla=0xFFFF_8000_4000_0000)
    assert gla == 0xFFFF_8000_4000_0678
    r = run(b, gla)
    assert r.outcome == OK and r.hpa == hpa


# --- Rule 2b: not present ---------------------------------------------------------------------

@pytest.mark.parametrize("level", [3, 2, 1, 0])
@pytest.mark.parametrize("access, cpl, ctx, code", [
    (R, 0, {}, 0x0), (W, 0, {}, 0x2), (R, 3, {}, 0x4), (W, 3, {}, 0x6),
    (F, 0, {}, 0x10),                                              # NXE=1 (default)
    (F, 0, {"efer": EFER_LME | EFER_LMA}, 0x0),                    # no NXE, no SMEP: no I/D
    (F, 3, {"efer": EFER_LME | EFER_LMA, "cr4": CR4_PAE | CR4_SMEP}, 0x14),
])
def test_guest_not_present(level, access, cpl, ctx, code):
    b, gla, *_ = setup()
    b.guest_modify(gla, level, clear_bits=PTE_P)
    r = run(b, gla, access, cpl, **ctx)
    assert r.outcome == PF and r.error_code == code and r.gla == gla
    assert r.mem_reads == (4 - level) * 5
    assert r.writes == []


def test_not_present_wins_over_reserved_bits_in_the_same_entry():
    b, gla, *_ = setup()
    b.guest_modify(gla, 1, clear_bits=PTE_P, set_bits=1 << 51)
    assert run(b, gla).error_code == 0


def test_guest_fault_order_is_level_by_level():
    b, gla, *_ = setup()
    b.guest_modify(gla, 2, set_bits=1 << 45)        # reserved at the PDPTE
    b.guest_modify(gla, 0, clear_bits=PTE_P)        # not present at the PTE
    assert run(b, gla).error_code == 0x9            # the PDPTE decides first


# --- Rule 2c: reserved bits -------------------------------------------------------------------

@pytest.mark.parametrize("level", [3, 2, 1, 0])
@pytest.mark.parametrize("bit", [40, 45, 51])
def test_guest_reserved_bits_above_maxphyaddr(level, bit):
    b, gla, *_ = setup()
    b.guest_modify(gla, level, set_bits=1 << bit)
    for access, cpl, code in ((R, 0, 0x9), (W, 0, 0xB), (R, 3, 0xD), (F, 0, 0x19)):
        r = run(b, gla, access, cpl)
        assert r.outcome == PF and r.error_code == code, (access, cpl)
        assert r.mem_reads == (4 - level) * 5


def test_guest_bits_below_a_larger_maxphyaddr_are_address_bits():
    b = PageTableBuilder(46, ept=False)
    b.guest_map(GLA, 1 << 45, PAGE_4K)
    r = run(b, GLA + 8)
    assert r.outcome == OK and r.hpa == (1 << 45) + 8


def test_guest_ps_in_pml4e_is_reserved():
    b, gla, *_ = setup()
    b.guest_modify(gla, 3, set_bits=PTE_PS)
    r = run(b, gla)
    assert r.outcome == PF and r.error_code == 0x9 and r.mem_reads == 5


@pytest.mark.parametrize("bit", [13, 20, 29])
def test_guest_1g_reserved_bits_29_13(bit):
    b, gla, *_ = setup(PAGE_1G, PAGE_4K)
    b.guest_modify(gla, 2, set_bits=1 << bit)
    r = run(b, gla)
    assert r.outcome == PF and r.error_code == 0x9


@pytest.mark.parametrize("bit", [13, 16, 20])
def test_guest_2m_reserved_bits_20_13(bit):
    b, gla, *_ = setup(PAGE_2M, PAGE_4K)
    b.guest_modify(gla, 1, set_bits=1 << bit)
    r = run(b, gla)
    assert r.outcome == PF and r.error_code == 0x9


@pytest.mark.parametrize("size, level", [(PAGE_2M, 1), (PAGE_1G, 2)])
def test_guest_large_page_bit_12_is_pat_not_reserved(size, level):
    b, gla, gpa, hpa = setup(size, PAGE_4K)
    b.guest_modify(gla, level, set_bits=1 << 12)
    r = run(b, gla)
    assert r.outcome == OK and r.gpa == gpa


def test_guest_non_leaf_bits_13_20_are_address_bits():
    # In a non-leaf PDE bits 20:13 are part of the table address: not reserved.
    b, gla, *_ = setup()
    assert b.guest_entry_addr(gla, 1) is not None
    r = run(b, gla)
    assert r.outcome == OK


@pytest.mark.parametrize("level", [3, 2, 1, 0])
def test_guest_xd_is_reserved_without_nxe(level):
    b, gla, *_ = setup()
    b.guest_modify(gla, level, set_bits=PTE_XD)
    r = run(b, gla, efer=EFER_LME | EFER_LMA)
    assert r.outcome == PF and r.error_code == 0x9
    assert run(b, gla).outcome == OK          # with NXE, XD only blocks fetches


def test_guest_ignored_bits_have_no_effect():
    b, gla, gpa, hpa = setup()
    for level in range(4):
        b.guest_modify(gla, level, set_bits=mask(62, 52) | (0x7 << 9))
    b.guest_modify(gla, 0, set_bits=1 << 8 | 1 << 7)     # G and PAT in the PTE
    r = run(b, gla)
    assert r.outcome == OK and r.hpa == hpa


# --- Rule 3: permissions ---------------------------------------------------------------------

@pytest.mark.parametrize("level", [3, 2, 1, 0])
def test_user_access_needs_us_at_every_level(level):
    b, gla, *_ = setup()
    b.guest_modify(gla, level, clear_bits=PTE_US)
    assert run(b, gla, R, 3).error_code == 0x5
    assert run(b, gla, W, 3).error_code == 0x7
    assert run(b, gla, F, 3).error_code == 0x15
    for cpl in (0, 1, 2):
        assert run(b, gla, R, cpl).outcome == OK


@pytest.mark.parametrize("level", [3, 2, 1, 0])
def test_write_needs_rw_at_every_level(level):
    b, gla, *_ = setup()
    b.guest_modify(gla, level, clear_bits=PTE_RW)
    wp_on = {}
    wp_off = {"cr0": CR0_PG | CR0_PE}
    assert run(b, gla, W, 3, **wp_on).error_code == 0x7
    assert run(b, gla, W, 3, **wp_off).error_code == 0x7      # user writes ignore WP
    assert run(b, gla, W, 0, **wp_on).error_code == 0x3       # supervisor, WP=1
    assert run(b, gla, W, 1, **wp_on).error_code == 0x3       # cpl 1 is supervisor too
    r = run(b, gla, W, 0, **wp_off)                           # supervisor, WP=0
    assert r.outcome == OK and dict(r.writes)[b.guest_entry_addr(gla, 0)] == PTE_A | PTE_D
    assert run(b, gla, R, 3).outcome == OK


@pytest.mark.parametrize("level", [3, 2, 1, 0])
def test_fetch_from_xd_with_nxe(level):
    b, gla, *_ = setup()
    b.guest_modify(gla, level, set_bits=PTE_XD)
    assert run(b, gla, F, 0).error_code == 0x11
    assert run(b, gla, F, 3).error_code == 0x15
    assert run(b, gla, R, 3).outcome == OK


def test_smep():
    b, gla, *_ = setup()
    smep = {"cr4": CR4_PAE | CR4_SMEP}
    assert run(b, gla, F, 0, **smep).error_code == 0x11
    assert run(b, gla, F, 2, **smep).error_code == 0x11
    # I/D is reported because SMEP is on, even without NXE
    assert run(b, gla, F, 0, efer=EFER_LME | EFER_LMA, **smep).error_code == 0x11
    assert run(b, gla, F, 3, **smep).outcome == OK        # user fetch: SMEP does not apply
    assert run(b, gla, R, 0, **smep).outcome == OK        # no SMAP
    assert run(b, gla, F, 0).outcome == OK                 # SMEP off
    b.guest_modify(gla, 2, clear_bits=PTE_US)              # a supervisor page now
    assert run(b, gla, F, 0, **smep).outcome == OK


def test_no_id_bit_without_nxe_or_smep():
    b, gla, *_ = setup()
    b.guest_modify(gla, 1, clear_bits=PTE_US)
    assert run(b, gla, F, 3, efer=EFER_LME | EFER_LMA).error_code == 0x5


def test_permissions_are_checked_after_the_whole_walk():
    b, gla, *_ = setup()
    b.guest_modify(gla, 3, clear_bits=PTE_US)      # would be a protection fault...
    b.guest_modify(gla, 0, clear_bits=PTE_P)       # ...but the PTE is not present
    assert run(b, gla, R, 3).error_code == 0x4


def test_permission_fault_beats_ept_violation_on_the_final_gpa():
    b, gla, gpa, hpa = setup()
    b.ept_modify(gpa, 0, clear_bits=EPT_RWX)
    b.guest_modify(gla, 1, clear_bits=PTE_US)
    assert run(b, gla, R, 3).error_code == 0x5


# --- Rule 4/6: guest accessed and dirty flags -----------------------------------------------

@pytest.mark.parametrize("guest_size", [PAGE_4K, PAGE_2M, PAGE_1G])
def test_guest_accessed_and_dirty(guest_size):
    b, gla, gpa, hpa = setup(guest_size, PAGE_4K)
    leaf = LEAF_LEVEL[guest_size]
    r = run(b, gla, R)
    assert dict(r.writes) == {b.guest_entry_addr(gla, lv): PTE_A for lv in range(leaf, 4)}
    r = run(b, gla, F)
    assert dict(r.writes) == {b.guest_entry_addr(gla, lv): PTE_A for lv in range(leaf, 4)}
    r = run(b, gla, W)
    assert dict(r.writes) == {b.guest_entry_addr(gla, lv): PTE_A | (PTE_D if lv == leaf else 0)
                              for lv in range(leaf, 4)}


def test_flags_already_set_are_not_written_and_later_requests_see_flags():
    b, gla, *_ = setup()
    model = TranslationModel(b.memory, b.context())
    r1 = model.translate(gla, R)
    assert len(r1.writes) == 4
    r2 = model.translate(gla, R)
    assert r2.outcome == OK and r2.writes == []
    r3 = model.translate(gla, W)
    assert r3.writes == [(b.guest_entry_addr(gla, 0), PTE_D)]
    assert model.translate(gla, W).writes == []
    after = dict(model.memory_after())
    assert set(after) == {b.guest_entry_addr(gla, lv) for lv in range(4)}
    assert after[b.guest_entry_addr(gla, 0)] & (PTE_A | PTE_D) == PTE_A | PTE_D


def test_translate_does_not_modify_memory():
    b, gla, *_ = setup()
    before = b.memory.snapshot()
    assert run(b, gla, W, ept_ad=True).writes
    assert b.memory.changed_since(before) == []


def test_faulting_requests_write_nothing():
    b, gla, gpa, hpa = setup()
    b.ept_modify(gpa, 0, clear_bits=EPT_R | EPT_W)
    b.guest_modify(gla, 0, clear_bits=PTE_RW)
    model = TranslationModel(b.memory, b.context(ept_ad=True))
    assert model.translate(gla, R).outcome == EV          # final GPA not readable
    assert model.translate(gla, W).outcome == PF          # protection fault
    assert model.translate(0x0000_8000_0000_0000, R).outcome == GP
    assert all(r.writes == [] for r in model.results)
    assert model.memory_after() == []


# --- EPT accessed and dirty flags (EPTP[6]) ----------------------------------------------------

def _ept_path(b, gpa):
    leaf = b.ept_leaf_level(gpa)
    return [b.ept_entry_addr(gpa, lv) for lv in range(3, leaf - 1, -1)]


@pytest.mark.parametrize("access", [R, W, F])
def test_ept_ad_flags(access):
    b, gla, gpa, hpa = setup()
    r = run(b, gla, access, ept_ad=True)
    assert r.outcome == OK
    writes = dict(r.writes)
    expect = {}
    table_gpas = [b.guest_entry_gpa(gla, lv) for lv in range(4)]
    for tgpa in table_gpas:                       # paging-structure accesses count as writes
        path = _ept_path(b, tgpa)
        for addr in path:
            expect[addr] = expect.get(addr, 0) | EPT_A
        expect[path[-1]] |= EPT_D
    path = _ept_path(b, gpa)
    for addr in path:
        expect[addr] = expect.get(addr, 0) | EPT_A
    if access == W:
        expect[path[-1]] |= EPT_D
    guest = {b.guest_entry_addr(gla, lv) for lv in range(4)}
    assert {a: v for a, v in writes.items() if a not in guest} == expect
    # EPT D only ever on leaves
    leaves = {_ept_path(b, g)[-1] for g in table_gpas + [gpa]}
    assert all(a in leaves for a, v in writes.items() if a not in guest and v & EPT_D)
    if access != W:
        assert not writes[path[-1]] & EPT_D


def test_ept_ad_off_writes_no_ept_flags():
    b, gla, gpa, hpa = setup()
    r = run(b, gla, W)
    assert set(dict(r.writes)) == {b.guest_entry_addr(gla, lv) for lv in range(4)}


def test_ept_ad_preset_flags_not_rewritten():
    b = PageTableBuilder()
    b.ept_map(0x20_0000, 0x4000_0000, PAGE_2M, accessed=True, dirty=True, table_accessed=True)
    b.guest_map(GLA, GPA, flags=PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D,
                table_flags=PTE_P | PTE_RW | PTE_US | PTE_A)
    b.ept_map(GPA, HPA, accessed=True, dirty=True, table_accessed=True)
    r = run(b, GLA, W, ept_ad=True)
    assert r.outcome == OK and r.writes == []


def test_ept_ad_on_large_ept_pages():
    b, gla, gpa, hpa = setup(PAGE_4K, PAGE_1G)
    r = run(b, gla, W, ept_ad=True)
    leaf = b.ept_entry_addr(gpa, 2)
    assert dict(r.writes)[leaf] == EPT_A | EPT_D
    assert dict(r.writes)[b.ept_entry_addr(gpa, 3)] & EPT_D == 0


# --- EPT violations: exit qualification (the VMX reference's 5.4/5.5) --------------------------

@pytest.mark.parametrize("level", [3, 2, 1, 0])
@pytest.mark.parametrize("access, qual", [(R, 0x181), (W, 0x182), (F, 0x184)])
def test_data_page_not_present(level, access, qual):
    b, gla, gpa, hpa = setup()
    b.ept_modify(gpa, level, clear_bits=EPT_RWX)
    r = run(b, gla, access)
    assert r.outcome == EV and r.qualification == qual and r.gpa == gpa and r.gla == gla
    assert r.mem_reads == 20 + (4 - level)


@pytest.mark.parametrize("access, qual", [(W, 0x18A), (F, 0x18C)])
def test_data_page_read_only(access, qual):
    b, gla, gpa, hpa = setup(perms=EPT_R)
    assert run(b, gla, R).outcome == OK
    r = run(b, gla, access)
    assert r.outcome == EV and r.qualification == qual and r.gpa == gpa


def test_data_page_read_write_fetch_is_0x19c():
    b, gla, gpa, hpa = setup(perms=EPT_R | EPT_W)
    r = run(b, gla, F)
    assert r.outcome == EV and r.qualification == 0x19C


def test_execute_only_ept():
    b, gla, gpa, hpa = setup(perms=EPT_X)
    r = run(b, gla, F)
    assert r.outcome == OK and r.hpa == hpa
    r = run(b, gla, R)
    assert r.outcome == EV and r.qualification == 0x1A1 and r.gpa == gpa
    assert run(b, gla, W).qualification == 0x1A2


def test_ept_permissions_are_anded_across_levels():
    b, gla, gpa, hpa = setup()
    b.ept_modify(gpa, 2, clear_bits=EPT_W)        # PDPTE R-X, leaf RWX
    assert run(b, gla, W).qualification == 0x18A | 0x20   # perms R+X: bits 3 and 5
    b.ept_modify(gpa, 1, clear_bits=EPT_X)        # PDE RW-
    assert run(b, gla, F).qualification == 0x18C
    assert run(b, gla, R).outcome == OK


def test_execute_only_upper_level():
    b, gla, gpa, hpa = setup()
    b.ept_modify(gpa, 3, clear_bits=EPT_R | EPT_W)     # the data's EPT PML4E is X only
    assert run(b, gla, F).outcome == OK
    assert run(b, gla, R).qualification == 0x1A1
    assert run(b, gla, W).qualification == 0x1A2


@pytest.mark.parametrize("level", [3, 2, 1, 0])
@pytest.mark.parametrize("access", [R, W, F])
@pytest.mark.parametrize("ad, qual", [(False, 0x81), (True, 0x83)])
def test_guest_paging_structure_not_present(level, access, ad, qual):
    b, gla, gpa, hpa = setup()
    pte_gpa = b.guest_entry_gpa(gla, level)
    b.ept_modify(pte_gpa, 0, clear_bits=EPT_RWX)
    r = run(b, gla, access, ept_ad=ad)
    assert r.outcome == EV and r.qualification == qual and r.gpa == pte_gpa and r.gla == gla
    assert r.mem_reads == (3 - level) * 5 + 4
    assert r.to_json(2) == {"index": 2, "outcome": "ept_violation", "gpa": hex(pte_gpa),
                            "gla": hex(gla), "qualification": hex(qual)}


def test_ept_violation_on_a_table_beats_guest_not_present():
    b, gla, *_ = setup()
    b.guest_modify(gla, 0, clear_bits=PTE_P)
    b.ept_modify(b.guest_entry_gpa(gla, 0), 0, clear_bits=EPT_RWX)
    assert run(b, gla).qualification == 0x81


def _pte_page_read_only(guest_flags):
    b, gla, gpa, hpa = setup(flags=PTE_P | PTE_RW | PTE_US | guest_flags,
                             table_flags=PTE_P | PTE_RW | PTE_US | PTE_A)
    pte_gpa = b.guest_entry_gpa(gla, 0)
    b.ept_modify(pte_gpa, 0, clear_bits=EPT_W | EPT_X)
    return b, gla, pte_gpa


@pytest.mark.parametrize("access", [R, W, F])
def test_ad_update_of_read_only_pte_page_a0(access):
    b, gla, pte_gpa = _pte_page_read_only(0)
    r = run(b, gla, access)
    assert r.outcome == EV and r.qualification == 0x8B and r.gpa == pte_gpa
    assert r.mem_reads == 20 and r.writes == []


def test_ad_update_of_read_only_pte_page_a1_d0():
    b, gla, pte_gpa = _pte_page_read_only(PTE_A)
    assert run(b, gla, R).outcome == OK
    assert run(b, gla, F).outcome == OK
    r = run(b, gla, W)
    assert r.outcome == EV and r.qualification == 0x8B and r.gpa == pte_gpa


def test_ad_update_of_read_only_pte_page_a1_d1():
    b, gla, pte_gpa = _pte_page_read_only(PTE_A | PTE_D)
    for access in (R, W, F):
        assert run(b, gla, access).outcome == OK


@pytest.mark.parametrize("flags", [0, PTE_A, PTE_A | PTE_D])
@pytest.mark.parametrize("access", [R, W, F])
def test_read_only_pte_page_with_ept_ad_always_violates(flags, access):
    b, gla, pte_gpa = _pte_page_read_only(flags)
    r = run(b, gla, access, ept_ad=True)
    assert r.outcome == EV and r.qualification == 0x8B and r.gpa == pte_gpa
    assert r.mem_reads == 19          # caught while reading the PTE, before the guest read


def test_ad_updates_are_checked_top_level_first():
    b, gla, gpa, hpa = setup()
    for level in (2, 0):
        b.ept_modify(b.guest_entry_gpa(gla, level), 0, clear_bits=EPT_W | EPT_X)
    r = run(b, gla, R)
    assert r.outcome == EV and r.gpa == b.guest_entry_gpa(gla, 2) and r.qualification == 0x8B


def test_ad_update_violation_after_permissions_before_final_gpa():
    b, gla, gpa, hpa = setup()
    b.ept_modify(b.guest_entry_gpa(gla, 0), 0, clear_bits=EPT_W | EPT_X)
    b.ept_modify(gpa, 0, clear_bits=EPT_RWX)
    assert run(b, gla, R).qualification == 0x8B        # A/D update before the final GPA
    b.guest_modify(gla, 1, clear_bits=PTE_US)
    assert run(b, gla, R, 3).outcome == PF             # permission fault before A/D updates


def test_ad_update_qualification_keeps_perm_bits():
    b, gla, gpa, hpa = setup()
    b.ept_modify(b.guest_entry_gpa(gla, 1), 0, clear_bits=EPT_W | EPT_X)
    assert run(b, gla, R).qualification == 0x8B
    b.ept_modify(b.guest_entry_gpa(gla, 1), 0, set_bits=EPT_X)
    assert run(b, gla, R).qualification == 0xAB      # R and X: bits 3 and 5


# --- EPT misconfigurations --------------------------------------------------------------------

@pytest.mark.parametrize("level", [3, 2, 1, 0])
@pytest.mark.parametrize("rwx", [EPT_W, EPT_W | EPT_X])
@pytest.mark.parametrize("access", [R, W, F])
def test_ept_write_without_read(level, rwx, access):
    b, gla, gpa, hpa = setup()      # the data GPA has an EPT PML4 slot of its own
    b.ept_modify(gpa, level, clear_bits=EPT_RWX, set_bits=rwx)
    r = run(b, gla, access)
    assert r.outcome == EM and r.gpa == gpa and r.mem_reads == 20 + 4 - level
    assert r.to_json(1) == {"index": 1, "outcome": "ept_misconfig", "gpa": hex(gpa)}


def _ept_data(size=PAGE_4K):
    """Data GPA in its own EPT PML4 slot, mapped with an EPT page of `size`."""
    b = PageTableBuilder()
    data = 0x80_0000_0000
    b.guest_map(GLA, data)
    b.ept_map(data, HPA & ~(size - 1), size)
    return b, GLA + 0x10, data + 0x10


@pytest.mark.parametrize("level", [3, 2, 1, 0])
@pytest.mark.parametrize("bit", [40, 47, 51])
def test_ept_reserved_bits_above_maxphyaddr(level, bit):
    b, gla, gpa = _ept_data()
    b.ept_modify(gpa, level, set_bits=1 << bit)
    for access in (R, W, F):
        r = run(b, gla, access)
        assert r.outcome == EM and r.gpa == gpa


@pytest.mark.parametrize("bit", [3, 4, 5, 6, 7])
def test_ept_pml4e_bits_7_3(bit):
    b, gla, gpa = _ept_data()
    b.ept_modify(gpa, 3, set_bits=1 << bit)
    assert run(b, gla).outcome == EM


@pytest.mark.parametrize("level", [2, 1])
@pytest.mark.parametrize("bit", [3, 4, 5, 6])
def test_ept_non_leaf_bits_6_3(level, bit):
    b, gla, gpa = _ept_data()
    b.ept_modify(gpa, level, set_bits=1 << bit)
    assert run(b, gla).outcome == EM


@pytest.mark.parametrize("bit", range(12, 30))
def test_ept_1g_bits_29_12(bit):
    b, gla, gpa = _ept_data(PAGE_1G)
    b.ept_modify(gpa, 2, set_bits=1 << bit)
    assert run(b, gla).outcome == EM


@pytest.mark.parametrize("bit", range(12, 21))
def test_ept_2m_bits_20_12(bit):
    b, gla, gpa = _ept_data(PAGE_2M)
    b.ept_modify(gpa, 1, set_bits=1 << bit)
    assert run(b, gla).outcome == EM


@pytest.mark.parametrize("size", [PAGE_4K, PAGE_2M, PAGE_1G])
@pytest.mark.parametrize("memtype", range(8))
def test_ept_leaf_memory_type(size, memtype):
    b, gla, gpa = _ept_data(size)
    b.ept_modify(gpa, LEAF_LEVEL[size], clear_bits=EPT_MEMTYPE_MASK, set_bits=memtype << 3)
    r = run(b, gla)
    assert r.outcome == (EM if memtype in (2, 3, 7) else OK)


def test_ept_ignored_bits_have_no_effect():
    b, gla, gpa = _ept_data()
    for level in range(4):
        b.ept_modify(gpa, level, set_bits=mask(63, 52) | 1 << 10 | 1 << 11)
    b.ept_modify(gpa, 0, set_bits=EPT_IPAT | EPT_PS | EPT_D)    # PS ignored in a PTE
    r = run(b, gla)
    assert r.outcome == OK and r.hpa == HPA + 0x10


def test_ept_misconfig_on_a_guest_table_reports_the_entry_gpa():
    b, gla, gpa, hpa = setup()
    pde_gpa = b.guest_entry_gpa(gla, 1)
    b.ept_modify(pde_gpa, 0, clear_bits=EPT_RWX, set_bits=EPT_W)
    r = run(b, gla)
    assert r.outcome == EM and r.gpa == pde_gpa and r.mem_reads == 14


def test_misconfig_beats_permission_violation():
    b, gla, gpa = _ept_data()
    b.ept_modify(gpa, 3, clear_bits=EPT_W)         # would be a write violation...
    b.ept_modify(gpa, 0, set_bits=1 << 45)         # ...but the PTE is misconfigured
    assert run(b, gla, W).outcome == EM


def test_not_present_above_a_misconfigured_entry_is_a_violation():
    b, gla, gpa = _ept_data()
    b.ept_modify(gpa, 2, clear_bits=EPT_RWX)
    b.ept_modify(gpa, 0, set_bits=1 << 45)
    r = run(b, gla)
    assert r.outcome == EV and r.qualification == 0x181


def test_misconfigured_entry_above_not_present_is_a_misconfig():
    b, gla, gpa = _ept_data()
    b.ept_modify(gpa, 3, set_bits=1 << 4)
    b.ept_modify(gpa, 0, clear_bits=EPT_RWX)
    assert run(b, gla).outcome == EM


# --- Bad contexts ------------------------------------------------------------------------------

def test_bad_contexts_raise():
    b, gla, *_ = setup()
    with pytest.raises(ValueError, match="page-walk length"):
        translate(b.memory, b.context(eptp=b.eptp() & ~0x38), gla, R)
    with pytest.raises(ValueError, match="memory type"):
        translate(b.memory, b.context(eptp=b.eptp() & ~7 | 5), gla, R)
    with pytest.raises(ValueError, match="IA-32e"):
        translate(b.memory, b.context(cr4=0), gla, R)
    with pytest.raises(ValueError, match="IA-32e"):
        translate(b.memory, b.context(efer=0), gla, R)
    with pytest.raises(ValueError):
        translate(b.memory, b.context(), 1 << 64, R)
    with pytest.raises(ValueError):
        translate(b.memory, b.context(), gla, R, 4)


# --- Result, memory and model API --------------------------------------------------------------

def test_result_json_fields_per_outcome():
    assert Result(OK, 1, gpa=0x10, hpa=0xAB, page_size=PageSize.SIZE_4K, mem_reads=24) \
        .to_json(0, cycles=31) == {"index": 0, "outcome": "ok", "gpa": "0x10", "hpa": "0xab",
                                   "cycles": 31, "mem_refs": 24}
    assert list(Result(OK, 1, gpa=0x10, hpa=0xAB, mem_reads=3).to_json(0)) == \
        ["index", "outcome", "gpa", "hpa", "mem_refs"]
    assert Result(PF, 0xDEAD, error_code=2).to_json(1) == \
        {"index": 1, "outcome": "page_fault", "error_code": "0x2", "gla": "0xdead"}
    assert list(Result(EV, 5, gpa=6, qualification=0x181).to_json(2)) == \
        ["index", "outcome", "gpa", "gla", "qualification"]
    assert Result(EM, 5, gpa=6).to_json(3) == {"index": 3, "outcome": "ept_misconfig",
                                               "gpa": "0x6"}
    assert Result(GP, 0xFF).to_json(4) == {"index": 4, "outcome": "general_protection",
                                           "gla": "0xff"}
    assert Result(EV, 5, gpa=6, qualification=0x181).fields() == \
        {"outcome": EV, "gpa": 6, "gla": 5, "qualification": 0x181}


def test_memory():
    m = Memory({0x1000: 5})
    snap = m.snapshot()
    assert m.read(0x1000) == 5 and m.read(0x2000) == 0
    m.set_bits(0x1000, 0x20)
    m.set_bits(0x3000, 0x40)
    assert m.changed_since(snap) == [(0x1000, 0x25), (0x3000, 0x40)]
    with pytest.raises(ValueError):
        m.read(0x1001)
    with pytest.raises(ValueError):
        m.write(0x8, 1 << 64)
    assert Memory({8: 0, 16: 1}) == Memory({16: 1})


def test_model_runs_requests_in_order():
    b, gla, gpa, hpa = setup()
    reqs = [Request(gla, W, 0), Request(gla, R, 3), Request(0x0000_8000_0000_0000, R, 0)]
    model = TranslationModel(b.memory, b.context(ept_ad=True), reqs)
    results = model.run()
    assert [r.outcome for r in results] == [OK, OK, GP]
    assert results[1].writes == []
    lines = model.output_lines()
    assert lines[-1]["memory_after"] == [[hex(a), hex(v)] for a, v in model.memory_after()]
    assert len(model.memory_after()) == len(results[0].writes)


# --- sim/translate/scenario.py ----------------------------------------------------------------

def _good_doc():
    b, gla, gpa, hpa = setup()
    doc = scenario_to_json(b.context(), b.memory, [Request(gla, R, 0), Request(gla, W, 3)])
    return doc, gla


def test_scenario_round_trip_and_output_format():
    doc, gla = _good_doc()
    sc = parse_scenario(json.dumps(doc))
    assert sc.requests == [Request(gla, R, 0), Request(gla, W, 3)]
    assert sc.context.ept_enable and sc.context.cr0 == 0x80010001
    results, after = run_reference(sc)
    lines = format_output_lines(results, after, cycles=[31, 7])
    assert lines[0] == (f'{{"index": 0, "outcome": "ok", "gpa": "{hex(GPA + 0x678)}", '
                        f'"hpa": "{hex(HPA + 0x678)}", "cycles": 31, "mem_refs": 24}}')
    assert json.loads(lines[-1]) == {"memory_after": [[hex(a), hex(v)] for a, v in after]}
    assert len(lines) == 3
    # the text form parses to the same scenario
    assert parse_scenario(dump_scenario(doc)) == sc


def test_format_output_lines_sorts_memory_after():
    lines = format_output_lines([Result(GP, 0x8000_0000_0000_0000)], {0x20: 0x25, 0x8: 0xABC})
    assert lines == ['{"index": 0, "outcome": "general_protection", "gla": "0x8000000000000000"}',
                     '{"memory_after": [["0x8", "0xabc"], ["0x20", "0x25"]]}']


def _mutate(doc, path, value):
    d = json.loads(json.dumps(doc))
    *head, last = path
    target = d
    for p in head:
        target = target[p]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return d


BAD_INPUTS = [
    (("requests", 1, "access"), "exec",
     "requests[1].access: unknown access type 'exec' (expected read, write or fetch)"),
    (("requests", 0, "access"), 3, "requests[0].access: unknown access type 3"),
    (("memory", 2, 0), "0x1001", "memory[2][0]: address 0x1001 is not 8-byte aligned"),
    (("memory", 2, 0), "0x10000000000", "memory[2][0]: address 0x10000000000 is out of range"),
    (("memory", 1, 1), "0x10000000000000000", "memory[1][1]: 0x10000000000000000 does not fit"),
    (("memory", 1), ["0x8"], "memory[1]: expected an [address, value] pair"),
    (("memory",), {"a": 1}, "memory: expected a list"),
    (("eptp",), "0x100006", "eptp: page-walk length is not 4 levels (bits 5:3 must be 3)"),
    (("eptp",), "0x10001d", "eptp: memory type is neither 0 (UC) nor 6 (WB)"),
    (("eptp",), "0x10009e", "eptp: reserved bits 11:7 are set"),
    (("eptp",), "0x1000000000001e", "eptp: bits 63:40"),
    (("eptp",), KeyError, "eptp: required field is missing"),
    (("ept",), "yes", "ept: expected true or false"),
    (("ept",), KeyError, "ept: required field is missing"),
    (("guest",), KeyError, "guest: required field is missing"),
    (("guest", "cr0"), KeyError, "guest.cr0: required field is missing"),
    (("guest", "cr0"), "0x180010001", "guest.cr0: 0x180010001 has bits above bit 31"),
    (("guest", "cr0"), "0x80010000", "guest.cr0: PG=1 needs PE=1"),
    (("guest", "cr4"), "0x0", "guest.cr4: unsupported paging mode"),
    (("guest", "efer"), "0x800", "guest.efer: unsupported paging mode"),
    (("guest", "cr3"), "0x10000000000", "guest.cr3: address 0x10000000000 is out of range"),
    (("guest", "cr3"), "200000", 'guest.cr3: "200000" is not a "0x" hex string'),
    (("guest", "xcr0"), 0, "guest.xcr0: unknown field"),
    (("requests", 0, "gla"), "0x10000000000000000", "requests[0].gla: 0x10000000000000000 does "
                                                    "not fit in 64 bits"),
    (("requests", 0, "gla"), -1, "requests[0].gla: negative number -1"),
    (("requests", 0, "gla"), 1.5, 'requests[0].gla: expected an integer or a "0x" hex string'),
    (("requests", 0, "gla"), True, 'requests[0].gla: expected an integer'),
    (("requests", 0, "gla"), KeyError, "requests[0].gla: required field is missing"),
    (("requests", 1, "cpl"), 4, "requests[1].cpl: 4 is not a privilege level (expected 0 to 3)"),
    (("requests", 1, "cpl"), KeyError, "requests[1].cpl: required field is missing"),
    (("requests", 0, "acess"), "read", "requests[0].acess: unknown field"),
    (("requests", 0), "read", "requests[0]: expected a JSON object"),
    (("requests",), None, "requests: expected a list"),
    (("extra",), 1, "extra: unknown field"),
]


@pytest.mark.parametrize("path, value, message", BAD_INPUTS)
def test_scenario_errors_name_the_field(path, value, message):
    doc, _ = _good_doc()
    doc["memory"] = doc["memory"][:3]
    bad = _mutate(doc, path, value)
    with pytest.raises(ScenarioError) as e:
        parse_scenario(json.dumps(bad))
    assert str(e.value).startswith(message), str(e.value)


def test_scenario_duplicate_memory_address():
    doc, _ = _good_doc()
    doc["memory"].append([doc["memory"][0][0], "0x1"])
    n = len(doc["memory"]) - 1
    with pytest.raises(ScenarioError, match=rf"^memory\[{n}\]\[0\]: address 0x\w+ appears "
                                            r"twice \(also memory\[0\]\)"):
        parse_scenario(doc)


def test_scenario_pg0_gla_out_of_range():
    doc, _ = _good_doc()
    doc["guest"]["cr0"] = "0x1"
    doc["requests"] = [{"gla": "0xfffff000", "access": "read", "cpl": 0},
                       {"gla": "0x100000000", "access": "read", "cpl": 0}]
    with pytest.raises(ScenarioError, match=r"^requests\[1\]\.gla: 0x100000000 is out of range"):
        parse_scenario(doc)
    # guest paging off: PAE/LME are not needed
    doc["guest"].update(cr4="0x0", efer="0x0")
    doc["requests"].pop()
    assert parse_scenario(doc).context.paging is False


def test_scenario_invalid_json():
    with pytest.raises(ScenarioError, match="^invalid JSON: .* line 1 column"):
        parse_scenario('{"ept": true,')
    with pytest.raises(ScenarioError, match="^invalid JSON"):
        parse_scenario('{"ept": NaN}')
    with pytest.raises(ScenarioError, match="^ept: duplicate key"):
        parse_scenario('{"ept": true, "ept": false}')
    with pytest.raises(ScenarioError, match="^scenario: expected a JSON object"):
        parse_scenario("[]")


def test_scenario_ept_false_ignores_eptp_and_integers_are_accepted():
    doc, gla = _good_doc()
    doc["ept"] = False
    doc["eptp"] = "garbage"
    doc["requests"][0]["gla"] = gla            # a JSON integer
    doc["requests"][0]["cpl"] = "0x3"          # numbers may be hex strings anywhere
    sc = parse_scenario(doc)
    assert not sc.context.ept_enable and sc.requests[0] == Request(gla, R, 3)
    del doc["eptp"]
    assert parse_scenario(doc).context.eptp == 0


def test_scenario_non_canonical_gla_is_valid_input():
    doc, _ = _good_doc()
    doc["requests"] = [{"gla": "0x800000000000", "access": "fetch", "cpl": 0}]
    results, after = run_reference(parse_scenario(doc))
    assert results[0].outcome == GP and after == []


# --- random scenarios --------------------------------------------------------------------------

def _fingerprint(s):
    return (s.context, sorted(s.memory.items()), s.requests, s.corruptions)


def test_random_scenario_is_deterministic():
    for seed in (0, 1, 12345):
        assert _fingerprint(random_scenario(seed)) == _fingerprint(random_scenario(seed))
        import random
        assert _fingerprint(random_scenario(random.Random(seed))) == \
            _fingerprint(random_scenario(seed))
    assert _fingerprint(random_scenario(1)) != _fingerprint(random_scenario(2))


def test_random_scenarios_cover_every_outcome_and_round_trip():
    counts = Counter()
    for seed in range(120):
        s = random_scenario(seed)
        model = TranslationModel(s.memory.copy(), s.context, s.requests)
        results = model.run()
        counts.update(r.outcome for r in results)
        sc = parse_scenario(json.dumps(s.to_json()))
        results2, after2 = run_reference(sc)
        assert [r.fields() for r in results2] == [r.fields() for r in results]
        assert after2 == model.memory_after()
    assert set(counts) == set(Outcome), counts
    assert counts[OK] > 0.2 * sum(counts.values())


@pytest.mark.parametrize("ept, paging", [(False, True), (True, False), (False, False)])
def test_random_scenario_forced_modes(ept, paging):
    for seed in range(10):
        s = random_scenario(seed, ept=ept, paging=paging)
        assert s.context.ept_enable == ept and s.context.paging == paging
        results = TranslationModel(s.memory, s.context, s.requests).run()
        if not ept:
            assert not any(r.outcome in (EV, EM) for r in results)
        if not paging:
            assert all(r.gla < 1 << 32 for r in results)
            assert not any(r.outcome in (PF, GP) for r in results)


# --- examples ----------------------------------------------------------------------------------

def _make_examples():
    spec = importlib.util.spec_from_file_location("make_examples",
                                                  ROOT / "examples" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_are_generated_and_give_the_expected_outcomes():
    mk = _make_examples()
    docs = mk.build()
    assert set(docs) == set(mk.EXPECTED)
    for name, doc in docs.items():
        path = ROOT / "examples" / name
        assert path.read_text() == dump_scenario(doc), f"{name} is stale: run make_examples.py"
        results, after = run_reference(load_scenario(path))
        assert [r.outcome_name for r in results] == mk.EXPECTED[name], name


def test_example_ept_violation_write():
    results, after = run_reference(load_scenario(ROOT / "examples" / "ept_violation_write.json"))
    assert results[1].to_json(1) == {"index": 1, "outcome": "ept_violation", "gpa": "0x80001080",
                                     "gla": "0x555500003080", "qualification": "0x18a"}
    assert results[1].writes == [] and len(after) == 4


def test_example_ept_misconfig():
    results, _ = run_reference(load_scenario(ROOT / "examples" / "ept_misconfig.json"))
    assert results[0].to_json(0) == {"index": 0, "outcome": "ept_misconfig", "gpa": "0x40200010"}


def test_example_guest_2m_pages():
    results, after = run_reference(load_scenario(ROOT / "examples" / "guest_2m_pages.json"))
    assert all(r.page_size == PageSize.SIZE_2M and r.mem_reads == 18 for r in results)
