"""Reference model of the translation path: IA-32e guest paging + EPT, the two-dimensional walk.

This is the scoreboard the RTL is checked against. It implements docs/translation-contract.md
("the spec") decision by decision, in the spec's order, with no caches: every request is an
uncached walk, so `Result.mem_reads` is the uncached reference count (24 for a 4K/4K walk).
Caches in the RTL may only lower that count; every other field must match exactly.

Order of decisions for one request (spec "Outcomes, in the order they are decided"):

1. CR0.PG=1 and GLA bits 63:47 not all equal: ``general_protection``.
2. Guest walk CR3 -> PML4E -> PDPTE -> PDE -> PTE. For each level: (a) translate the entry's GPA
   through EPT (a read; a write when EPTP[6]=1), an EPT outcome ends the request with
   ``gpa`` = the entry's GPA and qualification bit 8 = 0; (b) P=0: ``page_fault``;
   (c) reserved bit (`rtl.arch.guest_reserved_mask`): ``page_fault`` with P=1, RSVD=1.
3. Permission checks over the whole walk (U/S and R/W AND-ed, XD OR-ed; CR0.WP; EFER.NXE;
   CR4.SMEP): ``page_fault`` with P=1.
4. Guest A/D flags: top level first, every entry that needs A (or, for the final entry of a write,
   D) is a locked read-modify-write of the entry's GPA; it needs EPT R and W on that GPA,
   otherwise ``ept_violation`` with qualification RD|WR|perms|GLA-valid (bit 8 = 0) and ``gpa`` =
   the entry's GPA. The model reuses the EPT translation made in step 2a for that GPA (memory does
   not change within a request), so this step reads no memory.
5. The final GPA through EPT with the access's own type (qualification bit 8 = 1).
6. Only on success: every A/D flag is written (`Result.writes`): guest A in every guest entry used,
   guest D in the final entry on a write; with EPTP[6]=1, EPT A in every EPT entry used by every
   EPT translation of the request and EPT D in the leaf of every translation that is a write
   (all guest paging-structure accesses count as writes then). Flags already set are not written
   again, and several flags of one word are merged into one write. A faulting request writes
   nothing.

Project choices where the spec leaves room (documented here and in the report):

* CR0.PG=0: no guest paging, GPA = GLA. A GLA >= 2^32 then gives ``general_protection`` (the
  spec only says the GLA "must be below 2^32"; `vtx translate` rejects such input outright, the
  RTL and this model answer ``general_protection``). There is no canonical check, no guest walk
  and no page fault. An EPT violation on the final GPA reports qualification bits 7 and 8 = 1
  (the GPA is the translation of the linear address; the SDM sets bit 7 for every violation except
  PAE PDPTE loads).
* `Result.page_size` is min(guest page size, EPT page size). With CR0.PG=0 the guest side counts
  as 1 GiB (the identity map has no smaller granule), and without EPT the EPT side counts as 1 GiB;
  so PG=0 without EPT reports 1 GiB.
* EPTP must pass `rtl.arch.eptp_problem` when EPT is enabled (VM entry would fail otherwise);
  CR0.PG=1 needs CR4.PAE=1 and EFER.LME=1. Anything else raises `ValueError`: it is bad input,
  not an architectural outcome.
* Page-fault error code: bit 0 P, 1 W/R, 2 U/S (cpl == 3), 3 RSVD, 4 I/D (fetch, only when
  EFER.NXE=1 or CR4.SMEP=1). Spec and SDM agree (with CR4.PAE=1 always set in IA-32e mode).

Differences from the SDM that follow the spec (the SDM is more permissive, not contradictory):

* The SDM lets a processor set guest accessed flags in entries of a walk that then faults; the
  spec (rule 6), and so this model, writes nothing for a faulting request.
* The SDM leaves bit 0 of the qualification of an A/D update implementation-specific; the spec
  (and kvm-unit-tests, 0x8B) sets both bits 0 and 1.
* Features outside the spec are absent: MBEC, SMAP, protection keys, CET, 5-level paging,
  #VE, SPP, PCIDs, the G flag's effect on caching.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    EPT_MEMTYPE_MASK,
    EPT_MEMTYPE_SHIFT,
    EPT_PS,
    EPT_R,
    EPT_RWX,
    EPT_W,
    EPT_X,
    EPTP_AD,
    LEVEL_NAMES,
    MAXPHYADDR,
    OUTCOME_NAMES,
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
    QUAL_PERM_SHIFT,
    QUAL_READ,
    QUAL_WRITE,
    Access,
    Outcome,
    PageSize,
    addr_mask,
    canonical,
    ept_reserved_mask,
    eptp_problem,
    guest_reserved_mask,
    level_index,
)

__all__ = [
    "Memory",
    "Context",
    "Request",
    "Result",
    "translate",
    "TranslationModel",
    "hex_str",
    "page_size_of_level",
]

_U64 = (1 << 64) - 1


def hex_str(value: int) -> str:
    """The spec's number format for output: lowercase ``0x`` hex, no padding."""
    return f"0x{value:x}"


