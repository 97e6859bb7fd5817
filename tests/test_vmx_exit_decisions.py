"""Exit decisions of VMX non-root operation (`rtl.vmx.exit_decisions.ExitDecisions`) and the
VMX-preemption timer (`rtl.vmx.preemption_timer.PreemptionTimer`), in Amaranth's simulator.

* Directed tests, one per rule, with hand-written expected reasons, qualifications (every field
  position), interruption information, CR values and bitmap-read addresses; each expected value
  is also checked against the reference model (`tb/model/vmx.py`), except the RTL-only rules
  (instruction reasons the model does not decide, invalid EPT outcomes).
* A randomized differential test: random VMCS contents (every field random, the ones decisions
  read biased), random bitmaps in a memory answered with random latency and back-pressure,
  thousands of random queries compared with the model's decision methods, and the RTL's bitmap
  reads compared with the qwords the model reads. ``VTX_SEED`` (default 1) seeds it,
  ``VTX_EXIT_DECISIONS`` (default 6000) is the number of queries.
* The preemption timer against the model's `advance_tsc`, cycle by cycle.
* Verilator ``--lint-only -Wall`` of both blocks' generated Verilog with the project's waivers.

Every query has a watchdog (`tb.vmx_exit_tb.WATCHDOG_CYCLES`).
"""

from __future__ import annotations

import os
import random

import pytest
from amaranth.sim import Simulator

from rtl.arch import Outcome
from rtl.arch.vmx import (
    EXIT_CTL_ACK_INTERRUPT_ON_EXIT,
    PIN_EXTERNAL_INTERRUPT_EXITING,
    PIN_NMI_EXITING,
    PROC_CR3_LOAD_EXITING,
    PROC_CR3_STORE_EXITING,
    PROC_CR8_LOAD_EXITING,
    PROC_CR8_STORE_EXITING,
    PROC_INTERRUPT_WINDOW_EXITING,
    PROC_MONITOR_TRAP_FLAG,
    PROC_MOV_DR_EXITING,
    PROC_NMI_WINDOW_EXITING,
    PROC_UNCONDITIONAL_IO_EXITING,
    PROC_USE_IO_BITMAPS,
    PROC_USE_MSR_BITMAPS,
    CrAccessType,
    ExitReason,
)
from rtl.vmx.exit_decisions import DECISION_LAYOUT, QUERY_LAYOUT, ExitDecisions, ExitQueryKind
from rtl.vmx.preemption_timer import PreemptionTimer
from tb.model.translation import Memory
from tb.vmx_exit_tb import (
    WATCHDOG_CYCLES,
    BitmapMemory,
    Query,
    decision,
    expected,
    model_for,
    model_reads,
    random_query,
    random_vmcs,
    run_queries,
)

K = ExitQueryKind
U64 = (1 << 64) - 1
TO, FROM, CLTS, LMSW = (CrAccessType.MOV_TO_CR, CrAccessType.MOV_FROM_CR, CrAccessType.CLTS,
                        CrAccessType.LMSW)


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value, 0) if value.strip() else default


# --- Query constructors ---------------------------------------------------------------------


def exc(vector, type_=3, err=None, qual=0):
    return Query(K.EXCEPTION, {"vector": vector, "type": type_, "has_error_code": err is not None,
                               "error_code": err or 0, "qualification": qual})


def ins(reason, qual=0):
    return Query(K.INSTRUCTION, {"reason": reason, "qualification": qual})


def cr(access, n, value=0, gpr=0, mem=0, actual=0):
    return Query(K.CR_ACCESS, {"access": access, "cr": n, "gpr": gpr, "lmsw_memory": mem,
                               "value": value, "actual": actual})


def io(port, size, is_in=0, string=0, rep=0, imm=0):
    return Query(K.IO, {"port": port, "size": size, "is_in": is_in, "string": string, "rep": rep,
                        "immediate": imm})


def msr(n, write):
    return Query(K.MSR, {"msr": n, "write": write})


def window(kind, rflags=0, intr=0):
    return Query(kind, {"rflags": rflags, "interruptibility": intr})


def ept(outcome, qual=0, gpa=0, gla=0):
    return Query(K.EPT, {"outcome": outcome, "qualification": qual, "gpa": gpa, "gla": gla})


