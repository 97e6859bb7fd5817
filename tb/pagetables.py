"""Builder for hand-made and random guest + EPT page tables (model tests, cocotb tests, benchmarks).

`PageTableBuilder` writes real tables into a `tb.model.Memory`:

* EPT tables live in host-physical frames handed out by a bump allocator
  (``table_hpa`` upwards, below ``table_hpa_limit``).
* Guest tables live at guest-physical frames handed out by a second bump allocator (``table_gpa``
  upwards, below ``table_gpa_limit``). When a guest table frame is allocated, its GPA is looked up
  in the EPT built so far: if an EPT leaf already covers it (for example a 2 MiB or 1 GiB EPT page
  mapped over the table region beforehand), the table lives at the HPA that leaf gives; otherwise a
  host frame is allocated and the GPA is mapped to it with a 4 KiB EPT page
  (``table_ept_perms``, memory type ``table_ept_memtype``). Entries are written to the HPA, so
  the tables the hardware reads through EPT are the tables the builder built. With ``ept=False``
  a guest table's GPA is its HPA.

Default layout (MAXPHYADDR 40): EPT tables and guest-table backing frames from HPA 1 MiB
(below 1 GiB), guest tables at GPA 2 MiB..4 MiB. Keep data mappings of the guest at GPAs >= 1 GiB
so that no EPT large page collides with the tables' PD, and data HPAs away from the table frames.

The builder keeps a shadow of what it built (tables and leaves), so lookups (`ept_lookup`,
`guest_lookup`) and entry addresses (`ept_entry_addr`, `guest_entry_addr`) do not depend on the
memory contents: corrupt entries (`ept_modify`, `guest_modify`) after all mappings are made.

`random_scenario(rng)` builds a random guest + EPT setup with corruptions and requests,
deterministically from its seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

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
    EPT_BAD_MEMTYPES,
    EPT_D,
    EPT_IPAT,
    EPT_MEMTYPE_MASK,
    EPT_MEMTYPE_SHIFT,
    EPT_PS,
    EPT_R,
    EPT_RWX,
    EPT_W,
    EPT_X,
    EPTP_AD,
    EPTP_WALK_4LEVEL,
    MAXPHYADDR,
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
    addr_mask,
    canonical,
    level_index,
    level_shift,
    mask,
)
from tb.model.translation import Context, Memory, Request

__all__ = [
    "ConflictError",
    "FrameAllocator",
    "PageTableBuilder",
    "RandomScenario",
    "random_scenario",
    "SIZE_LEVEL",
    "TABLE_FLAGS",
    "LEAF_FLAGS",
]

#: Leaf level of each page size (0 = PTE, 1 = PDE, 2 = PDPTE).
SIZE_LEVEL = {PAGE_4K: 0, PAGE_2M: 1, PAGE_1G: 2}
#: Default flags of guest non-leaf entries created by the builder.
TABLE_FLAGS = PTE_P | PTE_RW | PTE_US
#: Default flags of guest leaf entries.
LEAF_FLAGS = PTE_P | PTE_RW | PTE_US

_LA_MASK = (1 << 48) - 1


class ConflictError(ValueError):
    """A mapping overlaps an existing one at a different level (or a frame allocator ran out)."""


class FrameAllocator:
    """Bump allocator of naturally aligned frames in [base, limit)."""

    def __init__(self, base: int, limit: int):
        self.base = base
        self.next = base
        self.limit = limit

    def alloc(self, size: int = PAGE_4K) -> int:
        addr = (self.next + size - 1) & ~(size - 1)
        if addr + size > self.limit:
            raise ConflictError(f"frame allocator [{self.base:#x}, {self.limit:#x}) exhausted")
        self.next = addr + size
        return addr


class _Tree:
    """Shadow of one 4-level radix tree: where its tables are and which leaves it has.

    ``tables[(level, addr >> level_shift(level + 1))]`` = (table address in the tree's own
    address space, HPA of the table) for the table holding the `level` entries of `addr`
    (the root is keyed (3, 0)); ``leaves[(level, addr >> level_shift(level))]`` = target base.
    """

    def __init__(self, root: tuple[int, int]):
        self.tables = {(3, 0): root}
        self.leaves: dict[tuple[int, int], int] = {}

    @staticmethod
    def table_key(addr: int, level: int) -> tuple[int, int]:
        return (level, 0 if level == 3 else addr >> level_shift(level + 1))

    @staticmethod
    def entry_key(addr: int, level: int) -> tuple[int, int]:
        return (level, addr >> level_shift(level))

    def table(self, addr: int, level: int) -> tuple[int, int] | None:
        return self.tables.get(self.table_key(addr, level))

    def entry_hpa(self, addr: int, level: int) -> int | None:
        t = self.table(addr, level)
        return None if t is None else t[1] | level_index(addr, level) * 8

    def lookup(self, addr: int) -> tuple[int, int, int] | None:
        """(target of addr, leaf level, target base) if a leaf covers addr."""
        for level in (2, 1, 0):
            base = self.leaves.get(self.entry_key(addr, level))
            if base is not None:
                return base | (addr & ((1 << level_shift(level)) - 1)), level, base
        return None


class PageTableBuilder:
    """Builds guest (IA-32e 4-level) and EPT (4-level) tables in a `Memory`.

    Typical use::

        b = PageTableBuilder()
        b.map_page(0x7F00_0000_0000, 0x4000_0000, 0x1_0000_0000)      # 4K guest, 4K EPT page
        b.map_page(0x7F00_0020_0000, 0x4020_0000, 0x1_0020_0000, PAGE_2M, ept_size=PAGE_4K)
        b.guest_modify(0x7F00_0000_0000, LEVEL_PTE, clear_bits=PTE_RW)  # corrupt afterwards
        ctx = b.context(ept_ad=True)
        result = translate(b.memory, ctx, 0x7F00_0000_0123, Access.READ)
    """

    def __init__(self, maxphyaddr: int = MAXPHYADDR, *, ept: bool = True,
                 memory: Memory | None = None,
                 table_hpa: int = 0x10_0000, table_hpa_limit: int = 0x4000_0000,
                 table_gpa: int = 0x20_0000, table_gpa_limit: int = 0x40_0000,
                 table_ept_perms: int = EPT_RWX, table_ept_memtype: int = 6):
        self.maxphyaddr = maxphyaddr
        self.ept = ept
        self.memory = memory if memory is not None else Memory()
        self.hpa_frames = FrameAllocator(table_hpa, table_hpa_limit)
        self.gpa_frames = FrameAllocator(table_gpa, table_gpa_limit) if ept else None
        self.table_ept_perms = table_ept_perms
        self.table_ept_memtype = table_ept_memtype
        self._ept: _Tree | None = None
        if ept:
            root = self.hpa_frames.alloc()
            self._ept = _Tree((root, root))
        self._guest: _Tree | None = None      # created lazily (cr3() or the first guest_map)
        #: GPA of every guest table the builder allocated, in allocation order.
        self.guest_table_gpas: list[int] = []

    # -- raw memory

    def write(self, hpa: int, value: int) -> None:
        self.memory.write(hpa, value)

    def modify(self, hpa: int, set_bits: int = 0, clear_bits: int = 0) -> int:
        """Read-modify-write the word at `hpa`; returns the new value."""
        value = (self.memory.read(hpa) & ~clear_bits) | set_bits
        self.memory.write(hpa, value)
        return value

    # -- generic tree mapping

    def _map(self, tree: _Tree, addr: int, target: int, size: int, leaf_value: int,
             table_value, new_table) -> None:
        leaf_level = SIZE_LEVEL.get(size)
        if leaf_level is None:
            raise ValueError(f"page size {size:#x} is not 4K, 2M or 1G")
        if addr & (size - 1) or target & (size - 1):
            raise ValueError(f"{addr:#x} -> {target:#x} is not aligned to the page size {size:#x}")
        for level in range(3, leaf_level, -1):
            if tree.entry_key(addr, level) in tree.leaves:
                raise ConflictError(f"{addr:#x}: a leaf already covers it at level {level}")
            if tree.table(addr, level - 1) is None:
                t_addr, t_hpa = new_table()
                tree.tables[tree.table_key(addr, level - 1)] = (t_addr, t_hpa)
                self.memory.write(tree.entry_hpa(addr, level), table_value(t_addr))
        if leaf_level > 0 and tree.table(addr, leaf_level - 1) is not None:
            raise ConflictError(f"{addr:#x}: a table already exists below level {leaf_level}")
        tree.leaves[tree.entry_key(addr, leaf_level)] = target
        self.memory.write(tree.entry_hpa(addr, leaf_level), leaf_value)

    # -- EPT

    def _new_ept_table(self) -> tuple[int, int]:
        hpa = self.hpa_frames.alloc()
        return hpa, hpa

    def ept_map(self, gpa: int, hpa: int, size: int = PAGE_4K, *, perms: int = EPT_RWX,
                memtype: int = 6, ipat: bool = False, accessed: bool = False,
                dirty: bool = False, extra: int = 0, table_perms: int = EPT_RWX,
                table_accessed: bool = False) -> int:
        """Map [gpa, gpa+size) to [hpa, hpa+size) with one EPT leaf; returns the leaf's HPA.

        New non-leaf entries get `table_perms` (and A when `table_accessed`); existing ones are
        kept. `extra` is OR-ed into the leaf as is (for ignored or reserved bits).
        """
        if not self.ept:
            raise ValueError("this builder has EPT disabled")
        level = SIZE_LEVEL.get(size, 0)
        value = (hpa & addr_mask(self.maxphyaddr)) | perms | (memtype << EPT_MEMTYPE_SHIFT) | extra
        value |= (EPT_IPAT if ipat else 0) | (EPT_PS if level else 0)
        value |= (EPT_A if accessed else 0) | (EPT_D if dirty else 0)
        tvalue = table_perms | (EPT_A if table_accessed else 0)
        self._map(self._ept, gpa, hpa, size, value, lambda t: t | tvalue, self._new_ept_table)
        return self._ept.entry_hpa(gpa, level)

    def ept_map_range(self, gpa: int, hpa: int, length: int, size: int = PAGE_4K, **kw) -> None:
        """Map `length` bytes with pages of `size` (`length` a multiple of `size`)."""
        for off in range(0, length, size):
            self.ept_map(gpa + off, hpa + off, size, **kw)

    def ept_lookup(self, gpa: int) -> tuple[int, int] | None:
        """(HPA, page size) of `gpa` by the builder's EPT (ignoring later corruptions), or None."""
        if not self.ept:
            return gpa, PAGE_1G
        hit = self._ept.lookup(gpa)
        if hit is None:
            return None
        return hit[0], 1 << level_shift(hit[1])

    def gpa_to_hpa(self, gpa: int) -> int:
        hit = self.ept_lookup(gpa)
        if hit is None:
            raise KeyError(f"GPA {gpa:#x} is not mapped by EPT")
        return hit[0]

    def ept_leaf_level(self, gpa: int) -> int | None:
        if not self.ept:
            return None
        hit = self._ept.lookup(gpa)
        return None if hit is None else hit[1]

    def ept_entry_addr(self, gpa: int, level: int) -> int:
        """HPA of the EPT entry that translating `gpa` reads at `level` (3 = PML4E ... 0 = PTE)."""
        hpa = self._ept.entry_hpa(gpa, level) if self.ept else None
        if hpa is None:
            raise KeyError(f"no EPT table for GPA {gpa:#x} at level {level}")
        return hpa

    def ept_modify(self, gpa: int, level: int, set_bits: int = 0, clear_bits: int = 0) -> int:
        return self.modify(self.ept_entry_addr(gpa, level), set_bits, clear_bits)

    def eptp(self, ad: bool = False, memtype: int = 6) -> int:
        """EPTP: PML4 address | 4-level walk | memory type | A/D enable."""
        if not self.ept:
            return 0
        return self._ept.tables[(3, 0)][1] | EPTP_WALK_4LEVEL | memtype | (EPTP_AD if ad else 0)

    # -- guest

    def _new_guest_table(self) -> tuple[int, int]:
        if not self.ept:
            hpa = self.hpa_frames.alloc()
            self.guest_table_gpas.append(hpa)
            return hpa, hpa
        gpa = self.gpa_frames.alloc()
        hit = self.ept_lookup(gpa)
        if hit is None:
            hpa = self.hpa_frames.alloc()
            self.ept_map(gpa, hpa, PAGE_4K, perms=self.table_ept_perms,
                         memtype=self.table_ept_memtype)
        else:
            hpa = hit[0]
        self.guest_table_gpas.append(gpa)
        return gpa, hpa

    def _guest_tree(self) -> _Tree:
        if self._guest is None:
            self._guest = _Tree(self._new_guest_table())
        return self._guest

    def cr3(self) -> int:
        """GPA of the guest PML4 table (allocated on first use)."""
        return self._guest_tree().tables[(3, 0)][0]

    def guest_map(self, gla: int, gpa: int, size: int = PAGE_4K, *, flags: int = LEAF_FLAGS,
                  table_flags: int = TABLE_FLAGS) -> int:
        """Map the guest page at `gla` to `gpa`; returns the HPA of the leaf entry.

        `flags` are the leaf's flags as written (P included by default; PS is added for 2M/1G;
        XD is `PTE_XD`). New non-leaf entries get `table_flags`; existing ones are kept.
        """
        if not canonical(gla):
            raise ValueError(f"GLA {gla:#x} is not canonical")
        la = gla & _LA_MASK
        level = SIZE_LEVEL.get(size, 0)
        value = (gpa & addr_mask(self.maxphyaddr)) | flags | (PTE_PS if level else 0)
        tree = self._guest_tree()
        self._map(tree, la, gpa, size, value, lambda t: t | table_flags, self._new_guest_table)
        return tree.entry_hpa(la, level)

    def guest_lookup(self, gla: int) -> tuple[int, int] | None:
        """(GPA, page size) of `gla` by the builder's guest tables, or None."""
        if self._guest is None:
            return None
        hit = self._guest.lookup(gla & _LA_MASK)
        if hit is None:
            return None
        return hit[0], 1 << level_shift(hit[1])

    def guest_leaf_level(self, gla: int) -> int | None:
        if self._guest is None:
            return None
        hit = self._guest.lookup(gla & _LA_MASK)
        return None if hit is None else hit[1]

    def guest_entry_gpa(self, gla: int, level: int) -> int:
        """GPA of the guest entry the walk of `gla` reads at `level`."""
        t = self._guest_tree().table(gla & _LA_MASK, level)
        if t is None:
            raise KeyError(f"no guest table for GLA {gla:#x} at level {level}")
        return t[0] | level_index(gla, level) * 8

    def guest_entry_addr(self, gla: int, level: int) -> int:
        """HPA of the guest entry the walk of `gla` reads at `level`."""
        hpa = self._guest_tree().entry_hpa(gla & _LA_MASK, level)
        if hpa is None:
            raise KeyError(f"no guest table for GLA {gla:#x} at level {level}")
        return hpa

    def guest_modify(self, gla: int, level: int, set_bits: int = 0, clear_bits: int = 0) -> int:
        return self.modify(self.guest_entry_addr(gla, level), set_bits, clear_bits)

    # -- both

    def map_page(self, gla: int, gpa: int, hpa: int, size: int = PAGE_4K, *,
                 ept_size: int | None = None, flags: int = LEAF_FLAGS,
                 table_flags: int = TABLE_FLAGS, perms: int = EPT_RWX, memtype: int = 6,
                 ept_accessed: bool = False, ept_dirty: bool = False) -> None:
        """Guest page gla -> gpa of `size`, and EPT pages of `ept_size` (default `size`) mapping
        the whole guest page to hpa (at most 512 EPT pages; use `ept_map` for sparser setups)."""
        self.guest_map(gla, gpa, size, flags=flags, table_flags=table_flags)
        if not self.ept:
            return
        ept_size = size if ept_size is None else ept_size
        length = max(size, ept_size)
        if length // ept_size > 512:
            raise ValueError("more than 512 EPT pages: map the needed parts with ept_map")
        if (gpa ^ hpa) & (length - 1):
            raise ValueError(f"gpa {gpa:#x} and hpa {hpa:#x} differ in their offset within the "
                             f"{length:#x}-byte EPT page")
        base_gpa = gpa & ~(length - 1)
        base_hpa = hpa & ~(length - 1)
        for off in range(0, length, ept_size):
            if self.ept_lookup(base_gpa + off) is None:
                self.ept_map(base_gpa + off, base_hpa + off, ept_size, perms=perms,
                             memtype=memtype, accessed=ept_accessed, dirty=ept_dirty)

    def context(self, *, ept_ad: bool = False, **overrides) -> Context:
        """A `Context` for these tables: IA-32e paging with WP and NXE, EPT as built."""
        values = dict(cr0=CR0_PG | CR0_WP | CR0_PE, cr4=CR4_PAE,
                      efer=EFER_NXE | EFER_LMA | EFER_LME, ept_enable=self.ept,
                      maxphyaddr=self.maxphyaddr)
        values.update(overrides)
        if "cr3" not in values:
            values["cr3"] = self.cr3()
        if "eptp" not in values:
            values["eptp"] = self.eptp(ad=ept_ad)
        return Context(**values)