def page_size_of_level(level: int) -> PageSize:
    """Size of a leaf at `level` (0 = PTE: 4 KiB, 1 = PDE: 2 MiB, 2 = PDPTE: 1 GiB)."""
    return (PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G)[level]


# --- Memory --------------------------------------------------------------------------------------

class Memory:
    """Sparse memory of 64-bit words at 8-byte-aligned host-physical addresses; zero elsewhere.

    `write` is for setting memory up; the translation path itself only reads words and sets bits
    with `set_bits` (the atomic OR through which accessed/dirty flags reach memory).
    """

    def __init__(self, words: Mapping[int, int] | Iterable[tuple[int, int]] | None = None):
        self._words: dict[int, int] = {}
        if words is not None:
            items = words.items() if isinstance(words, Mapping) else words
            for addr, value in items:
                self.write(addr, value)

    @staticmethod
    def _check(addr: int) -> None:
        if addr < 0 or addr & 7:
            raise ValueError(f"memory address {addr:#x} is not a non-negative multiple of 8")

    def read(self, addr: int) -> int:
        self._check(addr)
        return self._words.get(addr, 0)

    def write(self, addr: int, value: int) -> None:
        self._check(addr)
        if not 0 <= value <= _U64:
            raise ValueError(f"memory value {value:#x} does not fit in 64 bits")
        self._words[addr] = value

    def set_bits(self, addr: int, bits: int) -> None:
        """Atomic OR of `bits` into the word at `addr` (how A/D flags are written)."""
        self.write(addr, self.read(addr) | bits)

    def snapshot(self) -> dict[int, int]:
        """A copy of the contents, for `changed_since`."""
        return dict(self._words)

    def changed_since(self, snapshot: Mapping[int, int]) -> list[tuple[int, int]]:
        """Every word whose value differs from `snapshot` (absent = 0), as sorted (addr, value)."""
        addrs = set(self._words) | set(snapshot)
        return [(a, self._words.get(a, 0)) for a in sorted(addrs)
                if self._words.get(a, 0) != snapshot.get(a, 0)]

    def words(self) -> dict[int, int]:
        """All stored words (including any explicitly written zeros), in insertion order."""
        return dict(self._words)

    def copy(self) -> Memory:
        return Memory(self._words)

    def items(self):
        return self._words.items()

    def __len__(self) -> int:
        return len(self._words)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Memory):
            return NotImplemented
        mine = {a: v for a, v in self._words.items() if v}
        theirs = {a: v for a, v in other._words.items() if v}
        return mine == theirs

    def __repr__(self) -> str:
        return f"Memory({len(self._words)} words)"


# --- Context, request, result --------------------------------------------------------------------