def exits(reason, qual=0, **kw):
    return decision(1, reason, qual, **kw)


NO = decision()


def check_groups(groups, memory=None, *, model=True, maxphyaddr=40, seed=0):
    """`groups`: (VMCS fields, cases) pairs, run in one simulation. A case is (query, expected
    decision[, expected read addresses]). Asserts the RTL's decisions (and reads) and, with
    `model`, that the model agrees with the expected values."""
    mem = memory if memory is not None else Memory()
    flat = [(fields, case) for fields, cases in groups for case in cases]
    results = run_queries([(fields, case[0]) for fields, case in flat], mem, seed=seed,
                          maxphyaddr=maxphyaddr)
    for (fields, case), got in zip(flat, results, strict=True):
        q, want = case[0], case[1]
        assert got.decision == want, f"{q} with {fields}: RTL {got.decision} != {want}"
        if len(case) > 2:
            assert got.reads == case[2], f"{q}: reads {[hex(a) for a in got.reads]}"
        if model:
            m = model_for(fields, mem)
            assert expected(m, q) == want, f"{q} with {fields}: model {expected(m, q)} != {want}"
    return results


def check(fields, cases, memory=None, **kw):
    """`check_groups` with one VMCS."""
    return check_groups([(fields, cases)], memory, **kw)


# =================================================================================================
# Layouts (the formats the core is written against)
# =================================================================================================


def test_layout_offsets():
    assert QUERY_LAYOUT["kind"].offset == 0 and QUERY_LAYOUT["op"].offset == 4
    assert QUERY_LAYOUT.size == 4 + 64 * 3 + 3              # the EPT operands are the widest
    d = {name: (f.offset, f.width) for name, f in DECISION_LAYOUT}
    assert d == {"exit": (0, 1), "reason": (1, 16), "qualification": (17, 64), "gla": (81, 64),
                 "gpa": (145, 64), "intr_info": (209, 32), "intr_error": (241, 32),
                 "cr_value": (273, 64)}


# =================================================================================================
# Directed tests, one per rule
# =================================================================================================


def test_exception_bitmap_and_interruption_info():
    f = {"EXCEPTION_BITMAP": 1 << 6 | 1 << 3 | 1 << 13 | 1 << 31,
         "PIN_BASED_VM_EXEC_CONTROL": PIN_NMI_EXITING}
    check(f, [
        (exc(6), exits(0, intr_info=0x8000_0306)),                        # #UD, hardware
        (exc(13, err=0x10), exits(0, intr_info=0x8000_0B0D, intr_error=0x10)),
        (exc(13, err=0xFFFF_FFFF), exits(0, intr_info=0x8000_0B0D, intr_error=0xFFFF_FFFF)),
        (exc(3, type_=6, qual=U64), exits(0, U64, intr_info=0x8000_0603)),  # INT3: software exc
        (exc(6, type_=4), NO),                                            # INT n never exits
        (exc(31), exits(0, intr_info=0x8000_031F)),
        (exc(0), NO),
        (exc(32 + 3), NO),                                                # no bit above 31
        (exc(0xFF, type_=5), NO),
        (exc(2, type_=2), exits(0, intr_info=0x8000_0202)),              # NMI: NMI exiting
        (exc(1, type_=2), exits(0, intr_info=0x8000_0201)),              # not the bitmap
        (exc(13, type_=0), exits(0, intr_info=0x8000_000D)),
        (exc(6, type_=7, err=0x5), exits(0, intr_info=0x8000_0F06, intr_error=0x5)),
    ])
    check({"EXCEPTION_BITMAP": 1 << 2},                  # NMI exiting off: the bitmap is not used
          [(exc(2, type_=2), NO), (exc(2), exits(0, intr_info=0x8000_0302))])


