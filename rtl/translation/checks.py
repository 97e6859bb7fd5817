"""Combinational checks of the spec, written once and used by the walker and the TLB-hit path.

Each function builds an Amaranth expression from the architectural rules in `rtl.arch`.
"""

from amaranth import Cat, Const, Mux, Value

from .. import arch
from ..arch import Access


def const_mask(hi, lo, width=64):
    return Const(arch.mask(hi, lo), width)


def guest_leaf(level, entry):
    """A guest entry maps a page: a PTE, or a PDPTE/PDE with PS=1."""
    return (level == arch.LEVEL_PTE) | (((level == arch.LEVEL_PDE) | (level == arch.LEVEL_PDPTE))
                                        & entry[7])


def guest_reserved(level, leaf, entry, nxe, maxphyaddr):
    """Spec rule 2c: a reserved bit is set in a present guest entry."""
    rsvd = entry & const_mask(51, maxphyaddr)
    bad = rsvd.any() | (~nxe & entry[63]) | ((level == arch.LEVEL_PML4E) & entry[7])
    bad |= leaf & (level == arch.LEVEL_PDPTE) & entry[13:30].any()
    bad |= leaf & (level == arch.LEVEL_PDE) & entry[13:21].any()
    return bad


def ept_leaf(level, entry):
    """An EPT entry maps a page: a PTE, or a PDPTE/PDE with bit 7 = 1."""
    return (level == arch.LEVEL_PTE) | (((level == arch.LEVEL_PDE) | (level == arch.LEVEL_PDPTE))
                                        & entry[7])


def ept_misconfigured(level, leaf, entry, maxphyaddr):
    """EPT misconfiguration of a present entry (spec, EPT rules)."""
    rwx = entry[0:3]
    bad = (rwx == 0b010) | (rwx == 0b110)
    bad |= (entry & const_mask(51, maxphyaddr)).any()
    bad |= (level == arch.LEVEL_PML4E) & entry[3:8].any()
    bad |= ~leaf & ((level == arch.LEVEL_PDPTE) | (level == arch.LEVEL_PDE)) & entry[3:7].any()
    bad |= leaf & (level == arch.LEVEL_PDPTE) & entry[12:30].any()
    bad |= leaf & (level == arch.LEVEL_PDE) & entry[12:21].any()
    memtype = entry[3:6]
    bad |= leaf & ((memtype == 2) | (memtype == 3) | (memtype == 7))
    return bad


def guest_permission_fault(*, access, user, rw, us, xd, cr0, cr4, efer):
    """Spec rule 3 on the accumulated U/S, R/W (AND) and XD (OR) of the walk."""
    write = access == Access.WRITE
    fetch = access == Access.FETCH
    wp = cr0[16]
    nxe = efer[11]
    smep = cr4[20]
    return ((user & ~us)
            | (user & write & ~rw)
            | (~user & write & ~rw & wp)
            | (fetch & nxe & xd)
            | (~user & fetch & smep & us))


def _bit(value):
    return Const(value, 1) if isinstance(value, int) else value


def page_fault_code(*, present, rsvd, access, user, cr4, efer):
    """Page-fault error code: P, W/R, U/S, RSVD, I/D (I/D only with NXE or SMEP)."""
    fetch = access == Access.FETCH
    return Cat(_bit(present), access == Access.WRITE, user, _bit(rsvd),
               fetch & (efer[11] | cr4[20]))


def access_bits(access):
    """Exit-qualification bits 2:0 for the access's own type."""
    return Cat(access == Access.READ, access == Access.WRITE, access == Access.FETCH)


def ept_access_allowed(access, perm):
    """The final GPA's access needs R, W or X in the AND of the entries walked."""
    return Mux(access == Access.WRITE, perm[1], Mux(access == Access.FETCH, perm[2], perm[0]))


def violation_qualification(acc_bits, perm, final):
    """Bits 8:0 of the EPT-violation exit qualification (bit 7: the GLA is valid)."""
    return Cat(acc_bits, perm, Const(0, 1), Const(1, 1), _bit(final))


def canonical(addr) -> Value:
    """Bits 63:47 of the (zero-extended to 64 bits) address are all equal: a canonical 48-bit
    linear address (`rtl.arch.canonical`). The one HDL form of the rule: the core's accesses and
    branch targets, the translation unit's requests and the VM-entry checks use it."""
    addr = Value.cast(addr)
    if len(addr) <= 47:
        return Const(1, 1)
    top = addr[47:]
    if len(addr) < 64:
        return top == 0     # zero-extended: bits 63:width are 0, so all must be 0
    return (top == 0) | top.all()