@dataclass
class Context:
    """The translation context: guest control registers and the EPT controls.

    Defaults are those of the spec's example: CR0 = PG|WP|PE, CR4 = PAE, EFER = NXE|LMA|LME.
    """
    cr0: int = CR0_PG | CR0_WP | CR0_PE
    cr3: int = 0
    cr4: int = CR4_PAE
    efer: int = EFER_NXE | EFER_LMA | EFER_LME
    eptp: int = 0
    ept_enable: bool = True
    vpid: int = 1
    maxphyaddr: int = MAXPHYADDR

    @property
    def paging(self) -> bool:
        return bool(self.cr0 & CR0_PG)

    @property
    def wp(self) -> bool:
        return bool(self.cr0 & CR0_WP)

    @property
    def nxe(self) -> bool:
        return bool(self.efer & EFER_NXE)

    @property
    def smep(self) -> bool:
        return bool(self.cr4 & CR4_SMEP)

    @property
    def ept_ad(self) -> bool:
        """EPT accessed/dirty flags enabled (EPTP bit 6), only meaningful with EPT on."""
        return bool(self.ept_enable and self.eptp & EPTP_AD)

    def check(self) -> None:
        """Raise `ValueError` for a context the design does not accept (not an outcome)."""
        if not 32 <= self.maxphyaddr <= 52:
            raise ValueError(f"MAXPHYADDR {self.maxphyaddr} is outside 32..52")
        if self.paging and not (self.cr4 & CR4_PAE and self.efer & EFER_LME):
            raise ValueError("unsupported paging mode: CR0.PG=1 needs CR4.PAE=1 and EFER.LME=1 "
                             "(only IA-32e 4-level paging)")
        if self.ept_enable:
            problem = eptp_problem(self.eptp, self.maxphyaddr)
            if problem is not None:
                raise ValueError(f"invalid EPTP {self.eptp:#x}: {problem}")


@dataclass(frozen=True)
class Request:
    """One translation request."""
    gla: int
    access: Access
    cpl: int = 0


@dataclass
class Result:
    """Outcome of one request. Fields that do not apply to the outcome are None.

    * ``gpa``: final GPA (ok); the GPA of the faulting EPT access (ept_violation/ept_misconfig),
      i.e. the guest paging-structure entry's GPA when that access failed.
    * ``hpa``, ``page_size``: ok only.
    * ``error_code``: page_fault only. ``qualification``: ept_violation only.
    * ``mem_reads``: paging-structure reads of the uncached walk up to the decision (all outcomes;
      0 for general_protection).
    * ``writes``: (addr, bits) atomic ORs performed, ok only (empty otherwise); merged per word.
    * ``reason``: human-readable explanation, not part of the contract.
    """
    outcome: Outcome
    gla: int
    gpa: int | None = None
    hpa: int | None = None
    error_code: int | None = None
    qualification: int | None = None
    page_size: PageSize | None = None
    mem_reads: int = 0
    writes: list[tuple[int, int]] = field(default_factory=list)
    reason: str = ""

    @property
    def outcome_name(self) -> str:
        return OUTCOME_NAMES[self.outcome]

    def fields(self) -> dict:
        """The architectural fields of this outcome (what a scoreboard compares), as ints.

        ok: gpa, hpa, page_size; page_fault: gla, error_code; ept_violation: gpa, gla,
        qualification; ept_misconfig: gpa; general_protection: gla. Plus "outcome".
        """
        o = self.outcome
        d: dict = {"outcome": o}
        if o == Outcome.OK:
            d.update(gpa=self.gpa, hpa=self.hpa, page_size=self.page_size)
        elif o == Outcome.PAGE_FAULT:
            d.update(error_code=self.error_code, gla=self.gla)
        elif o == Outcome.EPT_VIOLATION:
            d.update(gpa=self.gpa, gla=self.gla, qualification=self.qualification)
        elif o == Outcome.EPT_MISCONFIG:
            d.update(gpa=self.gpa)
        else:
            d.update(gla=self.gla)
        return d

    def to_json(self, index: int, cycles: int | None = None) -> dict:
        """The spec's output object for this request, keys in the spec's order.

        ``cycles`` is included (ok lines only) when given; ``mem_refs`` is `mem_reads`.
        """
        d: dict = {"index": index, "outcome": self.outcome_name}
        o = self.outcome
        if o == Outcome.OK:
            d["gpa"] = hex_str(self.gpa)
            d["hpa"] = hex_str(self.hpa)
            if cycles is not None:
                d["cycles"] = cycles
            d["mem_refs"] = self.mem_reads
        elif o == Outcome.PAGE_FAULT:
            d["error_code"] = hex_str(self.error_code)
            d["gla"] = hex_str(self.gla)
        elif o == Outcome.EPT_VIOLATION:
            d["gpa"] = hex_str(self.gpa)
            d["gla"] = hex_str(self.gla)
            d["qualification"] = hex_str(self.qualification)
        elif o == Outcome.EPT_MISCONFIG:
            d["gpa"] = hex_str(self.gpa)
        else:
            d["gla"] = hex_str(self.gla)
        return d