@pytest.mark.parametrize("bit14,mask_,match,pfec,exit_", [
    (1, 0, 0, 0x2, True),          # mask 0 / match 0: every #PF matches, bit 14 decides
    (0, 0, 0, 0x2, False),
    (1, 0x4, 0x4, 0x6, True),      # matches: bit 14 = 1 exits
    (1, 0x4, 0x4, 0x2, False),     # does not match: complement of bit 14
    (0, 0x4, 0x4, 0x6, False),
    (0, 0x4, 0x4, 0x2, True),
    (0, 0, 1, 0x0, True),          # match value that no PFEC gives: never matches
    (1, 0xFFFF_FFFF, 0x8000_0001, 0x8000_0001, True),
    (1, 0xFFFF_FFFF, 0x8000_0001, 0x0000_0001, False),
    (1, 0x1, 0x0, None, True),     # no error code: PFEC 0 matches
])
def test_page_fault_mask_match(bit14, mask_, match, pfec, exit_):
    f = {"EXCEPTION_BITMAP": bit14 << 14, "PAGE_FAULT_ERROR_CODE_MASK": mask_,
         "PAGE_FAULT_ERROR_CODE_MATCH": match}
    info = 0x8000_030E | (0x800 if pfec is not None else 0)
    want = exits(0, 0xDEAD000, intr_info=info, intr_error=pfec or 0) if exit_ else NO
    check(f, [(exc(14, err=pfec, qual=0xDEAD000), want)])


def test_external_interrupt_and_acknowledge():
    check_groups([
        ({"VM_EXIT_CONTROLS": EXIT_CTL_ACK_INTERRUPT_ON_EXIT},
         [(Query(K.EXTERNAL_INTERRUPT, {"vector": 0x30}), NO)]),
        ({"PIN_BASED_VM_EXEC_CONTROL": PIN_EXTERNAL_INTERRUPT_EXITING},
         [(Query(K.EXTERNAL_INTERRUPT, {"vector": 0x30}), exits(1))]),
        ({"PIN_BASED_VM_EXEC_CONTROL": PIN_EXTERNAL_INTERRUPT_EXITING,
          "VM_EXIT_CONTROLS": EXIT_CTL_ACK_INTERRUPT_ON_EXIT},
         [(Query(K.EXTERNAL_INTERRUPT, {"vector": 0x30}), exits(1, intr_info=0x8000_0030)),
          (Query(K.EXTERNAL_INTERRUPT, {"vector": 0xFF}), exits(1, intr_info=0x8000_00FF))]),
    ])


def test_interrupt_and_nmi_windows():
    IW, NW = K.INTERRUPT_WINDOW, K.NMI_WINDOW
    check_groups([({}, [(window(IW, 0x202), NO), (window(NW), NO)]), ({
        "CPU_BASED_VM_EXEC_CONTROL": PROC_INTERRUPT_WINDOW_EXITING | PROC_NMI_WINDOW_EXITING}, [
        (window(IW, 0x202), exits(7)),
        (window(IW, 0x002), NO),                  # IF = 0
        (window(IW, 0x202, 1), NO),               # blocking by STI
        (window(IW, 0x202, 2), NO),               # blocking by MOV SS
        (window(IW, 0x202, 8), exits(7)),         # NMI blocking does not matter
        (window(IW, U64, 4), exits(7)),
        (window(NW, 0, 0), exits(8)),
        (window(NW, 0, 8), NO),                   # virtual-NMI blocking
        (window(NW, 0, 2), NO),                   # MOV-SS blocking
        (window(NW, 0, 1), exits(8)),             # STI blocking does not matter
    ])])


#: Primary-control bit of each conditional instruction (SDM table 24-6), written out here.
CONTROL_BIT = {ExitReason.HLT: 7, ExitReason.INVLPG: 9, ExitReason.MWAIT: 10,
               ExitReason.RDPMC: 11, ExitReason.RDTSC: 12, ExitReason.MONITOR: 29,
               ExitReason.PAUSE: 30}


def test_instructions_unconditional_and_by_control():
    unconditional = [(ExitReason.CPUID, 10), (ExitReason.GETSEC, 11), (ExitReason.INVD, 13),
                     (ExitReason.XSETBV, 55)]
    cases = [(ins(r, 0x77), exits(n, 0x77)) for r, n in unconditional]
    cases += [(ins(r), NO) for r in CONTROL_BIT]
    check({"CPU_BASED_VM_EXEC_CONTROL": 0}, cases)
    numbers = {ExitReason.HLT: 12, ExitReason.INVLPG: 14, ExitReason.RDPMC: 15,
               ExitReason.RDTSC: 16, ExitReason.MWAIT: 36, ExitReason.MONITOR: 39,
               ExitReason.PAUSE: 40}
    groups = []
    for reason, bit in CONTROL_BIT.items():       # each control enables exactly its instruction
        cases = [(ins(r, 0xFFFF_8000_1234_5000),
                  exits(numbers[r], 0xFFFF_8000_1234_5000) if r is reason else NO)
                 for r in CONTROL_BIT]
        groups.append(({"CPU_BASED_VM_EXEC_CONTROL": 1 << bit}, cases))
    check_groups(groups)


