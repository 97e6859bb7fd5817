"""The translation unit's parameters: MAXPHYADDR below 39 (the EPT PML4E cache then has no GPA
bits in its key: every GPA below 2^39 uses PML4 entry 0) elaborates and converts to RTLIL."""

from __future__ import annotations

import pytest
from amaranth.back import rtlil

from rtl.translation import keys
from rtl.translation.unit import TranslationUnit


@pytest.mark.parametrize("maxphyaddr", [36, 39])
def test_unit_elaborates_with_narrow_maxphyaddr(maxphyaddr):
    unit = TranslationUnit(maxphyaddr=maxphyaddr, contexts=2, tlb_entries=(2, 1, 1),
                           gpsc_entries=(1, 1, 2), epsc_entries=(1, 1, 2), nested_entries=2)
    text = rtlil.convert(unit)
    assert "module" in text
    assert len(unit.resp.payload.hpa) == maxphyaddr
    assert len(unit.mem_req.payload.addr) == maxphyaddr


def test_ept_pml4e_key_has_no_gpa_bits_below_39():
    tw = keys.eptag_width(36)
    assert keys.epsc_gpa_width(3, 36) == 0
    assert keys.epsc_key_width(3, 36) == tw
    assert keys.epsc_key_width(2, 36) == 36 - 30 + tw
    assert keys.epsc_key_width(3, 40) == 1 + keys.eptag_width(40)
