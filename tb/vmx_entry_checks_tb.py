"""Test helpers of `rtl.vmx.entry_checks.VmEntryChecks`: packing a VMCS into `WORKING_LAYOUT`,
the model's verdict, valid starting VMCSs of several kinds, a random VMCS mutator, and an Amaranth
simulation that runs many vectors back to back through one elaboration.

A vector is a full VMCS (every field by name), the processor state and the dword that memory
holds at the VMCS link pointer (`link_revision`; the model reads it from its memory, the block
gets it on its `link_revision` input when it asks for it with `link_read_needed`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from rtl.arch import (
    AR_DB,
    AR_G,
    AR_L,
    AR_P,
    AR_S,
    AR_UNUSABLE,
    CONTROL_CHECK_MSRS,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PCIDE,
    CR4_VMXE,
    DEBUGCTL_BTF,
    EFER_LMA,
    EFER_LME,
    ENTRY_CTL_IA32E_MODE_GUEST,
    ENTRY_CTL_LOAD_DEBUG_CONTROLS,
    ENTRY_CTL_LOAD_EFER,
    ENTRY_CTL_LOAD_PAT,
    EXIT_CTL_HOST_ADDRESS_SPACE_SIZE,
    EXIT_CTL_LOAD_EFER,
    EXIT_CTL_LOAD_PAT,
    EXIT_CTL_SAVE_PREEMPTION_TIMER,
    FIELDS,
    INTR_INFO_DELIVER_ERROR_CODE,
    INTR_INFO_VALID,
    MAXPHYADDR,
    PENDING_DBG_BS,
    PIN_NMI_EXITING,
    PIN_PREEMPTION_TIMER,
    PIN_VIRTUAL_NMIS,
    PROC2_ENABLE_EPT,
    PROC2_ENABLE_VM_FUNCTIONS,
    PROC2_ENABLE_VPID,
    PROC2_UNRESTRICTED_GUEST,
    PROC_ACTIVATE_SECONDARY,
    PROC_NMI_WINDOW_EXITING,
    PROC_USE_IO_BITMAPS,
    PROC_USE_MSR_BITMAPS,
    RFLAGS_FIXED1,
    RFLAGS_IF,
    RFLAGS_TF,
    RFLAGS_VM,
    VMCS_REVISION_ID,
    VMCS_SHADOW_INDICATOR,
    VMFUNC_EPTP_SWITCHING,
    VMX_MSRS,
    allowed_settings,
    mask,
    vmx_address_ok,
)
from rtl.vmx.layouts import (
    CPU_STATE_LAYOUT,
    ENTRY_CHECK_RESULT_LAYOUT,
    NOT_IN_WORKING_COPY,
    WORKING_LAYOUT,
    EntryCheckKind,
    member_name,
)
from tb.model.translation import Memory
from tb.model.vmx import CpuState, Vmcs, VmxModel, example_vmcs_fields

_U64 = mask(63, 0)
#: Where the vectors put the linked VMCS region when they use one.
LINK_REGION = 0x7000
#: The current VMCS's region in the vectors (a valid address that is not LINK_REGION).
CURRENT_VMCS = 0x6000
SEGMENTS = ("ES", "CS", "SS", "DS", "FS", "GS", "LDTR", "TR")
CODE_DATA = ("CS", "SS", "DS", "ES", "FS", "GS")


# =================================================================================================
# Vectors and the model's verdict
# =================================================================================================


@dataclass
class EntryVector:
    name: str
    fields: dict[str, int]
    cpu: CpuState = field(default_factory=CpuState)
    link_revision: int = VMCS_REVISION_ID
    #: The current-VMCS pointer the entry runs with (the link pointer must differ from it).
    current_vmcs: int = CURRENT_VMCS


@dataclass(frozen=True)
class Verdict:
    kind: EntryCheckKind
    qualification: int = 0
    why: str = ""

    @property
    def key(self) -> tuple[EntryCheckKind, int]:
        return self.kind, self.qualification


#: Width mask of each field (`VmcsField.mask` is slow enough to matter in the random tests).
_FIELD_MASK = {f.name: f.mask for f in FIELDS}


def full_fields(overrides: Mapping[str, int]) -> dict[str, int]:
    """Every field of the VMCS: 0 unless given (values masked to the field's width)."""
    fields = dict.fromkeys(_FIELD_MASK, 0)
    for name, value in overrides.items():
        fields[name] = value & _FIELD_MASK[name]
    return fields


def model_verdict(vec: EntryVector, maxphyaddr: int = MAXPHYADDR,
                  revision_id: int = VMCS_REVISION_ID) -> Verdict:
    """What `VmxModel` decides: check_controls, check_host_state, check_guest_state in order."""
    memory = Memory()
    link = vec.fields["VMCS_LINK_POINTER"]
    if link != _U64 and vmx_address_ok(link, maxphyaddr):
        # The upper dword (VMX-abort indicator) must not matter.
        memory.write(link, 0xDEAD_BEEF << 32 | vec.link_revision)
    model = VmxModel(memory, maxphyaddr=maxphyaddr, revision_id=revision_id)
    model.current_pointer = vec.current_vmcs
    vmcs = Vmcs(full_fields(vec.fields))
    why = model.check_controls(vmcs)
    if why is not None:
        return Verdict(EntryCheckKind.CONTROLS, 0, why)
    why = model.check_host_state(vmcs, vec.cpu)
    if why is not None:
        return Verdict(EntryCheckKind.HOST, 0, why)
    problem = model.check_guest_state(vmcs)
    if problem is not None:
        return Verdict(EntryCheckKind.GUEST, problem[0], problem[1])
    return Verdict(EntryCheckKind.OK)


def link_read_needed(fields: Mapping[str, int], maxphyaddr: int = MAXPHYADDR) -> bool:
    link = fields["VMCS_LINK_POINTER"]
    return link != _U64 and vmx_address_ok(link, maxphyaddr)


# =================================================================================================
# Packing into the block's ports
# =================================================================================================


def pack(layout, values: Mapping[str, int]) -> int:
    """The bits of a `StructLayout` value given member values (missing members are 0)."""
    bits = 0
    for name, value in values.items():
        member = layout[name]
        bits |= (int(value) & mask(member.width - 1, 0)) << member.offset
    return bits


def vmcs_bits(fields: Mapping[str, int]) -> int:
    """The working copy's bits (`WORKING_LAYOUT`) of a VMCS given as field values (the fields
    the working copy does not hold are left out)."""
    return pack(WORKING_LAYOUT, {member_name(n): v for n, v in fields.items()
                                 if n not in NOT_IN_WORKING_COPY})


def cpu_bits(cpu: CpuState) -> int:
    return pack(CPU_STATE_LAYOUT, {
        "cpl": cpu.cpl, "cr0": cpu.cr0, "cr4": cpu.cr4, "efer": cpu.efer, "cs_l": cpu.cs_l,
        "rflags": cpu.rflags, "feature_control": cpu.feature_control,
        "mov_ss_blocking": cpu.mov_ss_blocking,
    })


def unpack_result(bits: int) -> tuple[EntryCheckKind, int]:
    kind = ENTRY_CHECK_RESULT_LAYOUT["kind"]
    qual = ENTRY_CHECK_RESULT_LAYOUT["qualification"]
    return (EntryCheckKind((bits >> kind.offset) & mask(kind.width - 1, 0)),
            (bits >> qual.offset) & mask(qual.width - 1, 0))


# =================================================================================================
# Valid starting points (each passes every check; the tests assert it)
# =================================================================================================

CPU64 = CpuState()
CPU32 = CpuState(efer=0, cs_l=False)
AR_CODE64 = 0xB | AR_S | AR_P | AR_L | AR_G      # 0xA09B
AR_CODE32 = 0xB | AR_S | AR_P | AR_DB | AR_G     # 0xC09B
AR_DATA = 0x3 | AR_S | AR_P | AR_DB | AR_G       # 0xC093


def _with(base: Mapping[str, int], **changes: int) -> dict[str, int]:
    return full_fields({**base, **changes})


def base_64() -> dict[str, int]:
    """The model's example: 64-bit host and guest, EPT, VPID."""
    return full_fields(example_vmcs_fields())


def base_32() -> dict[str, int]:
    """A 32-bit host (root outside IA-32e mode, use with `CPU32`) and a 32-bit PAE guest."""
    f = base_64()
    f["VM_EXIT_CONTROLS"] &= ~EXIT_CTL_HOST_ADDRESS_SPACE_SIZE
    f["VM_ENTRY_CONTROLS"] &= ~ENTRY_CTL_IA32E_MODE_GUEST
    f.update(HOST_RIP=0x10_0000, HOST_RSP=0x20_0000, GUEST_IA32_EFER=0,
             GUEST_CS_AR_BYTES=AR_CODE32, GUEST_RIP=0x1000)
    return f


def base_real() -> dict[str, int]:
    """Unrestricted guest in real mode (CR0.PE = PG = 0, segments as after reset)."""
    f = base_64()
    f["SECONDARY_VM_EXEC_CONTROL"] |= PROC2_UNRESTRICTED_GUEST
    f["VM_ENTRY_CONTROLS"] &= ~ENTRY_CTL_IA32E_MODE_GUEST
    f.update(GUEST_CR0=CR0_NE, GUEST_CR4=CR4_VMXE, GUEST_IA32_EFER=0, GUEST_RIP=0x7C00,
             GUEST_CS_SELECTOR=0, GUEST_CS_AR_BYTES=0x9B, GUEST_CS_LIMIT=0xFFFF,
             GUEST_TR_AR_BYTES=0x8B)
    for s in ("SS", "DS", "ES", "FS", "GS"):
        f.update({f"GUEST_{s}_SELECTOR": 0, f"GUEST_{s}_AR_BYTES": 0x93,
                  f"GUEST_{s}_LIMIT": 0xFFFF})
    return f


def base_v86() -> dict[str, int]:
    """A virtual-8086 guest (RFLAGS.VM = 1 in 32-bit protected mode with paging)."""
    f = base_64()
    f["VM_ENTRY_CONTROLS"] &= ~ENTRY_CTL_IA32E_MODE_GUEST
    f.update(GUEST_IA32_EFER=0, GUEST_RIP=0x100, GUEST_RFLAGS=RFLAGS_FIXED1 | RFLAGS_VM,
             GUEST_CR4=CR4_VMXE, GUEST_TR_AR_BYTES=0x8B)
    for i, s in enumerate(CODE_DATA):
        sel = 0x1000 + 0x111 * i
        f.update({f"GUEST_{s}_SELECTOR": sel, f"GUEST_{s}_BASE": sel << 4,
                  f"GUEST_{s}_LIMIT": 0xFFFF, f"GUEST_{s}_AR_BYTES": 0xF3})
    return f


def base_cpl3() -> dict[str, int]:
    """A 64-bit guest at CPL 3."""
    f = base_64()
    f.update(GUEST_CS_SELECTOR=0x33, GUEST_CS_AR_BYTES=AR_CODE64 | 3 << 5)
    for s in ("SS", "DS", "ES", "FS", "GS"):
        f.update({f"GUEST_{s}_SELECTOR": 0x2B, f"GUEST_{s}_AR_BYTES": AR_DATA | 3 << 5})
    return f


#: Name -> (fields, cpu) of every valid starting point.
BASES: dict[str, tuple[Callable[[], dict[str, int]], CpuState]] = {
    "64": (base_64, CPU64),
    "32": (base_32, CPU32),
    "real": (base_real, CPU64),
    "v86": (base_v86, CPU64),
    "cpl3": (base_cpl3, CPU64),
}


def base_vector(base: str = "64", name: str | None = None, *, cpu: CpuState | None = None,
                link_revision: int = VMCS_REVISION_ID, **changes: int) -> EntryVector:
    """A vector: a valid starting point with some fields changed."""
    make, base_cpu = BASES[base]
    return EntryVector(name or base, _with(make(), **changes), cpu or base_cpu, link_revision)


# =================================================================================================
# Random mutations of the valid starting points
# =================================================================================================

_CONTROL_FIELDS = list(CONTROL_CHECK_MSRS)
_CONTROL_BITS = {
    "PIN_BASED_VM_EXEC_CONTROL": [PIN_NMI_EXITING, PIN_VIRTUAL_NMIS, PIN_PREEMPTION_TIMER],
    "CPU_BASED_VM_EXEC_CONTROL": [PROC_ACTIVATE_SECONDARY, PROC_USE_IO_BITMAPS,
                                  PROC_USE_MSR_BITMAPS, PROC_NMI_WINDOW_EXITING],
    "SECONDARY_VM_EXEC_CONTROL": [PROC2_ENABLE_EPT, PROC2_ENABLE_VPID, PROC2_UNRESTRICTED_GUEST,
                                  PROC2_ENABLE_VM_FUNCTIONS],
    "VM_EXIT_CONTROLS": [EXIT_CTL_HOST_ADDRESS_SPACE_SIZE, EXIT_CTL_LOAD_PAT, EXIT_CTL_LOAD_EFER,
                         EXIT_CTL_SAVE_PREEMPTION_TIMER],
    "VM_ENTRY_CONTROLS": [ENTRY_CTL_IA32E_MODE_GUEST, ENTRY_CTL_LOAD_PAT, ENTRY_CTL_LOAD_EFER,
                          ENTRY_CTL_LOAD_DEBUG_CONTROLS],
}
_ADDRESS_FIELDS = ("IO_BITMAP_A", "IO_BITMAP_B", "MSR_BITMAP", "EPTP_LIST_ADDRESS",
                   "VMCS_LINK_POINTER", "HOST_CR3", "GUEST_CR3")
_CANONICAL_FIELDS = ("HOST_FS_BASE", "HOST_GS_BASE", "HOST_TR_BASE", "HOST_GDTR_BASE",
                     "HOST_IDTR_BASE", "HOST_IA32_SYSENTER_ESP", "HOST_IA32_SYSENTER_EIP",
                     "HOST_RIP", "GUEST_RIP", "GUEST_SYSENTER_ESP", "GUEST_SYSENTER_EIP",
                     "GUEST_GDTR_BASE", "GUEST_IDTR_BASE")
_VECTORS = (0, 1, 2, 3, 4, 6, 8, 10, 13, 14, 17, 18, 31, 32, 0x20, 0x80, 0xFF)


def _flip(rng: random.Random, value: int, width: int) -> int:
    bit = rng.randrange(16) if rng.random() < 0.5 else rng.randrange(width)
    return value ^ (1 << bit)


def _address(rng: random.Random, maxphyaddr: int) -> int:
    return rng.choice([
        LINK_REGION, 0x1000 * rng.randrange(1, 1 << 16), 0x1008, 1 << maxphyaddr,
        (1 << maxphyaddr) - 0x1000, 1 << rng.randrange(64), _U64, rng.getrandbits(64),
    ])


def _canonical_value(rng: random.Random) -> int:
    return rng.choice([0, 0x40_0000, 0xFFFF_8000_0000_1000, 0x0000_7FFF_FFFF_F000,
                       0x0000_8000_0000_0000, 0xFFFF_7FFF_FFFF_FFFF, 1 << 32,
                       rng.getrandbits(64), rng.getrandbits(32)])


def _ar(rng: random.Random) -> int:
    ar = rng.randrange(16) | rng.choice([0, AR_S, AR_S, AR_S]) | rng.randrange(4) << 5
    ar |= AR_P if rng.random() < 0.9 else 0
    ar |= rng.choice([0, AR_L, AR_DB, AR_G, AR_G | AR_DB, AR_G | AR_L, AR_L | AR_DB])
    if rng.random() < 0.2:
        ar |= AR_UNUSABLE
    if rng.random() < 0.05:
        ar |= 1 << rng.choice([8, 9, 10, 11, 12, 17, 20, 31])
    return ar


def mutate(rng: random.Random, vec: EntryVector, maxphyaddr: int) -> None:
    """Apply one random change to `vec` (a field, the processor state or the link dword)."""
    f = vec.fields
    kind = rng.randrange(20)
    if kind == 0:               # any field, one bit
        fd = rng.choice(FIELDS)
        f[fd.name] = _flip(rng, f[fd.name], fd.bits)
    elif kind == 1:             # a control field within (or near) its allowed settings
        name = rng.choice(_CONTROL_FIELDS)
        must1, may1 = allowed_settings(VMX_MSRS[CONTROL_CHECK_MSRS[name]])
        value = must1 | (rng.getrandbits(32) & may1 & rng.getrandbits(32))
        if rng.random() < 0.2:
            value = _flip(rng, value, 32)
        f[name] = value
    elif kind == 2:             # one interesting control bit
        name = rng.choice(list(_CONTROL_BITS))
        f[name] ^= rng.choice(_CONTROL_BITS[name])
    elif kind == 3:             # segment access rights
        s = rng.choice(SEGMENTS)
        f[f"GUEST_{s}_AR_BYTES"] = _ar(rng)
    elif kind == 4:             # segment selector
        s = rng.choice(SEGMENTS)
        f[f"GUEST_{s}_SELECTOR"] = rng.choice([0, 0x08, 0x10, 0x13, 0x1B, 0x2B, 0x33, 0x1C,
                                               rng.getrandbits(16)])
    elif kind == 5:             # segment limit
        s = rng.choice(SEGMENTS + ("GDTR", "IDTR"))
        f[f"GUEST_{s}_LIMIT"] = rng.choice([0xFFFF, 0xFFFFFFFF, 0xFFFFF, 0x67, 0x10000,
                                            0xFFF00FFF, 0xFFFFF000, rng.getrandbits(32)])
    elif kind == 6:             # segment base
        s = rng.choice(SEGMENTS + ("GDTR", "IDTR"))
        sel = f.get(f"GUEST_{s}_SELECTOR", 0)
        f[f"GUEST_{s}_BASE"] = rng.choice([sel << 4, (sel << 4) + 1, _canonical_value(rng)])
    elif kind == 7:             # event injection
        itype = rng.randrange(8)
        vector = rng.choice(_VECTORS)
        info = INTR_INFO_VALID * (rng.random() < 0.8) | itype << 8 | vector
        if rng.random() < 0.5:
            info |= INTR_INFO_DELIVER_ERROR_CODE
        if rng.random() < 0.05:
            info |= 1 << rng.randrange(12, 31)
        f["VM_ENTRY_INTR_INFO_FIELD"] = info
        f["VM_ENTRY_EXCEPTION_ERROR_CODE"] = rng.choice([0, 2, 0xFFFF, 0x10000])
        f["VM_ENTRY_INSTRUCTION_LEN"] = rng.choice([0, 1, 2, 15, 16, rng.getrandbits(32)])
    elif kind == 8:             # interruptibility and activity
        f["GUEST_INTERRUPTIBILITY_INFO"] = rng.choice(
            [0, 0, 1, 2, 3, 4, 8, 9, 10, 0x10, 0x20, rng.getrandbits(32)])
        if rng.random() < 0.5:
            f["GUEST_ACTIVITY_STATE"] = rng.choice([0, 0, 1, 1, 2, 3, 4, rng.getrandbits(32)])
    elif kind == 9:             # RFLAGS
        flags = RFLAGS_FIXED1
        for bit in (RFLAGS_IF, RFLAGS_TF, RFLAGS_VM):
            flags |= bit * (rng.random() < 0.4)
        if rng.random() < 0.1:
            flags = _flip(rng, flags, 64)
        f["GUEST_RFLAGS"] = flags
    elif kind == 10:            # pending debug exceptions and DEBUGCTL
        f["GUEST_PENDING_DBG_EXCEPTIONS"] = rng.choice(
            [0, PENDING_DBG_BS, 1, 0xF, PENDING_DBG_BS | 1, 1 << 12, 1 << 16, 1 << 13,
             rng.getrandbits(64)])
        f["GUEST_IA32_DEBUGCTL"] = rng.choice([0, DEBUGCTL_BTF, 1, 1 << 2, DEBUGCTL_BTF | 1])
    elif kind == 11:            # the VMCS link pointer and the dword at it
        f["VMCS_LINK_POINTER"] = rng.choice([_U64, LINK_REGION, _address(rng, maxphyaddr),
                                             vec.current_vmcs])
        vec.link_revision = rng.choice([VMCS_REVISION_ID, VMCS_REVISION_ID,
                                        VMCS_REVISION_ID | VMCS_SHADOW_INDICATOR,
                                        VMCS_REVISION_ID ^ 1, rng.getrandbits(32)])
    elif kind == 12:            # the root's mode
        vec.cpu = replace(vec.cpu, efer=vec.cpu.efer ^ EFER_LMA)
    elif kind == 13:            # host selectors
        s = rng.choice(("ES", "CS", "SS", "DS", "FS", "GS", "TR"))
        f[f"HOST_{s}_SELECTOR"] = rng.choice([0, 0x08, 0x10, 0x0B, 0x14, rng.getrandbits(16)])
    elif kind == 14:            # CR0 / CR4 bits, host or guest
        who = rng.choice(("HOST", "GUEST"))
        if rng.random() < 0.5:
            f[f"{who}_CR0"] ^= rng.choice([CR0_PE, CR0_PG, CR0_NE, CR0_WP, 1 << 32])
        else:
            f[f"{who}_CR4"] ^= rng.choice([CR4_PAE, CR4_PCIDE, CR4_VMXE, 1 << 22, 1 << 5])
    elif kind == 15:            # a pointer field
        name = rng.choice(_ADDRESS_FIELDS)
        f[name] = _address(rng, maxphyaddr)
    elif kind == 16:            # EPTP, VPID, VM functions, counts
        choice = rng.randrange(5)
        if choice == 0:
            f["EPT_POINTER"] = (rng.choice([0x10_0000, 1 << maxphyaddr, 1 << 51])
                                | rng.randrange(8) | rng.choice([3, 3, 3, 4, 0]) << 3
                                | rng.choice([0, 0, 1 << 6, 1 << 7, 1 << 11]))
        elif choice == 1:
            f["VIRTUAL_PROCESSOR_ID"] = rng.choice([0, 1, 0xFFFF])
        elif choice == 2:
            f["VM_FUNCTION_CONTROL"] = rng.choice([0, VMFUNC_EPTP_SWITCHING, 2, 3,
                                                   rng.getrandbits(64)])
            f["SECONDARY_VM_EXEC_CONTROL"] |= PROC2_ENABLE_VM_FUNCTIONS * (rng.random() < 0.7)
        elif choice == 3:
            f[rng.choice(("VM_EXIT_MSR_STORE_COUNT", "VM_EXIT_MSR_LOAD_COUNT",
                          "VM_ENTRY_MSR_LOAD_COUNT"))] = rng.choice([1, 1 << 31])
        else:
            f["CR3_TARGET_COUNT"] = rng.choice([0, 4, 5, 1 << 31])
    elif kind == 17:            # canonical-address fields
        f[rng.choice(_CANONICAL_FIELDS)] = _canonical_value(rng)
    elif kind == 18:            # PAT / EFER, host or guest
        who = rng.choice(("HOST", "GUEST"))
        if rng.random() < 0.5:
            pat = 0x0007040600070406
            if rng.random() < 0.5:
                pat = (pat & ~(0xFF << 8 * rng.randrange(8))) | (rng.choice([2, 3, 8, 0x80])
                                                                 << 8 * rng.randrange(8))
            f[f"{who}_IA32_PAT"] = pat
        else:
            f[f"{who}_IA32_EFER"] = rng.choice([0, EFER_LMA, EFER_LME, EFER_LMA | EFER_LME,
                                                EFER_LMA | EFER_LME | 1 << 11, 1 << 63])
    else:                       # guest CR3, DR7
        f["GUEST_DR7"] = rng.choice([0x400, 1 << 32, rng.getrandbits(64)])
        f["GUEST_CR3"] = rng.choice([0x30_0000, 1 << (maxphyaddr - 1), 1 << maxphyaddr])


def random_vector(rng: random.Random, maxphyaddr: int = MAXPHYADDR,
                  name: str = "random") -> EntryVector:
    """A valid starting point with 0-8 random changes (fewer more often)."""
    base = rng.choice(list(BASES))
    vec = base_vector(base, name=f"{name}[{base}]")
    for _ in range(min(8, int(rng.expovariate(0.4)))):
        mutate(rng, vec, maxphyaddr)
    vec.fields = full_fields(vec.fields)    # masks mutated values to each field's width
    return vec


# =================================================================================================
# Simulation: many vectors through one elaboration
# =================================================================================================


@dataclass
class SimResult:
    kind: EntryCheckKind
    qualification: int
    #: The rules (``group.rule``, as in `VmEntryChecks.rule_regs`) the vector breaks.
    rules: frozenset[str]

    @property
    def key(self) -> tuple[EntryCheckKind, int]:
        return self.kind, self.qualification


def simulate(vectors: Sequence[EntryVector], *, maxphyaddr: int = MAXPHYADDR, seed: int = 0,
             idle: float = 0.25, vcd: str | None = None,
             revision_id: int = VMCS_REVISION_ID) -> list[SimResult]:
    """Run `vectors` through `VmEntryChecks` in the Amaranth simulator and return each one's
    (kind, qualification) and the rules it breaks (the stage-1 registers).

    Starts come back to back, with random idle cycles between them (probability `idle`); in idle
    cycles the inputs are random garbage (the block must have sampled its inputs with `start`).
    Checked on the way, every cycle: `done` is high exactly `LATENCY` cycles after each `start`
    and never otherwise (the watchdog: every start gets its answer, in time); `result` holds its
    value while `done` is low; `link_read_needed` / `link_addr` are right for the vector; the
    block ignores `link_revision` when it does not ask for it (it then gets garbage, often the
    valid revision identifier).
    """
    from amaranth.sim import Simulator

    from rtl.vmx.entry_checks import VmEntryChecks

    rng = random.Random(seed)
    dut = VmEntryChecks(maxphyaddr=maxphyaddr, revision_id=revision_id)
    latency = VmEntryChecks.LATENCY
    schedule: list[int | None] = []
    for i in range(len(vectors)):
        while rng.random() < idle:
            schedule.append(None)
        schedule.append(i)
    schedule += [None] * latency
    results: list[SimResult | None] = [None] * len(vectors)
    rules_of: dict[int, frozenset[str]] = {}
    rule_regs = [(f"{group}.{name}", reg) for group, regs in dut.rule_regs.items()
                 for name, reg in regs.items()]
    errors: list[str] = []

    async def bench(ctx):
        started: list[int | None] = []
        held = None
        for cycle, item in enumerate(schedule):
            if item is None:
                ctx.set(dut.start, 0)
                ctx.set(dut.vmcs.as_value(), rng.getrandbits(WORKING_LAYOUT.size))
                ctx.set(dut.cpu.as_value(), rng.getrandbits(CPU_STATE_LAYOUT.size))
                ctx.set(dut.link_revision, rng.getrandbits(32))
                ctx.set(dut.current_vmcs, rng.choice([rng.getrandbits(64), LINK_REGION]))
            else:
                vec = vectors[item]
                ctx.set(dut.vmcs.as_value(), vmcs_bits(vec.fields))
                ctx.set(dut.cpu.as_value(), cpu_bits(vec.cpu))
                ctx.set(dut.current_vmcs, vec.current_vmcs)
                need = link_read_needed(vec.fields, maxphyaddr)
                got_need, got_addr = ctx.get(dut.link_read_needed), ctx.get(dut.link_addr)
                if got_need != need or got_addr != vec.fields["VMCS_LINK_POINTER"]:
                    errors.append(f"{vec.name}: link_read_needed/link_addr {got_need}/"
                                  f"{got_addr:#x}, expected {int(need)}/"
                                  f"{vec.fields['VMCS_LINK_POINTER']:#x}")
                # Unasked, the block gets garbage: often the right revision, so that a block
                # that wrongly looked at it would pass a pointer that is invalid.
                ctx.set(dut.link_revision, vec.link_revision if need else rng.choice(
                    [revision_id, revision_id, rng.getrandbits(32)]))
                ctx.set(dut.start, 1)
            await ctx.tick()
            started.append(item)
            if item is not None:
                rules_of[item] = frozenset(name for name, reg in rule_regs if ctx.get(reg))
            # Now in cycle `cycle + 1`: `done` answers the start of cycle `cycle + 1 - latency`.
            origin = cycle + 1 - latency
            expect = started[origin] if origin >= 0 else None
            done = ctx.get(dut.done)
            bits = ctx.get(dut.result.as_value())
            if done != (expect is not None):
                errors.append(f"cycle {cycle + 1}: done={done}, expected the answer to "
                              f"{'nothing' if expect is None else vectors[expect].name}")
            if done and expect is not None:
                results[expect] = SimResult(*unpack_result(bits), rules_of[expect])
                held = bits
            elif held is not None and bits != held:
                errors.append(f"cycle {cycle + 1}: result changed without done")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    if errors:
        raise AssertionError("\n".join(errors[:20]))
    missing = [vectors[i].name for i, r in enumerate(results) if r is None]
    assert not missing, f"no answer for {missing[:10]}"
    return results  # type: ignore[return-value]