def test_vmx_instructions_exit():
    with_qual = {ExitReason.VMCLEAR: 19, ExitReason.VMPTRLD: 21, ExitReason.VMPTRST: 22,
                 ExitReason.VMREAD: 23, ExitReason.VMWRITE: 25, ExitReason.VMXON: 27,
                 ExitReason.INVEPT: 50, ExitReason.INVVPID: 53}
    without = {ExitReason.VMCALL: 18, ExitReason.VMLAUNCH: 20, ExitReason.VMRESUME: 24,
               ExitReason.VMXOFF: 26}
    cases = [(ins(r, 0x18), exits(n, 0x18)) for r, n in with_qual.items()]
    cases += [(ins(r, 0x18), exits(n, 0)) for r, n in without.items()]
    check({}, cases)


def test_other_instruction_reasons_do_not_exit():
    """RTL-only rule (the model raises): a reason the block does not decide gives exit 0."""
    reasons = (ExitReason.VMFUNC, ExitReason.RDTSCP, ExitReason.WBINVD, ExitReason.CR_ACCESS,
               ExitReason.EXCEPTION_NMI)
    check({"CPU_BASED_VM_EXEC_CONTROL": U64 >> 32}, [(ins(r, 5), NO) for r in reasons],
          model=False)


def cq(cr_, access, gpr=0, mem=0, src=0):
    """CR-access qualification, SDM table 27-3 positions, written out."""
    return cr_ | access << 4 | mem << 6 | gpr << 8 | src << 16


def test_cr0_cr4_masks_shadows_and_values():
    f = {"CR0_GUEST_HOST_MASK": 0x8000_0008, "CR0_READ_SHADOW": 0x8000_0000,     # PG, TS
         "CR4_GUEST_HOST_MASK": 0x2000, "CR4_READ_SHADOW": 0}                     # VMXE
    check(f, [
        (cr(TO, 0, 0x8000_0021, gpr=3, actual=0x8000_0031), decision(cr_value=0x8000_0021)),
        (cr(TO, 0, 0x1, gpr=15, mem=1, actual=0x8000_0031),
         exits(28, cq(0, 0, 15), cr_value=0x8000_0001)),
        (cr(TO, 4, 0x20, gpr=9, actual=0x2020), decision(cr_value=0x2020)),
        (cr(TO, 4, 0x2020, gpr=9, actual=0x2020), exits(28, 0x904, cr_value=0x2020)),
        (cr(FROM, 0, gpr=2, actual=0x8000_0039), decision(cr_value=0x8000_0031)),
        (cr(FROM, 4, actual=0x2020), decision(cr_value=0x20)),
        (cr(TO, 0, U64, actual=0), exits(28, 0, cr_value=U64 & ~0x8000_0008)),
    ])


def test_cr3_targets_cr3_and_cr8_exiting():
    f = {"CPU_BASED_VM_EXEC_CONTROL": PROC_CR3_LOAD_EXITING | PROC_CR3_STORE_EXITING
         | PROC_CR8_LOAD_EXITING | PROC_CR8_STORE_EXITING,
         "CR3_TARGET_COUNT": 2, "CR3_TARGET_VALUE0": 0x1000, "CR3_TARGET_VALUE1": 0x2000,
         "CR3_TARGET_VALUE2": 0x3000, "CR3_TARGET_VALUE3": 0x4000}
    check(f, [
        (cr(TO, 3, 0x1000), decision(cr_value=0x1000)),
        (cr(TO, 3, 0x2000), decision(cr_value=0x2000)),
        (cr(TO, 3, 0x3000, gpr=1), exits(28, 0x103, cr_value=0x3000)),   # target 2 > count
        (cr(FROM, 3, gpr=2, actual=0x5000), exits(28, 0x213, cr_value=0x5000)),
        (cr(TO, 8, 0xF, gpr=4), exits(28, 0x408, cr_value=0xF)),
        (cr(FROM, 8, gpr=5, actual=3), exits(28, 0x518, cr_value=3)),
        (cr(TO, 2, 0x1234, gpr=5), decision(cr_value=0x1234)),             # CR2: never
        (cr(FROM, 15, gpr=5, actual=0x99), decision(cr_value=0x99)),
    ])
    groups = []
    for count, value, exit_ in ((0, 0x1000, True), (3, 0x3000, False), (3, 0x4000, True),
                                (4, 0x4000, False), (7, 0x4000, False), (0xFFFF_FFFF, 0x4000,
                                                                         False)):
        groups.append((dict(f, CR3_TARGET_COUNT=count), [
            (cr(TO, 3, value, gpr=6),
             exits(28, 0x603, cr_value=value) if exit_ else decision(cr_value=value))]))
    check_groups(groups)
    check({}, [(cr(a, n, 0x1000, actual=7), decision(cr_value=0x1000 if a is TO else 7))
               for a in (TO, FROM) for n in (3, 8)])


