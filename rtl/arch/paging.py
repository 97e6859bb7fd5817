"""Architectural constants: the one source of truth for the RTL, the reference model and the tests.

Everything here comes from the Intel SDM Vol. 3 (chapter 4 "Paging" and the EPT chapter) as
restated in docs/translation-contract.md and the VMX reference (docs/vmx.md; sections 5 and 6).
Bit positions are plain integers so Python code (model, tests, CLI) can use them without Amaranth;
the enums are Amaranth enums with a shape so that RTL signals of these types decode by name.
"""

from amaranth.lib import enum

#: Default MAXPHYADDR (bits of host- and guest-physical addresses). A design parameter.
MAXPHYADDR = 40

PAGE_SHIFT = 12
PAGE_4K = 1 << 12
PAGE_2M = 1 << 21
PAGE_1G = 1 << 30


class Access(enum.Enum, shape=2):
    """Kind of a translated access."""
    READ = 0
    WRITE = 1
    FETCH = 2


class Outcome(enum.Enum, shape=3):
    """Result of one translation request, in the spec's words."""
    OK = 0
    PAGE_FAULT = 1
    EPT_VIOLATION = 2
    EPT_MISCONFIG = 3
    GENERAL_PROTECTION = 4


#: Names used by `vtx translate` for outcomes and accesses.
OUTCOME_NAMES = {
    Outcome.OK: "ok",
    Outcome.PAGE_FAULT: "page_fault",
    Outcome.EPT_VIOLATION: "ept_violation",
    Outcome.EPT_MISCONFIG: "ept_misconfig",
    Outcome.GENERAL_PROTECTION: "general_protection",
}
ACCESS_NAMES = {Access.READ: "read", Access.WRITE: "write", Access.FETCH: "fetch"}


class PageSize(enum.Enum, shape=2):
    """Size of a final translation (the smaller of the guest page and the EPT page)."""
    SIZE_4K = 0
    SIZE_2M = 1
    SIZE_1G = 2

    @property
    def shift(self):
        return {0: 12, 1: 21, 2: 30}[self.value]


class Invalidation(enum.Enum, shape=2):
    """Invalidation kinds the translation unit accepts (INVEPT/INVVPID/INVLPG/MOV CR3 map onto these)."""
    ALL = 0         # every cached translation of every kind
    VPID = 1        # linear and combined mappings of one VPID (INVVPID single-context, MOV CR3)
    EPTP = 2        # guest-physical and combined mappings of one EP4TA (INVEPT single-context)
    VPID_ADDR = 3   # mappings of one linear address for one VPID (INVVPID individual, INVLPG)


# --- Control registers -------------------------------------------------------------------------
CR0_PE = 1 << 0
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PAE = 1 << 5
CR4_PGE = 1 << 7
CR4_SMEP = 1 << 20
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

# --- Guest IA-32e paging entries (SDM table 4-14..4-19) ----------------------------------------
PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_US = 1 << 2
PTE_PWT = 1 << 3
PTE_PCD = 1 << 4
PTE_A = 1 << 5
PTE_D = 1 << 6
PTE_PS = 1 << 7
PTE_G = 1 << 8
PTE_XD = 1 << 63
PTE_A_BIT = 5
PTE_D_BIT = 6

#: Guest paging levels, numbered by how many levels lie below: 3 = PML4E ... 0 = PTE.
LEVEL_PML4E, LEVEL_PDPTE, LEVEL_PDE, LEVEL_PTE = 3, 2, 1, 0
LEVEL_NAMES = {3: "PML4E", 2: "PDPTE", 1: "PDE", 0: "PTE"}


def level_shift(level):
    """Address bit where the index of `level` starts: 39, 30, 21, 12."""
    return 12 + 9 * level


def level_index(addr, level):
    """The 9-bit table index that `addr` uses at `level`."""
    return (addr >> level_shift(level)) & 0x1FF


def mask(hi, lo):
    """Bits hi..lo set (inclusive); empty when hi < lo."""
    if hi < lo:
        return 0
    return ((1 << (hi - lo + 1)) - 1) << lo


def addr_mask(maxphyaddr, lo=12):
    """Address field of an entry: bits maxphyaddr-1..lo."""
    return mask(maxphyaddr - 1, lo)


def guest_reserved_mask(level, leaf, nxe, maxphyaddr=MAXPHYADDR):
    """Reserved bits of a present guest entry (spec rule 2c)."""
    m = mask(51, maxphyaddr)
    if not nxe:
        m |= PTE_XD
    if level == LEVEL_PML4E:
        m |= PTE_PS
    if leaf and level == LEVEL_PDPTE:
        m |= mask(29, 13)
    if leaf and level == LEVEL_PDE:
        m |= mask(20, 13)
    return m


# --- Page-fault error code (SDM 4.7) -----------------------------------------------------------
PFEC_P = 1 << 0
PFEC_W = 1 << 1
PFEC_U = 1 << 2
PFEC_RSVD = 1 << 3
PFEC_I = 1 << 4