# --- The walk ------------------------------------------------------------------------------------

class _Stop(Exception):
    """Ends a request with `result` (internal control flow)."""

    def __init__(self, result: Result):
        super().__init__(result.reason)
        self.result = result


@dataclass
class _EptTranslation:
    hpa: int
    size: PageSize
    perms: int                     # AND of bits 2:0 over the entries used
    entries: list[tuple[int, int, bool]]   # (hpa of entry, value, leaf)


_PAGE_SIZE_ORDER = {PageSize.SIZE_4K: 0, PageSize.SIZE_2M: 1, PageSize.SIZE_1G: 2}


class _Translator:
    def __init__(self, mem: Memory, ctx: Context, gla: int, access: Access, cpl: int):
        self.mem = mem
        self.ctx = ctx
        self.gla = gla
        self.access = access
        self.cpl = cpl
        self.m = ctx.maxphyaddr
        self.reads = 0
        self.ept_flags: dict[int, int] = {}     # EPT A/D to set: hpa -> bits (insertion ordered)

    # -- helpers

    def _read(self, addr: int) -> int:
        self.reads += 1
        return self.mem.read(addr)

    def _stop(self, outcome: Outcome, reason: str, **kw) -> None:
        raise _Stop(Result(outcome, self.gla, mem_reads=self.reads, reason=reason, **kw))

    def _page_fault(self, p: bool, rsvd: bool, reason: str) -> None:
        ctx = self.ctx
        code = 0
        if p:
            code |= PFEC_P
        if self.access == Access.WRITE:
            code |= PFEC_W
        if self.cpl == 3:
            code |= PFEC_U
        if rsvd:
            code |= PFEC_RSVD
        if self.access == Access.FETCH and (ctx.nxe or ctx.smep):
            code |= PFEC_I
        self._stop(Outcome.PAGE_FAULT, reason, error_code=code)

    # -- EPT

    def _ept(self, gpa: int, *, final: bool, what: str) -> _EptTranslation:
        """Translate `gpa` through EPT; raises _Stop on a violation or a misconfiguration.

        `final` False: a guest paging-structure read (a write when EPTP[6]=1).
        """
        ctx = self.ctx
        if final:
            need = {Access.READ: EPT_R, Access.WRITE: EPT_W, Access.FETCH: EPT_X}[self.access]
            qual = {Access.READ: QUAL_READ, Access.WRITE: QUAL_WRITE,
                    Access.FETCH: QUAL_FETCH}[self.access] | QUAL_GLA_VALID | QUAL_FINAL
            is_write = self.access == Access.WRITE
        elif ctx.ept_ad:
            need = EPT_R | EPT_W
            qual = QUAL_READ | QUAL_WRITE | QUAL_GLA_VALID
            is_write = True
        else:
            need = EPT_R
            qual = QUAL_READ | QUAL_GLA_VALID
            is_write = False

        table = ctx.eptp & addr_mask(self.m)
        perms = EPT_RWX
        entries = []
        for level in (3, 2, 1, 0):
            entry_hpa = table | level_index(gpa, level) * 8
            value = self._read(entry_hpa)
            rwx = value & EPT_RWX
            name = f"EPT {LEVEL_NAMES[level]} of {what} GPA {gpa:#x}"
            if rwx == 0:
                self._stop(Outcome.EPT_VIOLATION, f"{name} not present",
                           gpa=gpa, qualification=qual)
            if rwx in (EPT_W, EPT_W | EPT_X):
                self._stop(Outcome.EPT_MISCONFIG, f"{name} is write-without-read ({rwx:03b})",
                           gpa=gpa)
            leaf = level == 0 or (level in (1, 2) and bool(value & EPT_PS))
            bad = value & ept_reserved_mask(level, leaf, self.m)
            if bad:
                self._stop(Outcome.EPT_MISCONFIG, f"{name} has reserved bits {bad:#x} set", gpa=gpa)
            if leaf:
                memtype = (value & EPT_MEMTYPE_MASK) >> EPT_MEMTYPE_SHIFT
                if memtype in EPT_BAD_MEMTYPES:
                    self._stop(Outcome.EPT_MISCONFIG, f"{name} has memory type {memtype}", gpa=gpa)
            perms &= rwx
            entries.append((entry_hpa, value, leaf))
            if leaf:
                size = page_size_of_level(level)
                break
            table = value & addr_mask(self.m)

        if perms & need != need:
            self._stop(Outcome.EPT_VIOLATION,
                       f"EPT permissions {perms:03b} of {what} GPA {gpa:#x} lack {need:03b}",
                       gpa=gpa, qualification=qual | perms << QUAL_PERM_SHIFT)

        shift = size.shift
        hpa = (value & addr_mask(self.m, shift)) | (gpa & ((1 << shift) - 1))
        if ctx.ept_ad:
            for entry_hpa, value, leaf in entries:
                bits = EPT_A if not value & EPT_A else 0
                if leaf and is_write and not value & EPT_D:
                    bits |= EPT_D
                if bits:
                    self.ept_flags[entry_hpa] = self.ept_flags.get(entry_hpa, 0) | bits
        return _EptTranslation(hpa, size, perms, entries)

    # -- the request

    def run(self) -> Result:
        ctx = self.ctx
        gla = self.gla
        guest_flags: dict[int, int] = {}

        if not ctx.paging:
            if gla >= 1 << 32:
                self._stop(Outcome.GENERAL_PROTECTION,
                           f"GLA {gla:#x} >= 2^32 with guest paging off (CR0.PG=0)")
            gpa = gla
            guest_size = PageSize.SIZE_1G
        else:
            if not canonical(gla):
                self._stop(Outcome.GENERAL_PROTECTION, f"GLA {gla:#x} is not canonical")
            gpa, guest_size, guest_flags = self._guest_walk()

        if ctx.ept_enable:
            tr = self._ept(gpa, final=True, what="final")
            hpa, ept_size = tr.hpa, tr.size
        else:
            hpa, ept_size = gpa, PageSize.SIZE_1G

        size = min(guest_size, ept_size, key=_PAGE_SIZE_ORDER.__getitem__)
        writes = dict(guest_flags)
        for addr, bits in self.ept_flags.items():
            writes[addr] = writes.get(addr, 0) | bits
        return Result(Outcome.OK, gla, gpa=gpa, hpa=hpa, page_size=size, mem_reads=self.reads,
                      writes=list(writes.items()), reason="ok")

    def _guest_walk(self) -> tuple[int, PageSize, dict[int, int]]:
        ctx = self.ctx
        gla = self.gla
        m = self.m
        access = self.access

        # Step 2: the walk.
        table = ctx.cr3 & addr_mask(m)
        used = []       # (level, entry gpa, entry hpa, value, EPT translation or None, leaf)
        for level in (3, 2, 1, 0):
            name = f"guest {LEVEL_NAMES[level]}"
            entry_gpa = table | level_index(gla, level) * 8
            if ctx.ept_enable:
                tr = self._ept(entry_gpa, final=False, what=name)
                entry_hpa = tr.hpa
            else:
                tr = None
                entry_hpa = entry_gpa
            value = self._read(entry_hpa)
            if not value & PTE_P:
                self._page_fault(False, False, f"{name} at GPA {entry_gpa:#x} not present")
            leaf = level == 0 or (level in (1, 2) and bool(value & PTE_PS))
            bad = value & guest_reserved_mask(level, leaf, ctx.nxe, m)
            if bad:
                self._page_fault(True, True, f"{name} at GPA {entry_gpa:#x} has reserved bits "
                                             f"{bad:#x} set")
            used.append((level, entry_gpa, entry_hpa, value, tr, leaf))
            if leaf:
                break
            table = value & addr_mask(m)

        # Step 3: permissions.
        us = all(e[3] & PTE_US for e in used)
        rw = all(e[3] & PTE_RW for e in used)
        xd = any(e[3] & PTE_XD for e in used)
        user = self.cpl == 3
        why = None
        if user and not us:
            why = "user access to a supervisor page"
        elif access == Access.WRITE and not rw and (user or ctx.wp):
            why = "write to a read-only page" + ("" if user else " with CR0.WP=1")
        elif access == Access.FETCH and ctx.nxe and xd:
            why = "fetch from an execute-disable page"
        elif access == Access.FETCH and not user and ctx.smep and us:
            why = "supervisor fetch from a user page with CR4.SMEP=1"
        if why:
            self._page_fault(True, False, why)

        # Step 4: guest accessed/dirty flags, top level first.
        flags: dict[int, int] = {}
        for level, entry_gpa, entry_hpa, value, tr, leaf in used:
            bits = PTE_A if not value & PTE_A else 0
            if leaf and access == Access.WRITE and not value & PTE_D:
                bits |= PTE_D
            if not bits:
                continue
            if tr is not None and tr.perms & (EPT_R | EPT_W) != EPT_R | EPT_W:
                self._stop(Outcome.EPT_VIOLATION,
                           f"guest {LEVEL_NAMES[level]} A/D update at GPA {entry_gpa:#x}: "
                           f"EPT permissions {tr.perms:03b} lack write",
                           gpa=entry_gpa,
                           qualification=QUAL_READ | QUAL_WRITE | QUAL_GLA_VALID
                           | tr.perms << QUAL_PERM_SHIFT)
            flags[entry_hpa] = flags.get(entry_hpa, 0) | bits

        level, value = used[-1][0], used[-1][3]
        size = page_size_of_level(level)
        shift = size.shift
        gpa = (value & addr_mask(m, shift)) | (gla & ((1 << shift) - 1))
        return gpa, size, flags