def test_clts_and_lmsw():
    f = {"CR0_GUEST_HOST_MASK": 0x9, "CR0_READ_SHADOW": 0x8}       # PE and TS owned; shadow TS
    check(f, [
        (cr(CLTS, 5, gpr=7, actual=0x8000_0039), exits(28, 0x20, cr_value=0x8000_0039)),
        (cr(LMSW, 0, 0x1, mem=1, actual=0x8000_0030), exits(28, cq(0, 3, mem=1, src=1),
                                                            cr_value=0x8000_0030)),
        (cr(LMSW, 0, 0x0, actual=0x8000_0031), exits(28, 0x30, cr_value=0x8000_0031)),
        (cr(LMSW, 9, 0xFFF8, mem=1, gpr=3, actual=0x8000_0031), decision(cr_value=0x8000_0031)),
        (cr(LMSW, 0, 0x1_2345_FFFF, mem=1, gpr=15, actual=0), exits(28, 0xFFFF_0070,
                                                                    cr_value=0x6)),
    ])
    check({"CR0_GUEST_HOST_MASK": 0x8, "CR0_READ_SHADOW": 0x0}, [        # TS owned, shadow 0
        (cr(CLTS, 0, actual=0x8000_0039), decision(cr_value=0x8000_0039)),  # TS stays
    ])
    check({}, [                                                             # nothing owned
        (cr(CLTS, 0, actual=0x8000_0039), decision(cr_value=0x8000_0031)),
        (cr(LMSW, 0, 0xE, actual=0x8000_0031), decision(cr_value=0x8000_003F)),
        (cr(LMSW, 0, 0x0, actual=0x8000_003F), decision(cr_value=0x8000_0031)),  # PE stays
        (cr(LMSW, 0, 0x1, actual=0x8000_0030), decision(cr_value=0x8000_0031)),
    ])


def test_mov_dr():
    dr = lambda n, f, g: Query(K.DR_ACCESS, {"dr": n, "from_dr": f, "gpr": g})  # noqa: E731
    check_groups([({}, [(dr(7, 0, 0), NO)]),
                  ({"CPU_BASED_VM_EXEC_CONTROL": PROC_MOV_DR_EXITING},
                   [(dr(6, 1, 2), exits(29, 0x216)), (dr(7, 0, 15), exits(29, 0xF07)),
                    (dr(0, 0, 0), exits(29, 0))])])


def test_io_unconditional_and_qualification():
    check_groups([({}, [(io(0x80, 1), NO)]), ({
        "CPU_BASED_VM_EXEC_CONTROL": PROC_UNCONDITIONAL_IO_EXITING}, [
        (io(0x3F8, 1, is_in=1), exits(30, 0x03F8_0008), []),
        (io(0x60, 4, string=1, rep=1, imm=1), exits(30, 0x0060_0073), []),
        (io(0xFFFF, 2, is_in=1), exits(30, 0xFFFF_0009), []),
        (io(0x1234, 2, rep=1), exits(30, 0x1234_0021), []),
        (io(0x1, 1, string=1), exits(30, 0x0001_0010), []),
        (io(0x2, 1, imm=1), exits(30, 0x0002_0040), []),
    ])])


IO_A, IO_B, MSR_BITMAP = 0x10000, 0x20000, 0x30000