# --- Random scenarios ----------------------------------------------------------------------------

@dataclass
class RandomScenario:
    """A random setup: memory, context, requests, and what was corrupted (for failure messages)."""
    seed: object
    context: Context
    memory: Memory
    requests: list[Request]
    corruptions: list[str] = field(default_factory=list)
    builder: PageTableBuilder | None = None

    def to_json(self) -> dict:
        """The scenario in `vtx translate` input form (see sim.translate.scenario)."""
        from sim.translate.scenario import scenario_to_json
        return scenario_to_json(self.context, self.memory, self.requests)


def _sign_extend48(la: int) -> int:
    return la | (((1 << 16) - 1) << 48) if la >> 47 & 1 else la


def _pick(rng: random.Random, weighted: dict):
    items = list(weighted)
    return rng.choices(items, weights=[weighted[i] for i in items])[0]


_GUEST_KINDS = ("clear_p", "rsvd_high", "set_xd", "ps_pml4e", "rsvd_large", "clear_us",
                "clear_rw", "clear_a", "clear_d")
_EPT_KINDS = ("not_present", "clear_perm", "write_only", "exec_only", "rsvd_high", "rsvd_pml4e",
              "rsvd_nonleaf", "rsvd_large", "bad_memtype", "clear_ad", "read_only_table")