def translate(mem: Memory, ctx: Context, gla: int, access: Access, cpl: int = 0) -> Result:
    """Translate one request against `mem` under `ctx`. Pure: `mem` is not modified.

    Apply `Result.writes` to memory (`Memory.set_bits`) to commit the request's A/D flags, or use
    `TranslationModel`, which does so. Raises `ValueError` for a context or request the design
    does not accept (see `Context.check`; GLA outside 0..2^64-1; cpl outside 0..3).
    """
    access = Access(access)
    if not 0 <= gla <= _U64:
        raise ValueError(f"GLA {gla:#x} does not fit in 64 bits")
    if cpl not in (0, 1, 2, 3):
        raise ValueError(f"cpl {cpl} is not 0..3")
    ctx.check()
    try:
        return _Translator(mem, ctx, gla, access, cpl).run()
    except _Stop as stop:
        return stop.result


class TranslationModel:
    """Memory + context + a sequence of requests, applied in order.

    Each successful request's A/D writes are committed before the next request is translated,
    as the spec requires ("requests take effect in order"). `memory_after()` lists every word
    that changed since the model was created.
    """

    def __init__(self, memory: Memory, context: Context, requests: Iterable[Request] = ()):
        self.memory = memory
        self.context = context
        self.requests: list[Request] = list(requests)
        self.results: list[Result] = []
        self._initial = memory.snapshot()

    def _apply(self, request: Request) -> Result:
        result = translate(self.memory, self.context, request.gla, request.access, request.cpl)
        for addr, bits in result.writes:
            self.memory.set_bits(addr, bits)
        self.results.append(result)
        return result

    def step(self, request: Request) -> Result:
        """Append `request`, translate every pending request, return the result of `request`."""
        self.requests.append(request)
        return self.run()[-1]

    def translate(self, gla: int, access: Access, cpl: int = 0) -> Result:
        return self.step(Request(gla, Access(access), cpl))

    def run(self) -> list[Result]:
        """Translate every request of `requests` not yet translated; return all results."""
        for request in self.requests[len(self.results):]:
            self._apply(request)
        return self.results

    def memory_after(self) -> list[tuple[int, int]]:
        return self.memory.changed_since(self._initial)

    def output_lines(self, cycles=None) -> list[dict]:
        """The spec's output objects: one per result, then the memory_after object."""
        lines = [r.to_json(i, None if cycles is None else cycles[i])
                 for i, r in enumerate(self.results)]
        lines.append({"memory_after": [[hex_str(a), hex_str(v)] for a, v in self.memory_after()]})
        return lines