def test_io_bitmaps():
    mem = Memory()
    mem.write(IO_A + (0x3F8 >> 6) * 8, 1 << (0x3F8 & 63))     # 0x10078
    mem.write(IO_A + 8, 1 << 0 | 1 << 63)                     # ports 0x40 and 0x7F
    mem.write(IO_A + 16, 1 << 0)                              # port 0x80
    mem.write(IO_B, 1 << 1)                                   # port 0x8001
    f = {"CPU_BASED_VM_EXEC_CONTROL": PROC_USE_IO_BITMAPS | PROC_UNCONDITIONAL_IO_EXITING,
         "IO_BITMAP_A": IO_A, "IO_BITMAP_B": IO_B}
    check(f, [
        (io(0x3F8, 1, is_in=1), exits(30, 0x03F8_0008), [0x10078]),
        (io(0x3F9, 1, is_in=1), NO, [0x10078]),               # bitmaps override unconditional
        (io(0x3F6, 2), NO, [0x10078]),
        (io(0x3F7, 2), exits(30, 0x03F7_0001), [0x10078]),     # the second byte's bit
        (io(0x3F, 2), exits(30, 0x003F_0001), [0x10000, 0x10008]),   # into the next qword
        (io(0x3E, 2), NO, [0x10000]),
        (io(0x3D, 4), exits(30, 0x003D_0003), [0x10000, 0x10008]),
        (io(0x7F, 2), exits(30, 0x007F_0001), [0x10008]),      # hit in the first: one read
        (io(0x8001, 1), exits(30, 0x8001_0000), [0x20000]),    # bitmap B
        (io(0x7FFF, 4), exits(30, 0x7FFF_0003), [0x10FF8, 0x20000]),  # A into B
        (io(0x7FFE, 2), NO, [0x10FF8]),
        (io(0x8002, 2), NO, [0x20000]),
        (io(0xFFFF, 2), exits(30, 0xFFFF_0001), []),           # wraps: exits without a read
        (io(0xFFFD, 4), exits(30, 0xFFFD_0003), []),
        (io(0xFFFC, 4), NO, [0x20FF8]),
        (io(0xFFFF, 1), NO, [0x20FF8]),
    ], mem)


def test_io_bitmap_address_width():
    """Bitmap addresses use bits MAXPHYADDR-1:12 of the field (the parameter is honoured)."""
    base = 0x000F_0000_0001_0000
    mem = Memory({base + 0x78: 1 << 56})
    f = {"CPU_BASED_VM_EXEC_CONTROL": PROC_USE_IO_BITMAPS, "IO_BITMAP_A": base}
    check(f, [(io(0x3F8, 1), exits(30, 0x03F8_0000), [base + 0x78])], mem, maxphyaddr=52)


def test_msr_bitmaps():
    check({}, [(msr(0x10, 0), exits(31), []), (msr(0x10, 1), exits(32), []),
               (msr(0xFFFF_FFFF, 1), exits(32), [])])
    mem = Memory()
    mem.write(MSR_BITMAP + 0 + (0x10 >> 6) * 8, 1 << 0x10)            # read low 0x10
    mem.write(MSR_BITMAP + 1024 + (0x80 >> 6) * 8, 1 << 0)            # read high C0000080
    mem.write(MSR_BITMAP + 2048 + (0x1FFF >> 6) * 8, 1 << 63)         # write low 1FFF
    mem.write(MSR_BITMAP + 3072 + (0x102 >> 6) * 8, 1 << 2)           # write high C0000102
    f = {"CPU_BASED_VM_EXEC_CONTROL": PROC_USE_MSR_BITMAPS, "MSR_BITMAP": MSR_BITMAP}
    check(f, [
        (msr(0x10, 0), exits(31), [0x30000]),
        (msr(0x11, 0), NO, [0x30000]),
        (msr(0x10, 1), NO, [0x30800]),
        (msr(0xC000_0080, 0), exits(31), [0x30410]),
        (msr(0xC000_0080, 1), NO, [0x30C10]),
        (msr(0x1FFF, 1), exits(32), [0x30BF8]),
        (msr(0x1FFF, 0), NO, [0x303F8]),
        (msr(0xC000_0102, 1), exits(32), [0x30C20]),
        (msr(0xC000_0102, 0), NO, [0x30420]),
        (msr(0x2000, 0), exits(31), []),                  # outside both ranges: no read
        (msr(0xBFFF_FFFF, 0), exits(31), []),
        (msr(0xC000_2000, 1), exits(32), []),
    ], mem)


