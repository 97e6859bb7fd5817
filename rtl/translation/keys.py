"""Tags and payloads of the translation caches, and their invalidation masks.

Tags are built with `Cat` so that the same function gives the lookup key, the fill key and the
invalidation match; each cache's payload is a `data.StructLayout`.

- TLB (one array per page size): tag {VA page at that size, EPT tag, VPID};
  payload: HPA and GPA page numbers, the guest's accumulated R/W, U/S, XD, the EPT R/W/X AND,
  and `write_ok` (the dirty flags a write needs are already set).
- Guest paging-structure cache, one array per upper level (PML4E, PDPTE, PDE):
  tag {VA bits 47:level_shift, EPT tag, VPID}; payload: next table's GPA page and the R/W, U/S,
  XD accumulated down to and including that entry.
- EPT paging-structure cache, one array per upper level: tag {GPA bits M-1:level_shift, EPT tag};
  payload: next table's HPA page and the R/W/X AND down to that entry.
- Nested TLB: tag {GPA page, EPT tag}; payload: HPA page and R/W/X of the whole EPT walk. It
  holds translations of guest paging-structure pages only.

The EPT tag is {EP4TA, EPTP A/D enable, EPT enable}; with EPT off it is all zeros, so the host's
own page tables (VMX root) get entries of their own.
"""

from amaranth import Cat, Const, Mux
from amaranth.lib import data

from .. import arch
from ..arch import Invalidation

VPID_WIDTH = 16


def eptag_width(maxphyaddr):
    return maxphyaddr - 12 + 2


def eptag(ctx, maxphyaddr):
    en = ctx.ept_enable
    return Mux(en, Cat(ctx.eptp[12:maxphyaddr], ctx.eptp[6], Const(1, 1)), 0)


def tlb_payload(maxphyaddr):
    return data.StructLayout({
        "hpa_page": maxphyaddr - 12,
        "gpa_page": maxphyaddr - 12,
        "rw": 1, "us": 1, "xd": 1,
        "eperm": 3,
        "write_ok": 1,
    })


def gpsc_payload(maxphyaddr):
    return data.StructLayout({"next": maxphyaddr - 12, "rw": 1, "us": 1, "xd": 1})


def epsc_payload(maxphyaddr):
    return data.StructLayout({"next": maxphyaddr - 12, "perm": 3})


def nested_payload(maxphyaddr):
    return data.StructLayout({"hpa_page": maxphyaddr - 12, "perm": 3})


def tlb_key(gla, size_shift, tag, vpid):
    return Cat(gla[size_shift:48], tag, vpid)


def tlb_key_width(size_shift, maxphyaddr):
    return 48 - size_shift + eptag_width(maxphyaddr) + VPID_WIDTH


def gpsc_key(gla, level, tag, vpid):
    return Cat(gla[arch.level_shift(level):48], tag, vpid)


def gpsc_key_width(level, maxphyaddr):
    return 48 - arch.level_shift(level) + eptag_width(maxphyaddr) + VPID_WIDTH


def epsc_gpa_width(level, maxphyaddr):
    """GPA bits of an EPT PSC key at `level`: MAXPHYADDR-1 down to the level's shift, none when
    MAXPHYADDR is at or below the shift (MAXPHYADDR <= 39: every GPA uses PML4 entry 0)."""
    return max(0, maxphyaddr - arch.level_shift(level))


def epsc_key(gpa, level, tag, maxphyaddr):
    if epsc_gpa_width(level, maxphyaddr) == 0:
        return Cat(tag)
    return Cat(gpa[arch.level_shift(level):maxphyaddr], tag)


def epsc_key_width(level, maxphyaddr):
    return epsc_gpa_width(level, maxphyaddr) + eptag_width(maxphyaddr)


def nested_key(gpa, tag, maxphyaddr):
    return Cat(gpa[12:maxphyaddr], tag)


def nested_key_width(maxphyaddr):
    return maxphyaddr - 12 + eptag_width(maxphyaddr)


def _ep4ta_mask_match(inv, maxphyaddr, low_width):
    """Mask/match selecting one EP4TA (with EPT enabled) in a key whose EPT tag starts at bit
    `low_width`."""
    tw = eptag_width(maxphyaddr)
    mask = Cat(Const(0, low_width), Const((1 << (maxphyaddr - 12)) - 1, maxphyaddr - 12),
               Const(0, 1), Const(1, 1))
    match = Cat(Const(0, low_width), inv.eptp[12:maxphyaddr], Const(0, 1), Const(1, 1))
    assert len(mask) == low_width + tw
    return mask, match


def linear_inval(inv, kind_ok_addr, low_width, maxphyaddr, addr_lo=None):
    """(enable, mask, match) for a cache tagged {VA bits, EPT tag, VPID} (TLB or guest PSC).

    `low_width` is the width of the VA part; `addr_lo` is the VA bit the key starts at, used for
    invalidation by address (TLB only: the guest PSC loses every entry of the VPID instead, as
    INVLPG allows).
    """
    tw = eptag_width(maxphyaddr)
    total = low_width + tw + VPID_WIDTH
    zero = Const(0, total)
    vpid_mask = Cat(Const(0, low_width + tw), Const((1 << VPID_WIDTH) - 1, VPID_WIDTH))
    vpid_match = Cat(Const(0, low_width + tw), inv.vpid)
    ep_mask, ep_match = _ep4ta_mask_match(inv, maxphyaddr, low_width)
    ep_mask = Cat(ep_mask, Const(0, VPID_WIDTH))
    ep_match = Cat(ep_match, Const(0, VPID_WIDTH))
    if addr_lo is not None and kind_ok_addr:
        addr_mask = Cat(Const((1 << low_width) - 1, low_width), Const(0, tw),
                        Const((1 << VPID_WIDTH) - 1, VPID_WIDTH))
        addr_match = Cat(inv.gla[addr_lo:48], Const(0, tw), inv.vpid)
    else:
        addr_mask, addr_match = vpid_mask, vpid_match
    kind = inv.kind
    mask = Mux(kind == Invalidation.ALL, zero,
           Mux(kind == Invalidation.VPID, vpid_mask,
           Mux(kind == Invalidation.EPTP, ep_mask, addr_mask)))
    match = Mux(kind == Invalidation.ALL, zero,
            Mux(kind == Invalidation.VPID, vpid_match,
            Mux(kind == Invalidation.EPTP, ep_match, addr_match)))
    return Const(1, 1), mask, match


def physical_inval(inv, low_width, maxphyaddr):
    """(enable, mask, match) for a cache tagged {GPA bits, EPT tag} (EPT PSC, nested TLB).

    Only ALL and EPTP touch guest-physical mappings; VPID-based kinds leave them alone.
    """
    total = low_width + eptag_width(maxphyaddr)
    ep_mask, ep_match = _ep4ta_mask_match(inv, maxphyaddr, low_width)
    kind = inv.kind
    enable = (kind == Invalidation.ALL) | (kind == Invalidation.EPTP)
    mask = Mux(kind == Invalidation.ALL, Const(0, total), ep_mask)
    match = Mux(kind == Invalidation.ALL, Const(0, total), ep_match)
    return enable, mask, match