# --- EPT entries (SDM 28.3.2) --------------------------------------------------------------------
EPT_R = 1 << 0
EPT_W = 1 << 1
EPT_X = 1 << 2
EPT_RWX = 0x7
EPT_MEMTYPE_SHIFT = 3
EPT_MEMTYPE_MASK = 0x7 << 3
EPT_IPAT = 1 << 6
EPT_PS = 1 << 7
EPT_A = 1 << 8
EPT_D = 1 << 9
EPT_A_BIT = 8
EPT_D_BIT = 9
#: Leaf memory types that make an entry misconfigured.
EPT_BAD_MEMTYPES = (2, 3, 7)


def ept_reserved_mask(level, leaf, maxphyaddr=MAXPHYADDR):
    """Bits whose being set makes a present EPT entry misconfigured (spec, EPT rules)."""
    m = mask(51, maxphyaddr)
    if level == LEVEL_PML4E:
        m |= mask(7, 3)
    elif not leaf:
        m |= mask(6, 3)
    elif level == LEVEL_PDPTE:
        m |= mask(29, 12)
    elif level == LEVEL_PDE:
        m |= mask(20, 12)
    return m


# --- EPTP (SDM 24.6.11) --------------------------------------------------------------------------
EPTP_MEMTYPE_MASK = 0x7
EPTP_MEMTYPE_UC = 0
EPTP_MEMTYPE_WB = 6
EPTP_WALK_SHIFT = 3
EPTP_WALK_MASK = 0x7 << 3
EPTP_WALK_4LEVEL = 3 << 3
EPTP_AD = 1 << 6


def eptp_problem(eptp, maxphyaddr=MAXPHYADDR):
    """Why an EPTP fails the VM-entry checks this design makes, or None when it is valid."""
    if eptp & EPTP_MEMTYPE_MASK not in (EPTP_MEMTYPE_UC, EPTP_MEMTYPE_WB):
        return "memory type is neither 0 (UC) nor 6 (WB)"
    if eptp & EPTP_WALK_MASK != EPTP_WALK_4LEVEL:
        return "page-walk length is not 4 levels (bits 5:3 must be 3)"
    if eptp & mask(11, 7):
        return "reserved bits 11:7 are set"
    if eptp & mask(63, maxphyaddr):
        return f"bits 63:{maxphyaddr} (above MAXPHYADDR) are set"
    return None


# --- EPT-violation exit qualification (SDM table 28-7) --------------------------------------
QUAL_READ = 1 << 0
QUAL_WRITE = 1 << 1
QUAL_FETCH = 1 << 2
QUAL_PERM_SHIFT = 3          # bits 5:3 = AND of R/W/X over the entries walked
QUAL_GLA_VALID = 1 << 7
QUAL_FINAL = 1 << 8          # 1: access to the final translation, 0: to a paging-structure entry


def canonical(gla):
    """Bits 63:47 all equal (48-bit linear addresses)."""
    top = gla >> 47
    return top == 0 or top == (1 << 17) - 1


__all__ = [
    "MAXPHYADDR", "PAGE_SHIFT", "PAGE_4K", "PAGE_2M", "PAGE_1G",
    "Access", "Outcome", "OUTCOME_NAMES", "ACCESS_NAMES", "PageSize", "Invalidation",
    "CR0_PE", "CR0_WP", "CR0_PG", "CR4_PAE", "CR4_PGE", "CR4_SMEP",
    "EFER_LME", "EFER_LMA", "EFER_NXE",
    "PTE_P", "PTE_RW", "PTE_US", "PTE_PWT", "PTE_PCD", "PTE_A", "PTE_D", "PTE_PS", "PTE_G",
    "PTE_XD", "PTE_A_BIT", "PTE_D_BIT",
    "LEVEL_PML4E", "LEVEL_PDPTE", "LEVEL_PDE", "LEVEL_PTE", "LEVEL_NAMES",
    "level_shift", "level_index", "mask", "addr_mask", "guest_reserved_mask",
    "PFEC_P", "PFEC_W", "PFEC_U", "PFEC_RSVD", "PFEC_I",
    "EPT_R", "EPT_W", "EPT_X", "EPT_RWX", "EPT_MEMTYPE_SHIFT", "EPT_MEMTYPE_MASK", "EPT_IPAT",
    "EPT_PS", "EPT_A", "EPT_D", "EPT_A_BIT", "EPT_D_BIT", "EPT_BAD_MEMTYPES", "ept_reserved_mask",
    "EPTP_MEMTYPE_MASK", "EPTP_MEMTYPE_UC", "EPTP_MEMTYPE_WB", "EPTP_WALK_SHIFT",
    "EPTP_WALK_MASK", "EPTP_WALK_4LEVEL", "EPTP_AD", "eptp_problem",
    "QUAL_READ", "QUAL_WRITE", "QUAL_FETCH", "QUAL_PERM_SHIFT", "QUAL_GLA_VALID", "QUAL_FINAL",
    "canonical",
]