def test_triple_fault_mtf_and_ept():
    gla, gpa = 0xFFFF_8000_0000_1234, 0xF_8000_2000
    check_groups([({}, [(Query(K.TRIPLE_FAULT), exits(2)), (Query(K.MTF), NO)]), ({
        "CPU_BASED_VM_EXEC_CONTROL": PROC_MONITOR_TRAP_FLAG}, [
        (Query(K.MTF), exits(37)),
        (Query(K.TRIPLE_FAULT), exits(2)),
        (ept(Outcome.EPT_VIOLATION, 0x1BF, gpa, gla), exits(48, 0x1BF, gla=gla, gpa=gpa)),
        (ept(Outcome.EPT_MISCONFIG, 0x1BF, gpa, gla), exits(49, 0, gpa=gpa)),
        (ept(Outcome.OK, 0x1BF, gpa, gla), NO),
        (ept(Outcome.PAGE_FAULT, 0x1BF, gpa, gla), NO),
        (ept(Outcome.GENERAL_PROTECTION, 0x1BF, gpa, gla), NO),
    ])])
    # Outcome encodings 5-7 are not outcomes: RTL-only rule, no exit.
    check({}, [(Query(K.EPT, {"outcome": v, "qualification": 1, "gpa": 2, "gla": 3}), NO)
               for v in (5, 6, 7)], model=False)


def test_latency_without_memory():
    """Registered query, registered decision: 2 cycles from query to decision when nobody
    stalls (run_queries counts from the query's transfer to the decision's transfer)."""
    f = {"CPU_BASED_VM_EXEC_CONTROL": PROC_MOV_DR_EXITING}
    cases = [(f, Query(K.DR_ACCESS, {"dr": 1, "from_dr": 0, "gpr": 1}))] * 20
    results = run_queries(cases, Memory(), backpressure=0.0, gap=0.0)
    assert {r.cycles for r in results} == {2}


# =================================================================================================
# Randomized differential test against the model
# =================================================================================================


def test_random_differential():
    seed = env_int("VTX_SEED", 1)
    count = env_int("VTX_EXIT_DECISIONS", 6000)
    r = random.Random(seed)
    memory = BitmapMemory(random.Random(seed + 1))
    cases = []
    while len(cases) < count:
        fields = random_vmcs(r)
        cases += [(fields, random_query(r, fields)) for _ in range(r.randint(1, 60))]
    results = run_queries(cases, memory, seed=seed, max_latency=r.choice((0, 3, 8)))
    models = {}
    kinds = {}
    for (fields, q), got in zip(cases, results, strict=True):
        m = models.get(id(fields))
        if m is None:
            m = models[id(fields)] = model_for(fields, memory)
        want, reads = model_reads(memory, m, q)
        assert got.decision == want, f"seed {seed}: {q} with {fields}: RTL {got.decision} != " \
                                     f"model {want}"
        # The RTL reads the qwords the model reads, in order, and nothing when an I/O access
        # wraps past FFFFh (the model reads the bytes before the wrap first).
        wraps = q.kind is K.IO and q.ops["port"] + q.ops["size"] - 1 > 0xFFFF
        assert got.reads == ([] if wraps else reads), (q, got.reads, reads)
        assert got.cycles <= WATCHDOG_CYCLES
        key = (q.kind, want["exit"])
        kinds[key] = kinds.get(key, 0) + 1
    # Both answers of every kind occurred (triple faults always exit).
    for kind in K:
        for exit_ in (0, 1):
            if (kind, exit_) == (K.TRIPLE_FAULT, 0):
                continue
            assert kinds.get((kind, exit_), 0) > 0 or count < 1000, (kind, exit_, kinds)


# =================================================================================================
# VMX-preemption timer
# =================================================================================================