def random_scenario(rng, *, maxphyaddr: int = MAXPHYADDR, n_requests: int = 32,
                    n_mappings: int | None = None, max_corruptions: int = 3,
                    ept: bool | None = None, paging: bool | None = None,
                    ept_ad: bool | None = None) -> RandomScenario:
    """A random guest + EPT setup of mixed page sizes, random corruptions and requests.

    `rng` is a `random.Random` or a seed; the result depends only on it (and the arguments).
    `ept`, `paging` and `ept_ad` force those choices when not None. Requests go mostly to mapped
    addresses, some to unmapped and (with paging) non-canonical ones. With CR0.PG=0 every GLA is
    below 2^32, so that every random scenario is valid `vtx translate` input.
    """
    seed = rng
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    m = maxphyaddr
    ept = rng.random() < 0.8 if ept is None else ept
    paging = rng.random() < 0.9 if paging is None else paging
    ept_ad = (ept and rng.random() < 0.5) if ept_ad is None else (ept and ept_ad)
    wp, nxe, smep = rng.random() < 0.6, rng.random() < 0.7, rng.random() < 0.3
    b = PageTableBuilder(m, ept=ept)

    def rand_ept_perms():
        return _pick(rng, {EPT_RWX: 14, EPT_R: 2, EPT_R | EPT_W: 2, EPT_R | EPT_X: 2, EPT_X: 1})

    def rand_memtype():
        return _pick(rng, {6: 8, 0: 2, 1: 1, 4: 1, 5: 1})

    def ept_cover(gpa):
        """Make sure an EPT leaf covers `gpa` (random size, falling back to smaller sizes)."""
        if not ept or b.ept_lookup(gpa) is not None:
            return
        sizes = [_pick(rng, {PAGE_4K: 6, PAGE_2M: 3, PAGE_1G: 1})]
        sizes += [s for s in (PAGE_2M, PAGE_4K) if s < sizes[0]]
        for size in sizes:
            base = gpa & ~(size - 1)
            hpa = rng.randrange(max(1 << 32, size), 1 << m) & ~(size - 1)
            try:
                b.ept_map(base, hpa, size, perms=rand_ept_perms(), memtype=rand_memtype(),
                          ipat=rng.random() < 0.1,
                          accessed=ept_ad and rng.random() < 0.4,
                          dirty=ept_ad and rng.random() < 0.3,
                          table_accessed=ept_ad and rng.random() < 0.4)
                return
            except ConflictError:
                continue

    # Where the guest tables live in GPA space, by EPT 4K pages (default), a 2M or a 1G page.
    if ept and paging:
        choice = _pick(rng, {"4k": 6, "2m": 2, "1g": 1})
        if choice == "2m":
            b.ept_map(0x20_0000, 0x4000_0000 + rng.randrange(0, 64) * PAGE_2M, PAGE_2M,
                      accessed=ept_ad and rng.random() < 0.5)
        elif choice == "1g":
            b.ept_map(0, PAGE_1G * rng.randrange(1, 4), PAGE_1G,
                      accessed=ept_ad and rng.random() < 0.5)

    targets: list[int] = []          # GLAs worth requesting
    pages: list[tuple[int, int]] = []    # (gla base, size) of guest pages
    n_mappings = rng.randrange(2, 9) if n_mappings is None else n_mappings
    gpa_top = 1 << m if paging else 1 << 32
    for _ in range(n_mappings):
        if paging:
            size = _pick(rng, {PAGE_4K: 6, PAGE_2M: 3, PAGE_1G: 1})
            la = rng.getrandbits(48)
            if rng.random() < 0.6:       # cluster in a few PML4/PDPT slots so tables are shared
                la = (rng.choice((0, 1, 0xff, 0x100, 0x1ff)) << 39) | (la & mask(38, 0))
                if rng.random() < 0.6:
                    la = (la & ~mask(38, 30)) | (rng.randrange(0, 3) << 30)
            gla = _sign_extend48(la & ~(size - 1))
            gpa = rng.randrange(PAGE_1G, gpa_top) & ~(size - 1)
            flags = PTE_P
            flags |= PTE_RW if rng.random() < 0.8 else 0
            flags |= PTE_US if rng.random() < 0.6 else 0
            flags |= PTE_A if rng.random() < 0.5 else 0
            flags |= PTE_D if rng.random() < 0.4 else 0
            flags |= PTE_XD if nxe and rng.random() < 0.2 else 0
            tflags = PTE_P
            tflags |= PTE_RW if rng.random() < 0.9 else 0
            tflags |= PTE_US if rng.random() < 0.8 else 0
            tflags |= PTE_A if rng.random() < 0.5 else 0
            tflags |= PTE_XD if nxe and rng.random() < 0.1 else 0
            try:
                b.guest_map(gla, gpa, size, flags=flags, table_flags=tflags)
            except ConflictError:
                continue
        else:
            size = PAGE_4K
            gla = gpa = rng.randrange(0, 1 << 32) & ~(size - 1)
        pages.append((gla, size))
        for _ in range(rng.randrange(1, 4)):
            off = rng.randrange(0, size) if rng.random() < 0.7 else rng.randrange(0, PAGE_4K)
            t = gla + off
            targets.append(t)
            tgpa = gpa + off
            if rng.random() < 0.95:
                ept_cover(tgpa)

    if paging and not pages:
        # Make sure the tables exist so that cr3 is meaningful.
        b.cr3()

    # Corruptions.
    corruptions: list[str] = []
    n_corrupt = rng.choice([0] * 3 + list(range(1, max_corruptions + 1))) if max_corruptions else 0
    for _ in range(n_corrupt):
        if not targets:
            break
        t = rng.choice(targets)
        side = "guest" if paging and (not ept or rng.random() < 0.5) else "ept"
        if side == "guest":
            leaf = b.guest_leaf_level(t)
            if leaf is None:
                continue
            level = rng.randrange(leaf, 4)
            kind = rng.choice(_GUEST_KINDS)
            addr = b.guest_entry_addr(t, level)
            if kind == "clear_p":
                b.modify(addr, clear_bits=PTE_P)
            elif kind == "rsvd_high":
                if m >= 52:
                    continue
                b.modify(addr, set_bits=1 << rng.randrange(m, 52))
            elif kind == "set_xd":
                b.modify(addr, set_bits=PTE_XD)
            elif kind == "ps_pml4e":
                level = 3
                addr = b.guest_entry_addr(t, 3)
                b.modify(addr, set_bits=PTE_PS)
            elif kind == "rsvd_large":
                if leaf == 0:
                    continue
                level = leaf
                addr = b.guest_entry_addr(t, leaf)
                hi = 29 if leaf == 2 else 20
                b.modify(addr, set_bits=1 << rng.randrange(13, hi + 1))
            elif kind == "clear_us":
                b.modify(addr, clear_bits=PTE_US)
            elif kind == "clear_rw":
                b.modify(addr, clear_bits=PTE_RW)
            elif kind == "clear_a":
                b.modify(addr, clear_bits=PTE_A)
            elif kind == "clear_d":
                level = leaf
                addr = b.guest_entry_addr(t, leaf)
                b.modify(addr, clear_bits=PTE_D)
            corruptions.append(f"guest {kind} level {level} of GLA {t:#x}")
        else:
            # The data GPA of the target, or the GPA of one of its guest entries.
            gleaf = b.guest_leaf_level(t) if paging else None
            if gleaf is not None and rng.random() < 0.4:
                glevel = rng.randrange(gleaf, 4)
                gpa = b.guest_entry_gpa(t, glevel)
                what = f"guest level-{glevel} entry GPA {gpa:#x}"
            else:
                hit = b.guest_lookup(t) if paging else (t, PAGE_1G)
                if hit is None:
                    continue
                gpa = hit[0]
                what = f"data GPA {gpa:#x}"
            leaf = b.ept_leaf_level(gpa)
            if leaf is None:
                continue
            level = rng.randrange(leaf, 4)
            kind = rng.choice(_EPT_KINDS)
            addr = b.ept_entry_addr(gpa, level)
            if kind == "not_present":
                b.modify(addr, clear_bits=EPT_RWX)
            elif kind == "clear_perm":
                b.modify(addr, clear_bits=rng.choice((EPT_R, EPT_W, EPT_X, EPT_W | EPT_X)))
            elif kind == "write_only":
                b.modify(addr, clear_bits=EPT_RWX, set_bits=rng.choice((EPT_W, EPT_W | EPT_X)))
            elif kind == "exec_only":
                b.modify(addr, clear_bits=EPT_RWX, set_bits=EPT_X)
            elif kind == "rsvd_high":
                if m >= 52:
                    continue
                b.modify(addr, set_bits=1 << rng.randrange(m, 52))
            elif kind == "rsvd_pml4e":
                level = 3
                addr = b.ept_entry_addr(gpa, 3)
                b.modify(addr, set_bits=1 << rng.randrange(3, 8))
            elif kind == "rsvd_nonleaf":
                if leaf >= 2:
                    continue
                level = rng.randrange(leaf + 1, 3)
                addr = b.ept_entry_addr(gpa, level)
                b.modify(addr, set_bits=1 << rng.randrange(3, 7))
            elif kind == "rsvd_large":
                if leaf == 0:
                    continue
                level = leaf
                addr = b.ept_entry_addr(gpa, leaf)
                hi = 29 if leaf == 2 else 20
                b.modify(addr, set_bits=1 << rng.randrange(12, hi + 1))
            elif kind == "bad_memtype":
                level = leaf
                addr = b.ept_entry_addr(gpa, leaf)
                b.modify(addr, clear_bits=EPT_MEMTYPE_MASK,
                         set_bits=rng.choice(EPT_BAD_MEMTYPES) << EPT_MEMTYPE_SHIFT)
            elif kind == "clear_ad":
                b.modify(addr, clear_bits=EPT_A | EPT_D)
            elif kind == "read_only_table":
                level = leaf
                addr = b.ept_entry_addr(gpa, leaf)
                b.modify(addr, clear_bits=EPT_W)
            corruptions.append(f"EPT {kind} level {level} of {what}")

    # Requests.
    requests: list[Request] = []
    for _ in range(n_requests):
        r = rng.random()
        if targets and r < 0.65:
            gla = rng.choice(targets)
        elif pages and r < 0.8:
            base, size = rng.choice(pages)
            gla = base + rng.randrange(0, size)
        elif paging and r < 0.9:
            gla = _sign_extend48(rng.getrandbits(48))
        elif paging:
            while True:
                gla = rng.getrandbits(64)
                if not canonical(gla):
                    break
        else:
            gla = rng.randrange(0, 1 << 32)
        access = _pick(rng, {Access.READ: 4, Access.WRITE: 3, Access.FETCH: 2})
        cpl = _pick(rng, {0: 5, 3: 4, 1: 1, 2: 1})
        requests.append(Request(gla, access, cpl))

    cr0 = CR0_PE | (CR0_PG if paging else 0) | (CR0_WP if wp else 0)
    cr4 = CR4_PAE | (CR4_SMEP if smep else 0)
    efer = EFER_LME | (EFER_LMA if paging else 0) | (EFER_NXE if nxe else 0)
    cr3 = b.cr3() if paging else 0
    ctx = b.context(ept_ad=ept_ad, cr0=cr0, cr3=cr3, cr4=cr4, efer=efer,
                    vpid=rng.randrange(1, 1 << 16))
    return RandomScenario(seed, ctx, b.memory, requests, corruptions, b)