def run_timer(steps, rate=0):
    """Drive the timer with `steps` (dicts of load/load_value/load_active/tick/stop per cycle);
    return the outputs (active, value, expired) seen in each cycle before its inputs act."""
    dut = PreemptionTimer(rate=rate)
    seen = []

    async def bench(ctx):
        for s in steps:
            for name in ("load", "load_value", "load_active", "tick", "stop"):
                ctx.set(getattr(dut, name), s.get(name, 0))
            seen.append((ctx.get(dut.active), ctx.get(dut.value), ctx.get(dut.expired)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return seen


def test_preemption_timer_directed():
    load3 = {"load": 1, "load_value": 3, "load_active": 1}
    tick = {"tick": 1}
    seen = run_timer([{}, load3, {}, tick, tick, {}, tick, {}, tick, {"stop": 1}, {}])
    assert seen == [
        (0, 0, 0),      # idle
        (0, 0, 0),      # load cycle
        (1, 3, 0),      # loaded: advance_tsc(0) is None
        (1, 3, 0),      # tick
        (1, 2, 0),      # tick
        (1, 1, 0),
        (1, 1, 0),      # tick: 1 -> 0
        (1, 0, 1),      # expired, the cycle after the tick
        (1, 0, 1),      # tick at 0: stays 0, still expired
        (1, 0, 1),      # stop: value 0 saved
        (0, 0, 0),
    ]
    # Value 0 at entry expires at once; inactive loads never expire.
    assert run_timer([{"load": 1, "load_value": 0, "load_active": 1}, {}])[1] == (1, 0, 1)
    seen = run_timer([{"load": 1, "load_value": 0, "load_active": 0}, tick, {}])
    assert seen[1:] == [(0, 0, 0), (0, 0, 0)]
    # A tick in the load cycle does not count; a tick in the stop cycle does not either, and the
    # value in the stop cycle is the one to save.
    seen = run_timer([dict(load3, tick=1), {"tick": 1, "stop": 1}, {}])
    assert seen[1:] == [(1, 3, 0), (0, 0, 0)]
    seen = run_timer([load3, {"tick": 1, "stop": 1}, {}, {"load": 1, "load_value": 9,
                                                          "load_active": 1}, {}])
    assert seen[1:] == [(1, 3, 0), (0, 0, 0), (0, 0, 0), (1, 9, 0)]
    # 32-bit values.
    seen = run_timer([{"load": 1, "load_value": 0xFFFF_FFFF, "load_active": 1}, tick, {}])
    assert seen[1:] == [(1, 0xFFFF_FFFF, 0), (1, 0xFFFF_FFFE, 0)]


def test_preemption_timer_rate():
    """With rate 2 (not this design's IA32_VMX_MISC, a parameter check) one count per 4 ticks."""
    seen = run_timer([{"load": 1, "load_value": 2, "load_active": 1}] + [{"tick": 1}] * 9 + [{}],
                     rate=2)
    assert [v for _, v, _ in seen[1:]] == [2, 2, 2, 2, 1, 1, 1, 1, 0, 0]
    assert seen[-1] == (1, 0, 1)


def test_preemption_timer_against_model():
    """Random loads, ticks and stops; each cycle the outputs equal the model's state."""
    from tb.model.vmx import VmxModel

    r = random.Random(env_int("VTX_SEED", 1))
    steps = []
    for _ in range(4000):
        s = {}
        if r.random() < 0.02:
            s.update(load=1, load_value=r.choice((0, 1, 2, r.randrange(40))),
                     load_active=int(r.random() < 0.8))
        if r.random() < 0.01:
            s["stop"] = 1
        if r.random() < 0.6:
            s["tick"] = 1
        steps.append(s)
    seen = run_timer(steps)
    m = VmxModel()
    for i, (s, (active, value, expired)) in enumerate(zip(steps, seen, strict=True)):
        timer = m.preemption_timer
        assert active == (timer is not None), i
        assert value == (timer or 0), i
        assert expired == (m.advance_tsc(0) is not None), i
        # The cycle's inputs, as the VMX unit and the core apply them.
        if s.get("load"):
            m.preemption_timer = s["load_value"] if s["load_active"] else None
        elif s.get("stop"):
            m.preemption_timer = None
        elif s.get("tick"):
            m.advance_tsc(1)


# =================================================================================================
# Verilator lint
# =================================================================================================


@pytest.mark.parametrize("name,factory,params", [
    ("exit_decisions", ExitDecisions, {}),
    ("preemption_timer", PreemptionTimer, {}),
    ("preemption_timer", PreemptionTimer, {"rate": 3}),
])
def test_lint(name, factory, params):
    from sim import lint

    result = lint.lint_top(lint.Top(name, factory, params))
    assert result.ok, result.output
